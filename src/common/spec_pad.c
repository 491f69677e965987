/* The spec's "pad" field (spec.h: ms__spec_pad): parsed into fixed fields (no allocation, so a
 * spec's copy and free need nothing for it), and its canonical JSON. */
#include <string.h>

#include "spec.h"

#include "modelshare.h"
#include "proto.h"
#include "util.h"

static int pad_fail(char *err, size_t errlen, const char *what)
{
    return ms__fail(err, errlen, MS_E_SPEC,
                    "spec field \"pad\": expected null or {\"dim\": 1..7, \"multiple\": 1..65536, "
                    "\"value\": {name: number, ...} (at most 16 names of 1 to 31 bytes)}, got %s",
                    what);
}

static int int_in(const json_t *v, long long lo, long long hi, int *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_values(const json_t *v, ms__spec_pad *p, char *err, size_t errlen)
{
    const char *name;
    json_t *n;
    if (v == NULL)
        return 0;
    if (!json_is_object(v) || json_object_size(v) > MS__SPEC_PAD_VALUES_MAX)
        return pad_fail(err, errlen, "a \"value\" that is not an object of at most 16 numbers");
    json_object_foreach((json_t *)v, name, n)
    {
        size_t len = strlen(name);
        if (len == 0 || len >= sizeof p->names[0] || !json_is_number(n))
            return pad_fail(err, errlen, "a \"value\" entry that is not a name and a number");
        memcpy(p->names[p->nvalues], name, len);
        p->values[p->nvalues++] = json_number_value(n);
    }
    return 0;
}

int ms__spec_pad_parse(const json_t *v, ms__spec_pad *pad, char *err, size_t errlen)
{
    ms__spec_pad p;
    memset(&p, 0, sizeof p);
    if (json_is_null(v)) {
        *pad = p;
        return 0;
    }
    if (!json_is_object(v))
        return pad_fail(err, errlen, ms__json_kind(v));
    const char *key;
    json_t *f;
    p.multiple = 1;
    json_object_foreach((json_t *)v, key, f)
    {
        if (strcmp(key, "dim") != 0 && strcmp(key, "multiple") != 0 && strcmp(key, "value") != 0)
            return pad_fail(err, errlen, "an unknown key");
    }
    if (int_in(json_object_get(v, "dim"), 1, MS_MAX_RANK - 1, &p.dim) < 0)
        return pad_fail(err, errlen, "no \"dim\" from 1 to 7");
    json_t *m = json_object_get(v, "multiple");
    if (m != NULL && int_in(m, 1, 65536, &p.multiple) < 0)
        return pad_fail(err, errlen, "a \"multiple\" out of 1..65536");
    int r = parse_values(json_object_get(v, "value"), &p, err, errlen);
    if (r == 0)
        *pad = p;
    return r;
}

json_t *ms__spec_pad_json(const ms__spec_pad *pad)
{
    if (pad->dim == 0)
        return json_null();
    json_t *values = json_object();
    for (int i = 0; values != NULL && i < pad->nvalues; i++)
        if (json_object_set_new(values, pad->names[i], json_real(pad->values[i])) != 0) {
            json_decref(values);
            return NULL;
        }
    if (values == NULL)
        return NULL;
    return json_pack("{s:i, s:i, s:o}", "dim", pad->dim, "multiple", pad->multiple, "value",
                     values);
}
