/* NumPy .npy files: the header dict is a Python literal, parsed here by hand. */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "modelshare.h"
#include "util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host ('=' means '<')"
#endif

/* Largest header dict accepted (numpy's own reader refuses more than 10000 bytes by default). */
#define NPY_HEADER_MAX (1u << 16)

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* The .npy descriptors modelshare reads and writes, for messages: "'<f4', ... or '|b1'". */
static const char *npy_expected(char *buf, size_t buflen)
{
    ms__dtype_list(MS__DTYPE_NPY, "'", " or ", buf, buflen);
    return buf;
}

/* The fixed prefix: magic, version, header length. Sets *off (where the dict begins) and *hlen.
 * Returns 0, MS_E_INVAL; with len too short for the prefix, MS_E_INVAL as "truncated". */
static int npy_prefix(const uint8_t *buf, size_t len, size_t *off, size_t *hlen, char *err,
                      size_t errlen)
{
    if (len < 8 || memcmp(buf, npy_magic, 6) != 0) {
        if (len >= 6 && memcmp(buf, npy_magic, 6) != 0)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "not a .npy file: expected the magic \"\\x93NUMPY\" at the start");
        return ms__fail(err, errlen, MS_E_INVAL,
                        "truncated .npy file: %zu bytes, expected at least 10", len);
    }
    unsigned major = buf[6], minor = buf[7];
    if (major == 1) {
        if (len < 10)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "truncated .npy file: %zu bytes, expected at least 10", len);
        *hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        *off = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "truncated .npy file: %zu bytes, expected at least 12", len);
        uint32_t h = (uint32_t)buf[8] | (uint32_t)buf[9] << 8 | (uint32_t)buf[10] << 16 |
                     (uint32_t)buf[11] << 24;
        *hlen = h;
        *off = 12;
    } else {
        return ms__fail(err, errlen, MS_E_INVAL,
                        "unsupported .npy format version %u.%u (expected 1.0, 2.0 or 3.0)", major,
                        minor);
    }
    if (*hlen > NPY_HEADER_MAX)
        return ms__fail(err, errlen, MS_E_INVAL,
                        ".npy header of %zu bytes is over the limit of %u bytes", *hlen,
                        NPY_HEADER_MAX);
    return 0;
}

/* ---- the dict ----------------------------------------------------------------------------- */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool take(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* What the cursor points at, for messages: up to 16 printable characters, or "the end". */
static const char *here(const cursor *c, char *buf, size_t buflen)
{
    if (c->p >= c->end)
        return "the end of the header";
    size_t n = 0;
    buf[n++] = '"';
    for (const char *q = c->p; q < c->end && n + 2 < buflen && q - c->p < 16; q++)
        buf[n++] = (*q >= 0x20 && *q < 0x7f) ? *q : '?';
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

/* A Python string literal with ' or " quotes and no escapes, copied into out. */
static bool parse_string(cursor *c, char *out, size_t outlen)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= outlen)
            return false;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return false;
    c->p++;
    out[n] = '\0';
    return true;
}

static bool parse_word(cursor *c, const char *word)
{
    skip_ws(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return false;
    c->p += n;
    return true;
}

static int parse_shape(cursor *c, ms__npy_header *h, char *err, size_t errlen)
{
    char at[24];
    if (!take(c, '('))
        return ms__fail(err, errlen, MS_E_INVAL,
                        "malformed .npy header: expected 'shape' to be a tuple like (8, 1024), "
                        "got %s",
                        here(c, at, sizeof at));
    h->rank = 0;
    if (take(c, ')'))
        return 0;
    for (;;) {
        skip_ws(c);
        int64_t v = 0;
        int digits = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (++digits > 18)
                return ms__fail(err, errlen, MS_E_SHAPE,
                                ".npy shape: a dimension has more than 18 digits");
            v = v * 10 + (*c->p++ - '0');
        }
        if (!digits)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "malformed .npy header: expected a dimension (an integer >= 0) in "
                            "'shape', got %s",
                            here(c, at, sizeof at));
        if (c->p < c->end && *c->p == 'L') /* Python 2's long literals */
            c->p++;
        if (h->rank == 8)
            return ms__fail(err, errlen, MS_E_SHAPE,
                            ".npy shape: rank over the limit of 8 dimensions");
        h->shape[h->rank++] = v;
        if (take(c, ')'))
            return 0;
        if (!take(c, ','))
            return ms__fail(err, errlen, MS_E_INVAL,
                            "malformed .npy header: expected ',' or ')' in 'shape', got %s",
                            here(c, at, sizeof at));
        if (take(c, ')'))
            return 0;
    }
}

