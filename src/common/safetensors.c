/* safetensors files: the framing (8 bytes of header length) by hand, the header with jansson. */
#include "safetensors.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtype.h"
#include "modelshare.h"
#include "util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* A dtype as the format names it: those modelshare knows come from its dtype table (dtype.h),
 * the others are kept with dtype 0 (their size is still known, so their byte ranges are checked
 * all the same). */
typedef struct st_dtype {
    const char *name;
    int dtype;
    unsigned bits;
} st_dtype;

/* The format's dtypes that are not ms_dtypes. */
static const st_dtype st_foreign[] = {
    {"U16", 0, 16},    {"U32", 0, 32},    {"U64", 0, 64},    {"F8_E5M2", 0, 8}, {"F8_E4M3", 0, 8},
    {"F8_E8M0", 0, 8}, {"F6_E2M3", 0, 6}, {"F6_E3M2", 0, 6}, {"F4", 0, 4},      {"C64", 0, 64},
};

/* Fills *out for the format's dtype name; false when the format has no such dtype. */
static bool st_dtype_find(const char *name, st_dtype *out)
{
    int dtype = ms__dtype_from_st(name);
    if (dtype != 0) {
        const ms__dtype_info *d = ms__dtype_info_of(dtype);
        *out = (st_dtype){d->st, dtype, (unsigned)(d->size * 8)};
        return true;
    }
    for (size_t i = 0; i < MS__ARRAY_LEN(st_foreign); i++)
        if (strcmp(st_foreign[i].name, name) == 0) {
            *out = st_foreign[i];
            return true;
        }
    return false;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int check_metadata(const json_t *meta, char *err, size_t errlen)
{
    if (!json_is_object(meta))
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "corrupt safetensors header: \"__metadata__\" must be an object of "
                        "strings, got %s",
                        ms__json_kind(meta));
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val)
    {
        if (!json_is_string(val))
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "corrupt safetensors header: \"__metadata__\" entry \"%s\" must be a "
                            "string, got %s",
                            key, ms__json_kind(val));
    }
    return 0;
}

#define ST_CORRUPT "corrupt safetensors header: tensor \"%s\": "

/* The entry's "dtype": *dt. */
static int entry_dtype(const char *name, const json_t *val, st_dtype *dt, char *err, size_t errlen)
{
    const json_t *jd = json_object_get(val, "dtype");
    if (!json_is_string(jd))
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        ST_CORRUPT "expected \"dtype\" to be a string like \"F32\", got %s", name,
                        jd ? ms__json_kind(jd) : "nothing");
    if (!st_dtype_find(json_string_value(jd), dt)) {
        char known[128];
        ms__dtype_list(MS__DTYPE_ST, "", ", ", known, sizeof known);
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        ST_CORRUPT "unknown dtype \"%.32s\" (expected one of %s, ...)", name,
                        json_string_value(jd), known);
    }
    return 0;
}

/* The entry's "shape": t->rank and t->shape. */
static int entry_shape(const char *name, const json_t *val, ms__st_tensor *t, char *err,
                       size_t errlen)
{
    const json_t *js = json_object_get(val, "shape");
    if (!json_is_array(js))
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        ST_CORRUPT "expected \"shape\" to be an array of integers, got %s", name,
                        js ? ms__json_kind(js) : "nothing");
    size_t rank = json_array_size(js);
    if (rank > 8)
        return ms__fail(err, errlen, MS_E_WEIGHTS, ST_CORRUPT "rank %zu is over the limit of 8",
                        name, rank);
    t->rank = (int)rank;
    for (size_t i = 0; i < rank; i++) {
        const json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            ST_CORRUPT "shape[%zu] must be an integer >= 0, got %s", name, i,
                            json_is_integer(d) ? "a negative integer" : ms__json_kind(d));
        t->shape[i] = (int64_t)json_integer_value(d);
    }
    return 0;
}

/* The entry's "data_offsets": t->begin and t->end. */
static int entry_offsets(const char *name, const json_t *val, ms__st_tensor *t, char *err,
                         size_t errlen)
{
    const json_t *jo = json_object_get(val, "data_offsets");
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)) || json_integer_value(json_array_get(jo, 0)) < 0 ||
        json_integer_value(json_array_get(jo, 1)) < 0)
        return ms__fail(
            err, errlen, MS_E_WEIGHTS,
            ST_CORRUPT "expected \"data_offsets\" to be [begin, end], two integers >= 0", name);
    t->begin = (uint64_t)json_integer_value(json_array_get(jo, 0));
    t->end = (uint64_t)json_integer_value(json_array_get(jo, 1));
    return 0;
}

