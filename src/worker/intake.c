/*
 * Ring intake: which clients published (the door's hints), and one request read from a client's
 * ring. A client controls what it writes in its arena, nothing else: every index is
 * bounds-checked, every request is copied out of shared memory and decoded (ms__req_decode)
 * before any byte of it is used, and any error is answered to that client only.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "serve.h"
#include "../common/log.h"
#include "../common/util.h"
#include "modelshare.h"

void ms__intake_collect(ms__server *s)
{
    ms__door *d = s->w->door;
    if (atomic_load_explicit(&d->scan_all, memory_order_relaxed) &&
        atomic_exchange(&d->scan_all, 0))
        for (size_t i = 0; i < s->n; i++)
            ms__client_activate(s, s->clients[i]);
    for (unsigned w = 0; w < MS__DOOR_HINTS / 64; w++) {
        /* A bit set after this plain look stays set for the next one, which the bell brings. */
        if (atomic_load_explicit(&d->hints[w], memory_order_relaxed) == 0)
            continue;
        for (uint64_t bits = atomic_exchange(&d->hints[w], 0); bits != 0; bits &= bits - 1) {
            ms__client *c = s->by_hint[w * 64 + (unsigned)__builtin_ctzll(bits)];
            if (c != NULL)
                ms__client_activate(s, c);
        }
    }
}

/* The client broke its own ring (its tail ran more than MS__RING_SLOTS ahead): answers whatever
 * it has submitted, and starts again from where its tail stands. */
static void reset_ring(ms__server *s, ms__client *c, uint32_t tail)
{
    ms__log_warn_limited(
        "model \"%s\": lease %lld published %u entries past %u slots: resetting its "
        "ring",
        s->w->tag, (long long)c->lease, tail - c->head, MS__RING_SLOTS);
    for (unsigned i = 0; i < MS__RING_SLOTS; i++) {
        ms__slot *sl = ms__slot_of(c->base, c->ring, i);
        if (atomic_load(&sl->state) == MS__SLOT_SUBMITTED)
            ms__complete_error(s, c, i, sl->req.id, MS_E_PROTOCOL,
                               "the request ring's tail ran more than 64 entries ahead of the "
                               "worker: expected at most 64 requests in flight");
    }
    c->head = tail;
}

/* t's tensor views from its decoded request: the input in place in the client's arena. */
static void view_input(const ms__client *c, ms__taken *t)
{
    memset(&t->in, 0, sizeof t->in);
    memset(&t->out, 0, sizeof t->out);
    t->in.dtype = (int)t->req.dtype;
    t->in.rank = (int)t->req.rank;
    for (int i = 0; i < t->in.rank; i++)
        t->in.shape[i] = t->req.shape[i];
    const char *base = t->req.in_arena == 0 ? c->base : c->link_base[t->req.in_arena - 1];
    t->in.data = (char *)base + t->req.in_off;
    t->in.nbytes = (size_t)t->req.in_len;
}

/* What the backend will answer to t: for a method call, known after the call (the backend must
 * have methods); for a backend that describes its output by running, known after the run; else
 * the backend's output_for, which must describe a sound output. Returns 0 or an error (err). */
static int describe_output(ms__server *s, ms__taken *t, char *err, size_t errlen)
{
    const ms__backend_ops *be = s->w->backend;
    if (ms__is_call(t)) {
        if (be->call == NULL)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "the %s backend has no methods: expected a tensor to run, got a "
                            "method call",
                            be->name);
        return 0;
    }
    if (ms__is_multi(t)) {
        if (be->run_multi == NULL)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "the %s backend takes one tensor and gives one: expected a request "
                            "of one tensor (ms_infer), got one of several named tensors",
                            be->name);
        return 0;
    }
    if (be->run_dynamic != NULL)
        return 0;
    int r = be->output_for(s->w->state, &t->in, &t->out, err, errlen);
    if (r == 0 &&
        (t->out.rank < 0 || t->out.rank > MS_MAX_RANK || ms_dtype_size(t->out.dtype) == 0))
        return ms__fail(err, errlen, MS_E_BACKEND, "the backend described an invalid output");
    return r;
}

/* Copies the request record of slot e out of shared memory and checks it: decoded, in time, and
 * with an output the backend can describe. Returns 0, MS__TAKE_ANSWERED when it was answered
 * here (its output does not fit its room), or an error for the caller to answer (err). */
