/* A model's spec: parsing with field-by-field validation, canonical JSON, equality. */
#include "spec.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctorfd.h"
#include "modelshare.h"
#include "util.h"

#define SPEC_WEIGHTS_MAX 4096
#define SPEC_DEVICE_CUDA_MAX 63
#define SPEC_MEMORY_MAX (1ll << 62)
#define SPEC_CONSTRUCTOR_MAX 98304
#define SPEC_PATH_ENTRIES_MAX 256
#define SPEC_IDENTITY_PARTS_MAX 32
#define SPEC_IDENTITY_TEXT_MAX 200
#define DIFF_VALUE_MAX 300

#define FIELD_NAME(name, dflt, keyword) #name,
static const char *const known_fields[] = {MS__SPEC_FIELDS(FIELD_NAME)};

/* "backend, weights, ..." into buf: n names. */
static void names_list(const char *const *names, size_t n, char *buf, size_t buflen)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && pos < buflen; i++) {
        int w = snprintf(buf + pos, buflen - pos, "%s%s", i > 0 ? ", " : "", names[i]);
        if (w < 0)
            break;
        pos += (size_t)w;
    }
}

/* A JSON value as compact JSON for messages, cut at max bytes: "\"ten\"", "2.5", "[1,2]". */
static void value_text(const json_t *v, char *buf, size_t buflen, int max)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s == NULL) {
        snprintf(buf, buflen, "a value");
        return;
    }
    if (strlen(s) > (size_t)max)
        snprintf(buf, buflen, "%.*s...", max - 3, s);
    else
        snprintf(buf, buflen, "%s", s);
    free(s);
}

/* Short, for what a field got: at most 60 bytes, "an object" or "an array" for those. */
static void value_str(const json_t *v, char *buf, size_t buflen)
{
    if (json_is_object(v) || json_is_array(v))
        snprintf(buf, buflen, "%s", json_is_object(v) ? "an object" : "an array");
    else
        value_text(v, buf, buflen, 60);
}

static int field_fail(char *err, size_t errlen, const char *field, const char *expected,
                      const json_t *got)
{
    char g[80];
    value_str(got, g, sizeof g);
    return ms__fail(err, errlen, MS_E_SPEC, "spec field \"%s\": expected %s, got %s", field,
                    expected, g);
}

/* An integer in [lo, hi]; a JSON real with an integral value counts. */
static bool get_int(const json_t *v, long long lo, long long hi, long long *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi)
            return false;
        *out = x;
        return true;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (!(x >= (double)lo && x <= (double)hi))
            return false;
        long long i = (long long)x;
        if ((double)i != x)
            return false;
        *out = i;
        return true;
    }
    return false;
}

/* A number (integer or real) in [lo, hi]. */
static bool get_num(const json_t *v, double lo, double hi, double *out)
{
    if (!json_is_number(v))
        return false;
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return false;
    *out = x;
    return true;
}

/* "cpu", "cuda:N" (N 0..63, no leading zeros), or "cuda" (meaning "cuda:0"). */
static bool device_canon(const char *s, char *out, size_t outlen)
{
    if (strcmp(s, "cpu") == 0) {
        snprintf(out, outlen, "cpu");
        return true;
    }
    if (strcmp(s, "cuda") == 0) {
        snprintf(out, outlen, "cuda:0");
        return true;
    }
    if (strncmp(s, "cuda:", 5) != 0)
        return false;
    const char *d = s + 5;
    size_t n = strlen(d);
    if (n == 0 || n > 2 || (n == 2 && d[0] == '0'))
        return false;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9')
            return false;
        v = v * 10 + (d[i] - '0');
    }
    if (v > SPEC_DEVICE_CUDA_MAX)
        return false;
    snprintf(out, outlen, "cuda:%d", v);
    return true;
}

static bool abs_path(const json_t *v)
{
    const char *p = json_string_value(v);
    return p != NULL && p[0] == '/' && strlen(p) <= SPEC_WEIGHTS_MAX;
}

static bool base64_text(const char *t)
{
    for (; *t; t++)
        if (!((*t >= 'A' && *t <= 'Z') || (*t >= 'a' && *t <= 'z') || (*t >= '0' && *t <= '9') ||
              *t == '+' || *t == '/' || *t == '='))
            return false;
    return true;
}

static const char *const python_fields[] = {
    "constructor",
    "constructor_size",
    "constructor_sha256",
    "executable",
    "cwd",
    "path",
    "framework",
    "key",
    "identity",
};

static int python_unknown_fields(const json_t *v, char *err, size_t errlen)
{
    const char *key;
    json_t *f;
    json_object_foreach((json_t *)v, key, f)
    {
        bool known = false;
        for (size_t i = 0; i < MS__ARRAY_LEN(python_fields) && !known; i++)
            known = strcmp(key, python_fields[i]) == 0;
        if (!known) {
            char names[256];
            names_list(python_fields, MS__ARRAY_LEN(python_fields), names, sizeof names);
            return ms__fail(err, errlen, MS_E_SPEC,
                            "unknown spec field \"python.%.64s\" (known: %s)", key, names);
        }
    }
    return 0;
}

