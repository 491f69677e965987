/*
 * Per-instance supervision: an instance of a ready model whose worker dies loses only the
 * requests in flight on it; it restarts by itself on the same door after a back-off (0.1 s
 * doubling to 30 s), while the model's other instances go on serving, and its clients keep their
 * handles. A crash with max_restarts others within the window fails the model, quoting the
 * worker's last stderr lines. The door's gen and down words tell the clients (ring.h).
 *
 * A policy: the life-cycle owner (lifecycle.c) calls it; a model that fails is posted to the
 * owner's inbox (FAIL), never failed from here.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../common/exitstatus.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

int ms__instances_open(ms__model *m, char *err, size_t errlen)
{
    ms__model_instances_free(m);
    for (int i = 0; i < m->spec.instances && i < MS__INSTANCES_MAX; i++) {
        ms__instance *in = &m->inst[i];
        memset(in, 0, sizeof *in);
        in->door_fds = (ms__door_fds){-1, -1, -1};
        m->ninst = i + 1;
        int rc = ms__door_create(&in->door_fds, err, errlen);
        if (rc == 0)
            rc = ms__door_map(in->door_fds.rw, in->door_fds.bell, true, &in->door, err, errlen);
        if (rc != 0) {
            ms__model_instances_free(m);
            return rc;
        }
        in->state = MS__INST_DOWN;
        in->backoff_ns = MS__RESTART_FIRST_NS;
    }
    return 0;
}

int ms__instance_adopt(ms__model *m, ms__wproc *w, char *err, size_t errlen)
{
    if (ms__model_add_worker(m, w) != 0)
        return ms__fail(err, errlen, MS_E_LIMIT, "model \"%s\": more than %d workers", m->tag,
                        MS__INSTANCES_MAX);
    return 0;
}

/* A crash of m now: false when max_restarts others came within the window before it (then it
 * is not counted); else it is counted. */
static bool crash_allowed(ms__model *m, int64_t now)
{
    int k = 0;
    for (int i = 0; i < m->ncrash; i++)
        if (now - m->crash_ns[i] < MS__RESTART_WINDOW_NS)
            m->crash_ns[k++] = m->crash_ns[i];
    m->ncrash = k;
    if (k >= m->spec.max_restarts || k >= MS__SPEC_RESTARTS_MAX)
        return false;
    m->crash_ns[m->ncrash++] = now;
    return true;
}

/* in starts again after its back-off, which doubles for the next time. Returns the delay. */
static int64_t schedule(ms__instance *in, int64_t now)
{
    int64_t delay = in->backoff_ns > 0 ? in->backoff_ns : MS__RESTART_FIRST_NS;
    in->backoff_ns = delay >= MS__RESTART_MAX_NS / 2 ? MS__RESTART_MAX_NS : delay * 2;
    in->state = MS__INST_DOWN;
    in->w = NULL;
    in->restart_at_ns = now + delay;
    return delay;
}

/* m fails for good: its clients waiting on any instance hear MS_E_WORKER_LOST (their arenas'
 * state); the owner stops its other workers (FAIL). */
static void give_up(ms__models *ml, ms__model *m, const char *message)
{
    for (ms__lease *l = LIST_FIRST(&m->lease_list); l != NULL; l = LIST_NEXT(l, by_model))
        if (l->hdr != NULL)
            atomic_store(&l->hdr->state, MS__ARENA_LOST);
    ms__inbox_error(ml, m, MS__EV_FAIL, MS_E_WORKER_LOST, message);
}

/* The message of a model that crashed once too often: what its last worker did and said. */
static void give_up_text(const ms__model *m, const ms__wproc *w, const char *how, char *buf,
                         size_t buflen)
{
    char tail[600];
    ms__errtail_last(&w->err, sizeof tail - 1, tail, sizeof tail);
    snprintf(buf, buflen,
             "instance %d: worker %ld %.200s after %d restart(s) within %lld s (spec max_restarts "
             "%d): the model is marked failed. %s%s",
             w->inst, (long)w->pid, how, m->ncrash,
             (long long)(MS__RESTART_WINDOW_NS / 1000000000LL), m->spec.max_restarts,
             tail[0] ? "The worker's last stderr lines:\n" : "The worker wrote nothing on stderr.",
             tail);
}

