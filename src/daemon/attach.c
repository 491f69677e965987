/*
 * Leases' arenas sent to the workers of their model: a lease attached to every instance that is
 * up (acquire), to a restarted worker again ("resume", instances.c), and detached from them when
 * it goes. Below the life cycle's policies: it calls only the supervisor's sender and links.c.
 * See models.h.
 */
#include <stdio.h>

#include "../common/fdlimit.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

/* Sends lease l's arena to w for ring w->inst ("resume": the ring goes on from its tail). */
static int attach_one(ms__wproc *w, const ms__lease *l, bool resume, char *err, size_t errlen)
{
    json_t *att = json_pack("{s:s, s:I, s:i, s:i, s:b}", "op", "attach", "lease", (json_int_t)l->id,
                            "ring", w->inst, "nfds", 1, "resume", resume);
    int rc = att != NULL ? ms__sup_send(w, att, &l->arena_fd, 1, err, errlen)
                         : ms__fail(err, errlen, MS_E_NOMEM, "out of memory");
    json_decref(att);
    return rc;
}

/* A worker keeps one descriptor per lease (its arena) and per link: one more lease is refused
 * (MS_E_LIMIT, naming the worker's RLIMIT_NOFILE) while it would have fewer than this many free,
 * so that the clients it serves keep being served. What it has open is judged by the larger of
 * what /proc/PID/fd lists now and what it had at "ready" plus one per lease: it reads its
 * attaches between batches, so the listing lags a burst of acquires. Neither is looked at while
 * the leases are far (FD_COUNT_NEAR) from the limit. */
#define WORKER_FD_RESERVE 16
#define FD_COUNT_NEAR 512

static int worker_room(const ms__wproc *w, const ms__model *m, char *err, size_t errlen)
{
    long limit = ms__fd_limit(w->pid);
    if (limit < 0 || limit - m->leases > FD_COUNT_NEAR)
        return 0;
    int open = ms__fd_count(w->pid);
    if (w->fd_base >= 0 && w->fd_base + m->leases > open)
        open = w->fd_base + m->leases;
    if (open < 0 || open + WORKER_FD_RESERVE < limit)
        return 0;
    char who[MS__TAG_MAX + 96];
    snprintf(who, sizeof who, "the worker of model \"%s\" (pid %ld, %d descriptors open)", m->tag,
             (long)w->pid, open);
    return ms__fd_limit_fail(err, errlen, "cannot attach one more client", who, limit);
}

int ms__workers_attach(ms__lease *l, int *doors, char *err, size_t errlen)
{
    char why[MS__ERRLEN];
    ms__model *m = l->model;
    for (int i = 0; i < m->ninst; i++) {
        ms__instance *in = &m->inst[i];
        if (in->state == MS__INST_UP && in->w != NULL && worker_room(in->w, m, err, errlen) != 0)
            return MS_E_LIMIT;
    }
    /* Every instance maps the arena and serves its own ring set in it (ring i for instance i);
     * the client gets every instance's door, in the same order, and picks one per request: page 0
     * opened read-only, then the bell page (ring.h). An instance that is down gets the lease when
     * it is back (ms__workers_reattach). */
    for (int i = 0; i < m->ninst; i++) {
        ms__instance *in = &m->inst[i];
        if (in->state == MS__INST_UP && in->w != NULL &&
            attach_one(in->w, l, false, why, sizeof why) != 0)
            return ms__fail(err, errlen, MS_E_WORKER_LOST,
                            "model \"%s\": cannot attach to worker %ld: %.800s", m->tag,
                            (long)in->w->pid, why);
        doors[2 * i] = in->door_fds.ro;
        doors[2 * i + 1] = in->door_fds.bell;
    }
    return 0;
}

int ms__workers_reattach(ms__wproc *w, char *err, size_t errlen)
{
    char why[MS__ERRLEN];
    ms__model *m = w->model;
    for (ms__lease *l = LIST_FIRST(&m->lease_list); l != NULL; l = LIST_NEXT(l, by_model))
        if (attach_one(w, l, true, why, sizeof why) != 0 ||
            ms__links_send(w, l, why, sizeof why) != 0)
            return ms__fail(err, errlen, MS_E_WORKER_LOST, "cannot attach lease %llu: %.800s",
                            (unsigned long long)l->id, why);
    json_t *open = json_pack("{s:s}", "op", "open");
    int rc = open != NULL ? ms__sup_send(w, open, NULL, 0, why, sizeof why) : MS_E_NOMEM;
    json_decref(open);
    if (rc != 0)
        return ms__fail(err, errlen, MS_E_WORKER_LOST, "cannot open its door: %.800s",
                        rc == MS_E_NOMEM ? "out of memory" : why);
    return 0;
}

void ms__workers_detach(ms__lease *l)
{
    char err[MS__ERRLEN];
    /* First the workers of other models that read l's arena (links.c) hear that it goes. */
    ms__links_drop(l);
    /* Every live worker of the model has mapped the lease's arena, or will be told of it
     * (a restarted one that is still loading just hears of a lease it does not know). */
    ms__model *m = l->model;
    if (m == NULL)
        return;
    json_t *msg = json_pack("{s:s, s:I}", "op", "detach", "lease", (json_int_t)l->id);
    if (msg == NULL)
        return;
    for (int i = 0; i < m->nworkers; i++) {
        ms__wproc *w = m->workers[i];
        if (w->ctrl_fd >= 0 && ms__sup_send(w, msg, NULL, 0, err, sizeof err) != 0)
            ms__log_warn_limited("cannot tell worker %ld to detach lease %llu: %s", (long)w->pid,
                                 (unsigned long long)l->id, err);
    }
    json_decref(msg);
}