static int dtype_from_descr(const char *d, int *dtype, char *err, size_t errlen)
{
    char order = d[0], known[128];
    const ms__dtype_info *t =
        order && strchr("<>|=", order) ? ms__dtype_from_npy_code(d + 1) : NULL;
    if (t == NULL)
        return ms__fail(err, errlen, MS_E_DTYPE, "unsupported .npy dtype '%s' (expected %s)", d,
                        npy_expected(known, sizeof known));
    if (order == '>' && t->size != 1)
        return ms__fail(err, errlen, MS_E_DTYPE,
                        "expected a little-endian dtype like '<%s', got '%s'", t->npy + 1, d);
    *dtype = (int)t->dtype;
    return 0;
}

/* What the dict has given so far. */
typedef struct npy_dict {
    bool have_descr, have_order, have_shape, fortran;
    char descr[32];
} npy_dict;

/* The value of 'descr' into d->descr. */
static int dict_descr(cursor *c, npy_dict *d, char *err, size_t errlen)
{
    char at[24], known[128];
    skip_ws(c);
    if (c->p < c->end && *c->p == '[')
        return ms__fail(err, errlen, MS_E_DTYPE,
                        "unsupported .npy dtype: a structured dtype (expected %s)",
                        npy_expected(known, sizeof known));
    if (!parse_string(c, d->descr, sizeof d->descr))
        return ms__fail(err, errlen, MS_E_INVAL,
                        "malformed .npy header: expected 'descr' to be a string like '<f4', got %s",
                        here(c, at, sizeof at));
    d->have_descr = true;
    return 0;
}

/* The value of key, each key once. */
static int dict_value(cursor *c, const char *key, npy_dict *d, ms__npy_header *h, char *err,
                      size_t errlen)
{
    char at[24];
    if (strcmp(key, "descr") == 0 && !d->have_descr)
        return dict_descr(c, d, err, errlen);
    if (strcmp(key, "fortran_order") == 0 && !d->have_order) {
        if (parse_word(c, "True"))
            d->fortran = true;
        else if (!parse_word(c, "False"))
            return ms__fail(err, errlen, MS_E_INVAL,
                            "malformed .npy header: expected 'fortran_order' to be True or "
                            "False, got %s",
                            here(c, at, sizeof at));
        d->have_order = true;
        return 0;
    }
    if (strcmp(key, "shape") == 0 && !d->have_shape) {
        d->have_shape = true;
        return parse_shape(c, h, err, errlen);
    }
    return ms__fail(err, errlen, MS_E_INVAL,
                    "malformed .npy header: unexpected or repeated key '%s' (expected "
                    "'descr', 'fortran_order' and 'shape' once each)",
                    key);
}

/* After the dict: only spaces, every key given, C order; then the dtype. */
static int dict_finish(cursor *c, const npy_dict *d, ms__npy_header *h, char *err, size_t errlen)
{
    char at[24];
    skip_ws(c);
    if (c->p != c->end)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "malformed .npy header: expected only spaces after the dict, got %s",
                        here(c, at, sizeof at));
    if (!d->have_descr || !d->have_order || !d->have_shape)
        return ms__fail(err, errlen, MS_E_INVAL, "malformed .npy header: no '%s' key",
                        !d->have_descr   ? "descr"
                        : !d->have_order ? "fortran_order"
                                         : "shape");
    if (d->fortran)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected an array in C order (fortran_order False), got fortran_order "
                        "True: save np.ascontiguousarray(x)");
    return dtype_from_descr(d->descr, &h->dtype, err, errlen);
}