void ms__instance_lost(ms__models *ml, ms__model *m, const ms__wproc *w, int status,
                       const char *how_given)
{
    char how[512], msg[MS__ERRLEN];
    int64_t now = ms__registry_now(&ml->reg);
    ms__exit_text(status, how, sizeof how);
    if (how_given != NULL) /* the life cycle's verdict (an OOM kill: ms__measure_exit) */
        snprintf(how, sizeof how, "%s", how_given);
    if (w->inst < 0 || w->inst >= m->ninst || m->inst[w->inst].door == NULL) {
        snprintf(msg, sizeof msg, "worker %ld %s (it served no instance)", (long)w->pid, how);
        give_up(ml, m, msg);
        return;
    }
    ms__instance *in = &m->inst[w->inst];
    ms__exit_brief(status, in->last_crash, sizeof in->last_crash);
    if (strstr(how, "OOM killer") != NULL)
        snprintf(in->last_crash, sizeof in->last_crash, "%s",
                 strstr(how, "killed by the kernel's") != NULL ? "OOM kill" : "SIGKILL (OOM?)");
    ms__door_lost(in->door);
    if (!crash_allowed(m, now)) {
        give_up_text(m, w, how, msg, sizeof msg);
        give_up(ml, m, msg);
        return;
    }
    if (in->state == MS__INST_UP && now - in->up_since_ns >= MS__RESTART_WINDOW_NS)
        in->backoff_ns = MS__RESTART_FIRST_NS; /* it ran well for a while */
    int64_t delay = schedule(in, now);
    ms__log_warn("model \"%s\": instance %d: worker %ld %s; its requests in flight fail with "
                 "MS_E_WORKER_LOST, %d other instance(s) serve; restarting it in %.1f s (crash %d "
                 "of %d allowed within %lld s)",
                 m->tag, w->inst, (long)w->pid, how, m->nworkers, (double)delay / 1e9, m->ncrash,
                 m->spec.max_restarts, (long long)(MS__RESTART_WINDOW_NS / 1000000000LL));
}

void ms__instance_up(ms__models *ml, ms__model *m, ms__wproc *w)
{
    char err[MS__ERRLEN];
    ms__instance *in = &m->inst[w->inst];
    int64_t now = ms__registry_now(&ml->reg);
    int rc = ms__workers_reattach(w, err, sizeof err);
    if (rc != 0) {
        /* Its exit counts as one more crash. */
        ms__log_warn("model \"%s\": instance %d: %s; stopping worker %ld", m->tag, w->inst, err,
                     (long)w->pid);
        ml->ops->stop(&ml->sup, w, now);
        return;
    }
    in->state = MS__INST_UP;
    in->up_since_ns = now;
    ms__log_info("model \"%s\": instance %d is back: worker %ld (restart %u), %d lease(s) "
                 "attached again",
                 m->tag, w->inst, (long)w->pid, in->restarts, m->leases);
}

void ms__instance_restart(ms__models *ml, ms__model *m, int i, int64_t now)
{
    char err[MS__ERRLEN], msg[MS__ERRLEN + 64];
    ms__instance *in = &m->inst[i];
    if (i < 0 || i >= m->ninst || in->state != MS__INST_DOWN || now < in->restart_at_ns)
        return;
    ms__wproc *w;
    int rc = ml->ops->spawn(&ml->sup, m, i, &m->spec, m->spec_json, &in->door_fds, m->ctor_fd, &w,
                            err, sizeof err);
    if (rc == 0 && (rc = ms__instance_adopt(m, w, err, sizeof err)) != 0)
        ml->ops->stop(&ml->sup, w, now);
    if (rc == 0) {
        in->restarts++;
        m->inst_restarts[i]++;
        return;
    }
    snprintf(msg, sizeof msg, "instance %d: cannot start a worker again: %s", i, err);
    if (!crash_allowed(m, now)) {
        give_up(ml, m, msg);
        return;
    }
    int64_t delay = schedule(in, now);
    ms__log_error("model \"%s\": %s; trying again in %.1f s", m->tag, msg, (double)delay / 1e9);
}

void ms__instance_hung(ms__models *ml, ms__model *m, int i, int stuck_ms)
{
    if (i < 0 || i >= m->ninst || m->inst[i].state != MS__INST_UP || m->inst[i].w == NULL ||
        m->inst[i].w->killed)
        return;
    ms__instance *in = &m->inst[i];
    uint32_t limit_ms = (uint32_t)(m->spec.call_timeout * 1000.0);
    /* Before the kill, for the gen its callers' requests carry (ring.h): they fail with
     * MS_E_TIMEOUT saying why, once ms__instance_lost moves the gen on. */
    atomic_store(&in->door->hung_ms, (uint32_t)stuck_ms);
    atomic_store(&in->door->hung_limit_ms, limit_ms);
    atomic_store(&in->door->hung_gen, atomic_load(&in->door->gen) + 1);
    ms__log_error("model \"%s\": instance %d: worker %ld ran one batch (or stopped answering) for "
                  "%.1f s, past its call_timeout of %g s: killing it (SIGKILL); its requests in "
                  "flight fail with MS_E_TIMEOUT and it restarts (a crash toward max_restarts)",
                  m->tag, i, (long)in->w->pid, stuck_ms / 1000.0, m->spec.call_timeout);
    ml->ops->kill(&ml->sup, in->w);
}

int ms__instances_due(const ms__model *m, int64_t now, int *due, int64_t *next)
{
    int n = 0;
    for (int i = 0; i < m->ninst && m->state == MS__MODEL_READY; i++) {
        const ms__instance *in = &m->inst[i];
        if (in->state != MS__INST_DOWN)
            continue;
        if (now >= in->restart_at_ns)
            due[n++] = i;
        else if (in->restart_at_ns < *next)
            *next = in->restart_at_ns;
    }
    return n;
}
