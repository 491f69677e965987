/* Manifests of several named tensors (manifest.h): the pure decoder, the list check, the encoder.
 * Every field a peer controls is checked before anyone uses it to index an arena. */
#include "manifest.h"

#include <string.h>

#include "arena.h"
#include "modelshare.h"
#include "util.h"

_Static_assert(sizeof(ms__mf_entry) == MS__MF_ENTRY, "manifest entry layout");

int ms__mf_is_text(uint32_t dtype)
{
    return dtype == MS_TEXT_UTF8 || dtype == MS_TEXT_BYTES;
}

size_t ms__mf_align(uint32_t dtype)
{
    return ms__mf_is_text(dtype) ? 8 : ms_dtype_size((int)dtype);
}

static int name_ok(const char *name)
{
    static const char allowed[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-";
    size_t n = strnlen(name, MS__MF_NAME);
    if (n == 0 || n >= MS__MF_NAME || strspn(name, allowed) != n)
        return 0;
    for (size_t i = n; i < MS__MF_NAME; i++)
        if (name[i] != '\0')
            return 0;
    return 1;
}

/* A list entry's item count and its room for the lengths. */
static int check_text(const ms__mf_entry *e, unsigned i, char *err, size_t errlen)
{
    uint64_t items = (uint64_t)e->shape[0];
    if (items > MS__TEXT_ITEMS_MAX)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "list %u (\"%s\"): expected at most %u items, got %llu", i, e->name,
                        MS__TEXT_ITEMS_MAX, (unsigned long long)items);
    if (e->len < 8 + 8 * items)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "list %u (\"%s\") of %llu items: expected at least %llu bytes, got %llu", i,
                        e->name, (unsigned long long)items, (unsigned long long)(8 + 8 * items),
                        (unsigned long long)e->len);
    return 0;
}

/* An entry's dtype, rank and dims, and its byte length. */
static int check_shape(const ms__mf_entry *e, unsigned i, char *err, size_t errlen)
{
    size_t esize = ms__mf_align(e->dtype);
    if (esize == 0)
        return ms__fail(err, errlen, MS_E_DTYPE,
                        "tensor %u (\"%s\"): expected a dtype from %d to %d or a list (%d, %d), "
                        "got %u",
                        i, e->name, MS_FLOAT32, MS_BOOL, MS_TEXT_UTF8, MS_TEXT_BYTES, e->dtype);
    if (e->rank > MS_MAX_RANK || (ms__mf_is_text(e->dtype) && e->rank != 1))
        return ms__fail(err, errlen, MS_E_SHAPE,
                        "tensor %u (\"%s\"): expected a rank from 0 to %d (a list: 1), got %u", i,
                        e->name, MS_MAX_RANK, e->rank);
    for (uint32_t d = 0; d < 8; d++)
        if ((d < e->rank && e->shape[d] < 0) || (d >= e->rank && e->shape[d] != 0))
            return ms__fail(err, errlen, MS_E_SHAPE,
                            "tensor %u (\"%s\"): expected dims >= 0 and 0 past the rank, "
                            "dimension %u is %lld",
                            i, e->name, d, (long long)e->shape[d]);
    if (ms__mf_is_text(e->dtype))
        return check_text(e, i, err, errlen);
    size_t numel, n;
    if (!ms__shape_numel((int)e->rank, e->shape, &numel) || ms__mul_overflow(numel, esize, &n))
        return ms__fail(err, errlen, MS_E_TOO_LARGE, "tensor %u (\"%s\"): its shape overflows", i,
                        e->name);
    if (e->len != n)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u (\"%s\"): expected %zu bytes for its dtype and shape, got %llu",
                        i, e->name, n, (unsigned long long)e->len);
    return 0;
}

