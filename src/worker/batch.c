/*
 * Building a batch: round-robin passes over the active clients, at most one request from each
 * per pass, so that no client starves another by flooding its ring. Requests join while they
 * share the first's row shape, within max_batch rows and the staging bytes; then a wait for more
 * rows (batch_delay_us, or a short catch-up when the last batch was larger).
 */
#include <stdbool.h>
#include <stddef.h>

#include "serve.h"
#include "../common/util.h"

#define CATCH_UP_MAX_NS 1000000LL /* longest wait for the clients of the last batch */

bool ms__batch_closed(const ms__job *j)
{
    return j->nbatch > 0 &&
           (!j->w->batchable || j->batch_rows >= j->w->max_batch || ms__is_call(&j->batch[0]) ||
            (ms__is_multi(&j->batch[0]) && !j->batch[0].rows_agree));
}

/* Whether t can join the batch whose first request is f: same dtype and rank, same dims after
 * the first, and first dimensions to concatenate along. */
static bool compatible(const ms__taken *f, const ms__taken *t)
{
    if (f->in.dtype != t->in.dtype || f->in.rank != t->in.rank || f->in.rank < 1)
        return false;
    for (int i = 1; i < f->in.rank; i++)
        if (f->in.shape[i] != t->in.shape[i])
            return false;
    return true;
}

/* Whether t, read after the batch's first request, may join it: same row shape, within
 * max_batch rows and the staging bytes. A method call runs alone. */
static bool joins(const ms__job *j, const ms__taken *t)
{
    const ms__taken *f = &j->batch[0];
    bool multi = ms__is_multi(f) || ms__is_multi(t);
    return j->w->batchable && !ms__is_call(t) && !ms__is_call(f) &&
           (multi ? ms__multi_joins(f, t, j->w->pad_dim) : compatible(f, t)) &&
           j->batch_rows + t->rows <= j->w->max_batch &&
           j->batch_bytes + t->in.nbytes <= MS__BATCH_BYTES_MAX;
}

enum { TAKE_NONE, TAKE_ANSWERED, TAKE_ADDED, TAKE_DEFERRED };

/* Looks at the next request of c. A bad one is answered at once (TAKE_ANSWERED); one that fits
 * the batch joins it (TAKE_ADDED); one that does not stays in the ring (TAKE_DEFERRED). */
static int take_one(ms__server *s, ms__job *j, ms__client *c, int64_t now)
{
    ms__taken *t = &j->batch[j->nbatch];
    int r = ms__intake_peek(s, c, now, t);
    if (r == MS__TAKE_NONE)
        return TAKE_NONE;
    if (r == MS__TAKE_ANSWERED)
        return TAKE_ANSWERED;
    if (j->nbatch > 0 && !joins(j, t))
        return TAKE_DEFERRED;
    c->head++;
    /* Queue wait: the client's clock reading at submit is only a figure; one from the future or
     * none counts as no wait. */
    int64_t at = ms__now_ns();
    ms__stats_queued(s->w->stats,
                     t->submit_ns > 0 && t->submit_ns < at ? (uint64_t)(at - t->submit_ns) : 0);
    j->nbatch++;
    j->batch_rows += t->rows;
    j->batch_bytes += t->in.nbytes;
    return TAKE_ADDED;
}

/* One round-robin pass over the active clients: at most one request from each. Returns how many
 * it took or answered; *deferred when a client's next request has to wait for another batch.
 * A client whose ring is empty leaves the active list until it publishes again. */
static size_t take_pass(ms__server *s, ms__job *j, int64_t now, bool *deferred)
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
        if (j->nbatch >= MS__BATCH_REQS_MAX)
            break;
        if (ms__batch_closed(j))
            break;
        ms__client *c = s->active[(start + k) % n];
        int r = take_one(s, j, c, now);
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
        ms__clients_compact_active(s);
    return got;
}

/* How long to wait for more rows, from now: batch_delay after the first request when the spec
 * asks for it. Else a short catch-up when this batch is smaller than the last one: the clients of
 * the last batch are waking up to send their next request, and a model that ran for a while is
 * worth a wait of a tenth of that (at most CATCH_UP_MAX_NS) to run them together. Returns the
 * end of the wait (0: none) and *enough, the rows that end it early. */
static int64_t wait_until(const ms__server *s, const ms__job *j, int64_t now, bool deferred,
                          int64_t *enough)
{
    *enough = s->w->max_batch;
    if (j->nbatch == 0 || ms__batch_closed(j) || deferred)
        return 0;
    if (s->w->batch_delay_ns > 0)
        return now + s->w->batch_delay_ns;
    if (j->batch_rows < s->last_rows && s->last_run_ns > 0) {
        int64_t wait = s->last_run_ns / 10;
        *enough = s->last_rows < *enough ? s->last_rows : *enough;
        return now + (wait < CATCH_UP_MAX_NS ? wait : CATCH_UP_MAX_NS);
    }
    return 0;
}

size_t ms__batch_take(ms__server *s, ms__job *j)
{
    int64_t now = ms__now_ns();
    bool deferred = false;
    size_t handled = 0;
    ms__intake_collect(s);
    j->nbatch = 0;
    j->batch_rows = 0;
    j->batch_bytes = 0;
    /* Passes until the batch is full or nobody has more. */
    for (;;) {
        size_t got = take_pass(s, j, now, &deferred);
        handled += got;
        if (got == 0 || deferred || j->nbatch >= MS__BATCH_REQS_MAX || ms__batch_closed(j))
            break;
    }
    int64_t enough;
    int64_t until = wait_until(s, j, now, deferred, &enough);
    int64_t t0 = now;
    while (until > 0 && !ms__batch_closed(j) && j->batch_rows < enough &&
           j->nbatch < MS__BATCH_REQS_MAX && !deferred && !*s->w->stop) {
        now = ms__now_ns();
        if (now >= until)
            break;
        /* The clients that publish while we wait are known by their hint bits only: a client
         * whose ring was empty left the active list. Without this look, the wait gathered the
         * rows of the clients already active, and batch_delay_us and the catch-up none of
         * the others'. */
        ms__intake_collect(s);
        size_t got = take_pass(s, j, now, &deferred);
        handled += got;
        if (got == 0)
            ms__spin_step(t0, now); /* yields: the clients may need this CPU to send */
    }
    return handled;
}
