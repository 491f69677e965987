/* Fuzzes the data plane's record decoders and the ring's index check. The first byte picks the
 * arena capacity (low bits) and which linked arenas exist (high bits); the rest is the record. An
 * accepted request must only point inside its arenas (the input in its own or a linked one, the
 * output in its own), past their headers, aligned, with input and output apart; an accepted
 * response must describe its output exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/common/records.h"
#include "../../src/common/ring.h"
#include "../../src/common/util.h"

static void check_req(const ms__req *r, uint64_t cap, const uint64_t *linked)
{
    if (r->reserved != 0 || r->in_arena > MS__ARENA_LINKS ||
        (r->in_arena > 0 && linked[r->in_arena - 1] == 0) || (r->in_arena == 0 && r->in_link != 0))
        abort();
    uint64_t in_cap = r->in_arena > 0 ? linked[r->in_arena - 1] : cap;
    size_t es = ms_dtype_size((int)r->dtype), numel;
    if (r->magic != MS__REQ_MAGIC || es == 0 || r->rank > MS_MAX_RANK ||
        (r->flags & ~MS__REQ_FLAGS_KNOWN) != 0)
        abort();
    if ((r->flags & MS__REQ_CALL) && (r->dtype != MS_UINT8 || r->rank != 1))
        abort();
    if (!ms__shape_numel((int)r->rank, r->shape, &numel) || numel * es / es != numel ||
        numel * es != r->in_len)
        abort();
    if (r->in_off < MS__ARENA_DATA || r->in_off > in_cap || r->in_len > in_cap - r->in_off)
        abort();
    if (r->out_off < MS__ARENA_DATA || r->out_off > cap || r->out_cap > cap - r->out_off)
        abort();
    if (r->in_off % es != 0 || r->out_off % es != 0)
        abort();
    if (r->in_arena == 0 && r->in_len > 0 && r->out_cap > 0 &&
        r->in_off < r->out_off + r->out_cap && r->out_off < r->in_off + r->in_len)
        abort();
}

static void check_resp(const ms__resp *r)
{
    if (r->magic != MS__RESP_MAGIC || r->rank > MS_MAX_RANK ||
        memchr(r->msg, '\0', sizeof r->msg) == NULL)
        abort();
    if (r->status == 0) {
        size_t es = ms_dtype_size((int)r->dtype), numel;
        if (es == 0 || !ms__shape_numel((int)r->rank, r->shape, &numel) || numel * es != r->out_len)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t caps[] = {MS__ARENA_MIN, 16ull << 20, MS__ARENA_DEFAULT,
                                    MS__ARENA_MAX, 100,         MS__ARENA_MAX + 1};
    if (size < 1)
        return 0;
    uint64_t cap = caps[(data[0] & 7) % MS__ARRAY_LEN(caps)];
    /* Linked arenas: 1 and 3 when bit 3 is set (3 too large when bit 4 is), 2 always absent. */
    uint64_t linked[MS__ARENA_LINKS] = {0};
    if (data[0] & 8) {
        linked[0] = MS__ARENA_MIN;
        linked[2] = (data[0] & 16) ? MS__ARENA_MAX + 1 : 16ull << 20;
    }
    const uint8_t *rec = data + 1;
    size_t len = size - 1;
    char err[MS__ERRLEN];

    /* Records arrive with any alignment: decode from a copy at an odd address too. */
    uint8_t *copy = malloc(len + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy + 1, rec, len);

    ms__req req;
    if (ms__req_decode(rec, len, cap, linked, &req, err, sizeof err) == 0) {
        check_req(&req, cap, linked);
        ms__req again;
        if (ms__req_decode(copy + 1, len, cap, linked, &again, err, sizeof err) != 0 ||
            memcmp(&req, &again, sizeof req) != 0)
            abort();
    } else if (strnlen(err, sizeof err) == 0) {
        abort();
    }
    ms__resp resp;
    err[0] = '\0';
    if (ms__resp_decode(rec, len, &resp, err, sizeof err) == 0)
        check_resp(&resp);
    else if (strnlen(err, sizeof err) == 0)
        abort();
    /* The ring's indices: the first 8 bytes of the record as a worker's head and a client's tail.
     * What the worker may take never runs past the ring. */
    if (len >= 8) {
        uint32_t head, tail;
        memcpy(&head, rec, 4);
        memcpy(&tail, rec + 4, 4);
        int n = ms__ring_pending(head, tail);
        if (n > (int)MS__RING_SLOTS || n < -1 || (n >= 0 && head + (uint32_t)n != tail))
            abort();
    }
    free(copy);
    return 0;
}
