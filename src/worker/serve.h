/*
 * The serving loop's internals, shared by its files and nowhere else (worker.h is the worker's
 * interface to main.c and the Python extension). One request goes through them in this order:
 *
 *   clients.c   the client table: attach and detach (control messages from the daemon)
 *   intake.c    the door's hints, and one request read from a client's ring and checked
 *   batch.c     round-robin passes over the clients, building one batch, waiting for more rows
 *   run.c       the backend runs the batch (or each request alone)
 *   pieces.c    a request larger than one run split, a run padded up to batch_sizes
 *   complete.c  each request's response written in its client's slot, the client woken
 *   serve.c     the loop: take a batch, run it, sleep on the door when idle
 *
 * Ownership: the server owns its client records (and each client's arena mapping and fd), its
 * batch array and its staging buffers; a taken request points into its client's arena only.
 */
#ifndef MS_WORKER_SERVE_H
#define MS_WORKER_SERVE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker.h"
#include "../common/proto.h"
#include "../common/records.h"

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
    int64_t submit_ns; /* when the client says it submitted it (untrusted: a figure only) */
} taken;

typedef struct server {
    ms__worker *w;
    uint32_t gen;     /* the door's gen when this worker started (or took it over): it serves slots
                       * stamped with it */
    bool drained;     /* a swap's "drain" came: the loop ends, taking nothing more */
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
    uint32_t cpu;                   /* 1 + the CPU the batch ran on (sched_getcpu), 0 unknown */
    size_t far; /* requests completed for clients on another CPU than the batch's */
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

/* One backend run of `rows` rows that began at t0 (ms__now_ns): busy time, the run counted, and
 * the rows and run-time histograms (stats.h). */
#define STAT_RUN(s, rows, t0)                                                                      \
    do {                                                                                           \
        uint64_t run_ns_ = (uint64_t)(ms__now_ns() - (t0));                                        \
        STAT_ADD(s, busy_ns, run_ns_);                                                             \
        STAT_ADD(s, batches, 1);                                                                   \
        ms__stats_batch((s)->w->stats, (uint64_t)(rows), run_ns_);                                 \
    } while (0)

static inline bool ms__is_call(const taken *t)
{
    return (t->req.flags & MS__REQ_CALL) != 0;
}

/* Puts c in the active list (its ring is worth a look) unless it is there already. */
static inline void ms__client_activate(server *s, client *c)
{
    if (!c->active) {
        c->active = true;
        s->active[s->nactive++] = c;
    }
}

/* ---- clients.c ---- */

/* Drops the clients marked inactive from the active list, keeping its order. */
void ms__clients_compact_active(server *s);
/* Detaches clients[i]: unmaps its arena, closes its fd, frees its record. */
void ms__client_drop_at(server *s, size_t i, const char *why);
/* Reads what the control socket has (attach, detach, open, takeover, drain), without blocking.
 * Returns 1 when the daemon is gone or the worker drained for a swap: the loop ends. */
int ms__control_poll(server *s);

/* ---- intake.c ---- */

enum { MS__TAKE_NONE, MS__TAKE_ANSWERED, MS__TAKE_READY };

/* Takes the door's hints: every client that published since the last look becomes active. */
void ms__intake_collect(server *s);
/* Reads c's next request into t, copied out of shared memory and decoded, its output described
 * by the backend: MS__TAKE_READY (c's head not moved: the caller takes it, or leaves it for
 * another batch). A bad request is answered at once and passed (MS__TAKE_ANSWERED); an empty ring
 * is MS__TAKE_NONE. */
int ms__intake_peek(server *s, client *c, int64_t now, taken *t);

/* ---- batch.c ---- */

/* Builds a batch from the active clients' rings, round-robin (waiting up to batch_delay after its
 * first request for more rows), in s->batch. Returns how many requests it took or answered. */
size_t ms__batch_take(server *s);
/* No request joins the batch any more: full, not batchable, or a method call (never batched). */
bool ms__batch_closed(const server *s);

/* ---- run.c ---- */

/* Runs s->batch through the backend and completes every request of it. */
void ms__batch_run(server *s);
/* Grows *buf (a staging buffer of *cap bytes) to hold need bytes. MS_E_NOMEM. */
int ms__stage_grow(void **buf, size_t *cap, size_t need);
/* A backend's output description is sound: a dtype, a rank, nbytes that match the shape. */
bool ms__output_sound(const ms__tensor_view *o);

/* ---- pieces.c ---- */

/* The row count a backend run of `rows` rows is padded to: the smallest of batch_sizes that
 * holds them, else rows itself. */
int64_t ms__padded_rows(const ms__worker *w, int64_t rows);
/* Whether t runs in pieces: more rows than one run takes, or padding needed, on a batchable
 * model whose output follows its input row for row. */
bool ms__pieces_needed(const server *s, const taken *t);
/* Runs t in pieces of max_batch rows (each padded up to batch_sizes), in order into its room,
 * and completes it. */
void ms__pieces_run(server *s, taken *t);

/* ---- complete.c ---- */

/* Writes resp in the slot of c and wakes its client if it sleeps. */
void ms__complete(server *s, client *c, unsigned slot, const ms__resp *resp);
/* Completes with status code and msg (cut to the record's room). */
void ms__complete_error(server *s, client *c, unsigned slot, uint64_t id, int code,
                        const char *msg);
/* Completes t with its output (t->out), or MS_E_TIMEOUT when its deadline passed meanwhile. */
void ms__complete_ok(server *s, taken *t);
/* The request's room is too small: it learns how much it needs (need) and asks again. */
void ms__complete_too_large(server *s, client *c, unsigned slot, const ms__req *req, size_t need);
/* Completes every request of the batch with code and msg. */
void ms__complete_batch_error(server *s, int code, const char *msg);

#endif
