/*
 * One model's load and unload: start (admission to its device's budget, acting on admission.c's
 * plan), spawn its workers, ready, failed, unload. What becomes of it is told upward through the
 * settled callback (models.h).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../backends/backend.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static void settled(ms__models *ml, ms__model *m, int what, int code, const char *message)
{
    ml->settled(ml->settled_ctx, m, what, code, message);
}

void ms__worker_detach(ms__wproc *w)
{
    ms__model *m = w->model;
    if (m == NULL)
        return;
    if (w->stats != NULL) {
        m->requests_done += atomic_load(&w->stats->requests);
        m->batches_done += atomic_load(&w->stats->batches);
        if (w->inst >= 0 && w->inst < MS__INSTANCES_MAX)
            ms__stats_add(&m->inst_gone[w->inst], w->stats);
    }
    ms__model_detach_worker(m, w);
}

void ms__model_fail(ms__models *ml, ms__model *m, int code, const char *message)
{
    ms__log_error("model \"%s\": %s (%s)", m->tag, message, ms_errname(code));
    ms__swap_abort(ml, m, code, message);
    ms__model_set_failed(m, code, message);
    int64_t now = ms__registry_now(&ml->reg);
    while (m->nworkers > 0) {
        ms__wproc *w = m->workers[0];
        ms__worker_detach(w);
        ms__sup_stop(&ml->sup, w, now);
    }
    settled(ml, m, MS__SETTLED_FAILED, code, m->error);
}

/* Makes m's instances and spawns their workers (m admitted, state loading). */
static int spawn_workers(ms__models *ml, ms__model *m)
{
    char err[MS__ERRLEN];
    int rc = ms__instances_open(m, err, sizeof err);
    if (rc != 0) {
        ms__model_fail(ml, m, rc, err);
        return rc;
    }
    for (int i = 0; i < m->ninst; i++) {
        rc = ms__sup_spawn(&ml->sup, m, i, err, sizeof err);
        if (rc != 0) {
            ms__model_fail(ml, m, rc, err);
            return rc;
        }
    }
    return 0;
}

/* The plan says m fits: its workers start. */
static void admitted(ms__models *ml, ms__model *m, const ms__admission *a, int64_t now)
{
    if (m->state == MS__MODEL_WAITING && a->dev != NULL)
        ms__log_info("model \"%s\": admitted after waiting %.1f s for memory on %s", m->tag,
                     (double)(now - m->wait_since_ns) / 1e9, a->dev->name);
    for (int i = 0; i < m->spec.instances && ms__spec_placed(&m->spec); i++)
        ms__log_info("model \"%s\": instance %d placed on %s", m->tag, i, m->inst_device[i]);
    ms__model_set_admitted(m);
    spawn_workers(ml, m);
}

/* ms__tally_get's is_loaded: the tag has a model now. */
static bool is_loaded(void *ctx, const char *tag)
{
    const ms__models *ml = ctx;
    return ms__registry_find(&ml->reg, tag) != NULL;
}

static void evict(ms__models *ml, ms__model *victim, const ms__admission *a,
                  const ms__model *for_whom)
{
    char size[32];
    ms__bytes_str(ms__model_charge(victim, a->dev->name), size, sizeof size);
    ms__log_info("model \"%s\": evicted (idle, least recently used, %s on %s) to make room for "
                 "\"%s\"",
                 victim->tag, size, a->dev->name, for_whom->tag);
    ml->evictions++;
    ms__tally_entry *e = ms__tally_get(&ml->tally, victim->tag, is_loaded, ml);
    if (e != NULL)
        e->evictions++;
    ms__begin_unload(ml, victim);
}

/* The plans for each of m's devices: the worst one (FITS < EVICT < WAIT < NEVER) is in *a.
 * When it is EVICT (every device fits or evicts), the evictions are made on every device. */
static void plan_all(ms__models *ml, ms__model *m, ms__admission *a)
{
    const char *devs[MS__INSTANCES_MAX + 1];
    int n = ms__model_devices(m, devs), worst = -1, at = 0;
    for (int d = 0; d < n; d++) {
        ms__admission_plan(ml, m, devs[d], a);
        if (a->plan > worst) {
            worst = a->plan;
            at = d;
        }
    }
    for (int d = 0; worst == MS__ADMIT_EVICT && d < n; d++) {
        ms__admission_plan(ml, m, devs[d], a);
        for (int i = 0; a->plan == MS__ADMIT_EVICT && i < a->n; i++)
            if (a->evict[i])
                evict(ml, a->who[i], a, m);
    }
    ms__admission_plan(ml, m, devs[at], a);
    if (worst == MS__ADMIT_EVICT)
        a->plan = MS__ADMIT_EVICT; /* what it was before the evictions began */
}

