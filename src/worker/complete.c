/*
 * Completing requests: the response record written into the request's slot in its client's
 * arena (the fixed fields and the message's used bytes only), the slot marked done, and the
 * client woken with a futex call only when it said it sleeps.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "serve.h"
#include "../common/util.h"
#include "modelshare.h"

void ms__complete(ms__server *s, ms__client *c, unsigned slot, const ms__resp *resp)
{
    ms__slot *sl = ms__slot_of(c->base, c->ring, slot);
    /* Only the fixed fields and the message's used bytes: a success writes about 100 bytes. */
    memcpy(&sl->resp, resp, offsetof(ms__resp, msg));
    size_t ml = strnlen(resp->msg, sizeof resp->msg - 1);
    memcpy(sl->resp.msg, resp->msg, ml);
    sl->resp.msg[ml] = '\0';
    /* Counted before the client can see its answer: a caller that reads the stats (status,
     * /metrics) after its call returns finds the call in them. */
    MS__STAT_ADD(s, requests, 1);
    if (resp->status != 0)
        ms__stats_error(s->w->stats, resp->status);
    if (s->pool != NULL)
        atomic_fetch_add_explicit(&c->answered, 1, memory_order_release); /* serve.h */
    atomic_store_explicit(&sl->done_ns, ms__now_ns(), memory_order_relaxed);
    if (atomic_load_explicit(&sl->cpu, memory_order_relaxed) !=
        atomic_load_explicit(&s->cpu, memory_order_relaxed))
        atomic_fetch_add_explicit(&s->far, 1, memory_order_relaxed);
    atomic_store(&sl->state, MS__SLOT_DONE);
    if (atomic_load(&sl->waiting))
        ms__futex_wake(&sl->state, 1);
    ms__door_done(s->w->door);
}

void ms__complete_error(ms__server *s, ms__client *c, unsigned slot, uint64_t id, int code,
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
    ms__complete(s, c, slot, &resp);
}

void ms__complete_ok(ms__server *s, ms__taken *t)
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
            ms__complete_error(s, t->c, t->slot, t->req.id, MS_E_TIMEOUT, msg);
            return;
        }
    }
    ms__resp resp;
    memset(&resp, 0, offsetof(ms__resp, msg));
    resp.magic = MS__RESP_MAGIC;
    resp.status = t->object ? MS__RESP_OBJECT : 0;
    resp.id = t->req.id;
    resp.dtype = (uint32_t)t->out.dtype;
    resp.rank = (uint32_t)t->out.rank;
    for (int i = 0; i < t->out.rank; i++)
        resp.shape[i] = t->out.shape[i];
    resp.out_len = t->out.nbytes;
    resp.msg[0] = '\0';
    ms__complete(s, t->c, t->slot, &resp);
}

void ms__complete_too_large(ms__server *s, ms__client *c, unsigned slot, const ms__req *req,
                            size_t need)
{
    ms__resp resp;
    memset(&resp, 0, offsetof(ms__resp, msg));
    resp.magic = MS__RESP_MAGIC;
    resp.status = MS_E_TOO_LARGE;
    resp.id = req->id;
    resp.out_len = need;
    snprintf(resp.msg, sizeof resp.msg, "output needs %zu bytes, the request has room for %llu",
             need, (unsigned long long)req->out_cap);
    ms__complete(s, c, slot, &resp);
}

void ms__complete_batch_error(ms__job *j, int code, const char *msg)
{
    for (size_t i = 0; i < j->nbatch; i++)
        ms__complete_error(j->s, j->batch[i].c, j->batch[i].slot, j->batch[i].req.id, code, msg);
}
