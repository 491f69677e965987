/* Pure decoders of the data plane's request and response records (records.h). Every field a peer
 * controls is checked before anyone uses it to index an arena. */
#include "records.h"

#include <string.h>

#include "arena.h"
#include "errors.h"
#include "modelshare.h"
#include "util.h"

/* Checks rank and dims (dims past the rank must be 0) and computes the byte size. */
static int check_shape(const char *what, uint32_t dtype, uint32_t rank, const int64_t *shape,
                       size_t *nbytes, char *err, size_t errlen)
{
    if (rank > MS_MAX_RANK)
        return ms__fail(err, errlen, MS_E_SHAPE, "%s: expected a rank from 0 to %d, got %u", what,
                        MS_MAX_RANK, rank);
    for (uint32_t i = 0; i < rank; i++)
        if (shape[i] < 0)
            return ms__fail(err, errlen, MS_E_SHAPE,
                            "%s: expected every dimension >= 0, dimension %u is %lld", what, i,
                            (long long)shape[i]);
    for (uint32_t i = rank; i < 8; i++)
        if (shape[i] != 0)
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "%s: expected 0 in unused dimension %u (rank %u), got %lld", what, i,
                            rank, (long long)shape[i]);
    size_t numel, n;
    if (!ms__shape_numel((int)rank, shape, &numel) ||
        ms__mul_overflow(numel, ms_dtype_size((int)dtype), &n)) {
        char s[160];
        ms__shape_str((int)rank, shape, s, sizeof s);
        return ms__fail(err, errlen, MS_E_TOO_LARGE, "%s: shape %s of %s overflows the byte size",
                        what, s, ms_dtype_name((int)dtype));
    }
    *nbytes = n;
    return 0;
}

/* A tensor's dtype, shape and byte length agree ("input" with in_len, "output" with out_len). */
static int check_tensor(const char *what, const char *len_name, uint32_t dtype, uint32_t rank,
                        const int64_t *shape, uint64_t len, char *err, size_t errlen)
{
    if (ms_dtype_size((int)dtype) == 0)
        return ms__fail(err, errlen, MS_E_DTYPE,
                        "expected an %s dtype from %d to %d (float32 ... bool), got %u", what,
                        MS_FLOAT32, MS_BOOL, dtype);
    size_t nbytes = 0;
    int rc = check_shape(what, dtype, rank, shape, &nbytes, err, errlen);
    if (rc != 0)
        return rc;
    if (len != nbytes) {
        char s[160];
        ms__shape_str((int)rank, shape, s, sizeof s);
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected an %s of %zu bytes for %s %s, got %s %llu", what, nbytes,
                        ms_dtype_name((int)dtype), s, len_name, (unsigned long long)len);
    }
    return 0;
}

/* [off, off + len) inside [MS__ARENA_DATA, cap), aligned to align. */
static int check_range(const char *what, uint64_t off, uint64_t len, uint64_t cap, size_t align,
                       char *err, size_t errlen)
{
    if (len > cap - MS__ARENA_DATA)
        return ms__fail(err, errlen, MS_E_TOO_LARGE,
                        "%s of %llu bytes: expected at most the arena's %llu bytes of room", what,
                        (unsigned long long)len, (unsigned long long)(cap - MS__ARENA_DATA));
    if (off < MS__ARENA_DATA || off > cap || len > cap - off)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "%s [%llu, +%llu): expected a range inside the arena's tensor space "
                        "[%llu, %llu)",
                        what, (unsigned long long)off, (unsigned long long)len,
                        (unsigned long long)MS__ARENA_DATA, (unsigned long long)cap);
    if (align > 1 && off % align != 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "%s at offset %llu: expected an offset aligned to %zu bytes", what,
                        (unsigned long long)off, align);
    return 0;
}

/* The record's kind: magic, flags, and a method call's input. */
static int check_kind(const ms__req *r, char *err, size_t errlen)
{
    if (r->magic != MS__REQ_MAGIC)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected request magic 0x%08x, got 0x%08x",
                        MS__REQ_MAGIC, r->magic);
    if ((r->flags & ~MS__REQ_FLAGS_KNOWN) != 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected request flags 0 or bits of 0x%x (a method call, an object "
                        "answer, an own input, several tensors), got 0x%x",
                        MS__REQ_FLAGS_KNOWN, r->flags);
    if ((r->flags & MS__REQ_CALL) && (r->dtype != MS_UINT8 || r->rank != 1))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "a method call: expected a uint8 input of rank 1, got dtype %u rank %u",
                        r->dtype, r->rank);
    if ((r->flags & MS__REQ_MULTI) &&
        ((r->flags & MS__REQ_CALL) || r->dtype != MS_UINT8 || r->rank != 1 ||
         r->in_len < MS__REQ_MULTI_MIN || r->in_len > MS__REQ_MULTI_MAX))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "several tensors: expected a uint8 manifest of rank 1 and %u to %u bytes, "
                        "not a method call, got dtype %u rank %u, %llu bytes, flags 0x%x",
                        MS__REQ_MULTI_MIN, (unsigned)MS__REQ_MULTI_MAX, r->dtype, r->rank,
                        (unsigned long long)r->in_len, r->flags);
    return 0;
}