/* The entry's range inside its arena's tensor space, aligned. */
static int check_place(const ms__mf_entry *e, unsigned i, const uint64_t *caps, char *err,
                       size_t errlen)
{
    if (e->arena > MS__ARENA_LINKS || caps[e->arena] == 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u (\"%s\"): expected arena 0 (the lease's own) or a linked one, "
                        "got %u",
                        i, e->name, e->arena);
    uint64_t cap = caps[e->arena];
    if (cap < MS__ARENA_MIN || cap > MS__ARENA_MAX)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u: its arena's capacity %llu is "
                        "out of range",
                        i, (unsigned long long)cap);
    if (e->off < MS__ARENA_DATA || e->off > cap || e->len > cap - e->off)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u (\"%s\") [%llu, +%llu): expected a range inside the arena's "
                        "tensor space [%llu, %llu)",
                        i, e->name, (unsigned long long)e->off, (unsigned long long)e->len,
                        (unsigned long long)MS__ARENA_DATA, (unsigned long long)cap);
    if (e->off % ms__mf_align(e->dtype) != 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u (\"%s\") at offset %llu: expected an offset aligned to %zu", i,
                        e->name, (unsigned long long)e->off, ms__mf_align(e->dtype));
    return 0;
}

static int check_entry(const ms__manifest *m, unsigned i, const uint64_t *caps, char *err,
                       size_t errlen)
{
    const ms__mf_entry *e = &m->e[i];
    if (!name_ok(e->name))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u: expected a name of 1 to %d characters of [A-Za-z0-9_.:-], "
                        "NUL-padded",
                        i, MS__MF_NAME - 1);
    for (unsigned k = 0; k < i; k++)
        if (strcmp(m->e[k].name, e->name) == 0)
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "tensor %u: expected unique names, \"%s\" is tensor %u's too", i,
                            e->name, k);
    if ((e->flags & ~MS__MF_OWN) != 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "tensor %u: expected flags 0 or %u (its own copy), got %u", i, MS__MF_OWN,
                        e->flags);
    int r = check_shape(e, i, err, errlen);
    return r != 0 ? r : check_place(e, i, caps, err, errlen);
}

int ms__manifest_decode(const void *buf, size_t len, const uint64_t *caps, ms__manifest *out,
                        char *err, size_t errlen)
{
    ms__manifest m;
    memset(&m, 0, sizeof m);
    if (buf == NULL || len < MS__MF_HEADER)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a manifest of at least %u bytes, got %zu", MS__MF_HEADER,
                        buf == NULL ? (size_t)0 : len);
    memcpy(&m, buf, MS__MF_HEADER);
    if (m.magic != MS__MF_MAGIC)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected manifest magic 0x%08x, got 0x%08x",
                        MS__MF_MAGIC, m.magic);
    if (m.count > MS__MF_MAX)
        return ms__fail(err, errlen, MS_E_LIMIT, "expected at most %d tensors, got %u", MS__MF_MAX,
                        m.count);
    if (len != ms__mf_bytes(m.count))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "a manifest of %u tensors: expected %zu bytes, got %zu", m.count,
                        ms__mf_bytes(m.count), len);
    if (m.form > MS__FORM_LAST || m.reserved != 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a manifest form from 0 to %d and reserved 0, got %u and %u",
                        MS__FORM_LAST, m.form, m.reserved);
    memcpy(m.e, (const char *)buf + MS__MF_HEADER, (size_t)m.count * MS__MF_ENTRY);
    for (unsigned i = 0; i < m.count; i++) {
        int r = check_entry(&m, i, caps, err, errlen);
        if (r != 0)
            return r;
    }
    *out = m;
    return 0;
}

int ms__text_check(const void *bytes, uint64_t len, uint64_t count, char *err, size_t errlen)
{
    uint64_t have;
    if (bytes == NULL || count > MS__TEXT_ITEMS_MAX || len < 8 + 8 * count)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "a list of %llu items: expected at least %llu bytes, got %llu",
                        (unsigned long long)count, (unsigned long long)(8 + 8 * count),
                        (unsigned long long)len);
    memcpy(&have, bytes, 8);
    if (have != count)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "a list: expected %llu items as its manifest says, it says %llu",
                        (unsigned long long)count, (unsigned long long)have);
    uint64_t sum = 0, room = len - 8 - 8 * count;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t n;
        memcpy(&n, (const char *)bytes + 8 + 8 * i, 8);
        if (n > room - sum)
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "a list: item %llu's length %llu runs past its %llu bytes",
                            (unsigned long long)i, (unsigned long long)n, (unsigned long long)room);
        sum += n;
    }
    if (sum != room)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "a list: expected its items to fill its %llu bytes, they fill %llu",
                        (unsigned long long)room, (unsigned long long)sum);
    return 0;
}

void ms__manifest_encode(const ms__manifest *m, void *dst)
{
    memcpy(dst, m, MS__MF_HEADER);
    memcpy((char *)dst + MS__MF_HEADER, m->e, (size_t)m->count * MS__MF_ENTRY);
}
