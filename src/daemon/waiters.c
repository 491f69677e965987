/*
 * The answers to requests that wait for a model: a granted acquire (a lease and the workers'
 * doors), and what each waiting request hears when its model settles (ready, failed, unloaded).
 * See conn.h.
 */
#include <stdio.h>
#include <unistd.h>

#include "../common/fdlimit.h"
#include "../common/log.h"
#include "conn.h"
#include "modelshare.h"

/* The reply to a granted acquire: the lease, the model's signature and spec, its doors. */
static json_t *grant_reply(json_t *id, const ms__model *m, const ms__lease *l)
{
    json_t *reply = ms__reply_ok(id);
    if (reply != NULL) {
        json_object_set_new(reply, "lease", json_integer((json_int_t)l->id));
        json_object_set(reply, "signature", m->signature != NULL ? m->signature : json_null());
        json_object_set(reply, "spec", m->spec_json);
        json_object_set_new(reply, "nfds", json_integer(2 * m->ninst));
    }
    return reply;
}

void ms__conn_grant(ms__proto *p, ms__conn *k, json_t *id, ms__model *m, int arena_fd,
                    ms__arena_header *hdr)
{
    char err[MS__ERRLEN], msg[MS__ERRLEN + 64];
    ms__lease *l;
    int rc = ms__lease_add(&p->models->reg, k->client, m, arena_fd, hdr, &l, err, sizeof err);
    if (rc != 0) {
        ms__arena_unmap(hdr, MS__ARENA_HEADER);
        close(arena_fd);
        ms__log_warn_limited("model \"%s\": refused a lease to pid %ld: %s", m->tag, (long)k->pid,
                             err);
        ms__conn_error(k, id, rc, err);
        return;
    }
    int doors[2 * MS__INSTANCES_MAX];
    /* The reply carries a copy of each door: refused here, lease and all, when modelshared
     * cannot make them, rather than dropping the connection when the reply cannot be queued. */
    rc = ms__fd_room(2 * m->ninst + 2, "acquire", "modelshared", msg, sizeof msg);
    if (rc == 0)
        rc = ms__workers_attach(l, doors, msg, sizeof msg);
    if (rc != 0) {
        ms__log_warn_limited("model \"%s\": lease for pid %ld failed: %s", m->tag, (long)k->pid,
                             msg);
        ms__workers_detach(l);
        ms__lease_release(&p->models->reg, l);
        ms__conn_error(k, id, rc, msg);
        return;
    }
    json_t *reply = grant_reply(id, m, l);
    ms__log_info("model \"%s\": lease %llu to pid %ld on %d instance(s) (%d lease(s))", m->tag,
                 (unsigned long long)l->id, (long)k->pid, m->ninst, m->leases);
    /* A failed send drops the connection, which releases the lease (and detaches it). */
    ms__conn_send(k, reply, doors, 2 * m->ninst);
}

/* What a pending request hears when its model settles: q ends (answered) or stays. */
typedef void (*settle_fn)(ms__proto *p, ms__conn *k, ms__pend *q, ms__model *m, int code,
                          const char *message);

/* Calls fn for every pending request of a live connection that waits for m, oldest first in
 * each connection. fn may end the request it is given (and no other); a connection that dies
 * meanwhile is left for the sweep. */
static void each_waiter(ms__proto *p, ms__model *m, settle_fn fn, int code, const char *message)
{
    ms__client *c;
    LIST_FOREACH(c, &p->models->reg.clients, link)
    {
        ms__conn *k = c->user;
        ms__pend *q = TAILQ_FIRST(&k->pends), *next;
        for (; q != NULL && !k->dead; q = next) {
            next = TAILQ_NEXT(q, link);
            if (q->model == m)
                fn(p, k, q, m, code, message);
        }
    }
}

static void fail_one(ms__proto *p, ms__conn *k, ms__pend *q, ms__model *m, int code,
                     const char *message)
{
    (void)m;
    if (q->op != MS__OP_ACQUIRE && q->op != MS__OP_LOAD && q->op != MS__OP_SWAP)
        return;
    ms__conn_error(k, q->id, code, message);
    ms__conn_resume(p, k, q);
}

void ms__waiters_fail(ms__proto *p, ms__model *m, int code, const char *message)
{
    each_waiter(p, m, fail_one, code, message);
}

/* m is ready: acquires get their lease, loads their answer. */
static void ready_one(ms__proto *p, ms__conn *k, ms__pend *q, ms__model *m, int code,
                      const char *message)
{
    (void)code;
    (void)message;
    if (q->op == MS__OP_ACQUIRE) {
        json_t *id = json_incref(q->id);
        int fd = q->arena_fd;
        ms__arena_header *hdr = q->hdr;
        q->arena_fd = -1;
        q->hdr = NULL;
        ms__conn_resume(p, k, q);
        ms__conn_grant(p, k, id, m, fd, hdr);
        json_decref(id);
    } else if (q->op == MS__OP_LOAD) {
        ms__conn_send(k, ms__reply_ok(q->id), NULL, 0);
        ms__conn_resume(p, k, q);
    }
}

/* m's workers are gone: unloads get their answer. */
static void unloaded_one(ms__proto *p, ms__conn *k, ms__pend *q, ms__model *m, int code,
                         const char *message)
{
    (void)m;
    (void)code;
    (void)message;
    if (q->op != MS__OP_UNLOAD)
        return;
    ms__conn_send(k, ms__reply_ok(q->id), NULL, 0);
    ms__conn_resume(p, k, q);
}

/* m's swap ended: the swaps that wait hear (code 0: the new version serves). */
static void swapped_one(ms__proto *p, ms__conn *k, ms__pend *q, ms__model *m, int code,
                        const char *message)
{
    if (q->op != MS__OP_SWAP)
        return;
    if (code != 0) {
        ms__conn_error(k, q->id, code, message != NULL ? message : "the swap failed");
    } else {
        json_t *r = ms__reply_ok(q->id);
        if (r != NULL) {
            json_object_set(r, "spec", m->spec_json);
            json_object_set_new(r, "version",
                                m->spec.version[0] ? json_string(m->spec.version) : json_null());
        }
        ms__conn_send(k, r, NULL, 0);
    }
    ms__conn_resume(p, k, q);
}

void ms__proto_settled(void *ctx, ms__model *m, int what, int code, const char *message)
{
    ms__proto *p = ctx;
    switch (what) {
    case MS__SETTLED_READY:
        each_waiter(p, m, ready_one, 0, NULL);
        break;
    case MS__SETTLED_FAILED:
        ms__waiters_fail(p, m, code, message);
        break;
    case MS__SETTLED_UNLOADED:
        each_waiter(p, m, unloaded_one, 0, NULL);
        break;
    case MS__SETTLED_SWAPPED:
        each_waiter(p, m, swapped_one, code, message);
        break;
    default:
        break;
    }
}