/* Where the worker runs: the interpreter, the folder and sys.path. */
static int python_where(const json_t *v, char *err, size_t errlen)
{
    if (!abs_path(json_object_get(v, "executable")))
        return field_fail(err, errlen, "python.executable",
                          "the absolute path of a Python interpreter",
                          json_object_get(v, "executable"));
    if (!abs_path(json_object_get(v, "cwd")))
        return field_fail(err, errlen, "python.cwd", "an absolute path", json_object_get(v, "cwd"));
    const json_t *path = json_object_get(v, "path");
    if (path == NULL)
        return 0;
    if (!json_is_array(path) || json_array_size(path) > SPEC_PATH_ENTRIES_MAX)
        return field_fail(err, errlen, "python.path", "a list of at most 256 folders (sys.path)",
                          path);
    size_t i;
    json_t *e;
    json_array_foreach(path, i, e)
    {
        const char *p = json_string_value(e);
        if (p == NULL || strlen(p) > SPEC_WEIGHTS_MAX || strchr(p, ':') != NULL)
            return field_fail(err, errlen, "python.path",
                              "strings of at most 4096 bytes without ':'", e);
    }
    return 0;
}

/* The outline of a constructor's identity: at most 32 parts, each a name and a short text. */
static int python_identity(const json_t *v, char *err, size_t errlen)
{
    if (v == NULL || json_is_null(v))
        return 0;
    const char *expected = "null or an object of at most 32 parts, each a name of 1 to 64 bytes "
                           "and a text of at most 200 bytes (what the constructor is made of)";
    if (!json_is_object(v) || json_object_size(v) > SPEC_IDENTITY_PARTS_MAX)
        return field_fail(err, errlen, "python.identity", expected, v);
    const char *name;
    json_t *text;
    json_object_foreach((json_t *)v, name, text)
    {
        size_t n = strlen(name);
        if (n == 0 || n > 64 || !json_is_string(text) ||
            json_string_length(text) > SPEC_IDENTITY_TEXT_MAX)
            return field_fail(err, errlen, "python.identity", expected, text);
    }
    return 0;
}

/* The frameworks the python worker knows: their memory caps, their adapters. */
static bool known_framework(const char *name)
{
    static const char *const known[] = {"torch", "tensorflow", "jax", "onnxruntime"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(name, known[i]) == 0)
            return true;
    return false;
}

/* v's field, NULL when absent or null. */
static const json_t *given(const json_t *v, const char *field)
{
    const json_t *f = json_object_get(v, field);
    return f != NULL && !json_is_null(f) ? f : NULL;
}

/* A pickle in a memfd (ctorfd.h): its size, 1 to MS__CTOR_MAX bytes, and its SHA-256. */
static int python_ctor_memfd(const json_t *v, char *err, size_t errlen)
{
    const json_t *n = json_object_get(v, "constructor_size");
    if (!json_is_integer(n) || json_integer_value(n) < 1 ||
        (uint64_t)json_integer_value(n) > MS__CTOR_MAX)
        return field_fail(err, errlen, "python.constructor_size",
                          "the size in bytes of the pickle in the constructor memfd, 1 to "
                          "1073741824",
                          n);
    const json_t *h = json_object_get(v, "constructor_sha256");
    const char *hs = json_string_value(h);
    if (hs == NULL || strlen(hs) != 64 || strspn(hs, "0123456789abcdef") != 64)
        return field_fail(err, errlen, "python.constructor_sha256",
                          "the SHA-256 of the pickle in the constructor memfd, 64 lowercase hex "
                          "digits",
                          h);
    return 0;
}

/* The constructor: inline (base64 text in "constructor"), or in a memfd ("constructor_size" and
 * "constructor_sha256"), never both. */
static int python_ctor(const json_t *v, char *err, size_t errlen)
{
    const json_t *c = json_object_get(v, "constructor");
    bool memfd = given(v, "constructor_size") != NULL || given(v, "constructor_sha256") != NULL;
    if (memfd && given(v, "constructor") != NULL)
        return field_fail(err, errlen, "python.constructor",
                          "null beside constructor_size and constructor_sha256 (the pickle is "
                          "either inline or in a memfd)",
                          c);
    if (memfd)
        return python_ctor_memfd(v, err, errlen);
    const char *ct = json_string_value(c);
    if (ct == NULL || ct[0] == '\0' || strlen(ct) > SPEC_CONSTRUCTOR_MAX || !base64_text(ct))
        return field_fail(err, errlen, "python.constructor",
                          "the base64 text of a pickled constructor, 1 to 98304 characters (a "
                          "larger pickle travels in a memfd: constructor_size and "
                          "constructor_sha256)",
                          c);
    return 0;
}

/* The constructor's pickle, the framework and the key: what the model is. */
static int python_what(const json_t *v, char *err, size_t errlen)
{
    int rc = python_ctor(v, err, errlen);
    if (rc != 0)
        return rc;
    const json_t *fw = json_object_get(v, "framework");
    const char *fws = json_string_value(fw);
    if (fw != NULL && !json_is_null(fw) && (fws == NULL || !known_framework(fws)))
        return field_fail(err, errlen, "python.framework",
                          "null, \"torch\", \"tensorflow\", \"jax\" or \"onnxruntime\"", fw);
    const json_t *kj = json_object_get(v, "key");
    const char *ks = json_string_value(kj);
    if (kj != NULL && !json_is_null(kj) &&
        (ks == NULL || strlen(ks) != 64 || strspn(ks, "0123456789abcdef") != 64))
        return field_fail(err, errlen, "python.key",
                          "null or a SHA-256 in 64 lowercase hex digits (what two constructors "
                          "compare by, instead of their pickles)",
                          kj);
    return python_identity(json_object_get(v, "identity"), err, errlen);
}

/* v's field as a new reference: a copy, or json_null() when absent. */
static json_t *copy_or_null(const json_t *v, const char *field)
{
    const json_t *f = json_object_get(v, field);
    return f != NULL ? json_deep_copy(f) : json_null();
}