/* A capacity within the arena sizes (what the worker mapped). */
static int check_capacity(const char *what, uint64_t cap, char *err, size_t errlen)
{
    if (cap < MS__ARENA_MIN || cap > MS__ARENA_MAX)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected %s of %llu to %llu bytes, got %llu",
                        what, (unsigned long long)MS__ARENA_MIN, (unsigned long long)MS__ARENA_MAX,
                        (unsigned long long)cap);
    return 0;
}

/* The capacity of the arena the input lies in (*in_cap): the own one, or a linked one. */
static int input_arena(const ms__req *r, uint64_t arena_capacity, const uint64_t *linked,
                       uint64_t *in_cap, char *err, size_t errlen)
{
    if (r->reserved != 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected 0 in the reserved field, got %u",
                        r->reserved);
    if (r->in_arena > MS__ARENA_LINKS)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "input arena %u: expected 0 (the lease's own) to %u (a linked one)",
                        r->in_arena, MS__ARENA_LINKS);
    if (r->in_arena == 0) {
        *in_cap = arena_capacity;
        if (r->in_link != 0)
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "input in the lease's own arena: expected in_link 0, got %llu",
                            (unsigned long long)r->in_link);
        return 0;
    }
    if (linked == NULL || linked[r->in_arena - 1] == 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "input arena %u: expected an arena linked to this lease, none is",
                        r->in_arena);
    *in_cap = linked[r->in_arena - 1];
    return check_capacity("a linked arena", *in_cap, err, errlen);
}

/* Where the input and the output room lie: inside their arenas, aligned, apart. */
static int check_places(const ms__req *r, uint64_t arena_capacity, const uint64_t *linked,
                        size_t esize, char *err, size_t errlen)
{
    uint64_t in_cap = 0;
    int rc = check_capacity("an arena", arena_capacity, err, errlen);
    if (rc == 0)
        rc = input_arena(r, arena_capacity, linked, &in_cap, err, errlen);
    if (rc == 0)
        rc = check_range("input", r->in_off, r->in_len, in_cap, esize, err, errlen);
    if (rc == 0)
        rc = check_range("output room", r->out_off, r->out_cap, arena_capacity, esize, err, errlen);
    if (rc != 0)
        return rc;
    /* Both ranges lie inside the arena, so the ends below cannot overflow. */
    if (r->in_arena == 0 && r->in_len > 0 && r->out_cap > 0 &&
        r->in_off < r->out_off + r->out_cap && r->out_off < r->in_off + r->in_len)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected input [%llu, +%llu) and output room [%llu, +%llu) not to "
                        "overlap",
                        (unsigned long long)r->in_off, (unsigned long long)r->in_len,
                        (unsigned long long)r->out_off, (unsigned long long)r->out_cap);
    return 0;
}

int ms__req_decode(const void *buf, size_t len, uint64_t arena_capacity, const uint64_t *linked,
                   ms__req *out, char *err, size_t errlen)
{
    if (buf == NULL || len != sizeof(ms__req))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a request record of %zu bytes, got %zu bytes", sizeof(ms__req),
                        buf == NULL ? (size_t)0 : len);
    ms__req r;
    memcpy(&r, buf, sizeof r);
    int rc = check_kind(&r, err, errlen);
    if (rc != 0)
        return rc;
    rc = check_tensor("input", "in_len", r.dtype, r.rank, r.shape, r.in_len, err, errlen);
    if (rc != 0)
        return rc;
    rc = check_places(&r, arena_capacity, linked, ms_dtype_size((int)r.dtype), err, errlen);
    if (rc != 0)
        return rc;
    if (r.deadline_ns < 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected a deadline >= 0, got %lld",
                        (long long)r.deadline_ns);
    *out = r;
    return 0;
}

int ms__resp_decode(const void *buf, size_t len, ms__resp *out, char *err, size_t errlen)
{
    if (buf == NULL || len != sizeof(ms__resp))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a response record of %zu bytes, got %zu bytes", sizeof(ms__resp),
                        buf == NULL ? (size_t)0 : len);
    ms__resp r;
    memcpy(&r, buf, sizeof r);
    if (r.magic != MS__RESP_MAGIC)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected response magic 0x%08x, got 0x%08x",
                        MS__RESP_MAGIC, r.magic);
    if (r.status != MS_OK && r.status != MS__RESP_OBJECT && !ms__error_known(r.status))
        return ms__fail(
            err, errlen, MS_E_PROTOCOL,
            "expected response status 0, 1 (an object answer) or an MS_E_* code, got %d",
            (int)r.status);
    if (memchr(r.msg, '\0', sizeof r.msg) == NULL)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a NUL-terminated message of at most %zu bytes in the response",
                        sizeof r.msg - 1);
    if (r.status == MS__RESP_OBJECT && (r.dtype != MS_UINT8 || r.rank != 1))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "an object answer: expected a uint8 output of rank 1, got dtype %u rank %u",
                        r.dtype, r.rank);
    if (r.status >= 0) {
        int rc =
            check_tensor("output", "out_len", r.dtype, r.rank, r.shape, r.out_len, err, errlen);
        if (rc != 0)
            return rc;
    } else if (r.rank > MS_MAX_RANK) {
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a rank from 0 to %d in the response, got %u", MS_MAX_RANK,
                        r.rank);
    }
    *out = r;
    return 0;
}
