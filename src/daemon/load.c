/*
 * A load's policy: what admission's plan (admission.c) means for a model (it fits, waits, evicts
 * others, or can never fit), its workers spawned, and the logs of ready and unloaded. Decisions
 * go to the life-cycle owner's inbox (lifecycle.c acts on them); nothing here changes a model's
 * state.
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

void ms__load_spawn(ms__models *ml, ms__model *m)
{
    char err[MS__ERRLEN];
    int rc = ms__instances_open(m, err, sizeof err);
    for (int i = 0; rc == 0 && i < m->ninst; i++) {
        ms__wproc *w;
        rc = ml->ops->spawn(&ml->sup, m, i, &m->spec, m->spec_json, &m->inst[i].door_fds,
                            m->ctor_fd, &w, err, sizeof err);
        if (rc == 0 && (rc = ms__instance_adopt(m, w, err, sizeof err)) != 0)
            ml->ops->stop(&ml->sup, w, ms__registry_now(&ml->reg));
    }
    if (rc != 0)
        ms__inbox_error(ml, m, MS__EV_FAIL, rc, err);
}

/* The plan says m fits: its workers start (ADMIT). */
static void admitted(ms__models *ml, ms__model *m, const ms__admission *a, int64_t now)
{
    if (m->state == MS__MODEL_WAITING && a->dev != NULL)
        ms__log_info("model \"%s\": admitted after waiting %.1f s for memory on %s", m->tag,
                     (double)(now - m->wait_since_ns) / 1e9, a->dev->name);
    for (int i = 0; i < m->spec.instances && ms__spec_placed(&m->spec); i++)
        ms__log_info("model \"%s\": instance %d placed on %s", m->tag, i, m->inst_device[i]);
    ms__inbox_event(ml, m, MS__EV_ADMIT);
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
    ms__inbox_event(ml, victim, MS__EV_UNLOAD);
}

void ms__load_make_room(ms__models *ml, const char *tag)
{
    if (ms__registry_counted(&ml->reg) < MS__MODELS_MAX)
        return;
    ms__model *victim = ms__registry_lru_idle(&ml->reg);
    if (victim == NULL)
        return; /* ms__registry_add refuses, saying why */
    ms__log_info("model \"%s\": evicted (idle, least recently used, at the limit of %d models) to "
                 "make room for \"%s\"",
                 victim->tag, MS__MODELS_MAX, tag);
    ml->evictions++;
    ms__tally_entry *e = ms__tally_get(&ml->tally, victim->tag, is_loaded, ml);
    if (e != NULL)
        e->evictions++;
    ms__inbox_event(ml, victim, MS__EV_UNLOAD);
}

uint64_t ms__load_backend_estimate(const ms__model *m, const ms__spec *spec)
{
    char err[MS__ERRLEN];
    ms__owner_fs fs;
    if (ms__owner_enter(&m->owner, &fs, err, sizeof err) != 0) {
        ms__log_warn("model \"%s\": no estimate: %s", m->tag, err);
        return 0;
    }
    uint64_t bytes = ms__backend_estimate(spec);
    ms__owner_leave(&fs);
    return bytes;
}

/* A hash of what makes a python model the same model: its constructor (spec.c's python_key). */
static uint64_t ctor_key(const ms__model *m)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = m->spec.python_key; p != NULL && *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* Each measured python model's memory, one instance's, kept for its tag's next load. */
static void remember(ms__models *ml)
{
    for (int i = 0; i < ml->reg.nmodels; i++) {
        ms__model *m = ml->reg.models[i];
        if (!m->measured || m->spec.python_key == NULL || m->state != MS__MODEL_READY)
            continue;
        ms__tally_entry *e = ms__tally_get(&ml->tally, m->tag, is_loaded, ml);
        if (e != NULL) {
            e->measured_bytes =
                m->memory_bytes / (uint64_t)(m->spec.instances > 1 ? m->spec.instances : 1);
            e->measured_key = ctor_key(m);
        }
    }
}

/* Its estimate before a load: the spec's memory, the backend's estimate, or (a python model,
 * which the daemon cannot estimate) what its tag measured last with the same constructor. */