/* The python object's canonical text (sorted keys, every field). malloc'd; NULL when out of
 * memory. */
static char *python_canonical(const json_t *v)
{
    const json_t *path = json_object_get(v, "path");
    json_t *canon = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "constructor",
                              copy_or_null(v, "constructor"), "executable",
                              copy_or_null(v, "executable"), "cwd", copy_or_null(v, "cwd"), "path",
                              path != NULL ? json_deep_copy(path) : json_array(), "framework",
                              copy_or_null(v, "framework"), "key", copy_or_null(v, "key"),
                              "identity", copy_or_null(v, "identity"));
    /* A pickle in a memfd: its size and hash (absent for an inline one, whose canonical text
     * stays as it was before memfds). */
    const json_t *size = given(v, "constructor_size");
    if (canon != NULL && size != NULL &&
        (json_object_set_new(canon, "constructor_size", json_deep_copy(size)) != 0 ||
         json_object_set_new(canon, "constructor_sha256", copy_or_null(v, "constructor_sha256")) !=
             0)) {
        json_decref(canon);
        canon = NULL;
    }
    char *text = canon != NULL ? json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(canon);
    return text;
}

/* What two python specs compare: "framework\nkey:KEY", "...\nsha256:HASH" or "...\npickle:BASE64".
 * malloc'd; NULL when out of memory. */
static char *python_key(const json_t *v)
{
    const json_t *size = given(v, "constructor_size");
    const char *fws = json_string_value(json_object_get(v, "framework"));
    const char *ks = json_string_value(json_object_get(v, "key"));
    const char *what = ks != NULL     ? ks
                       : size != NULL ? json_string_value(json_object_get(v, "constructor_sha256"))
                                      : json_string_value(json_object_get(v, "constructor"));
    /* "key:", "sha256:" or "pickle:" before it: a pickle whose base64 happens to read as a key
     * is not that key (fuzz_spec checks it). */
    const char *kind = ks != NULL ? "key:" : size != NULL ? "sha256:" : "pickle:";
    size_t klen = strlen(what) + strlen(kind) + 2 + (fws != NULL ? strlen(fws) : 0);
    char *k = malloc(klen);
    if (k != NULL)
        snprintf(k, klen, "%s\n%s%s", fws != NULL ? fws : "", kind, what);
    return k;
}

/* The "python" object: checked field by field, kept as canonical JSON text with what two specs
 * compare beside it (the framework, and the key when given, else the pickle). */
static int parse_python(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    if (!json_is_object(v))
        return field_fail(err, errlen, "python",
                          "an object with constructor, executable, cwd, path and framework", v);
    int rc = python_unknown_fields(v, err, errlen);
    if (rc == 0)
        rc = python_where(v, err, errlen);
    if (rc == 0)
        rc = python_what(v, err, errlen);
    if (rc != 0)
        return rc;
    char *text = python_canonical(v), *k = python_key(v);
    if (text == NULL || k == NULL) {
        free(text);
        free(k);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory copying the spec");
    }
    free(s->python);
    free(s->python_key);
    s->python = text;
    s->python_key = k;
    const json_t *size = given(v, "constructor_size");
    s->python_ctor_size = size != NULL ? (uint64_t)json_integer_value(size) : 0;
    return 0;
}

/* The number and boolean fields: where each goes and what it takes. FIELD_INT0: an integer
 * whose 0 is written null (null parses as 0). */
enum { FIELD_DOUBLE, FIELD_INT, FIELD_INT0, FIELD_U64, FIELD_BOOL };

struct number_field {
    const char *name;
    int type;
    long long lo, hi;
    const char *expected;
    size_t offset; /* in ms__spec */
};

static int parse_number(const struct number_field *f, const json_t *v, ms__spec *s, char *err,
                        size_t errlen)
{
    char *at = (char *)s + f->offset;
    long long i;
    double d;
    switch (f->type) {
    case FIELD_DOUBLE:
        if (!get_num(v, (double)f->lo, (double)f->hi, &d))
            break;
        *(double *)(void *)at = d;
        return 0;
    case FIELD_INT0:
    case FIELD_INT:
    case FIELD_U64:
        if (f->type == FIELD_INT0 && json_is_null(v))
            i = 0;
        else if (!get_int(v, f->lo, f->hi, &i))
            break;
        if (f->type == FIELD_U64)
            *(uint64_t *)(void *)at = (uint64_t)i;
        else
            *(int *)(void *)at = (int)i;
        return 0;
    default:
        if (!json_is_boolean(v))
            break;
        *(bool *)(void *)at = json_is_true(v);
        return 0;
    }
    return field_fail(err, errlen, f->name, f->expected, v);
}

static int number_json(const struct number_field *f, const ms__spec *s, json_t **out)
{
    const char *at = (const char *)s + f->offset;
    switch (f->type) {
    case FIELD_DOUBLE:
        *out = json_real(*(const double *)(const void *)at);
        break;
    case FIELD_INT:
        *out = json_integer(*(const int *)(const void *)at);
        break;
    case FIELD_INT0: {
        int i = *(const int *)(const void *)at;
        *out = i > 0 ? json_integer(i) : json_null();
        break;
    }
    case FIELD_U64:
        *out = json_integer((json_int_t) * (const uint64_t *)(const void *)at);
        break;
    default:
        *out = json_boolean(*(const bool *)(const void *)at);
    }
    return *out != NULL ? 0 : -1;
}