static int parse_dict(const char *text, size_t len, ms__npy_header *h, char *err, size_t errlen)
{
    cursor c = {text, text + len};
    char at[24], key[32];
    npy_dict d = {0};
    if (!take(&c, '{'))
        return ms__fail(err, errlen, MS_E_INVAL,
                        "malformed .npy header: expected a dict starting with '{', got %s",
                        here(&c, at, sizeof at));
    while (!take(&c, '}')) {
        if (!parse_string(&c, key, sizeof key))
            return ms__fail(err, errlen, MS_E_INVAL,
                            "malformed .npy header: expected a key ('descr', 'fortran_order' or "
                            "'shape') or '}', got %s",
                            here(&c, at, sizeof at));
        if (!take(&c, ':'))
            return ms__fail(err, errlen, MS_E_INVAL,
                            "malformed .npy header: expected ':' after '%s', got %s", key,
                            here(&c, at, sizeof at));
        int rc = dict_value(&c, key, &d, h, err, errlen);
        if (rc < 0)
            return rc;
        if (take(&c, '}'))
            break;
        if (!take(&c, ','))
            return ms__fail(err, errlen, MS_E_INVAL,
                            "malformed .npy header: expected ',' or '}' after '%s', got %s", key,
                            here(&c, at, sizeof at));
    }
    return dict_finish(&c, &d, h, err, errlen);
}

int ms__npy_parse(const uint8_t *buf, size_t len, ms__npy_header *out, char *err, size_t errlen)
{
    if (!out || (!buf && len))
        return ms__fail(err, errlen, MS_E_INVAL, "ms__npy_parse: expected a buffer and an output");
    size_t off, hlen;
    int rc = npy_prefix(buf, len, &off, &hlen, err, errlen);
    if (rc < 0)
        return rc;
    if (len - off < hlen)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "truncated .npy file: the header needs %zu bytes, got %zu", off + hlen,
                        len);
    ms__npy_header h;
    memset(&h, 0, sizeof h);
    rc = parse_dict((const char *)buf + off, hlen, &h, err, errlen);
    if (rc < 0)
        return rc;
    size_t numel;
    char shape[160];
    ms__shape_str(h.rank, h.shape, shape, sizeof shape);
    if (!ms__shape_numel(h.rank, h.shape, &numel) ||
        ms__mul_overflow(numel, ms_dtype_size(h.dtype), &h.nbytes))
        return ms__fail(err, errlen, MS_E_SHAPE, ".npy shape %s is too large", shape);
    h.data_offset = off + hlen;
    *out = h;
    return 0;
}

/* ---- files -------------------------------------------------------------------------------- */

static int read_at(int fd, void *buf, size_t n, off_t at)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, at + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        done += (size_t)r;
    }
    return 0;
}

/* The header of the open file (size bytes) into *h, checked against the file's size. */
static int read_header(int fd, const char *path, uint64_t size, ms__npy_header *h, char *err,
                       size_t errlen)
{
    char msg[MS__ERRLEN];
    uint8_t prefix[12];
    size_t plen = size < sizeof prefix ? (size_t)size : sizeof prefix;
    size_t off, hlen;
    int r = read_at(fd, prefix, plen, 0);
    if (r != 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot read \"%s\": %s", path, strerror(-r));
    int rc = npy_prefix(prefix, plen, &off, &hlen, msg, sizeof msg);
    if (rc < 0)
        return ms__fail(err, errlen, rc, "\"%s\": %s", path, msg);
    if (size < off + hlen)
        return ms__fail(err, errlen, MS_E_IO,
                        "\"%s\" is truncated: its header needs %zu bytes, the file has %" PRIu64,
                        path, off + hlen, size);
    uint8_t *head = malloc(off + hlen);
    if (!head)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a .npy header");
    r = read_at(fd, head, off + hlen, 0);
    if (r != 0)
        rc = ms__fail(err, errlen, MS_E_IO, "cannot read \"%s\": %s", path, strerror(-r));
    else if ((rc = ms__npy_parse(head, off + hlen, h, msg, sizeof msg)) < 0)
        rc = ms__fail(err, errlen, rc, "\"%s\": %s", path, msg);
    free(head);
    if (rc == 0 && size - h->data_offset < h->nbytes)
        rc = ms__fail(err, errlen, MS_E_IO,
                      "\"%s\" is truncated: expected %zu bytes of data after the header, the file "
                      "has %" PRIu64,
                      path, h->nbytes, size - h->data_offset);
    return rc;
}

