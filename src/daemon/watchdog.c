/*
 * The watchdog, a policy like instances.c: nothing waits forever on a worker. A worker that ran
 * one batch, or whose loop stopped turning (SIGSTOP, a deadlock), for longer than its model's
 * call_timeout is killed (HUNG: instances.c), and supervision restarts it; a load that takes
 * longer than load_timeout, the constructor included, fails with MS_E_TIMEOUT naming the phase
 * it was in, its workers killed. The workers' stats pages say how long (stats.h).
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>

#include "../common/log.h"
#include "../common/util.h"
#include "modelshare.h"
#include "models_int.h"

/* Look at least this often while a model has a limit, and at most 4 times per limit. */
#define WATCH_MAX_NS 1000000000LL
#define WATCH_MIN_NS 50000000LL

static int64_t period(double seconds)
{
    int64_t p = (int64_t)(seconds * 1e9 / 4);
    return p < WATCH_MIN_NS ? WATCH_MIN_NS : p > WATCH_MAX_NS ? WATCH_MAX_NS : p;
}

/* The instances of serving model m stuck past its call_timeout: HUNG for each. */
static void watch_calls(ms__models *ml, ms__model *m, int64_t now, int64_t *next)
{
    if (m->spec.call_timeout <= 0 || m->state != MS__MODEL_READY)
        return;
    int64_t limit = (int64_t)(m->spec.call_timeout * 1e9), real = ms__now_ns();
    for (int i = 0; i < m->ninst; i++) {
        const ms__instance *in = &m->inst[i];
        if (in->state != MS__INST_UP || in->w == NULL || in->w->killed || in->w->stats == NULL)
            continue;
        int64_t stuck = ms__stats_stuck_ns(in->w->stats, real);
        if (stuck < limit)
            continue;
        int64_t ms = stuck / 1000000;
        ms__inbox_post(ml, &(ms__life_event){.m = m,
                                             .ev = MS__EV_HUNG,
                                             .inst = i,
                                             .code = ms > INT_MAX ? INT_MAX : (int)ms});
    }
    if (now + period(m->spec.call_timeout) < *next)
        *next = now + period(m->spec.call_timeout);
}

/* What m's load is doing: the phase of its first worker not ready ("starting" before any). */
static const char *load_phase(const ms__model *m, long *pid)
{
    for (int i = 0; i < m->nworkers; i++) {
        const ms__wproc *w = m->workers[i];
        if (!w->ready && w->stats != NULL) {
            *pid = (long)w->pid;
            return ms__phase_name((int)atomic_load(&w->stats->phase));
        }
    }
    return "starting";
}

/* A load past its load_timeout: its workers killed, FAIL with MS_E_TIMEOUT. */
static void watch_load(ms__models *ml, ms__model *m, int64_t now, int64_t *next)
{
    if (m->state != MS__MODEL_LOADING || m->spec.load_timeout <= 0)
        return;
    int64_t deadline = m->load_since_ns + (int64_t)(m->spec.load_timeout * 1e9);
    if (now < deadline) {
        if (deadline < *next)
            *next = deadline;
        return;
    }
    char msg[MS__ERRLEN];
    long pid = 0;
    const char *phase = load_phase(m, &pid);
    snprintf(msg, sizeof msg,
             "loading \"%s\" took longer than its load_timeout of %g s (phase: %s, worker %ld): "
             "its workers were killed; raise load_timeout in the spec if the model needs longer",
             m->tag, m->spec.load_timeout, phase, pid);
    for (int i = 0; i < m->nworkers; i++)
        ml->ops->kill(&ml->sup, m->workers[i]);
    ms__inbox_error(ml, m, MS__EV_FAIL, MS_E_TIMEOUT, msg);
}

int64_t ms__watchdog_run(ms__models *ml, int64_t now)
{
    int64_t next = INT64_MAX;
    for (int k = 0; k < ml->reg.nmodels; k++) {
        ms__model *m = ml->reg.models[k];
        watch_calls(ml, m, now, &next);
        watch_load(ml, m, now, &next);
    }
    return next;
}