static bool number_same(const struct number_field *f, const ms__spec *a, const ms__spec *b)
{
    const void *x = (const char *)a + f->offset, *y = (const char *)b + f->offset;
    switch (f->type) {
    case FIELD_DOUBLE:
        return *(const double *)x == *(const double *)y;
    case FIELD_U64:
        return *(const uint64_t *)x == *(const uint64_t *)y;
    case FIELD_BOOL:
        return *(const bool *)x == *(const bool *)y;
    default:
        return *(const int *)x == *(const int *)y;
    }
}

/* parse_, json_ and same_ of a number field, from its line below. */
#define NUMBER_FIELD(name, type, lo, hi, expected)                                                 \
    static const struct number_field nf_##name = {#name, type,     lo,                             \
                                                  hi,    expected, offsetof(ms__spec, name)};      \
    static int parse_##name(const json_t *v, ms__spec *s, char *err, size_t errlen)                \
    {                                                                                              \
        return parse_number(&nf_##name, v, s, err, errlen);                                        \
    }                                                                                              \
    static int json_##name(const ms__spec *s, json_t **out)                                        \
    {                                                                                              \
        return number_json(&nf_##name, s, out);                                                    \
    }                                                                                              \
    static bool same_##name(const ms__spec *a, const ms__spec *b)                                  \
    {                                                                                              \
        return number_same(&nf_##name, a, b);                                                      \
    }

NUMBER_FIELD(keep_alive, FIELD_DOUBLE, 0, 1000000000000ll,
             "a number of seconds >= 0 (at most 1e12)")
NUMBER_FIELD(max_batch, FIELD_INT, 1, 65536, "an integer from 1 to 65536")
NUMBER_FIELD(batch_delay_us, FIELD_INT, 0, 1000000, "an integer from 0 to 1000000 (microseconds)")
NUMBER_FIELD(instances, FIELD_INT, 1, 64, "an integer from 1 to 64")
NUMBER_FIELD(thread_safe, FIELD_BOOL, 0, 1, "true or false")
NUMBER_FIELD(threads, FIELD_INT0, 0, 64, "null or an integer from 0 to 64 (0: one per CPU)")
NUMBER_FIELD(batchable, FIELD_BOOL, 0, 1, "true or false")
NUMBER_FIELD(memory, FIELD_U64, 0, SPEC_MEMORY_MAX,
             "an integer number of bytes from 0 (estimate) to 2^62")
NUMBER_FIELD(load_timeout, FIELD_DOUBLE, 0, 86400, "a number of seconds from 0 to 86400")
NUMBER_FIELD(call_timeout, FIELD_DOUBLE, 0, 86400, "a number of seconds from 0 (off) to 86400")
NUMBER_FIELD(max_restarts, FIELD_INT, 0, MS__SPEC_RESTARTS_MAX, "an integer from 0 to 100")

static int parse_backend(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    const char *b = json_string_value(v);
    if (b == NULL ||
        (strcmp(b, "dense") != 0 && strcmp(b, "python") != 0 && strcmp(b, "identity") != 0))
        return field_fail(err, errlen, "backend", "\"dense\", \"python\" or \"identity\"", v);
    snprintf(s->backend, sizeof s->backend, "%s", b);
    return 0;
}

static int parse_weights(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    if (json_is_null(v))
        return 0;
    const char *w = json_string_value(v);
    if (w == NULL || w[0] == '\0' || strlen(w) > SPEC_WEIGHTS_MAX)
        return field_fail(err, errlen, "weights",
                          "a path (a non-empty string of at most 4096 bytes)", v);
    s->weights = strdup(w);
    if (s->weights == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory copying the spec");
    return 0;
}

/* version: a label for what a tag serves (modelshare swap moves a tag from one to the next). */
static int parse_version(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    s->version[0] = '\0';
    if (json_is_null(v))
        return 0;
    const char *t = json_string_value(v);
    bool ok = t != NULL && t[0] != '\0' && strlen(t) <= MS__SPEC_VERSION_MAX;
    for (const char *c = t; ok && *c; c++)
        ok = *c > ' ' && *c < 127;
    if (!ok)
        return field_fail(err, errlen, "version",
                          "a label of 1 to 64 printable ASCII characters without spaces, or null",
                          v);
    snprintf(s->version, sizeof s->version, "%s", t);
    return 0;
}

static int parse_device(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    const char *dev = json_string_value(v);
    if (dev != NULL && strcmp(dev, "auto") == 0) {
        snprintf(s->device, sizeof s->device, "auto");
        return 0;
    }
    if (dev == NULL || !device_canon(dev, s->device, sizeof s->device))
        return field_fail(err, errlen, "device",
                          "\"cpu\" or \"cuda:N\" with N from 0 to 63, or \"auto\"", v);
    return 0;
}

/* devices: null, "auto", or a list of distinct devices the instances are spread over. */
static int parse_devices(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    const char *expected = "null, \"auto\" or a list of 1 to 16 distinct \"cpu\" or \"cuda:N\" "
                           "(N from 0 to 63) to spread the instances over";
    s->ndevices = 0;
    s->devices_auto = false;
    if (json_is_null(v))
        return 0;
    const char *t = json_string_value(v);
    if (t != NULL && strcmp(t, "auto") == 0) {
        s->devices_auto = true;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > MS__SPEC_DEVICES_MAX)
        return field_fail(err, errlen, "devices", expected, v);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *d = json_string_value(e);
        if (d == NULL || !device_canon(d, s->devices[i], sizeof s->devices[i]))
            return field_fail(err, errlen, "devices", expected, e);
        for (size_t k = 0; k < i; k++)
            if (strcmp(s->devices[k], s->devices[i]) == 0)
                return field_fail(err, errlen, "devices", expected, e);
    }
    s->ndevices = (int)json_array_size(v);
    return 0;
}

/* device beside devices: only "auto" (or absent), which devices implies. */
static int check_devices(const json_t *obj, ms__spec *s, char *err, size_t errlen)
{
    if (s->ndevices == 0 && !s->devices_auto)
        return 0;
    if (json_object_get(obj, "device") != NULL && strcmp(s->device, "auto") != 0)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec fields \"device\" and \"devices\": expected one of them (device: "
                        "every instance on one device; devices: the instances spread over "
                        "several), got device \"%s\" and devices too",
                        s->device);
    snprintf(s->device, sizeof s->device, "auto");
    return 0;
}

bool ms__spec_placed(const ms__spec *spec)
{
    return strcmp(spec->device, "auto") == 0 || spec->ndevices > 0 || spec->devices_auto;
}

static int parse_output(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    const char *o = json_string_value(v);
    if (o != NULL && strcmp(o, "linear") == 0)
        s->output = MS__OUTPUT_LINEAR;
    else if (o != NULL && strcmp(o, "softmax") == 0)
        s->output = MS__OUTPUT_SOFTMAX;
    else
        return field_fail(err, errlen, "output", "\"linear\" or \"softmax\"", v);
    return 0;
}

/* batch_sizes: the row counts a model runs at, increasing (a model compiled for fixed shapes). */
static int parse_batch_sizes(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    const char *expected = "a list of 1 to 32 increasing integers from 1 to 65536 (the row counts "
                           "the model runs at), or null";
    s->nbatch_sizes = 0;
    if (json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) == 0 ||
        json_array_size(v) > MS__SPEC_BATCH_SIZES_MAX)
        return field_fail(err, errlen, "batch_sizes", expected, v);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        long long n;
        if (!get_int(e, 1, 65536, &n) || (i > 0 && n <= s->batch_sizes[i - 1]))
            return field_fail(err, errlen, "batch_sizes", expected, e);
        s->batch_sizes[i] = (int)n;
    }
    s->nbatch_sizes = (int)json_array_size(v);
    return 0;
}