/* Checks that t's byte range holds exactly its shape of dt and lies in the data section. */
static int entry_range(const char *name, const st_dtype *dt, const ms__st_tensor *t,
                       uint64_t data_len, char *err, size_t errlen)
{
    char shape[160];
    ms__shape_str(t->rank, t->shape, shape, sizeof shape);
    size_t numel, bits;
    if (!ms__shape_numel(t->rank, t->shape, &numel) || ms__mul_overflow(numel, dt->bits, &bits))
        return ms__fail(err, errlen, MS_E_WEIGHTS, ST_CORRUPT "shape %s is too large", name, shape);
    if (bits % 8)
        return ms__fail(err, errlen, MS_E_WEIGHTS, ST_CORRUPT "%s %s does not fill whole bytes",
                        name, dt->name, shape);
    uint64_t bytes = bits / 8;
    if (t->end < t->begin)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        ST_CORRUPT "data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                        name, t->begin, t->end);
    if (t->end - t->begin != bytes)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        ST_CORRUPT "data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                                   " bytes, expected %" PRIu64 " (%s %s)",
                        name, t->begin, t->end, t->end - t->begin, bytes, dt->name, shape);
    if (t->end > data_len)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "corrupt safetensors file: tensor \"%s\": data_offsets [%" PRIu64
                        ", %" PRIu64 "] reach beyond the data section (%" PRIu64
                        " bytes; file truncated?)",
                        name, t->begin, t->end, data_len);
    return 0;
}

/* Reads one tensor entry into *t (name not set). */
static int parse_entry(const char *name, const json_t *val, uint64_t data_len, ms__st_tensor *t,
                       char *err, size_t errlen)
{
    if (!json_is_object(val))
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        ST_CORRUPT "expected an object with dtype, shape and data_offsets, got %s",
                        name, ms__json_kind(val));
    st_dtype dt = {0};
    int rc = entry_dtype(name, val, &dt, err, errlen);
    if (rc == 0)
        rc = entry_shape(name, val, t, err, errlen);
    if (rc != 0)
        return rc;
    t->dtype = dt.dtype;
    rc = entry_offsets(name, val, t, err, errlen);
    if (rc != 0)
        return rc;
    return entry_range(name, &dt, t, data_len, err, errlen);
}

/* The framing: checks the arguments and the 8-byte header length; *n is that length. */
static int st_frame(const uint8_t *buf, size_t len, uint64_t file_size, uint64_t *n, char *err,
                    size_t errlen)
{
    if (len > file_size)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "ms__st_parse: %zu bytes given for a file of %" PRIu64 " bytes", len,
                        file_size);
    if (file_size < 8)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "not a safetensors file: %" PRIu64
                        " bytes, expected at least 8 (the header length)",
                        file_size);
    if (len < 8)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "ms__st_parse: expected at least the first 8 bytes, got %zu", len);
    *n = le64(buf);
    if (*n > file_size - 8)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "not a safetensors file: header length %" PRIu64
                        " is larger than the file (%" PRIu64 " bytes)",
                        *n, file_size);
    if (*n > MS__ST_HEADER_MAX)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "not a safetensors file: header length %" PRIu64
                        " is over the limit of %u bytes",
                        *n, MS__ST_HEADER_MAX);
    if (len - 8 < *n)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "ms__st_parse: expected the whole header (%" PRIu64 " bytes), got %zu",
                        *n + 8, len);
    return 0;
}

/* The header's JSON: *root, an object of at most MS__ST_TENSORS_MAX tensors (owned by the caller
 * on success). */
static int st_header(const uint8_t *buf, uint64_t n, json_t **root, char *err, size_t errlen)
{
    json_error_t je;
    json_t *r = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!r)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "not a safetensors file: the header is not JSON (%s, at byte %d of %" PRIu64
                        ")",
                        je.text, je.position, n);
    int rc = 0;
    size_t cap = json_object_size(r);
    if (!json_is_object(r))
        rc = ms__fail(err, errlen, MS_E_WEIGHTS,
                      "not a safetensors file: expected the header to be a JSON object, got %s",
                      ms__json_kind(r));
    else if (cap > MS__ST_TENSORS_MAX + 1 ||
             (cap == MS__ST_TENSORS_MAX + 1 && !json_object_get(r, "__metadata__")))
        rc = ms__fail(err, errlen, MS_E_WEIGHTS,
                      "safetensors header lists %zu tensors, over the limit of %u", cap,
                      MS__ST_TENSORS_MAX);
    if (rc != 0) {
        json_decref(r);
        return rc;
    }
    *root = r;
    return 0;
}

static void st_tensors_free(ms__st_tensor *tensors, size_t count)
{
    for (size_t i = 0; tensors != NULL && i < count; i++)
        free(tensors[i].name);
    free(tensors);
}

