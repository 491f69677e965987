/*
 * The worker's serving loop. Every attached client has a ring set in its arena (ring.h); the
 * worker takes requests from all of them, round-robin, into one batch, runs the backend once, and
 * completes each request in its client's slot.
 *
 *   loop:  take a batch  ->  run it  ->  complete  ->  again
 *   thread-safe model (w->threads > 1): take a batch into a free runner's job -> hand it over ->
 *          again; with every runner busy, wait for one (runners.c), reading control messages
 *          every millisecond meanwhile. While batches run for less than a hand-over's worth on
 *          average and no runner is busy, the loop runs them itself, as one at a time
 *   idle:  keep looking for spin_ns (a busy model never sleeps), then say "sleeping" on the door
 *          and futex-wait on its bell; a client that publishes a request rings it.
 *
 * Control messages from the daemon (attach, detach) are read without blocking: before every
 * sleep, after every wake-up, and every millisecond while busy. A client's first request rings
 * the bell, so the worker wakes, finds the attach waiting on its control socket, and serves it.
 *
 * The loop's parts live beside it: serve.h lists them in the order a request meets them.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "serve.h"
#include "../common/log.h"
#include "../common/util.h"
#include "modelshare.h"

#define CTRL_POLL_NS 1000000LL     /* read the control socket at least this often while busy */
#define SLEEP_SLICE_NS 100000000LL /* and wake up this often while idle */
#define SLICE_NS 100000ULL         /* the time slice the worker asks for (short_slice) */

/* Takes a batch and runs it, or hands it to a free runner. Returns how many requests it
 * handled (0 too when every runner is busy: the loop waits for one before it looks again). */
static size_t serve_once(ms__server *s)
{
    /* With a pool: a runner's job, or the loop's own while batches are short (runners.c). */
    ms__job *j = s->pool != NULL ? ms__runners_free(s) : &s->own;
    if (j == NULL)
        return 0;
    size_t handled = ms__batch_take(s, j);
    atomic_store_explicit(&s->far, 0, memory_order_relaxed);
    atomic_store_explicit(&s->cpu, (uint32_t)(sched_getcpu() + 1), memory_order_relaxed);
    if (j->nbatch == 0)
        return handled;
    if (j != &s->own) {
        /* Runners answer on CPUs of their own: the loop does not nap after it (idle). */
        atomic_store_explicit(&s->far, 1, memory_order_relaxed);
        ms__runners_hand(s, j);
        return handled;
    }
    int64_t r0 = ms__now_ns();
    ms__batch_run(j);
    s->last_run_ns = ms__now_ns() - r0;
    s->last_rows = j->batch_rows;
    if (s->pool != NULL)
        ms__runners_ran(s, s->last_rows, s->last_run_ns);
    return handled;
}

/* Asks the scheduler for a short time slice (Linux 6.12+, EEVDF: sched_attr.sched_runtime of a
 * SCHED_OTHER task): a task with a shorter slice than the one running may preempt it when woken,
 * so the worker a client rings runs at once on the client's CPU instead of waiting for the
 * client to give it up. Older kernels refuse or ignore it: no harm. */
static void short_slice(void)
{
    struct {
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime, deadline, period;
    } attr = {.size = 48, .policy = 0, .runtime = SLICE_NS};
    /* Only a task of the default policy: one the operator put under another (chrt, systemd's
     * CPUSchedulingPolicy=) keeps it. */
    if (sched_getscheduler(0) != SCHED_OTHER)
        return;
    attr.nice = getpriority(PRIO_PROCESS, 0);
    syscall(SYS_sched_setattr, 0, &attr, 0);
}

/* The loop's tables, and the control socket made non-blocking. MS_E_NOMEM (logged). */
static int setup(ms__server *s, ms__worker *w)
{
    memset(s, 0, sizeof *s);
    s->w = w;
    /* Final for this worker's life: the daemon bumps it only when a worker of the door is lost,
     * before it starts the next (ring.h). */
    s->gen = atomic_load(&w->door->gen);
    ms__reader_init(&s->rd);
    s->clients = calloc(MS__WORKER_CLIENTS_MAX, sizeof *s->clients);
    s->active = calloc(MS__WORKER_CLIENTS_MAX, sizeof *s->active);
    s->by_hint = calloc(MS__DOOR_HINTS, sizeof *s->by_hint);
    if (s->clients == NULL || s->active == NULL || s->by_hint == NULL ||
        ms__job_init(&s->own, s) < 0) {
        ms__log_error("model \"%s\": out of memory setting up the serving loop", w->tag);
        return MS_E_NOMEM;
    }
    int fl = fcntl(w->ctrl_fd, F_GETFL);
    if (fl >= 0)
        fcntl(w->ctrl_fd, F_SETFL, fl | O_NONBLOCK);
    if (w->max_batch < 1)
        w->max_batch = 1;
    short_slice();
    return ms__runners_open(s);
}

static void teardown(ms__server *s)
{
    /* Every batch a runner holds is answered before any arena goes. */
    ms__runners_close(s);
    if (s->clients) {
        while (s->n > 0)
            ms__client_drop_at(s, s->n - 1, "worker stopping");
        free(s->clients);
    }
    free(s->active);
    free(s->by_hint);
    ms__job_free(&s->own);
    ms__reader_free(&s->rd);
}