/* The array's bytes: *data, malloc'd, owned by the caller on success. */
static int read_body(int fd, const char *path, const ms__npy_header *h, void **data, char *err,
                     size_t errlen)
{
    void *body = malloc(h->nbytes ? h->nbytes : 1);
    if (!body)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for %zu bytes of .npy data",
                        h->nbytes);
    int r = read_at(fd, body, h->nbytes, (off_t)h->data_offset);
    if (r != 0) {
        free(body);
        return ms__fail(err, errlen, MS_E_IO, "cannot read \"%s\": %s", path, strerror(-r));
    }
    *data = body;
    return 0;
}

int ms__npy_read(const char *path, ms__npy_header *hdr, void **data, char *err, size_t errlen)
{
    if (!path || !hdr || !data)
        return ms__fail(err, errlen, MS_E_INVAL, "ms__npy_read: expected a path and outputs");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot open \"%s\": %s", path, strerror(errno));
    struct stat st;
    ms__npy_header h;
    int rc;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        rc = ms__fail(err, errlen, MS_E_IO, "\"%s\": expected a regular .npy file", path);
    else
        rc = read_header(fd, path, (uint64_t)st.st_size, &h, err, errlen);
    if (rc == 0)
        rc = read_body(fd, path, &h, data, err, errlen);
    if (rc == 0)
        *hdr = h;
    close(fd);
    return rc;
}

/* The .npy descriptor of dtype ("<f4"); NULL when numpy has none. */
static const char *descr_of(int dtype)
{
    const ms__dtype_info *d = ms__dtype_info_of(dtype);
    return d != NULL ? d->npy : NULL;
}

/* The header's dictionary for rank (0..8) dimensions into header (512 bytes), padded with spaces
 * and a final newline so the data starts at a multiple of 64. Returns its length. */
static size_t npy_header(const char *descr, int rank, const int64_t *shape, char *header)
{
    char dims[8 * 22 + 4];
    size_t n = 0;
    for (int i = 0; i < rank; i++)
        n += (size_t)snprintf(dims + n, sizeof dims - n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (rank == 1)
        snprintf(dims + n, sizeof dims - n, ",");
    if (rank == 0)
        dims[0] = '\0';
    int len = snprintf(header, 512, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                       descr, dims);
    size_t total = (10 + (size_t)len + 1 + 63) & ~(size_t)63;
    size_t hlen = total - 10;
    memset(header + len, ' ', hlen - (size_t)len - 1);
    header[hlen - 1] = '\n';
    return hlen;
}

/* Writes the file: prefix, header and data (removed again when a write fails). */
static int npy_file(const char *path, const uint8_t *prefix, const char *header, size_t hlen,
                    const void *data, size_t nbytes, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        int rc = ms__fail(err, errlen, MS_E_IO, "cannot create \"%s\": %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    bool ok = fwrite(prefix, 1, 10, f) == 10 && fwrite(header, 1, hlen, f) == hlen &&
              (nbytes == 0 || fwrite(data, 1, nbytes, f) == nbytes);
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(path);
        return ms__fail(err, errlen, MS_E_IO, "cannot write \"%s\": %s", path, strerror(saved));
    }
    return 0;
}

int ms__npy_write(const char *path, int dtype, int rank, const int64_t *shape, const void *data,
                  char *err, size_t errlen)
{
    const char *descr = descr_of(dtype);
    if (!descr) {
        char names[128];
        ms__dtype_list(MS__DTYPE_NPY_NAME, "", " or ", names, sizeof names);
        return ms__fail(err, errlen, MS_E_DTYPE, ".npy files hold %s; got %s", names,
                        ms_dtype_name(dtype));
    }
    size_t numel, nbytes;
    if (!path || rank < 0 || rank > 8 || (rank && !shape) ||
        !ms__shape_numel(rank, shape, &numel) ||
        ms__mul_overflow(numel, ms_dtype_size(dtype), &nbytes) || (nbytes && !data))
        return ms__fail(err, errlen, MS_E_INVAL,
                        "ms__npy_write: expected a path, rank 0..8, dimensions >= 0 and data");
    char header[512];
    size_t hlen = npy_header(descr, rank, shape, header);
    uint8_t prefix[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};

    return npy_file(path, prefix, header, hlen, data, nbytes, err, errlen);
}
