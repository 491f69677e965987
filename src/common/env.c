/* Environment variables as strings, numbers and sizes. See env.h. */
#include "env.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "modelshare.h"
#include "size.h"
#include "util.h"

const char *ms__env_str(const char *name, const char *def)
{
    const char *v = name != NULL ? getenv(name) : NULL;
    return v != NULL && v[0] != '\0' ? v : def;
}

int ms__env_number(const char *name, double def, double min, double max, double *out, char *err,
                   size_t errlen)
{
    *out = def;
    const char *s = ms__env_str(name, NULL);
    if (s == NULL)
        return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (end != s && isspace((unsigned char)*end))
        end++;
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v) || v < min || v > max)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "%s: expected a number from %g to %g, got \"%.64s\"", name, min, max, s);
    *out = v;
    return 0;
}

int ms__env_size(const char *name, uint64_t def, uint64_t *out, char *err, size_t errlen)
{
    *out = def;
    const char *s = ms__env_str(name, NULL);
    if (s == NULL)
        return 0;
    char msg[MS__ERRLEN];
    uint64_t v;
    int rc = ms__size_parse(s, &v, NULL, msg, sizeof msg);
    if (rc != 0)
        return ms__fail(err, errlen, rc, "%s: %s", name, msg);
    *out = v;
    return 0;
}
