/*
 * The serving loop's internals, shared by its files and nowhere else (worker.h is the worker's
 * interface to main.c and the Python extension). One request goes through them in this order:
 *
 *   clients.c   the client table and the daemon's control messages: attach, detach, open,
 *               takeover, drain
 *   links.c     other leases' arenas linked to a client's (link, unlink): where inputs may lie
 *   intake.c    the door's hints, and one request read from a client's ring and checked
 *   batch.c     round-robin passes over the clients, building one batch, waiting for more rows
 *   run.c       the backend runs the batch (or each request alone)
 *   pieces.c    a request larger than one run split, a run padded up to batch_sizes
 *   stage.c     staging buffers and the check of a backend's output, for run.c and pieces.c
 *   complete.c  each request's response written in its client's slot, the client woken
 *   runners.c   the runner threads of a thread-safe model: each runs the batches handed to it
 *   serve.c     the loop: take a batch, run it (or hand it to a free runner), sleep on the door
 *               when idle
 *
 * Ownership: the server owns its client records (and each client's arena mapping and fd), its
 * own job and the runner pool; a job owns its batch array and staging buffers; a taken request
 * points into its client's arena only.
 *
 * Threads: the loop's thread alone touches the client table, the active list, the rings' heads
 * and the control socket. With a pool, the loop still runs short batches itself in its own job,
 * only while no runner is busy (runners.c). A job is the loop's while it is built and the runner's
 * from the moment it is handed over (under the pool's mutex) until the runner says it is done;
 * while a runner has it, the clients of its requests are pinned (ms__client.pinned) and a detach
 * waits for them.
 */
#ifndef MS_WORKER_SERVE_H
#define MS_WORKER_SERVE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker.h"
#include "../common/proto.h"
#include "../common/manifest.h"
#include "../common/records.h"

typedef struct ms__client {
    int64_t lease;
    unsigned ring; /* our ring set in its arena */
    int arena_fd;
    void *base;
    uint64_t capacity;
    ms__ring *rg;
    uint32_t head;   /* entries taken: ours, never read back from shared memory */
    unsigned hint;   /* our bit in the door's hints */
    bool active;     /* in the active list: it published, or its ring was not empty last time */
    unsigned pinned; /* requests of it in jobs that runners hold (under the pool's mutex) */
    /* Requests of it answered, counted by runner threads (release, before the slot is marked
     * done) and read by the loop before it takes the next one (acquire): a runner's writes into
     * the arena come before the next request's reads by another runner. The client's own
     * ordering (it sees "done", then publishes) already makes it so, but through another process,
     * which ThreadSanitizer cannot see; this pair says it in this one. */
    _Atomic unsigned answered;
    /* Arenas of other leases of the same client linked to this one ("link", proto.h): request
     * inputs may lie there (in_arena k is entry k - 1). Mapped and owned, fd -1 where none. */
    int link_fd[MS__ARENA_LINKS];
    void *link_base[MS__ARENA_LINKS];
    uint64_t link_cap[MS__ARENA_LINKS]; /* 0 where none: what ms__req_decode is given */
    int64_t link_from[MS__ARENA_LINKS]; /* the lease whose arena it is (a request's in_link) */
    /* Its request at head names a linked arena not mapped yet: the daemon sent "link" before
     * the client heard of it, so it waits for one read of the control socket (links.c). */
    uint32_t link_wait;  /* head + 1 of that request, 0 when none */
    uint64_t link_polls; /* s->ctrl_polls when it began to wait */
} ms__client;

/* A request taken from a ring for the batch being built. */
typedef struct ms__taken {
    ms__client *c;
    unsigned slot;
    ms__req req;
    ms__tensor_view in, out; /* out.data: where its output goes in the client's arena */
    int64_t rows;
    int64_t submit_ns; /* when the client says it submitted it (untrusted: a figure only) */
    bool object;       /* the output is a pickled answer (MS__RESP_OBJECT) */
    /* MS__REQ_MULTI: the input manifest, copied out and decoded (intake.c), and whether every
     * tensor in it has the same first dimension (rows): only then may it join a batch. */
    ms__manifest mf;
    bool rows_agree;
} ms__taken;

struct ms__server;
struct ms__pool;

/* One batch, and what running it takes: built by the loop (batch.c), run by the loop itself or
 * by a runner thread (runners.c). */
typedef struct ms__job {
    struct ms__server *s;
    ms__worker *w;
    ms__taken *batch; /* MS__BATCH_REQS_MAX entries */
    size_t nbatch;
    int64_t batch_rows;
    size_t batch_bytes;
    void *stage_in, *stage_out;
    size_t stage_in_cap, stage_out_cap;
    int run; /* its slot in the stats page's run_since_ns: 0 the loop's, 1 + a runner's index */
} ms__job;