/* Where the loop stands between turns. */
typedef struct loop_state {
    int64_t last_work, last_ctrl;
    int64_t last_all; /* the last look at every ring (look_at_all) */
    uint32_t seen_bell;
    bool more; /* the rings may hold requests: look before waiting for the bell */
    bool nap;  /* sleep again without spinning first (see idle) */
} loop_state;

/* Every SLEEP_SLICE_NS, busy or idle, one look at every ring, hints or not: the hints, scan_all
 * and the bell are written by clients (the door's bell page, ring.h), and one that clears other
 * clients' hint bits or winds the bell back must cost them no more than this wait. */
static void look_at_all(ms__server *s, loop_state *ls, int64_t now)
{
    if (now - ls->last_all < SLEEP_SLICE_NS)
        return;
    ls->last_all = now;
    for (size_t i = 0; i < s->n; i++)
        ms__client_activate(s, s->clients[i]);
    ls->more = true;
}

/* Idle: says so on the door, looks once more, then sleeps on the bell (at most SLEEP_SLICE_NS)
 * and serves what woke it. Returns 1 when the daemon is gone. */
static int idle(ms__server *s, loop_state *ls)
{
    ms__door *door = s->w->door;
    int64_t quiet_since = ls->last_work;
    ls->nap = false;
    /* Say so, then look once more before sleeping (see ms__door_ring). */
    atomic_store(&door->sleeping, 1);
    ls->seen_bell = atomic_load(&door->bell);
    if (serve_once(s) > 0 || *s->w->stop) {
        atomic_store(&door->sleeping, 0);
        ls->last_work = ms__now_ns();
        ls->more = true;
        return 0;
    }
    if (ms__control_poll(s))
        return 1;
    if (s->w->door != door || s->relook) {
        /* A swap's takeover: the clients are on the new door now. Or a link came that requests
         * wait for (links.c). */
        s->relook = false;
        atomic_store(&door->sleeping, 0);
        ls->last_work = ms__now_ns();
        ls->more = true;
        return 0;
    }
    int timed_out = ms__futex_wait(&door->bell, ls->seen_bell, SLEEP_SLICE_NS);
    atomic_store(&door->sleeping, 0);
    if (!timed_out)
        atomic_store_explicit(&door->cpu, (uint32_t)(sched_getcpu() + 1), memory_order_relaxed);
    /* Woken: most likely a request, served before anything else. Else (or after) the control
     * socket: an attach, a detach, or nothing. */
    if (!timed_out && serve_once(s) > 0) {
        ls->more = true;
        /* The control socket was read just before the sleep: not again right now, while the
         * client that rang may be waiting for this CPU. */
        ls->last_work = ls->last_ctrl = ms__now_ns();
        /* A call after a quiet spell whose clients all wait on this very CPU (the scheduler puts
         * a wakee beside its waker): spinning would keep them from it (sched_yield does not
         * reliably hand it over), so sleep again at once; their next request rings. When that
         * one comes soon, the model is busy: spin as usual, and the scheduler spreads us out. */
        ls->nap = atomic_load_explicit(&s->far, memory_order_relaxed) == 0 &&
                  ls->last_work - quiet_since >= 2 * s->w->spin_ns;
        return 0;
    }
    ls->last_ctrl = ms__now_ns();
    if (ms__control_poll(s))
        return 1;
    if (!timed_out) {
        /* Keep looking a while: the client that rang may have just attached. */
        ls->last_work = ls->last_ctrl;
    }
    look_at_all(s, ls, ms__now_ns());
    ls->more = true;
    return 0;
}

/* Serves until the daemon goes away or a stop signal comes. */
static void loop(ms__server *s)
{
    ms__worker *w = s->w;
    loop_state ls = {.more = true};
    ls.last_work = ls.last_ctrl = ls.last_all = ms__now_ns();
    ls.seen_bell = atomic_load(&w->door->bell);
    while (!*w->stop) {
        ms__door *door = w->door; /* a swap's takeover moves it (clients.c) */
        int64_t now = ms__now_ns();
        ms__stats_beat(w->stats, now);
        if (now - ls.last_ctrl >= CTRL_POLL_NS || s->ctrl_due) {
            ls.last_ctrl = now;
            if (ms__control_poll(s))
                break;
        }
        if (s->relook) {
            /* A link came that requests waited for (links.c). */
            s->relook = false;
            ls.more = true;
        }
        look_at_all(s, &ls, now);
        if (s->pool != NULL && !ms__runners_wait_free(s, CTRL_POLL_NS)) {
            /* Every runner busy: the rings keep what they have until one is free. */
            ls.more = true;
            ls.last_work = ms__now_ns();
            continue;
        }
        /* Every request published rings the bell after it: while the bell has not moved and the
         * last look found nothing, there is nothing to look at. */
        uint32_t bell = atomic_load_explicit(&door->bell, memory_order_acquire);
        if (ls.more || bell != ls.seen_bell) {
            ls.seen_bell = bell;
            ls.more = serve_once(s) > 0;
            if (ls.more) {
                ls.last_work = ms__now_ns();
                ls.nap = false;
                continue;
            }
        }
        if (!ls.nap && now - ls.last_work < w->spin_ns) {
            ms__spin_step(ls.last_work, now);
            continue;
        }
        if (idle(s, &ls))
            break;
    }
}

int ms__worker_serve(ms__worker *w)
{
    ms__server s;
    int rc = setup(&s, w);
    if (rc == 0)
        loop(&s);
    teardown(&s);
    return rc;
}