/* Every entry of root into f->tensors (f->ntensors of them; owned by f on success). */
static int st_entries(const json_t *root, uint64_t data_len, ms__st_file *f, char *err,
                      size_t errlen)
{
    size_t cap = json_object_size(root), count = 0;
    ms__st_tensor *tensors = calloc(cap ? cap : 1, sizeof *tensors);
    if (!tensors)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for %zu tensors", cap);
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            rc = check_metadata(val, err, errlen);
            if (rc < 0)
                break;
            continue;
        }
        ms__st_tensor *t = &tensors[count];
        rc = parse_entry(key, val, data_len, t, err, errlen);
        if (rc < 0)
            break;
        t->name = strdup(key);
        if (!t->name) {
            rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a tensor name");
            break;
        }
        count++;
    }
    if (rc < 0) {
        st_tensors_free(tensors, count);
        return rc;
    }
    f->tensors = tensors;
    f->ntensors = count;
    return 0;
}

int ms__st_parse(const uint8_t *buf, size_t len, uint64_t file_size, ms__st_file *out, char *err,
                 size_t errlen)
{
    if (!out || (!buf && len))
        return ms__fail(err, errlen, MS_E_INVAL, "ms__st_parse: expected a buffer and an output");
    uint64_t n = 0;
    int rc = st_frame(buf, len, file_size, &n, err, errlen);
    if (rc != 0)
        return rc;
    json_t *root = NULL;
    rc = st_header(buf, n, &root, err, errlen);
    if (rc != 0)
        return rc;
    ms__st_file f = {.data_start = 8 + n, .data_len = file_size - 8 - n};
    rc = st_entries(root, f.data_len, &f, err, errlen);
    json_decref(root);
    if (rc == 0)
        *out = f;
    return rc;
}

void ms__st_free(ms__st_file *f)
{
    if (!f)
        return;
    st_tensors_free(f->tensors, f->ntensors);
    memset(f, 0, sizeof *f);
}

const ms__st_tensor *ms__st_find(const ms__st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (size_t i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------- */

static json_t *writer_header(const ms__st_out_tensor *tensors, size_t n, char *err, size_t errlen,
                             int *rc)
{
    json_t *root = json_object();
    if (!root) {
        *rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory for the safetensors header");
        return NULL;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const ms__st_out_tensor *t = &tensors[i];
        size_t numel, bytes;
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
            *rc = ms__fail(err, errlen, MS_E_INVAL,
                           "tensor %zu: expected a non-empty name other than \"__metadata__\"", i);
            goto fail;
        }
        if (json_object_get(root, t->name)) {
            *rc = ms__fail(err, errlen, MS_E_INVAL, "tensor \"%s\" is given twice", t->name);
            goto fail;
        }
        if (t->rank < 0 || t->rank > 8 || !ms__shape_numel(t->rank, t->shape, &numel) ||
            ms__mul_overflow(numel, sizeof(float), &bytes) || (numel && !t->data)) {
            *rc = ms__fail(err, errlen, MS_E_INVAL,
                           "tensor \"%s\": expected rank 0..8, dimensions >= 0 and data", t->name);
            goto fail;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < t->rank; d++)
            if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) < 0) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *entry =
            shape ? json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                              "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes))
                  : NULL;
        if (!entry || json_object_set_new(root, t->name, entry) < 0) {
            *rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory for the safetensors header");
            goto fail;
        }
        offset += bytes;
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}

int ms__st_write_f32(const char *path, const ms__st_out_tensor *tensors, size_t n, char *err,
                     size_t errlen)
{
    if (!path || (!tensors && n))
        return ms__fail(err, errlen, MS_E_INVAL, "ms__st_write_f32: expected a path and tensors");
    int rc = 0;
    json_t *root = writer_header(tensors, n, err, errlen, &rc);
    if (!root)
        return rc;
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for the safetensors header");
    size_t hlen = strlen(text);
    size_t padded = (hlen + 7) & ~(size_t)7;

    FILE *f = NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !(f = fdopen(fd, "wb"))) {
        rc = ms__fail(err, errlen, MS_E_IO, "cannot create \"%s\": %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(text);
        return rc;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(text, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < n; i++) {
        size_t numel;
        ms__shape_numel(tensors[i].rank, tensors[i].shape, &numel);
        ok = numel == 0 || fwrite(tensors[i].data, sizeof(float), numel, f) == numel;
    }
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    free(text);
    if (!ok) {
        unlink(path);
        return ms__fail(err, errlen, MS_E_IO, "cannot write \"%s\": %s", path, strerror(saved));
    }
    return 0;
}