static uint64_t estimate(ms__models *ml, const ms__model *m)
{
    if (m->spec.memory > 0)
        return m->spec.memory;
    uint64_t bytes = ms__load_backend_estimate(m, &m->spec);
    if (bytes > 0 || m->spec.python_key == NULL)
        return bytes;
    ms__tally_entry *e = ms__tally_get(&ml->tally, m->tag, is_loaded, ml);
    if (e == NULL || e->measured_bytes == 0 || e->measured_key != ctor_key(m))
        return 0;
    uint64_t n = m->spec.instances > 1 ? (uint64_t)m->spec.instances : 1;
    ms__log_info("model \"%s\": estimate %.1f MiB, as measured at its last load", m->tag,
                 mib(e->measured_bytes * n));
    return e->measured_bytes * n;
}

void ms__load_measured(ms__models *ml)
{
    remember(ml);

    ms__admission a;
    for (int d = 0; d < ml->budgets.n; d++) {
        ms__budget_dev *dev = &ml->budgets.dev[d];
        if (ms__admission_over(ml, dev, &a) == 0)
            continue;
        char used[32], budget[32], size[32];
        ms__bytes_str(ms__budget_used(ml, dev), used, sizeof used);
        ms__bytes_str(a.budget, budget, sizeof budget);
        for (int i = 0; i < a.n; i++) {
            if (!a.evict[i])
                continue;
            ms__bytes_str(a.h[i].bytes, size, sizeof size);
            ms__log_info("model \"%s\": evicted (idle, least recently used, %s on %s): %s is over "
                         "its budget as measured (%s used of %s)",
                         a.who[i]->tag, size, dev->name, dev->name, used, budget);
            ml->evictions++;
            ms__tally_entry *e = ms__tally_get(&ml->tally, a.who[i]->tag, is_loaded, ml);
            if (e != NULL)
                e->evictions++;
            ms__inbox_event(ml, a.who[i], MS__EV_UNLOAD);
        }
    }
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

void ms__load_decide(ms__models *ml, ms__model *m, int64_t now)
{
    char msg[MS__ERRLEN];
    int rc = ms__admission_place(ml, m, msg, sizeof msg);
    if (rc != 0) {
        ms__inbox_error(ml, m, MS__EV_FAIL, rc, msg);
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
        ms__inbox_error(ml, m, MS__EV_FAIL, MS_E_NO_MEMORY, msg);
        return;
    }
    if (m->state != MS__MODEL_WAITING) {
        ms__admission_log_wait(&a, m);
        ms__inbox_event(ml, m, MS__EV_WAIT);
        return;
    }
    /* Evictions and unloads in progress always finish (within the kill grace): wait for them. */
    if (a.plan == MS__ADMIT_WAIT && now >= m->wait_deadline_ns &&
        !ms__admission_unloads_cover(&a)) {
        ms__admission_timeout_text(&a, m, msg, sizeof msg);
        ms__inbox_error(ml, m, MS__EV_FAIL, MS_E_NO_MEMORY, msg);
    }
}

void ms__load_begin(ms__models *ml, ms__model *m)
{
    ms__tally_entry *e = ms__tally_get(&ml->tally, m->tag, is_loaded, ml);
    if (e != NULL)
        e->loads++;
    ms__log_info("model \"%s\": loading (load %u, backend %s, device %s, %d instance(s))", m->tag,
                 m->loads, m->spec.backend, m->spec.device, m->spec.instances);
    ms__model_set_estimate(m, estimate(ml, m));
}

void ms__load_log_ready(const ms__model *m)
{
    const char *devs[MS__INSTANCES_MAX + 1];
    char where[256] = "";
    for (int d = 0, n = ms__model_devices(m, devs), pos = 0; d < n && pos < (int)sizeof where; d++)
        pos += snprintf(where + pos, sizeof where - (size_t)pos, "%s%s", d ? ", " : "", devs[d]);
    ms__log_info("model \"%s\" ready: %d worker(s), %.1f MiB measured on %s (estimate %.1f MiB)",
                 m->tag, m->nworkers, mib(m->memory_bytes), where, mib(m->estimate_bytes));
}

void ms__load_log_unloaded(const ms__model *m)
{
    ms__log_info("model \"%s\": unloaded: its workers are gone, %.1f MiB returned to %s", m->tag,
                 mib(m->memory_bytes), ms__model_inst_budget(m, 0));
}
