/*
 * The worker's serving loop. Every attached client has a ring set in its arena (ring.h); the
 * worker takes requests from all of them, round-robin, into one batch, runs the backend once, and
 * completes each request in its client's slot.
 *
 *   loop:  take a batch  ->  run it  ->  complete  ->  again
 *   idle:  keep looking for spin_ns (a busy model never sleeps), then say "sleeping" on the door
 *          and futex-wait on its bell; a client that publishes a request rings it.
 *
 * Control messages from the daemon (attach, detach) are read without blocking: before every
 * sleep, after every wake-up, and every millisecond while busy. A client's first request rings
 * the bell, so the worker wakes, finds the attach waiting on its control socket, and serves it.
 *
 * A client controls what it writes in its arena, nothing else: every index is bounds-checked,
 * every request is copied out of shared memory and decoded (ms__req_decode) before any byte of
 * it is used, and any error is answered to that client only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"
#include "../common/arena.h"
#include "../common/chan.h"
#include "../common/log.h"
#include "../common/proto.h"
#include "../common/util.h"
#include "modelshare.h"

#define CTRL_POLL_NS 1000000LL     /* read the control socket at least this often while busy */
#define SLEEP_SLICE_NS 100000000LL /* and wake up this often while idle */
#define CATCH_UP_MAX_NS 1000000LL  /* longest wait for the clients of the last batch */

typedef struct client {
    int64_t lease;
    unsigned ring; /* our ring set in its arena */
    int arena_fd;
    void *base;
    uint64_t capacity;
    ms__ring *rg;
    uint32_t head; /* entries taken: ours, never read back from shared memory */
    unsigned hint; /* our bit in the door's hints */
    bool active;   /* in the active list: it published, or its ring was not empty last time */
} client;

/* A request taken from a ring for the batch being built. */
typedef struct taken {
    client *c;
    unsigned slot;
    ms__req req;
    ms__tensor_view in, out; /* out.data: where its output goes in the client's arena */
    int64_t rows;
} taken;

typedef struct server {
    ms__worker *w;
    client **clients; /* dense: [0, n) */
    size_t n;
    client **by_hint; /* MS__DOOR_HINTS entries: the client of each hint bit, or NULL */
    client **active;  /* the clients whose rings are worth a look: [0, nactive) */
    size_t nactive;
    client *last_served; /* the next round-robin pass starts after it */
    ms__reader rd;
    taken *batch;
    size_t nbatch;
    int64_t batch_rows;
    int64_t last_rows, last_run_ns; /* the previous batch: its rows and how long it ran */
    size_t batch_bytes;
    void *stage_in, *stage_out;
    size_t stage_in_cap, stage_out_cap;
} server;

/* Counters in the shared stats page, relaxed: the daemon only reads them for status. */
#define STAT_ADD(s, field, v)                                                                      \
    do {                                                                                           \
        if ((s)->w->stats)                                                                         \
            atomic_fetch_add_explicit(&(s)->w->stats->field, (v), memory_order_relaxed);           \
    } while (0)

/* ---- clients ----------------------------------------------------- */

static client *find(server *s, int64_t lease, size_t *at)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->clients[i]->lease == lease) {
            if (at)
                *at = i;
            return s->clients[i];
        }
    return NULL;
}

static void activate(server *s, client *c)
{
    if (!c->active) {
        c->active = true;
        s->active[s->nactive++] = c;
    }
}

/* Drops the clients marked inactive from the active list, keeping its order. */
static void compact_active(server *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nactive; i++)
        if (s->active[i]->active)
            s->active[k++] = s->active[i];
    s->nactive = k;
}

/* Takes the door's hints: every client that published since the last look becomes active. */
static void collect(server *s)
{
    ms__door *d = s->w->door;
    if (atomic_load_explicit(&d->scan_all, memory_order_relaxed) &&
        atomic_exchange(&d->scan_all, 0))
        for (size_t i = 0; i < s->n; i++)
            activate(s, s->clients[i]);
    for (unsigned w = 0; w < MS__DOOR_HINTS / 64; w++) {
        /* A bit set after this plain look stays set for the next one, which the bell brings. */
        if (atomic_load_explicit(&d->hints[w], memory_order_relaxed) == 0)
            continue;
        for (uint64_t bits = atomic_exchange(&d->hints[w], 0); bits != 0; bits &= bits - 1) {
            client *c = s->by_hint[w * 64 + (unsigned)__builtin_ctzll(bits)];
            if (c != NULL)
                activate(s, c);
        }
    }
}

