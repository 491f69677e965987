/* A model's named inputs and outputs in its signature (signames.h). */
#include "signames.h"

#include <stdio.h>
#include <string.h>

#include "modelshare.h"
#include "util.h"

static int text_kind(const char *dtype)
{
    if (strcmp(dtype, "str") == 0)
        return MS_TEXT_UTF8;
    return strcmp(dtype, "bytes") == 0 ? MS_TEXT_BYTES : 0;
}

static int name_of(const json_t *o, const char *which, size_t i, char *name, char *err,
                   size_t errlen)
{
    static const char allowed[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-";
    const json_t *v = json_object_get(o, "name");
    const char *s = json_string_value(v);
    size_t len = s != NULL ? strlen(s) : 0;
    if (s == NULL || len == 0 || len >= MS__MF_NAME || strspn(s, allowed) != len ||
        len != json_string_length(v))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "signature %s[%zu]: expected \"name\" to be 1 to %d of [A-Za-z0-9_.:-]",
                        which, i, MS__MF_NAME - 1);
    memcpy(name, s, len + 1);
    return 0;
}

/* One entry: its name, and its dtype and shape as one side of the one-tensor signature (a
 * list's kind read here, the rest by ms__sig_side_from). */
static int entry_from(const json_t *o, const char *which, size_t i, ms__sig_entry *e, char *err,
                      size_t errlen)
{
    if (!json_is_object(o))
        return ms__fail(err, errlen, MS_E_PROTOCOL, "signature %s[%zu]: expected an object", which,
                        i);
    memset(e, 0, sizeof *e);
    int rc = name_of(o, which, i, e->name, err, errlen);
    if (rc < 0)
        return rc;
    const char *dtype = json_string_value(json_object_get(o, "dtype"));
    int kind = dtype != NULL ? text_kind(dtype) : 0;
    json_t *side = kind != 0 ? json_pack("{s:O?}", "shape", json_object_get(o, "shape"))
                             : json_incref((json_t *)o);
    if (side == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory reading a signature");
    char what[48];
    snprintf(what, sizeof what, "%s[%zu]", which, i);
    rc = ms__sig_side_from(side, what, &e->sig, err, errlen);
    json_decref(side);
    if (kind != 0)
        e->sig.dtype = kind;
    const json_t *shape = json_object_get(o, "shape");
    e->shape_known = shape != NULL && !json_is_null(shape);
    return rc;
}

int ms__sig_list_from_json(const json_t *j, const char *which, ms__sig_entry *e, int *n, char *err,
                           size_t errlen)
{
    const json_t *list = json_is_object(j) ? json_object_get(j, which) : NULL;
    *n = -1;
    if (list == NULL || json_is_null(list))
        return 0;
    if (!json_is_array(list) || json_array_size(list) > MS__MF_MAX)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "signature: expected \"%s\" to be a list of at most %d tensors", which,
                        MS__MF_MAX);
    size_t i;
    const json_t *o;
    json_array_foreach(list, i, o)
    {
        int rc = entry_from(o, which, i, &e[i], err, errlen);
        if (rc < 0)
            return rc;
        for (size_t k = 0; k < i; k++)
            if (strcmp(e[k].name, e[i].name) == 0)
                return ms__fail(err, errlen, MS_E_PROTOCOL,
                                "signature %s: expected unique names, \"%s\" comes twice", which,
                                e[i].name);
    }
    *n = (int)json_array_size(list);
    return 0;
}