/* One decision for m, acted on (FITS: workers started; NEVER and timeouts: m failed). */
static void decide(ms__models *ml, ms__model *m, int64_t now)
{
    char msg[MS__ERRLEN];
    int rc = ms__admission_place(ml, m, msg, sizeof msg);
    if (rc != 0) {
        ms__model_fail(ml, m, rc, msg);
        return;
    }
    ms__admission a;
    plan_all(ml, m, &a);
    if (a.plan == MS__ADMIT_FITS) {
        admitted(ml, m, &a, now);
        return;
    }
    if (a.plan == MS__ADMIT_NEVER) {
        ms__admission_never_text(&a, m, msg, sizeof msg);
        ms__model_fail(ml, m, MS_E_NO_MEMORY, msg);
        return;
    }
    if (m->state != MS__MODEL_WAITING) {
        ms__model_set_waiting(m, now);
        ms__admission_log_wait(&a, m);
        return;
    }
    /* Evictions and unloads in progress always finish (within the kill grace): wait for them. */
    if (a.plan == MS__ADMIT_WAIT && now >= m->wait_deadline_ns &&
        !ms__admission_unloads_cover(&a)) {
        ms__admission_timeout_text(&a, m, msg, sizeof msg);
        ms__model_fail(ml, m, MS_E_NO_MEMORY, msg);
    }
}

int ms__start_load(ms__models *ml, ms__model *m)
{
    ms__model_begin_load(&ml->reg, m);
    ms__tally_entry *e = ms__tally_get(&ml->tally, m->tag, is_loaded, ml);
    if (e != NULL)
        e->loads++;
    ms__log_info("model \"%s\": loading (load %u, backend %s, device %s, %d instance(s))", m->tag,
                 m->loads, m->spec.backend, m->spec.device, m->spec.instances);
    ms__model_set_estimate(m, m->spec.memory > 0 ? m->spec.memory : ms__backend_estimate(&m->spec));
    decide(ml, m, ms__registry_now(&ml->reg));
    return m->state == MS__MODEL_FAILED ? m->error_code : 0;
}

/* The models waiting for memory, first come first served. Returns how many. */
static int waiting_models(const ms__models *ml, ms__model **waiting)
{
    int n = 0;
    for (int i = 0; i < ml->reg.nmodels; i++)
        if (ml->reg.models[i]->state == MS__MODEL_WAITING)
            waiting[n++] = ml->reg.models[i];
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && waiting[j]->wait_since_ns < waiting[j - 1]->wait_since_ns; j--) {
            ms__model *t = waiting[j];
            waiting[j] = waiting[j - 1];
            waiting[j - 1] = t;
        }
    return n;
}

int64_t ms__admission_run(ms__models *ml)
{
    ms__model *waiting[MS__MODELS_MAX];
    int64_t next = INT64_MAX;
    int n = waiting_models(ml, waiting);
    if (n == 0)
        return next;
    int64_t now = ms__registry_now(&ml->reg);
    for (int i = 0; i < n; i++) {
        ms__model *m = waiting[i];
        if (m->waiters == 0) {
            ms__log_info("model \"%s\": nobody waits for its load any more: forgotten", m->tag);
            ms__registry_remove(&ml->reg, m);
            continue;
        }
        decide(ml, m, now);
        /* Past its deadline it only waits for unloads in progress: look again soon. */
        int64_t due = m->wait_deadline_ns > now ? m->wait_deadline_ns : now + 100000000;
        if (m->state == MS__MODEL_WAITING && due < next)
            next = due;
    }
    return next;
}

void ms__model_ready(ms__models *ml, ms__model *m)
{
    ms__model_set_ready(&ml->reg, m);
    ms__measure_model(m);
    const char *devs[MS__INSTANCES_MAX + 1];
    char where[256] = "";
    for (int d = 0, n = ms__model_devices(m, devs), pos = 0; d < n && pos < (int)sizeof where; d++)
        pos += snprintf(where + pos, sizeof where - (size_t)pos, "%s%s", d ? ", " : "", devs[d]);
    ms__log_info("model \"%s\" ready: %d worker(s), %.1f MiB measured on %s (estimate %.1f MiB)",
                 m->tag, m->nworkers, mib(m->memory_bytes), where, mib(m->estimate_bytes));
    settled(ml, m, MS__SETTLED_READY, 0, NULL);
}

void ms__unload_done(ms__models *ml, ms__model *m)
{
    ms__log_info("model \"%s\": unloaded: its workers are gone, %.1f MiB returned to %s", m->tag,
                 mib(m->memory_bytes), ms__model_inst_budget(m, 0));
    settled(ml, m, MS__SETTLED_UNLOADED, 0, NULL);
    if (m->spec_waiters > 0 && !ml->stopping) {
        ms__start_load(ml, m);
        return;
    }
    char msg[MS__ERRLEN];
    snprintf(msg, sizeof msg,
             "model \"%s\" was unloaded and nothing is loaded under that tag now (acquire it "
             "with a spec to load it)",
             m->tag);
    settled(ml, m, MS__SETTLED_FAILED, MS_E_UNKNOWN_TAG, msg);
    ms__registry_remove(&ml->reg, m);
}

void ms__begin_unload(ms__models *ml, ms__model *m)
{
    char msg[MS__ERRLEN];
    snprintf(msg, sizeof msg, "model \"%s\" was unloaded during its swap", m->tag);
    ms__swap_abort(ml, m, MS_E_UNLOADED, msg);
    ms__model_set_unloading(m);
    int64_t now = ms__registry_now(&ml->reg);
    for (int i = 0; i < m->nworkers; i++)
        ms__sup_stop(&ml->sup, m->workers[i], now);
    if (m->nworkers == 0)
        ms__unload_done(ml, m);
}