static void drop_at(server *s, size_t i, const char *why)
{
    client *c = s->clients[i];
    s->clients[i] = s->clients[--s->n];
    if (c->active) {
        c->active = false;
        compact_active(s);
    }
    if (s->last_served == c)
        s->last_served = NULL;
    s->by_hint[c->hint] = NULL;
    ms__arena_unmap(c->base, c->capacity);
    close(c->arena_fd);
    ms__log_debug("model \"%s\": client with lease %lld dropped (%s)", s->w->tag,
                  (long long)c->lease, why);
    free(c);
}

static void attach(server *s, int64_t lease, int64_t ring, int arena_fd)
{
    char err[MS__ERRLEN];
    void *base = NULL;
    uint64_t cap = 0;

    if (s->n >= MS__WORKER_CLIENTS_MAX) {
        ms__log_error("model \"%s\": refusing client with lease %lld: %d clients attached already",
                      s->w->tag, (long long)lease, MS__WORKER_CLIENTS_MAX);
        goto fail;
    }
    if (ring < 0 || ring >= (int64_t)MS__RINGS_MAX) {
        ms__log_error("model \"%s\": refusing lease %lld: ring %lld, expected 0 to %u", s->w->tag,
                      (long long)lease, (long long)ring, MS__RINGS_MAX - 1);
        goto fail;
    }
    if (find(s, lease, NULL) != NULL) {
        ms__log_error("model \"%s\": refusing a second attach of lease %lld", s->w->tag,
                      (long long)lease);
        goto fail;
    }
    int r = ms__arena_map(arena_fd, &base, &cap, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": cannot map the arena of lease %lld: %s", s->w->tag,
                      (long long)lease, err);
        goto fail;
    }
    client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ms__log_error("model \"%s\": out of memory attaching lease %lld", s->w->tag,
                      (long long)lease);
        goto fail;
    }
    c->lease = lease;
    c->ring = (unsigned)ring;
    c->arena_fd = arena_fd;
    c->base = base;
    c->capacity = cap;
    c->rg = ms__ring_of(base, c->ring);
    c->head = 0; /* a fresh arena's ring starts at 0 */
    /* Its hint bit: a free one exists, as clients are fewer than MS__DOOR_HINTS. */
    for (unsigned h = 0; h < MS__DOOR_HINTS; h++)
        if (s->by_hint[h] == NULL) {
            c->hint = h;
            break;
        }
    s->by_hint[c->hint] = c;
    atomic_store(&c->rg->hint, c->hint + 1);
    s->clients[s->n++] = c;
    /* It may have published before we attached it (with scan_all): look at it now. */
    activate(s, c);
    ms__log_debug("model \"%s\": attached lease %lld on ring %u (arena %llu bytes)", s->w->tag,
                  (long long)lease, c->ring, (unsigned long long)cap);
    return;
fail:
    if (base)
        ms__arena_unmap(base, cap);
    close(arena_fd);
}