static int read_request(ms__server *s, ms__client *c, unsigned e, int64_t now, ms__taken *t,
                        char *err, size_t errlen)
{
    ms__slot *sl = ms__slot_of(c->base, c->ring, e);
    union {
        ms__req req;
        char bytes[sizeof(ms__req)];
    } raw;
    memcpy(&raw, &sl->req, sizeof raw);
    int r = ms__req_decode(&raw, sizeof raw, c->capacity, c->link_cap, &t->req, err, errlen);
    if (r == 0)
        r = ms__links_check(c, &t->req, err, errlen);
    if (r < 0) {
        t->req.id = raw.req.id;
        return r;
    }
    if (t->req.deadline_ns != 0 && now > t->req.deadline_ns)
        return ms__fail(err, errlen, MS_E_TIMEOUT,
                        "the request's timeout passed before the worker took it");
    view_input(c, t);
    r = describe_output(s, t, err, errlen);
    if (r < 0)
        return r;
    if (ms__is_multi(t)) {
        r = ms__multi_intake(c, t, err, errlen);
        if (r == MS__MULTI_WAIT && !ms__links_wait_once(s, c))
            r = ms__fail(err, errlen, MS_E_PROTOCOL,
                         "a tensor of the request names a linked arena that is not linked");
        return r;
    }
    if (!ms__is_call(t) && s->w->backend->run_dynamic == NULL && t->out.nbytes > t->req.out_cap) {
        c->head++;
        ms__complete_too_large(s, c, e, &t->req, t->out.nbytes);
        return MS__TAKE_ANSWERED;
    }
    return 0;
}

int ms__intake_peek(ms__server *s, ms__client *c, int64_t now, ms__taken *t)
{
    char err[MS__ERRLEN];
    if (s->pool != NULL)
        (void)atomic_load_explicit(&c->answered, memory_order_acquire); /* serve.h */
    uint32_t tail = atomic_load_explicit(&c->rg->tail, memory_order_acquire);
    int pending = ms__ring_pending(c->head, tail);
    if (pending == 0)
        return MS__TAKE_NONE;
    if (pending < 0) {
        reset_ring(s, c, tail);
        return MS__TAKE_ANSWERED;
    }
    uint32_t e =
        atomic_load_explicit(&c->rg->entries[c->head % MS__RING_SLOTS], memory_order_relaxed);
    if (e >= MS__RING_SLOTS) {
        /* No slot to answer in: skip it. The client's own wait will time out. */
        ms__log_warn_limited("model \"%s\": lease %lld published slot %u, expected 0 to %u",
                             s->w->tag, (long long)c->lease, e, MS__RING_SLOTS - 1);
        c->head++;
        ms__stats_error(s->w->stats, MS_E_PROTOCOL);
        return MS__TAKE_ANSWERED;
    }
    if (atomic_load_explicit(&ms__slot_of(c->base, c->ring, e)->gen, memory_order_relaxed) !=
        s->gen) {
        /* Sent to a worker of this door that died: the client fails it itself and may reuse
         * the slot at any time. Never touch it (ring.h). */
        c->head++;
        ms__door_done(s->w->door);
        return MS__TAKE_ANSWERED;
    }
    if (ms__links_await(s, c, ms__slot_of(c->base, c->ring, e)))
        return MS__TAKE_NONE;
    int r = read_request(s, c, e, now, t, err, sizeof err);
    if (r == MS__TAKE_ANSWERED)
        return r;
    if (r == MS__MULTI_WAIT) /* left in the ring until the control socket was read */
        return MS__TAKE_NONE;
    if (r < 0) {
        c->head++;
        ms__complete_error(s, c, e, t->req.id, r, err);
        return MS__TAKE_ANSWERED;
    }
    t->c = c;
    t->slot = e;
    t->object = false;
    t->submit_ns =
        atomic_load_explicit(&ms__slot_of(c->base, c->ring, e)->submit_ns, memory_order_relaxed);
    if (!ms__is_multi(t)) /* a multi request's rows: ms__multi_intake */
        t->rows = ms__is_call(t) ? 1 : t->in.rank >= 1 ? t->in.shape[0] : 1;
    t->out.data = (char *)c->base + t->req.out_off;
    return MS__TAKE_READY;
}