static int unknown_field(const char *key, char *err, size_t errlen)
{
    char name[80];
    if (strlen(key) > 64)
        snprintf(name, sizeof name, "%.61s...", key);
    else
        snprintf(name, sizeof name, "%s", key);
    char known[512];
    names_list(known_fields, MS__ARRAY_LEN(known_fields), known, sizeof known);
    return ms__fail(err, errlen, MS_E_SPEC, "unknown spec field \"%s\" (known: %s)", name, known);
}

/* The canonical JSON and the comparison of the fields that are not numbers. */
static int json_backend(const ms__spec *s, json_t **out)
{
    return (*out = json_string(s->backend)) != NULL ? 0 : -1;
}

static bool same_backend(const ms__spec *a, const ms__spec *b)
{
    return strcmp(a->backend, b->backend) == 0;
}

static int json_weights(const ms__spec *s, json_t **out)
{
    *out = s->weights != NULL ? json_string(s->weights) : json_null();
    return *out != NULL ? 0 : -1;
}

static bool same_weights(const ms__spec *a, const ms__spec *b)
{
    if (a->weights == NULL || b->weights == NULL)
        return a->weights == b->weights;
    return strcmp(a->weights, b->weights) == 0;
}

static int json_device(const ms__spec *s, json_t **out)
{
    return (*out = json_string(s->device)) != NULL ? 0 : -1;
}

static bool same_device(const ms__spec *a, const ms__spec *b)
{
    return strcmp(a->device, b->device) == 0;
}

