/* Sizes with SI and IEC units. See size.h. */
#include "size.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "modelshare.h"
#include "util.h"

/* The prefixes of the units, in order of power: K = 1000 or 1024, M its square, ... */
static const char prefixes[] = "KMGT";

/* The multiplier of unit (len bytes, any case): none or B, then K/KB/KiB, M/MB/MiB, G/GB/GiB,
 * T/TB/TiB; 0 when it is none of these. */
static uint64_t unit_mult(const char *unit, size_t len)
{
    if (len == 0 || (len == 1 && toupper((unsigned char)unit[0]) == 'B'))
        return 1;
    const char *p = strchr(prefixes, toupper((unsigned char)unit[0]));
    if (p == NULL)
        return 0;
    const char *rest = unit + 1;
    size_t rlen = len - 1;
    uint64_t base;
    if (rlen == 0 || (rlen == 1 && toupper((unsigned char)rest[0]) == 'B'))
        base = 1000; /* SI: K, KB */
    else if (rlen == 2 && strncasecmp(rest, "iB", 2) == 0)
        base = 1024; /* IEC: KiB */
    else
        return 0;
    uint64_t mult = 1;
    for (const char *q = prefixes; q <= p; q++)
        mult *= base;
    return mult;
}

static const char *skip_spaces(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    return s;
}

static int parse_percent(const char *text, double v, double *percent, char *err, size_t errlen)
{
    if (!(v > 0 && v <= 100))
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected a percentage above 0 and at most 100, got \"%.64s\"", text);
    *percent = v;
    return 0;
}

int ms__size_parse(const char *text, uint64_t *bytes, double *percent, char *err, size_t errlen)
{
    const char *expected = percent != NULL ? "a size like 16GiB, 512MiB, 2000000000 or a "
                                             "percentage like 90%"
                                           : "a size like 16GiB, 512MiB or 2000000000";
    const char *s = text != NULL ? skip_spaces(text) : "";
    if (!isdigit((unsigned char)s[0]))
        return ms__fail(err, errlen, MS_E_INVAL, "expected %s, got \"%.64s\"", expected,
                        text != NULL ? text : "");
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || !isfinite(v) || v < 0)
        return ms__fail(err, errlen, MS_E_INVAL, "expected %s, got \"%.64s\"", expected, text);
    const char *unit = skip_spaces(end);
    size_t len = strlen(unit);
    while (len > 0 && isspace((unsigned char)unit[len - 1]))
        len--;
    if (percent != NULL && len == 1 && unit[0] == '%') {
        int rc = parse_percent(text, v, percent, err, errlen);
        if (rc == 0)
            *bytes = 0;
        return rc;
    }
    uint64_t mult = unit_mult(unit, len);
    if (mult == 0)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected %s (units B, KB, KiB, MB, MiB, GB, GiB, TB, TiB), got \"%.64s\"",
                        expected, text);
    double b = v * (double)mult;
    if (b < 1 || b > 1.8e19)
        return ms__fail(err, errlen, b < 1 ? MS_E_INVAL : MS_E_TOO_LARGE,
                        "expected a size from 1 byte to 16 EiB, got \"%.64s\"", text);
    *bytes = (uint64_t)b;
    if (percent != NULL)
        *percent = 0;
    return 0;
}
