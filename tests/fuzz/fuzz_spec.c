/* Fuzzes the spec parser directly (ms__spec_parse, so ms__spec_from_json, the python object and
 * its identity), the canonical JSON, the brief form and the diff. The input is one or two specs as
 * JSON text, split at the first NUL byte. An accepted spec must round-trip through its canonical
 * JSON; two accepted specs must be equal exactly when their diff is empty. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/spec.h"
#include "../../src/common/util.h"
#include "fuzz_text.h"

/* Parses text and checks what an accepted spec must keep; 0 when *out holds a spec. */
static int parse_checked(const char *text, ms__spec *out)
{
    char err[MS__ERRLEN] = "";
    int rc = ms__spec_parse(text, out, err, sizeof err);
    if (rc != 0) {
        if ((rc != MS_E_SPEC && rc != MS_E_NOMEM) || strnlen(err, sizeof err) == 0)
            abort();
        return rc;
    }
    json_t *canon = ms__spec_to_json(out);
    ms__spec again;
    if (canon == NULL || ms__spec_from_json(canon, &again, err, sizeof err) != 0 ||
        !ms__spec_equal(out, &again))
        abort();
    char diff[512];
    ms__spec_diff(out, &again, diff, sizeof diff);
    if (diff[0] != '\0')
        abort();
    ms__spec_free(&again);
    json_decref(canon);
    json_t *brief = ms__spec_to_json_brief(out);
    if (brief == NULL)
        abort();
    json_decref(brief);
    ms__spec copy;
    if (ms__spec_copy(out, &copy) == 0) {
        if (!ms__spec_equal(out, &copy))
            abort();
        ms__spec_free(&copy);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    if (text == NULL)
        return 0;
    size_t first = strlen(text);
    ms__spec a, b;
    if (parse_checked(text, &a) == 0) {
        if (first < size && parse_checked(text + first + 1, &b) == 0) {
            /* The diff names what ms__spec_equal compares: empty exactly when equal. Short
             * buffers are cut, always terminated. */
            char diff[600], small[8];
            ms__spec_diff(&a, &b, diff, sizeof diff);
            ms__spec_diff(&a, &b, small, sizeof small);
            if ((diff[0] == '\0') != ms__spec_equal(&a, &b) || memchr(small, '\0', 8) == NULL)
                abort();
            ms__spec_free(&b);
        }
        ms__spec_free(&a);
    }
    free(text);
    return 0;
}