typedef struct ms__server {
    ms__worker *w;
    uint32_t gen; /* the door's gen when this worker started (or took it over): it serves slots
                   * stamped with it */
    bool drained; /* a swap's "drain" came: the loop ends, taking nothing more */
    ms__client **clients; /* dense: [0, n) */
    size_t n;
    ms__client **by_hint; /* MS__DOOR_HINTS entries: the client of each hint bit, or NULL */
    ms__client **active;  /* the clients whose rings are worth a look: [0, nactive) */
    size_t nactive;
    ms__client *last_served; /* the next round-robin pass starts after it */
    ms__reader rd;
    uint64_t ctrl_polls;   /* reads of the control socket so far */
    bool ctrl_due;         /* a request waits for a link: read the control socket now */
    bool relook;           /* a read of the control socket made requests takeable: look again */
    ms__job own;           /* the batch the loop runs itself (one runner or none) */
    struct ms__pool *pool; /* runner threads (w->threads > 1), else NULL */
    int64_t last_rows, last_run_ns; /* the previous batch: its rows and how long it ran */
    /* Figures for idle's nap (serve.c), also written by runners (complete.c): relaxed atomics. */
    _Atomic uint32_t cpu; /* 1 + the CPU the batch ran on (sched_getcpu), 0 unknown */
    _Atomic size_t far;   /* requests completed for clients on another CPU than the batch's */
} ms__server;

/* Counters in the shared stats page, relaxed atomic adds (runners add to them at once): the
 * daemon only reads them for status. s: anything with a w (a server or a job). */
#define MS__STAT_ADD(s, field, v)                                                                  \
    do {                                                                                           \
        if ((s)->w->stats)                                                                         \
            atomic_fetch_add_explicit(&(s)->w->stats->field, (v), memory_order_relaxed);           \
    } while (0)

/* One backend run of `rows` rows that began at t0 (ms__now_ns): busy time, the run counted, and
 * the rows and run-time histograms (stats.h). */
#define MS__STAT_RUN(s, rows, t0)                                                                  \
    do {                                                                                           \
        uint64_t run_ns_ = (uint64_t)(ms__now_ns() - (t0));                                        \
        MS__STAT_ADD(s, busy_ns, run_ns_);                                                         \
        MS__STAT_ADD(s, batches, 1);                                                               \
        ms__stats_batch((s)->w->stats, (uint64_t)(rows), run_ns_);                                 \
    } while (0)

static inline bool ms__is_call(const ms__taken *t)
{
    return (t->req.flags & MS__REQ_CALL) != 0;
}

static inline bool ms__is_multi(const ms__taken *t)
{
    return (t->req.flags & MS__REQ_MULTI) != 0;
}

/* Puts c in the active list (its ring is worth a look) unless it is there already. */
static inline void ms__client_activate(ms__server *s, ms__client *c)
{
    if (!c->active) {
        c->active = true;
        s->active[s->nactive++] = c;
    }
}

/* ---- clients.c ---- */

/* Unmaps c's linked arena k (1..MS__ARENA_LINKS) if one is there. Between batches only: no taken
 * request may point into it. */
void ms__client_unlink(ms__server *s, ms__client *c, unsigned k);
/* Whether c's request in slot sl waits for its input's arena to be linked: it names one that is
 * not mapped (or another lease's arena at that index), and the control socket was not read since
 * it was first seen (ctrl_due asks for a read). Then the request is left in the ring; after the
 * read it is decoded and checked (ms__links_check). (links.c) */
bool ms__links_await(ms__server *s, ms__client *c, const ms__slot *sl);
/* c's request at head needs an arena that is not linked yet (a tensor of several, manifest.h):
 * true the first time (the control socket is read before it is looked at again), false once it
 * was (then it is decoded and refused if the arena is still not there). (links.c) */
bool ms__links_wait_once(ms__server *s, ms__client *c);
/* A decoded request's input arena is the lease's own or the linked one it names (in_link): 0, or
 * MS_E_PROTOCOL with a message. */
int ms__links_check(const ms__client *c, const ms__req *req, char *err, size_t errlen);
/* "link" (link true: maps the fd, taken, as c's linked arena "arena") or "unlink"; c NULL: a
 * lease not attached here. A malformed message is logged and its fds closed. (links.c) */
void ms__links_msg(ms__server *s, ms__client *c, bool link, const json_t *msg, int *fds, int nfds);

/* Drops the clients marked inactive from the active list, keeping its order. */
void ms__clients_compact_active(ms__server *s);
/* Detaches clients[i]: unmaps its arena, closes its fd, frees its record. */
void ms__client_drop_at(ms__server *s, size_t i, const char *why);
/* Reads what the control socket has (attach, detach, link, unlink, open, takeover, drain), without
 * blocking.
 * Returns 1 when the daemon is gone or the worker drained for a swap: the loop ends. */
int ms__control_poll(ms__server *s);

/* ---- intake.c ---- */

enum { MS__TAKE_NONE, MS__TAKE_ANSWERED, MS__TAKE_READY };

/* Takes the door's hints: every client that published since the last look becomes active. */
void ms__intake_collect(ms__server *s);
/* Reads c's next request into t, copied out of shared memory and decoded, its output described
 * by the backend: MS__TAKE_READY (c's head not moved: the caller takes it, or leaves it for
 * another batch). A bad request is answered at once and passed (MS__TAKE_ANSWERED); an empty ring
 * is MS__TAKE_NONE. */
