/* Fuzzes the size parser (ms__size_parse: "16GiB", "90%") and the environment readers built on it
 * (ms__env_size, ms__env_number). The input is the text. Outputs are written only on success, an
 * accepted size is 1 byte to 16 EiB, a percentage above 0 and at most 100, and every failure says
 * what came. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/env.h"
#include "../../src/common/size.h"
#include "../../src/common/util.h"
#include "fuzz_text.h"

#define FUZZ_VAR "MODELSHARE_FUZZ_SIZE"

static void check_fail(int rc, const char *err)
{
    if ((rc != MS_E_INVAL && rc != MS_E_TOO_LARGE) || strnlen(err, MS__ERRLEN) == 0)
        abort();
}

static void check_size(const char *text)
{
    char err[MS__ERRLEN] = "";
    uint64_t bytes = 7;
    double pct = -1;
    int rc = ms__size_parse(text, &bytes, NULL, err, sizeof err);
    if (rc == 0 && bytes == 0)
        abort();
    if (rc != 0) {
        check_fail(rc, err);
        if (bytes != 7)
            abort();
    }
    bytes = 7;
    err[0] = '\0';
    rc = ms__size_parse(text, &bytes, &pct, err, sizeof err);
    if (rc == 0 && !((bytes >= 1 && pct == 0) || (bytes == 0 && pct > 0 && pct <= 100)))
        abort();
    if (rc != 0) {
        check_fail(rc, err);
        if (bytes != 7 || pct != -1)
            abort();
    }
}

static void check_env(const char *text)
{
    /* putenv keeps this buffer (setenv would keep a copy of every value: memory grows). */
    static char var[sizeof FUZZ_VAR + 4096];
    size_t n = strlen(text);
    if (n > sizeof var - sizeof FUZZ_VAR - 1)
        return;
    memcpy(var, FUZZ_VAR "=", sizeof FUZZ_VAR);
    memcpy(var + sizeof FUZZ_VAR, text, n + 1);
    if (putenv(var) != 0)
        return;
    char err[MS__ERRLEN] = "";
    uint64_t v;
    int rc = ms__env_size(FUZZ_VAR, 42, &v, err, sizeof err);
    if (rc != 0 && (v != 42 || strstr(err, FUZZ_VAR) == NULL))
        abort();
    if (rc == 0 && text[0] != '\0' && v == 0)
        abort();
    double d;
    err[0] = '\0';
    rc = ms__env_number(FUZZ_VAR, 5, -10, 1e6, &d, err, sizeof err);
    if (rc != 0 && (d != 5 || strstr(err, FUZZ_VAR) == NULL))
        abort();
    if (rc == 0 && !(isfinite(d) && d >= -10 && d <= 1e6))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    if (text == NULL)
        return 0;
    check_size(text);
    check_env(text);
    free(text);
    return 0;
}
