/*
 * The runner pool of a thread-safe model (spec thread_safe, threads > 1, a backend that may be
 * called concurrently): w->threads threads, each running the batches the loop hands it, so that
 * up to that many batches run at once.
 *
 * The loop's thread stays the only one that reads rings and control messages: it builds a batch
 * in a free runner's job (round-robin across clients, as with one runner), hands it over, and
 * goes on to the next while the runner runs it and completes its requests. With no runner free
 * it waits here (ms__runners_wait_free) rather than take requests it cannot run: they stay in the
 * rings, where the next batch finds them.
 *
 * What the loop must not do while a runner holds requests: unmap their client's arena (a detach
 * waits for the client to be unpinned: ms__runners_unpin) and report where it stopped in the
 * rings (a swap's drain waits for every runner: ms__runners_quiesce); an unlink of a linked
 * arena waits like a detach. Everything a runner writes besides its job is the requests' slots
 * and rooms, the stats page (atomic adds), the door's in-flight count (atomic), its clients'
 * pinned counts and the pool's fields (under the pool's mutex), client.answered and server.far
 * (atomic).
 *
 * Inline runs: the hand-over costs a thread wake-up, about 10 us a batch on the 2-core VM (one
 * client of the identity model: 0.9 us a call one at a time, 10 to 12 us through a runner; see
 * bench/RESULTS-threads.md), which a model of microseconds pays many times over. So the pool
 * keeps an average of how long a batch runs (run_ewma_ns: each batch's ms__batch_run, 1/8 weight
 * to the newest, from runners and inline runs alike) and, while it is under INLINE_BELOW_NS and
 * no runner is busy, ms__runners_free gives the loop its own job: the loop runs that batch itself,
 * exactly the one-at-a-time path. No runner is busy meanwhile (only the loop hands batches out),
 * so at most `threads` batches still run at once, and a detach, a drain or a shutdown, all on the
 * loop's thread, come before or after an inline run, never during it. One slow batch lifts the
 * average over the threshold at once (5 ms / 8 > 600 us), so a model that turns slow runs at most
 * one batch inline before its batches go to runners again.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve.h"
#include "../common/log.h"
#include "../common/util.h"
#include "modelshare.h"

typedef struct runner {
    struct ms__pool *pool;
    pthread_t thread;
    pthread_cond_t go; /* signalled when it has a job, or the pool stops */
    ms__job j;
    bool busy;    /* it holds j (under the pool's mutex) */
    bool started; /* the thread runs (to join) */
} runner;

typedef struct ms__pool {
    ms__server *s;
    pthread_mutex_t mu;
    pthread_cond_t freed; /* a runner finished a batch: the loop may be waiting for one */
    runner *r;
    size_t n;
    size_t busy;
    bool stop;
    int64_t last_rows, last_run_ns; /* the last batch finished, by a runner or inline */
    int64_t run_ewma_ns;            /* how long a batch runs, on average (see the top) */
} ms__pool;

/* A batch that runs for less than this, on average, runs on the loop's thread: a few hand-overs'
 * worth, so that what a runner saves (the loop builds the next batch meanwhile) is worth the
 * wake-up it costs. */
#define INLINE_BELOW_NS 50000LL
/* The average a pool starts with: the pool mode, until about a dozen short batches have brought
 * it under INLINE_BELOW_NS. A model that says thread_safe is presumed slow: guessed wrong for a
 * slow one, the loop would run its first batch (often its slowest: a warm-up, a lazy load) while
 * every other client waits; guessed wrong for a tiny one, it costs a dozen hand-overs once. */
#define RUN_EWMA_START_NS (4 * INLINE_BELOW_NS)

/* One more batch's run time in the average (under the pool's mutex). */
static void ran(ms__pool *p, int64_t rows, int64_t ns)
{
    p->last_rows = rows;
    p->last_run_ns = ns;
    p->run_ewma_ns += (ns - p->run_ewma_ns) / 8;
}

/* Runs the batch it was handed; then unpins its clients and says it is free. */
static void run_one(ms__pool *p, runner *r)
{
    int64_t t0 = ms__now_ns();
    ms__batch_run(&r->j);
    int64_t ns = ms__now_ns() - t0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < r->j.nbatch; i++)
        r->j.batch[i].c->pinned--;
    ran(p, r->j.batch_rows, ns);
    r->busy = false;
    p->busy--;
    pthread_cond_broadcast(&p->freed);
}

static void *runner_main(void *arg)
{
    runner *r = arg;
    ms__pool *p = r->pool;
    const ms__worker *w = p->s->w;
    if (w->backend->thread != NULL)
        w->backend->thread(w->state, true);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!r->busy && !p->stop)
            pthread_cond_wait(&r->go, &p->mu);
        if (!r->busy)
            break;
        pthread_mutex_unlock(&p->mu);
        run_one(p, r); /* returns with the mutex held */
    }
    pthread_mutex_unlock(&p->mu);
    if (w->backend->thread != NULL)
        w->backend->thread(w->state, false);
    return NULL;
}