static void control_msg(server *s, json_t *msg, int *fds, int nfds)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    json_t *lease = json_object_get(msg, "lease");
    json_t *ring = json_object_get(msg, "ring");
    if (op && strcmp(op, "attach") == 0 && json_is_integer(lease) && json_is_integer(ring) &&
        nfds == 1) {
        attach(s, json_integer_value(lease), json_integer_value(ring), fds[0]);
        return;
    }
    if (op && strcmp(op, "detach") == 0 && json_is_integer(lease)) {
        size_t at;
        if (find(s, json_integer_value(lease), &at))
            drop_at(s, at, "detached");
        else
            ms__log_debug("model \"%s\": detach of unknown lease %lld", s->w->tag,
                          (long long)json_integer_value(lease));
    } else {
        ms__log_warn("model \"%s\": ignoring control message op \"%s\" (lease %s, %d fds)",
                     s->w->tag, op ? op : "(none)", json_is_integer(lease) ? "set" : "missing",
                     nfds);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* Reads what the control socket has, without blocking. Returns 1 when the daemon is gone. */
static int control_poll(server *s)
{
    char err[MS__ERRLEN];
    int r = ms__reader_fill(&s->rd, s->w->ctrl_fd, err, sizeof err);
    for (;;) {
        json_t *msg = NULL;
        int fds[MS__FDS_MAX];
        int nfds = 0;
        int q = ms__reader_next(&s->rd, &msg, fds, &nfds, err, sizeof err);
        if (q < 0) {
            ms__log_error("model \"%s\": bad message from the daemon: %s", s->w->tag, err);
            return 1;
        }
        if (msg == NULL)
            break;
        control_msg(s, msg, fds, nfds);
        json_decref(msg);
    }
    if (r < 0) {
        ms__log_error("model \"%s\": control socket: %s", s->w->tag, err);
        return 1;
    }
    if (s->rd.eof) {
        ms__log_info("model \"%s\": the daemon closed the control socket; exiting", s->w->tag);
        return 1;
    }
    return 0;
}

/* ---- completing requests ----------------------------------------- */

static void complete(server *s, client *c, unsigned slot, const ms__resp *resp)
{
    ms__slot *sl = ms__slot_of(c->base, c->ring, slot);
    /* Only the fixed fields and the message's used bytes: a success writes about 100 bytes. */
    memcpy(&sl->resp, resp, offsetof(ms__resp, msg));
    size_t ml = strnlen(resp->msg, sizeof resp->msg - 1);
    memcpy(sl->resp.msg, resp->msg, ml);
    sl->resp.msg[ml] = '\0';
    atomic_store(&sl->state, MS__SLOT_DONE);
    if (atomic_load(&sl->waiting))
        ms__futex_wake(&sl->state, 1);
    /* Never below zero, whatever clients did to the counter. */
    uint32_t v = atomic_load_explicit(&s->w->door->inflight, memory_order_relaxed);
    while (v > 0 &&
           !atomic_compare_exchange_weak_explicit(&s->w->door->inflight, &v, v - 1,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    STAT_ADD(s, requests, 1);
    if (resp->status != 0)
        STAT_ADD(s, errors, 1);
}

static void complete_error(server *s, client *c, unsigned slot, uint64_t id, int code,
                           const char *msg)
{
    ms__resp resp;
    memset(&resp, 0, offsetof(ms__resp, msg));
    resp.magic = MS__RESP_MAGIC;
    resp.status = code;
    resp.id = id;
    /* Messages longer than the record's room are cut, always NUL-terminated. */
    size_t n = strnlen(msg, sizeof resp.msg - 1);
    memcpy(resp.msg, msg, n);
    resp.msg[n] = '\0';
    complete(s, c, slot, &resp);
}

static void complete_ok(server *s, taken *t)
{
    /* Done after its deadline: the caller has given up on it (or is about to), and an answer
     * that comes late must not look like one in time. */
    if (t->req.deadline_ns != 0) {
        int64_t late = ms__now_ns() - t->req.deadline_ns;
        if (late > 0) {
            char msg[128];
            snprintf(msg, sizeof msg,
                     "the request's timeout passed while it ran (%.1f us late); its output was "
                     "discarded",
                     (double)late / 1e3);
            complete_error(s, t->c, t->slot, t->req.id, MS_E_TIMEOUT, msg);
            return;
        }
    }
    ms__resp resp;
    memset(&resp, 0, offsetof(ms__resp, msg));
    resp.magic = MS__RESP_MAGIC;
    resp.id = t->req.id;
    resp.dtype = (uint32_t)t->out.dtype;
    resp.rank = (uint32_t)t->out.rank;
    for (int i = 0; i < t->out.rank; i++)
        resp.shape[i] = t->out.shape[i];
    resp.out_len = t->out.nbytes;
    resp.msg[0] = '\0';
    complete(s, t->c, t->slot, &resp);
}

/* The request's room is too small: it learns how much it needs and asks again. */
static void complete_too_large(server *s, client *c, unsigned slot, const ms__req *req, size_t need)
{
    ms__resp resp;
    memset(&resp, 0, offsetof(ms__resp, msg));
    resp.magic = MS__RESP_MAGIC;
    resp.status = MS_E_TOO_LARGE;
    resp.id = req->id;
    resp.out_len = need;
    snprintf(resp.msg, sizeof resp.msg, "output needs %zu bytes, the request has room for %llu",
             need, (unsigned long long)req->out_cap);
    complete(s, c, slot, &resp);
}

static bool is_call(const taken *t)
{
    return (t->req.flags & MS__REQ_CALL) != 0;
}

/* No request joins the batch any more: full, not batchable, or a method call (never batched). */
static bool batch_closed(const server *s)
{
    return s->nbatch > 0 &&
           (!s->w->batchable || s->batch_rows >= s->w->max_batch || is_call(&s->batch[0]));
}

/* ---- taking requests --------------------------------------------- */

/* Whether t can join the batch whose first request is f: same dtype and rank, same dims after
 * the first, and first dimensions to concatenate along. */
static bool compatible(const taken *f, const taken *t)
{
    if (f->in.dtype != t->in.dtype || f->in.rank != t->in.rank || f->in.rank < 1)
        return false;
    for (int i = 1; i < f->in.rank; i++)
        if (f->in.shape[i] != t->in.shape[i])
            return false;
    return true;
}

enum { TAKE_NONE, TAKE_ANSWERED, TAKE_ADDED, TAKE_DEFERRED };

/* Looks at the next request of c. A bad one is answered at once (TAKE_ANSWERED); one that fits
 * the batch joins it (TAKE_ADDED); one that does not stays in the ring (TAKE_DEFERRED). */
static int take_one(server *s, client *c, int64_t now)
{
    char err[MS__ERRLEN];
    uint32_t tail = atomic_load_explicit(&c->rg->tail, memory_order_acquire);
    int pending = ms__ring_pending(c->head, tail);
    if (pending == 0)
        return TAKE_NONE;
    if (pending < 0) {
        /* The client broke its own ring: answer whatever it has submitted, and start again
         * from where its tail stands. */
        ms__log_warn("model \"%s\": lease %lld published %u entries past %u slots: resetting its "
                     "ring",
                     s->w->tag, (long long)c->lease, tail - c->head, MS__RING_SLOTS);
        for (unsigned i = 0; i < MS__RING_SLOTS; i++) {
            ms__slot *sl = ms__slot_of(c->base, c->ring, i);
            if (atomic_load(&sl->state) == MS__SLOT_SUBMITTED)
                complete_error(s, c, i, sl->req.id, MS_E_PROTOCOL,
                               "the request ring's tail ran more than 64 entries ahead of the "
                               "worker: expected at most 64 requests in flight");
        }
        c->head = tail;
        return TAKE_ANSWERED;
    }
    uint32_t e =
        atomic_load_explicit(&c->rg->entries[c->head % MS__RING_SLOTS], memory_order_relaxed);
    if (e >= MS__RING_SLOTS) {
        /* No slot to answer in: skip it. The client's own wait will time out. */
        ms__log_warn("model \"%s\": lease %lld published slot %u, expected 0 to %u", s->w->tag,
                     (long long)c->lease, e, MS__RING_SLOTS - 1);
        c->head++;
        STAT_ADD(s, errors, 1);
        return TAKE_ANSWERED;
    }
    ms__slot *sl = ms__slot_of(c->base, c->ring, e);
    taken *t = &s->batch[s->nbatch];
    union {
        ms__req req;
        char bytes[sizeof(ms__req)];
    } raw;
    memcpy(&raw, &sl->req, sizeof raw);
    int r = ms__req_decode(&raw, sizeof raw, c->capacity, &t->req, err, sizeof err);
    if (r == 0 && t->req.deadline_ns != 0 && now > t->req.deadline_ns) {
        r = MS_E_TIMEOUT;
        snprintf(err, sizeof err, "the request's timeout passed before the worker took it");
    }
    if (r == 0) {
        const ms__backend_ops *be = s->w->backend;
        memset(&t->in, 0, sizeof t->in);
        memset(&t->out, 0, sizeof t->out);
        t->in.dtype = (int)t->req.dtype;
        t->in.rank = (int)t->req.rank;
        for (int i = 0; i < t->in.rank; i++)
            t->in.shape[i] = t->req.shape[i];
        t->in.data = (char *)c->base + t->req.in_off;
        t->in.nbytes = (size_t)t->req.in_len;
        if (is_call(t)) {
            /* Its output is known after the call. */
            if (be->call == NULL) {
                r = MS_E_INVAL;
                snprintf(err, sizeof err,
                         "the %s backend has no methods: expected a tensor to run, got a method "
                         "call",
                         be->name);
            }
        } else if (be->run_dynamic == NULL) {
            r = be->output_for(s->w->state, &t->in, &t->out, err, sizeof err);
            if (r == 0 && (t->out.rank < 0 || t->out.rank > MS_MAX_RANK ||
                           ms_dtype_size(t->out.dtype) == 0)) {
                r = MS_E_BACKEND;
                snprintf(err, sizeof err, "the backend described an invalid output");
            }
            if (r == 0 && t->out.nbytes > t->req.out_cap) {
                c->head++;
                complete_too_large(s, c, e, &t->req, t->out.nbytes);
                return TAKE_ANSWERED;
            }
        }
    }
    if (r < 0) {
        c->head++;
        complete_error(s, c, e, raw.req.id, r, err);
        return TAKE_ANSWERED;
    }
    t->c = c;
    t->slot = e;
    t->rows = is_call(t) ? 1 : t->in.rank >= 1 ? t->in.shape[0] : 1;
    t->out.data = (char *)c->base + t->req.out_off;
    if (s->nbatch > 0) {
        /* Joins only if it fits: same row shape, within max_batch rows and the staging bytes.
         * A method call runs alone. */
        if (!s->w->batchable || is_call(t) || is_call(&s->batch[0]) ||
            !compatible(&s->batch[0], t) || s->batch_rows + t->rows > s->w->max_batch ||
            s->batch_bytes + t->in.nbytes > MS__BATCH_BYTES_MAX)
            return TAKE_DEFERRED;
    }
    c->head++;
    s->nbatch++;
    s->batch_rows += t->rows;
    s->batch_bytes += t->in.nbytes;
    return TAKE_ADDED;
}

/* One round-robin pass over the active clients: at most one request from each. Returns how many
 * it took or answered; *deferred when a client's next request has to wait for another batch.
 * A client whose ring is empty leaves the active list until it publishes again. */
static size_t take_pass(server *s, int64_t now, bool *deferred)
{
    size_t got = 0, n = s->nactive, start = 0;
    if (n == 0)
        return 0;
    /* Start after the last client served: nobody floods the others. */
    for (size_t i = 0; s->last_served != NULL && i < n; i++)
        if (s->active[i] == s->last_served) {
            start = i + 1;
            break;
        }
    bool emptied = false;
    for (size_t k = 0; k < n; k++) {
        if (s->nbatch >= MS__BATCH_REQS_MAX)
            break;
        if (batch_closed(s))
            break;
        client *c = s->active[(start + k) % n];
        int r = take_one(s, c, now);
        if (r == TAKE_DEFERRED)
            *deferred = true;
        if (r == TAKE_NONE) {
            c->active = false;
            emptied = true;
        }
        if (r == TAKE_ADDED || r == TAKE_ANSWERED) {
            got++;
            s->last_served = c;
        }
    }
    if (emptied)
        compact_active(s);
    return got;
}

/* ---- running a batch --------------------------------------------- */

static int grow(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 65536;
    while (c < need)
        c *= 2;
    void *p = realloc(*buf, c);
    if (p == NULL)
        return MS_E_NOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

static void fail_batch(server *s, int code, const char *msg)
{
    for (size_t i = 0; i < s->nbatch; i++)
        complete_error(s, s->batch[i].c, s->batch[i].slot, s->batch[i].req.id, code, msg);
}

/* A backend's output description is sound: a dtype, a rank, nbytes that match the shape. */
static bool output_sound(const ms__tensor_view *o)
{
    size_t esize = ms_dtype_size(o->dtype), numel, n;
    return esize != 0 && o->rank >= 0 && o->rank <= MS_MAX_RANK &&
           ms__shape_numel(o->rank, o->shape, &numel) &&
           !__builtin_mul_overflow(numel, esize, &n) && n == o->nbytes &&
           (o->data != NULL || n == 0);
}

/* Copies an output the backend owns (described by o, its bytes at src) to t's room. */
static void deliver(server *s, taken *t, const ms__tensor_view *o, const void *src)
{
    if (o->nbytes > t->req.out_cap) {
        complete_too_large(s, t->c, t->slot, &t->req, o->nbytes);
        return;
    }
    if (o->nbytes > 0)
        memcpy(t->out.data, src, o->nbytes);
    t->out.dtype = o->dtype;
    t->out.rank = o->rank;
    memcpy(t->out.shape, o->shape, sizeof t->out.shape);
    t->out.nbytes = o->nbytes;
    complete_ok(s, t);
}

/* A method call: bytes in, bytes out. */
static void run_call(server *s, taken *t)
{
    char err[MS__ERRLEN];
    const void *res = NULL;
    size_t len = 0;
    int64_t t0 = ms__now_ns();
    int r = s->w->backend->call(s->w->state, t->in.data, t->in.nbytes, &res, &len, err, sizeof err);
    STAT_ADD(s, busy_ns, (uint64_t)(ms__now_ns() - t0));
    STAT_ADD(s, batches, 1);
    if (r < 0) {
        complete_error(s, t->c, t->slot, t->req.id, r, err);
        return;
    }
    ms__tensor_view o;
    memset(&o, 0, sizeof o);
    o.dtype = MS_UINT8;
    o.rank = 1;
    o.shape[0] = (int64_t)len;
    o.nbytes = len;
    deliver(s, t, &o, res);
}

/* One request through a backend that describes its output by running. */
static void run_dynamic_alone(server *s, taken *t)
{
    char err[MS__ERRLEN];
    ms__tensor_view o;
    memset(&o, 0, sizeof o);
    int64_t t0 = ms__now_ns();
    int r = s->w->backend->run_dynamic(s->w->state, &t->in, &o, err, sizeof err);
    STAT_ADD(s, busy_ns, (uint64_t)(ms__now_ns() - t0));
    STAT_ADD(s, batches, 1);
    if (r == 0 && !output_sound(&o)) {
        r = MS_E_BACKEND;
        snprintf(err, sizeof err, "the backend described an invalid output");
    }
    if (r < 0) {
        complete_error(s, t->c, t->slot, t->req.id, r, err);
        return;
    }
    STAT_ADD(s, rows, (uint64_t)t->rows);
    deliver(s, t, &o, o.data);
}

/* Runs one request in place: its input and output both in its client's arena. */
static void run_alone(server *s, taken *t)
{
    char err[MS__ERRLEN];
    if (is_call(t)) {
        run_call(s, t);
        return;
    }
    if (s->w->backend->run_dynamic != NULL) {
        run_dynamic_alone(s, t);
        return;
    }
    int64_t t0 = ms__now_ns();
    int r = s->w->backend->run(s->w->state, &t->in, &t->out, err, sizeof err);
    STAT_ADD(s, busy_ns, (uint64_t)(ms__now_ns() - t0));
    STAT_ADD(s, batches, 1);
    if (r < 0) {
        complete_error(s, t->c, t->slot, t->req.id, r, err);
        return;
    }
    STAT_ADD(s, rows, (uint64_t)t->rows);
    complete_ok(s, t);
}

/* Concatenates the batch's inputs into the staging buffer. */
static int stage_inputs(server *s)
{
    if (grow(&s->stage_in, &s->stage_in_cap, s->batch_bytes) < 0)
        return MS_E_NOMEM;
    size_t off = 0;
    for (size_t i = 0; i < s->nbatch; i++) {
        memcpy((char *)s->stage_in + off, s->batch[i].in.data, s->batch[i].in.nbytes);
        off += s->batch[i].in.nbytes;
    }
    return 0;
}

/* A batch through a backend that describes its output by running: one run on the concatenated
 * inputs; when the output has one row per input row, each request gets its rows. Otherwise (an
 * output of another shape, or an error, which may be one request's fault) each request runs
 * alone and gets its own answer. */
static void run_dynamic_batch(server *s, ms__tensor_view *in)
{
    char err[MS__ERRLEN];
    if (s->batch_rows == 0 || stage_inputs(s) < 0) {
        for (size_t i = 0; i < s->nbatch; i++)
            run_dynamic_alone(s, &s->batch[i]);
        return;
    }
    in->data = s->stage_in;
    ms__tensor_view o;
    memset(&o, 0, sizeof o);
    int64_t t0 = ms__now_ns();
    int r = s->w->backend->run_dynamic(s->w->state, in, &o, err, sizeof err);
    STAT_ADD(s, busy_ns, (uint64_t)(ms__now_ns() - t0));
    STAT_ADD(s, batches, 1);
    if (r < 0 || !output_sound(&o) || o.rank < 1 || o.shape[0] != s->batch_rows) {
        for (size_t i = 0; i < s->nbatch; i++)
            run_dynamic_alone(s, &s->batch[i]);
        return;
    }
    STAT_ADD(s, rows, (uint64_t)s->batch_rows);
    size_t row_bytes = o.nbytes / (size_t)s->batch_rows, off = 0;
    for (size_t i = 0; i < s->nbatch; i++) {
        taken *t = &s->batch[i];
        ms__tensor_view ot = o;
        ot.shape[0] = t->rows;
        ot.nbytes = row_bytes * (size_t)t->rows;
        deliver(s, t, &ot, (char *)o.data + off);
        off += ot.nbytes;
    }
}

/* Runs the batch as one backend call: inputs concatenated along the first dimension into the
 * staging buffer, outputs split back into each client's arena. Falls back to one call per
 * request when the model's output does not follow its input row for row. */
static void run_batch(server *s)
{
    char err[MS__ERRLEN];
    if (s->nbatch == 1) {
        run_alone(s, &s->batch[0]);
        return;
    }
    const ms__backend_ops *be = s->w->backend;
    ms__tensor_view in = s->batch[0].in, out;
    in.shape[0] = s->batch_rows;
    in.nbytes = s->batch_bytes;
    memset(&out, 0, sizeof out);
    if (be->run_dynamic != NULL) {
        run_dynamic_batch(s, &in);
        return;
    }
    int r = be->output_for(s->w->state, &in, &out, err, sizeof err);
    bool rowwise = r == 0 && out.rank >= 1 && out.shape[0] == s->batch_rows;
    for (size_t i = 0; rowwise && i < s->nbatch; i++) {
        const ms__tensor_view *o = &s->batch[i].out;
        rowwise = o->dtype == out.dtype && o->rank == out.rank && o->shape[0] == s->batch[i].rows;
        for (int d = 1; rowwise && d < out.rank; d++)
            rowwise = o->shape[d] == out.shape[d];
    }
    if (!rowwise) {
        for (size_t i = 0; i < s->nbatch; i++)
            run_alone(s, &s->batch[i]);
        return;
    }
    if (grow(&s->stage_in, &s->stage_in_cap, in.nbytes) < 0 ||
        grow(&s->stage_out, &s->stage_out_cap, out.nbytes) < 0) {
        fail_batch(s, MS_E_NOMEM, "the worker is out of memory for a batch");
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < s->nbatch; i++) {
        memcpy((char *)s->stage_in + off, s->batch[i].in.data, s->batch[i].in.nbytes);
        off += s->batch[i].in.nbytes;
    }
    in.data = s->stage_in;
    out.data = s->stage_out;
    int64_t t0 = ms__now_ns();
    r = be->run(s->w->state, &in, &out, err, sizeof err);
    STAT_ADD(s, busy_ns, (uint64_t)(ms__now_ns() - t0));
    STAT_ADD(s, batches, 1);
    if (r < 0) {
        fail_batch(s, r, err);
        return;
    }
    STAT_ADD(s, rows, (uint64_t)s->batch_rows);
    off = 0;
    for (size_t i = 0; i < s->nbatch; i++) {
        taken *t = &s->batch[i];
        memcpy(t->out.data, (char *)s->stage_out + off, t->out.nbytes);
        off += t->out.nbytes;
        complete_ok(s, t);
    }
}

/* Takes a batch (waiting up to batch_delay after its first request for more rows) and runs it.
 * Returns how many requests it handled. */
static size_t serve_once(server *s)
{
    int64_t now = ms__now_ns();
    bool deferred = false;
    size_t handled = 0;
    collect(s);
    s->nbatch = 0;
    s->batch_rows = 0;
    s->batch_bytes = 0;
    /* Passes until the batch is full or nobody has more. */
    for (;;) {
        size_t got = take_pass(s, now, &deferred);
        handled += got;
        if (got == 0 || deferred || s->nbatch >= MS__BATCH_REQS_MAX || batch_closed(s))
            break;
    }
    /* Wait for more rows: batch_delay after the first request when the spec asks for it. Else a
     * short catch-up when this batch is smaller than the last one: the clients of the last batch
     * are waking up to send their next request, and a model that ran for a while is worth a
     * wait of a tenth of that (at most CATCH_UP_MAX_NS) to run them together. */
    int64_t until = 0, enough = s->w->max_batch;
    if (s->nbatch > 0 && !batch_closed(s) && !deferred) {
        if (s->w->batch_delay_ns > 0) {
            until = now + s->w->batch_delay_ns;
        } else if (s->batch_rows < s->last_rows && s->last_run_ns > 0) {
            int64_t wait = s->last_run_ns / 10;
            until = now + (wait < CATCH_UP_MAX_NS ? wait : CATCH_UP_MAX_NS);
            enough = s->last_rows < enough ? s->last_rows : enough;
        }
    }
    int64_t t0 = now;
    while (until > 0 && !batch_closed(s) && s->batch_rows < enough &&
           s->nbatch < MS__BATCH_REQS_MAX && !deferred && !*s->w->stop) {
        now = ms__now_ns();
        if (now >= until)
            break;
        size_t got = take_pass(s, now, &deferred);
        handled += got;
        if (got == 0)
            ms__spin_step(t0, now); /* yields: the clients may need this CPU to send */
    }
    if (s->nbatch > 0) {
        int64_t r0 = ms__now_ns();
        run_batch(s);
        s->last_run_ns = ms__now_ns() - r0;
        s->last_rows = s->batch_rows;
    }
    return handled;
}

/* ---- the loop ---------------------------------------------------- */

int ms__worker_serve(ms__worker *w)
{
    server s;
    int rc = 0;

    memset(&s, 0, sizeof s);
    s.w = w;
    ms__reader_init(&s.rd);
    s.clients = calloc(MS__WORKER_CLIENTS_MAX, sizeof *s.clients);
    s.active = calloc(MS__WORKER_CLIENTS_MAX, sizeof *s.active);
    s.by_hint = calloc(MS__DOOR_HINTS, sizeof *s.by_hint);
    s.batch = calloc(MS__BATCH_REQS_MAX, sizeof *s.batch);
    if (s.clients == NULL || s.active == NULL || s.by_hint == NULL || s.batch == NULL) {
        ms__log_error("model \"%s\": out of memory setting up the serving loop", w->tag);
        rc = MS_E_NOMEM;
        goto out;
    }
    int fl = fcntl(w->ctrl_fd, F_GETFL);
    if (fl >= 0)
        fcntl(w->ctrl_fd, F_SETFL, fl | O_NONBLOCK);
    if (w->max_batch < 1)
        w->max_batch = 1;

    ms__door *door = w->door;
    int64_t last_work = ms__now_ns(), last_ctrl = last_work;
    uint32_t seen_bell = atomic_load(&door->bell);
    bool more = true; /* the rings may hold requests: look before waiting for the bell */
    while (!*w->stop) {
        int64_t now = ms__now_ns();
        if (now - last_ctrl >= CTRL_POLL_NS) {
            last_ctrl = now;
            if (control_poll(&s))
                break;
        }
        /* Every request published rings the bell after it: while the bell has not moved and the
         * last look found nothing, there is nothing to look at. */
        uint32_t bell = atomic_load_explicit(&door->bell, memory_order_acquire);
        if (more || bell != seen_bell) {
            seen_bell = bell;
            more = serve_once(&s) > 0;
            if (more) {
                last_work = ms__now_ns();
                continue;
            }
        }
        if (now - last_work < w->spin_ns) {
            ms__spin_step(last_work, now);
            continue;
        }
        /* Idle: say so, then look once more before sleeping (see ms__door_ring). */
        atomic_store(&door->sleeping, 1);
        seen_bell = atomic_load(&door->bell);
        if (serve_once(&s) > 0 || *w->stop) {
            atomic_store(&door->sleeping, 0);
            last_work = ms__now_ns();
            more = true;
            continue;
        }
        if (control_poll(&s))
            break;
        int timed_out = ms__futex_wait(&door->bell, seen_bell, SLEEP_SLICE_NS);
        atomic_store(&door->sleeping, 0);
        /* Woken: most likely a request, served before anything else. Else (or after) the
         * control socket: an attach, a detach, or nothing. */
        if (!timed_out && serve_once(&s) > 0) {
            more = true;
            /* The control socket was read just before the sleep: not again right now, while the
             * client that rang may be waiting for this CPU. */
            last_work = last_ctrl = ms__now_ns();
            continue;
        }
        last_ctrl = ms__now_ns();
        if (control_poll(&s))
            break;
        if (!timed_out) {
            /* Keep looking a while: the client that rang may have just attached. */
            more = true;
            last_work = last_ctrl;
        } else {
            /* Every SLEEP_SLICE_NS while idle, one look at every ring, hints or not. */
            for (size_t i = 0; i < s.n; i++)
                activate(&s, s.clients[i]);
            more = true;
        }
    }
out:
    if (s.clients) {
        while (s.n > 0)
            drop_at(&s, s.n - 1, "worker stopping");
        free(s.clients);
    }
    free(s.active);
    free(s.by_hint);
    free(s.batch);
    free(s.stage_in);
    free(s.stage_out);
    ms__reader_free(&s.rd);
    return rc;
}