/* null, "auto" or the list. */
static int json_devices(const ms__spec *spec, json_t **out)
{
    json_t *a = spec->devices_auto    ? json_string("auto")
                : spec->ndevices == 0 ? json_null()
                                      : json_array();
    for (int i = 0; a != NULL && json_is_array(a) && i < spec->ndevices; i++)
        if (json_array_append_new(a, json_string(spec->devices[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    *out = a;
    return a != NULL ? 0 : -1;
}

static bool same_devices(const ms__spec *a, const ms__spec *b)
{
    if (a->ndevices != b->ndevices || a->devices_auto != b->devices_auto)
        return false;
    for (int i = 0; i < a->ndevices; i++)
        if (strcmp(a->devices[i], b->devices[i]) != 0)
            return false;
    return true;
}

static int json_output(const ms__spec *s, json_t **out)
{
    *out = json_string(s->output == MS__OUTPUT_SOFTMAX ? "softmax" : "linear");
    return *out != NULL ? 0 : -1;
}

static bool same_output(const ms__spec *a, const ms__spec *b)
{
    return a->output == b->output;
}

static int json_batch_sizes(const ms__spec *s, json_t **out)
{
    json_t *sizes = s->nbatch_sizes > 0 ? json_array() : json_null();
    for (int i = 0; sizes != NULL && i < s->nbatch_sizes; i++)
        if (json_array_append_new(sizes, json_integer(s->batch_sizes[i])) != 0) {
            json_decref(sizes);
            sizes = NULL;
        }
    *out = sizes;
    return sizes != NULL ? 0 : -1;
}

static bool same_batch_sizes(const ms__spec *a, const ms__spec *b)
{
    return a->nbatch_sizes == b->nbatch_sizes &&
           memcmp(a->batch_sizes, b->batch_sizes, sizeof a->batch_sizes) == 0;
}

/* The python object, absent (*out NULL) without one. */
static int json_python(const ms__spec *s, json_t **out)
{
    *out = s->python != NULL ? json_loads(s->python, 0, NULL) : NULL;
    return s->python == NULL || *out != NULL ? 0 : -1;
}

/* What two python specs compare: the framework, and the key or the pickle. */
static bool same_python(const ms__spec *a, const ms__spec *b)
{
    if (a->python_key == NULL || b->python_key == NULL)
        return a->python_key == b->python_key;
    return strcmp(a->python_key, b->python_key) == 0;
}

static int json_version(const ms__spec *s, json_t **out)
{
    *out = s->version[0] ? json_string(s->version) : json_null();
    return *out != NULL ? 0 : -1;
}

static bool same_version(const ms__spec *a, const ms__spec *b)
{
    return strcmp(a->version, b->version) == 0;
}

static int parse_pad(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    return ms__spec_pad_parse(v, &s->pad, err, errlen);
}

/* Left out when none: the canonical text of specs without it stays as it was. */
static int json_pad(const ms__spec *s, json_t **out)
{
    *out = s->pad.dim > 0 ? ms__spec_pad_json(&s->pad) : NULL;
    return s->pad.dim == 0 || *out != NULL ? 0 : -1;
}

static bool same_pad(const ms__spec *a, const ms__spec *b)
{
    return memcmp(&a->pad, &b->pad, sizeof a->pad) == 0;
}

static int parse_shared_with(const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    const char *w = json_string_value(v);
    if (w == NULL || (strcmp(w, "owner") != 0 && strcmp(w, "group") != 0))
        return field_fail(err, errlen, "shared_with", "\"owner\" or \"group\"", v);
    s->shared_group = strcmp(w, "group") == 0;
    return 0;
}

/* Left out when "owner" (the default): the canonical text of specs without it stays as it was. */
static int json_shared_with(const ms__spec *s, json_t **out)
{
    *out = s->shared_group ? json_string("group") : NULL;
    return !s->shared_group || *out != NULL ? 0 : -1;
}

/* Not compared (spec.h): who may use a loaded model is its owner's choice, not the asker's. */
static bool same_shared_with(const ms__spec *a, const ms__spec *b)
{
    (void)a;
    (void)b;
    return true;
}

/* Every field's parser, canonical JSON and comparison, from MS__SPEC_FIELDS (spec.h). */
static const struct spec_field {
    const char *name;
    const char *dflt; /* JSON text, NULL: none */
    int (*parse)(const json_t *v, ms__spec *s, char *err, size_t errlen);
    int (*to_json)(const ms__spec *s, json_t **out); /* *out NULL: the field is left out */
    bool (*same)(const ms__spec *a, const ms__spec *b);
} spec_fields[] = {
#define FIELD_ROW(name, dflt, keyword) {#name, dflt, parse_##name, json_##name, same_##name},
    MS__SPEC_FIELDS(FIELD_ROW)
#undef FIELD_ROW
};

static int parse_field(const char *key, const json_t *v, ms__spec *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < MS__ARRAY_LEN(spec_fields); i++)
        if (strcmp(key, spec_fields[i].name) == 0)
            return spec_fields[i].parse(v, s, err, errlen);
    return unknown_field(key, err, errlen);
}

/* Every field's default, through its own parser. */
static int spec_defaults(ms__spec *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < MS__ARRAY_LEN(spec_fields); i++) {
        if (spec_fields[i].dflt == NULL)
            continue;
        json_t *v = json_loads(spec_fields[i].dflt, JSON_DECODE_ANY, NULL);
        int rc = v != NULL ? spec_fields[i].parse(v, s, err, errlen)
                           : ms__fail(err, errlen, MS_E_NOMEM, "out of memory reading the spec");
        json_decref(v);
        if (rc != 0) {
            ms__spec_free(s);
            return rc;
        }
    }
    return 0;
}

/* Defaults that depend on the backend, for the fields obj does not give. batchable: the built-in
 * backends are row-wise by construction and batch; a python model's calls are merged with other
 * callers' only when its spec says so (a model whose output rows depend on each other, such as
 * x - x.mean(axis=0), would give wrong answers). */
static void backend_defaults(const json_t *obj, ms__spec *s)
{
    if (json_object_get(obj, "batchable") == NULL)
        s->batchable = strcmp(s->backend, "python") != 0;
}

/* The rules between fields, once every field is parsed. */
static int check_fields(const ms__spec *s, bool seen_backend, char *err, size_t errlen)
{
    if (!seen_backend)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"backend\": expected \"dense\", \"python\" or \"identity\", "
                        "got nothing (the field is required)");
    if (strcmp(s->backend, "python") == 0 && s->python == NULL)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"python\": expected an object with the pickled constructor "
                        "for the python backend, got nothing");
    if (strcmp(s->backend, "python") != 0 && s->python != NULL)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"python\": expected only with backend \"python\", got it "
                        "with backend \"%s\"",
                        s->backend);
    if (s->threads > 1 && !s->thread_safe)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"threads\": expected null, 0 or 1 for a model that is not "
                        "thread_safe (it runs one batch at a time), got %d; say thread_safe true "
                        "for more",
                        s->threads);
    if (s->pad.dim > 0 && !s->batchable)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"pad\": expected only with batchable true (padded requests "
                        "share a batch), got it with batchable false");
    if (s->nbatch_sizes > 0 && !s->batchable)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"batch_sizes\": expected only with batchable true (a run is "
                        "padded with zero rows, which needs a model whose rows are independent), "
                        "got it with batchable false%s",
                        strcmp(s->backend, "python") == 0 ? " (the default for python models)"
                                                          : "");
    if (strcmp(s->backend, "dense") == 0 && s->weights == NULL)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec field \"weights\": expected the path of a safetensors file for the "
                        "dense backend, got nothing");
    return 0;
}