static void pool_free(ms__pool *p)
{
    for (size_t i = 0; i < p->n; i++) {
        ms__job_free(&p->r[i].j);
        pthread_cond_destroy(&p->r[i].go);
    }
    free(p->r);
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* The runners' records and jobs, no thread started. NULL when out of memory. */
static ms__pool *pool_new(ms__server *s, size_t n)
{
    ms__pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->s = s;
    p->run_ewma_ns = RUN_EWMA_START_NS;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits immune to clock steps */
    pthread_cond_init(&p->freed, &ca);
    pthread_condattr_destroy(&ca);
    p->r = calloc(n, sizeof *p->r);
    if (p->r == NULL) {
        pool_free(p);
        return NULL;
    }
    for (; p->n < n; p->n++) {
        runner *r = &p->r[p->n];
        r->pool = p;
        pthread_cond_init(&r->go, NULL);
        if (ms__job_init(&r->j, s) < 0) {
            pthread_cond_destroy(&r->go);
            pool_free(p);
            return NULL;
        }
        r->j.run = (int)p->n + 1;
    }
    return p;
}

int ms__runners_open(ms__server *s)
{
    if (s->w->threads < 2)
        return 0;
    ms__pool *p = pool_new(s, (size_t)s->w->threads);
    if (p == NULL) {
        ms__log_error("model \"%s\": out of memory for %d runner threads", s->w->tag,
                      s->w->threads);
        return MS_E_NOMEM;
    }
    s->pool = p;
    for (size_t i = 0; i < p->n; i++) {
        if (pthread_create(&p->r[i].thread, NULL, runner_main, &p->r[i]) != 0) {
            ms__log_error("model \"%s\": cannot start runner thread %zu of %d", s->w->tag, i + 1,
                          s->w->threads);
            ms__runners_close(s);
            return MS_E_NOMEM;
        }
        p->r[i].started = true;
    }
    ms__log_info("model \"%s\": thread-safe, %zu runner threads", s->w->tag, p->n);
    return 0;
}

void ms__runners_close(ms__server *s)
{
    ms__pool *p = s->pool;
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    for (size_t i = 0; i < p->n; i++)
        pthread_cond_signal(&p->r[i].go);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n; i++)
        if (p->r[i].started)
            pthread_join(p->r[i].thread, NULL);
    pool_free(p);
    s->pool = NULL;
}

ms__job *ms__runners_free(ms__server *s)
{
    ms__pool *p = s->pool;
    ms__job *j = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->busy == 0 && p->run_ewma_ns < INLINE_BELOW_NS)
        j = &s->own; /* a short batch: the loop runs it (see the top) */
    for (size_t i = 0; i < p->n && j == NULL; i++)
        if (!p->r[i].busy)
            j = &p->r[i].j;
    s->last_rows = p->last_rows;
    s->last_run_ns = p->last_run_ns;
    pthread_mutex_unlock(&p->mu);
    return j;
}

void ms__runners_ran(ms__server *s, int64_t rows, int64_t ns)
{
    ms__pool *p = s->pool;
    pthread_mutex_lock(&p->mu);
    ran(p, rows, ns);
    pthread_mutex_unlock(&p->mu);
}

void ms__runners_hand(ms__server *s, ms__job *j)
{
    ms__pool *p = s->pool;
    runner *r = (runner *)((char *)j - offsetof(runner, j));
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < j->nbatch; i++)
        j->batch[i].c->pinned++;
    r->busy = true;
    p->busy++;
    pthread_cond_signal(&r->go);
    pthread_mutex_unlock(&p->mu);
}

/* now + ns on CLOCK_MONOTONIC (the clock of the pool's freed). */
static struct timespec deadline_in(int64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_nsec + ns;
    ts.tv_sec += (time_t)(t / 1000000000LL);
    ts.tv_nsec = (long)(t % 1000000000LL);
    return ts;
}

bool ms__runners_wait_free(ms__server *s, int64_t ns)
{
    ms__pool *p = s->pool;
    pthread_mutex_lock(&p->mu);
    if (p->busy == p->n) {
        struct timespec until = deadline_in(ns);
        while (p->busy == p->n && pthread_cond_timedwait(&p->freed, &p->mu, &until) == 0)
            ;
    }
    bool free_one = p->busy < p->n;
    pthread_mutex_unlock(&p->mu);
    return free_one;
}

void ms__runners_unpin(ms__server *s, const ms__client *c)
{
    ms__pool *p = s->pool;
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    while (c->pinned > 0)
        pthread_cond_wait(&p->freed, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void ms__runners_quiesce(ms__server *s)
{
    ms__pool *p = s->pool;
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->freed, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int ms__worker_threads(const ms__spec *spec, const ms__backend_ops *be)
{
    if (!spec->thread_safe || !be->concurrent)
        return 1;
    if (spec->threads > 0)
        return spec->threads < MS__WORKER_THREADS_MAX ? spec->threads : MS__WORKER_THREADS_MAX;
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    return n < 1 ? 1 : n < MS__WORKER_THREADS_MAX ? n : MS__WORKER_THREADS_MAX;
}