int ms__intake_peek(ms__server *s, ms__client *c, int64_t now, ms__taken *t);

/* ---- batch.c ---- */

/* Builds a batch from the active clients' rings, round-robin (waiting up to batch_delay after its
 * first request for more rows), in j (an idle job: the loop's own or a free runner's). Returns
 * how many requests it took or answered. */
size_t ms__batch_take(ms__server *s, ms__job *j);
/* No request joins the batch any more: full, not batchable, or a method call (never batched). */
bool ms__batch_closed(const ms__job *j);

/* ---- run.c ---- */

/* Runs j's batch through the backend and completes every request of it. Any thread: it touches
 * only the job, its requests' slots and rooms, the stats page and the door's in-flight count. */
void ms__batch_run(ms__job *j);
/* Sets up an empty job of s (its batch array). MS_E_NOMEM. */
int ms__job_init(ms__job *j, ms__server *s);
void ms__job_free(ms__job *j);

/* ---- stage.c (a leaf: run.c and pieces.c use it) ---- */

/* Grows *buf (a staging buffer of *cap bytes) to hold need bytes. MS_E_NOMEM. */
int ms__stage_grow(void **buf, size_t *cap, size_t need);
/* A backend's output description is sound: a dtype, a rank, nbytes that match the shape. */
bool ms__output_sound(const ms__tensor_view *o);

/* ---- multi.c ---- */

/* Reads t's input manifest (MS__REQ_MULTI) out of c's arena and decodes it into t->mf, and its
 * rows. Returns 0, MS__MULTI_WAIT when it names a linked arena not mapped here (the daemon's
 * "link" may still be in the control socket: ms__links_wait_once), or an error for the caller to
 * answer (err). */
#define MS__MULTI_WAIT 3 /* not an MS__TAKE_* value */
int ms__multi_intake(const ms__client *c, ms__taken *t, char *err, size_t errlen);
/* Whether t (several tensors) may join a batch whose first request is f: the same names and
 * dtypes, and every dimension but the first agrees (but pad_dim, when it is not 0: the backend
 * pads along it, spec "pad"). */
bool ms__multi_joins(const ms__taken *f, const ms__taken *t, int pad_dim);
/* Runs j's batch of requests of several tensors (one backend call) and completes each. */
void ms__multi_run(ms__job *j);

/* ---- pieces.c ---- */

/* The row count a backend run of `rows` rows is padded to: the smallest of batch_sizes that
 * holds them, else rows itself. */
int64_t ms__padded_rows(const ms__worker *w, int64_t rows);
/* Whether t runs in pieces: more rows than one run takes, or padding needed, on a batchable
 * model whose output follows its input row for row. */
bool ms__pieces_needed(const ms__job *j, const ms__taken *t);
/* Runs t in pieces of max_batch rows (each padded up to batch_sizes), in order into its room,
 * and completes it. */
void ms__pieces_run(ms__job *j, ms__taken *t);

/* ---- complete.c ---- */

/* Writes resp in the slot of c and wakes its client if it sleeps. */
void ms__complete(ms__server *s, ms__client *c, unsigned slot, const ms__resp *resp);
/* Completes with status code and msg (cut to the record's room). */
void ms__complete_error(ms__server *s, ms__client *c, unsigned slot, uint64_t id, int code,
                        const char *msg);
/* Completes t with its output (t->out), or MS_E_TIMEOUT when its deadline passed meanwhile. */
void ms__complete_ok(ms__server *s, ms__taken *t);
/* The request's room is too small: it learns how much it needs (need) and asks again. */
void ms__complete_too_large(ms__server *s, ms__client *c, unsigned slot, const ms__req *req,
                            size_t need);
/* Completes every request of the batch with code and msg. */
void ms__complete_batch_error(ms__job *j, int code, const char *msg);

/* ---- runners.c ---- */

/* Starts w->threads runner threads (s->pool; none when w->threads < 2). MS_E_NOMEM (logged). */
int ms__runners_open(ms__server *s);
/* Lets every runner finish the batch it has, then joins them (the pool freed, s->pool NULL). */
void ms__runners_close(ms__server *s);
/* The job for the loop to build the next batch in: its own (&s->own: it runs the batch itself)
 * while batches are short and no runner is busy, else a free runner's, else NULL. Copies the last
 * finished batch's rows and run time into s (batch.c's catch-up wait). */
ms__job *ms__runners_free(ms__server *s);
/* The loop ran a batch of its own (rows, ns): counted in the pool's average run time. */
void ms__runners_ran(ms__server *s, int64_t rows, int64_t ns);
/* Hands j (from ms__runners_free, with a batch) to its runner, pinning its requests' clients. */
void ms__runners_hand(ms__server *s, ms__job *j);
/* Waits up to ns for a runner to be free. Returns whether one is. */
bool ms__runners_wait_free(ms__server *s, int64_t ns);
/* Waits until no runner holds a request of c (before its arena is unmapped). */
void ms__runners_unpin(ms__server *s, const ms__client *c);
/* Waits until every runner is idle: each request taken is answered (a swap's drain). */
void ms__runners_quiesce(ms__server *s);

#endif