int ms__spec_from_json(const json_t *obj, ms__spec *out, char *err, size_t errlen)
{
    if (obj == NULL || !json_is_object(obj)) {
        char g[80];
        if (obj != NULL)
            value_str(obj, g, sizeof g);
        return ms__fail(err, errlen, MS_E_SPEC, "expected the spec to be a JSON object, got %s",
                        obj != NULL ? g : "nothing");
    }
    ms__spec s;
    int rc = spec_defaults(&s, err, errlen);
    if (rc != 0)
        return rc;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        /* weights given twice cannot happen (duplicate keys are one key in an object). */
        rc = parse_field(key, v, &s, err, errlen);
        if (rc != 0) {
            ms__spec_free(&s);
            return rc;
        }
    }
    backend_defaults(obj, &s);
    rc = check_devices(obj, &s, err, errlen);
    if (rc == 0)
        rc = check_fields(&s, json_object_get(obj, "backend") != NULL, err, errlen);
    if (rc != 0) {
        ms__spec_free(&s);
        return rc;
    }
    *out = s;
    return 0;
}

int ms__spec_parse(const char *text, ms__spec *out, char *err, size_t errlen)
{
    if (text == NULL)
        return ms__fail(err, errlen, MS_E_SPEC, "expected a spec (a JSON object), got NULL");
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "expected the spec to be a JSON object, got invalid JSON (%s at line %d "
                        "column %d)",
                        jerr.text, jerr.line, jerr.column);
    int rc = ms__spec_from_json(j, out, err, errlen);
    json_decref(j);
    return rc;
}

json_t *ms__spec_to_json(const ms__spec *spec)
{
    /* The fields by name (insertion sort: jansson keeps insertion order when dumping). */
    size_t order[MS__ARRAY_LEN(spec_fields)];
    for (size_t i = 0; i < MS__ARRAY_LEN(spec_fields); i++) {
        size_t k = i;
        for (; k > 0 && strcmp(spec_fields[order[k - 1]].name, spec_fields[i].name) > 0; k--)
            order[k] = order[k - 1];
        order[k] = i;
    }
    json_t *j = json_object();
    for (size_t i = 0; j != NULL && i < MS__ARRAY_LEN(spec_fields); i++) {
        const struct spec_field *f = &spec_fields[order[i]];
        json_t *v;
        if (f->to_json(spec, &v) != 0 || (v != NULL && json_object_set_new(j, f->name, v) != 0)) {
            json_decref(j);
            j = NULL;
        }
    }
    return j;
}

static uint64_t fnv1a(const char *t)
{
    uint64_t h = 1469598103934665603ull;
    for (; *t; t++)
        h = (h ^ (unsigned char)*t) * 1099511628211ull;
    return h;
}

/* Text for a message, appended part by part: "a; b; c", cut with "..." when full. */
typedef struct diff_text {
    char *buf;
    size_t len, pos;
} diff_text;

static void diff_add(diff_text *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void diff_add(diff_text *d, const char *fmt, ...)
{
    if (d->pos + 1 >= d->len)
        return;
    if (d->pos > 0)
        d->pos += (size_t)snprintf(d->buf + d->pos, d->len - d->pos, "; ");
    va_list ap;
    va_start(ap, fmt);
    int n = d->pos < d->len ? vsnprintf(d->buf + d->pos, d->len - d->pos, fmt, ap) : 0;
    va_end(ap);
    d->pos += n > 0 ? (size_t)n : 0;
    if (d->pos >= d->len) {
        d->pos = d->len - 1;
        if (d->len > 4)
            memcpy(d->buf + d->len - 4, "...", 4);
    }
}

/* How a python spec knows its constructor: "key 1a2b3c4d5e6f..." or the pickle's size and hash. */
static void identity_brief(const json_t *py, char *buf, size_t buflen)
{
    const char *key = json_string_value(json_object_get(py, "key"));
    const char *ct = json_string_value(json_object_get(py, "constructor"));
    const char *sha = json_string_value(json_object_get(py, "constructor_sha256"));
    if (key != NULL)
        snprintf(buf, buflen, "key %.12s...", key);
    else if (sha != NULL)
        snprintf(buf, buflen, "pickle of %lld bytes in a memfd, sha256 %.12s...",
                 (long long)json_integer_value(json_object_get(py, "constructor_size")), sha);
    else
        snprintf(buf, buflen, "pickle of %zu base64 characters, fnv1a %016llx",
                 ct != NULL ? strlen(ct) : 0, (unsigned long long)(ct != NULL ? fnv1a(ct) : 0));
}

/* The parts of two constructor outlines that differ, with both texts. */
static int diff_identity(diff_text *d, const json_t *a, const json_t *b)
{
    int parts = 0;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)a, name, v)
    {
        const json_t *w = json_object_get(b, name);
        if (w != NULL && json_equal(v, w))
            continue;
        /* The part "constructor" says what it is ("lambda in ..."): no "part" before it. */
        bool whole = strcmp(name, "constructor") == 0;
        diff_add(d, "constructor%s%s: loaded %s, asked %s", whole ? "" : " part ",
                 whole ? "" : name, json_string_value(v),
                 w != NULL ? json_string_value(w) : "(none)");
        parts++;
    }
    json_object_foreach((json_t *)b, name, v)
    {
        if (json_object_get(a, name) != NULL)
            continue;
        diff_add(d, "constructor part %s: loaded (none), asked %s", name, json_string_value(v));
        parts++;
    }
    return parts;
}

/* Both absent, or equal (json_equal is false for absent ones). */
static bool same_json(const json_t *a, const json_t *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && json_equal(a, b));
}

/* The python fields that ms__spec_equal compares: the framework, then the constructor. */
static void diff_python(diff_text *d, const json_t *a, const json_t *b)
{
    const json_t *fa = json_object_get(a, "framework"), *fb = json_object_get(b, "framework");
    if (!json_equal(fa, fb)) {
        char va[80], vb[80];
        value_str(fa, va, sizeof va);
        value_str(fb, vb, sizeof vb);
        diff_add(d, "python.framework: loaded %s, asked %s", va, vb);
    }
    const json_t *ka = json_object_get(a, "key"), *kb = json_object_get(b, "key");
    bool keyed = json_is_string(ka) && json_is_string(kb);
    if (keyed ? json_equal(ka, kb)
              : same_json(json_object_get(a, "constructor"), json_object_get(b, "constructor")) &&
                    same_json(json_object_get(a, "constructor_sha256"),
                              json_object_get(b, "constructor_sha256")) &&
                    json_equal(ka, kb))
        return;
    const json_t *ia = json_object_get(a, "identity"), *ib = json_object_get(b, "identity");
    if (keyed && json_is_object(ia) && json_is_object(ib) && diff_identity(d, ia, ib) > 0)
        return;
    char va[96], vb[96];
    identity_brief(a, va, sizeof va);
    identity_brief(b, vb, sizeof vb);
    diff_add(d, "constructor: loaded %s, asked %s", va, vb);
}

void ms__spec_diff(const ms__spec *a, const ms__spec *b, char *buf, size_t buflen)
{
    diff_text d = {buf, buflen, 0};
    if (buflen == 0)
        return;
    buf[0] = '\0';
    json_t *ja = ms__spec_to_json(a), *jb = ms__spec_to_json(b);
    if (ja == NULL || jb == NULL) {
        diff_add(&d, "(out of memory comparing the specs)");
        goto done;
    }
    const char *field;
    json_t *va;
    json_object_foreach(ja, field, va)
    {
        const json_t *vb = json_object_get(jb, field);
        if (strcmp(field, "python") == 0 || (vb != NULL && json_equal(va, vb)))
            continue;
        /* Long enough for a path: the values are what the reader compares. */
        char ta[DIFF_VALUE_MAX + 1], tb[DIFF_VALUE_MAX + 1] = "(none)";
        value_text(va, ta, sizeof ta, DIFF_VALUE_MAX);
        if (vb != NULL)
            value_text(vb, tb, sizeof tb, DIFF_VALUE_MAX);
        diff_add(&d, "%s: loaded %s, asked %s", field, ta, tb);
    }
    json_t *pa = json_object_get(ja, "python"), *pb = json_object_get(jb, "python");
    if (pa != NULL && pb != NULL)
        diff_python(&d, pa, pb);
    else if ((pa == NULL) != (pb == NULL))
        diff_add(&d, "python: loaded %s, asked %s", pa != NULL ? "an object" : "(none)",
                 pb != NULL ? "an object" : "(none)");
done:
    json_decref(ja);
    json_decref(jb);
}

json_t *ms__spec_to_json_brief(const ms__spec *spec)
{
    json_t *j = ms__spec_to_json(spec);
    json_t *py = j != NULL ? json_object_get(j, "python") : NULL;
    const char *ct = json_string_value(json_object_get(py, "constructor"));
    if (ct != NULL) {
        /* FNV-1a: enough to tell two constructors apart in a message. */
        uint64_t h = fnv1a(ct);
        char brief[96];
        snprintf(brief, sizeof brief, "<pickle: %zu base64 characters, fnv1a %016llx>", strlen(ct),
                 (unsigned long long)h);
        json_object_set_new(py, "constructor", json_string(brief));
    }
    return j;
}

bool ms__spec_equal(const ms__spec *a, const ms__spec *b)
{
    for (size_t i = 0; i < MS__ARRAY_LEN(spec_fields); i++)
        if (!spec_fields[i].same(a, b))
            return false;
    return true;
}

bool ms__spec_field_equal(const ms__spec *a, const ms__spec *b, const char *field)
{
    for (size_t i = 0; i < MS__ARRAY_LEN(spec_fields); i++)
        if (strcmp(field, spec_fields[i].name) == 0)
            return spec_fields[i].same(a, b);
    return false;
}

int ms__spec_run_rows(const ms__spec *spec)
{
    int largest = spec->nbatch_sizes > 0 ? spec->batch_sizes[spec->nbatch_sizes - 1] : 65536;
    return spec->max_batch < largest ? spec->max_batch : largest;
}

void ms__spec_free(ms__spec *spec)
{
    if (spec == NULL)
        return;
    free(spec->weights);
    spec->weights = NULL;
    free(spec->python);
    spec->python = NULL;
    free(spec->python_key);
    spec->python_key = NULL;
    spec->python_ctor_size = 0;
}

int ms__spec_copy(const ms__spec *src, ms__spec *dst)
{
    ms__spec c = *src;
    c.weights = src->weights != NULL ? strdup(src->weights) : NULL;
    c.python = src->python != NULL ? strdup(src->python) : NULL;
    c.python_key = src->python_key != NULL ? strdup(src->python_key) : NULL;
    if ((src->weights != NULL && c.weights == NULL) || (src->python != NULL && c.python == NULL) ||
        (src->python_key != NULL && c.python_key == NULL)) {
        ms__spec_free(&c);
        return MS_E_NOMEM;
    }
    *dst = c;
    return 0;
}
