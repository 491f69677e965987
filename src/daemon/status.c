/* The status document (proto.h, docs/ARCHITECTURE.md, "Contracts"). */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"

/* How long instance in's worker has been stuck (stats.h: ms__stats_stuck_ns), seconds; 0 when
 * it is not, or not up. */
static double stuck_s(const ms__instance *in)
{
    if (in->state != MS__INST_UP || in->w == NULL || in->w->stats == NULL)
        return 0.0;
    return (double)ms__stats_stuck_ns(in->w->stats, ms__now_ns()) / 1e9;
}

/* Each instance: its worker's pid (null while down), state, requests in flight (as its clients
 * count them on the door: a figure to watch, never trusted), restarts, how long it has been
 * stuck (one batch running, or its loop not turning: the watchdog kills it past call_timeout),
 * last crash (null before any) and, while down, the seconds until it starts again. Adds up the
 * restarts in *restarts. */
static json_t *instances_json(const ms__model *m, int64_t now, unsigned *restarts)
{
    json_t *a = json_array();
    for (int i = 0; a != NULL && i < m->ninst; i++) {
        const ms__instance *in = &m->inst[i];
        json_t *o = json_object();
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
        json_object_set_new(o, "pid", in->w != NULL ? json_integer(in->w->pid) : json_null());
        json_object_set_new(o, "device", json_string(m->inst_device[i]));
        json_object_set_new(o, "state", json_string(ms__inst_state_name(in->state)));
        json_object_set_new(
            o, "inflight",
            json_integer(in->door != NULL ? (json_int_t)atomic_load(&in->door->inflight) : 0));
        json_object_set_new(o, "restarts", json_integer(in->restarts));
        json_object_set_new(o, "stuck_s", json_real(stuck_s(in)));
        if (in->w != NULL && !in->w->ready && in->w->stats != NULL)
            json_object_set_new(o, "load_phase",
                                json_string(ms__phase_name((int)atomic_load_explicit(
                                    &in->w->stats->phase, memory_order_relaxed))));
        json_object_set_new(o, "last_crash",
                            in->last_crash[0] ? json_string(in->last_crash) : json_null());
        if (in->state == MS__INST_DOWN && m->state == MS__MODEL_READY)
            json_object_set_new(o, "restart_in_s",
                                json_real((double)(in->restart_at_ns - now) / 1e9));
        *restarts += in->restarts;
    }
    return a;
}

/* While m loads: "load_phase" (ms__phase_name), "loaded_bytes" and "load_total_bytes" (of the
 * weights, 0 when the backend does not say) of its least advanced worker, as the workers tell
 * them in their stats pages. */
static void add_load_progress(json_t *o, const ms__model *m)
{
    ms__stats *least = NULL;
    uint32_t least_phase = MS__PHASE_COUNT;
    uint64_t least_bytes = UINT64_MAX;
    for (int i = 0; i < m->nworkers; i++) {
        ms__stats *s = m->workers[i]->stats;
        if (s == NULL)
            continue;
        uint32_t ph = atomic_load_explicit(&s->phase, memory_order_relaxed);
        uint64_t b = atomic_load_explicit(&s->load_bytes, memory_order_relaxed);
        if (least == NULL || ph < least_phase || (ph == least_phase && b < least_bytes)) {
            least = s;
            least_phase = ph;
            least_bytes = b;
        }
    }
    if (least == NULL) {
        json_object_set_new(o, "load_phase", json_string(ms__phase_name(MS__PHASE_STARTING)));
        return;
    }
    json_object_set_new(o, "load_phase", json_string(ms__phase_name((int)least_phase)));
    json_object_set_new(o, "loaded_bytes", json_integer((json_int_t)least_bytes));
    json_object_set_new(o, "load_total_bytes",
                        json_integer((json_int_t)atomic_load_explicit(&least->load_total_bytes,
                                                                      memory_order_relaxed)));
}

/* "instances" and "restarts" (theirs added up). */
static void add_instances(json_t *o, const ms__model *m, int64_t now)
{
    unsigned restarts = 0;
    json_t *inst = instances_json(m, now, &restarts);
    json_object_set_new(o, "instances", inst != NULL ? inst : json_array());
    json_object_set_new(o, "restarts", json_integer(restarts));
}

/* The version m serves, and whether a swap (modelshare swap) moves it to another. */
static void version_json(json_t *o, const ms__model *m)
{
    json_object_set_new(o, "version",
                        m->spec.version[0] ? json_string(m->spec.version) : json_null());
    json_object_set_new(o, "swapping", json_boolean(m->swap != NULL));
    if (m->swap != NULL)
        json_object_set_new(o, "swap_bytes", json_integer((json_int_t)m->swap_bytes));
}

/* Its device: the spec's; for device "auto" and devices, its first instance's once placed
 * (each instance's is in "instances"), "auto" before. */
static const char *device_of(const ms__model *m)
{
    bool placed = m->state != MS__MODEL_WAITING && m->inst_device[0][0] != '\0';
    if (!ms__spec_placed(&m->spec))
        return m->spec.device;
    return placed ? m->inst_device[0] : "auto";
}

/* Its memory: held (measured or estimated), the estimate, the budget it is charged to (its first
 * instance's; null while "auto" or devices is not placed yet), and what it holds on each device
 * ("memory_by_device", the host memory of GPU instances under "host"). */
static void memory_json(json_t *o, const ms__model *m)
{
    const char *where = device_of(m), *dev = ms__budget_device(where);
    bool placed = strcmp(where, "auto") != 0;
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)m->memory_bytes));
    json_object_set_new(o, "memory_measured", json_boolean(m->measured));
    json_object_set_new(o, "estimate_bytes", json_integer((json_int_t)m->estimate_bytes));
    /* Measured over the memory its spec says it needs: by how much (0: within it). */
    json_object_set_new(o, "over_memory_bytes", json_integer((json_int_t)ms__model_over_memory(m)));
    json_object_set_new(o, "budget_device", placed ? json_string(dev) : json_null());
    if ((placed && strcmp(dev, "host") != 0) || m->host_bytes > 0)
        json_object_set_new(o, "host_bytes", json_integer((json_int_t)m->host_bytes));
    json_t *by = json_object();
    const char *devs[MS__INSTANCES_MAX + 1];
    int n = ms__model_charges_memory(m) ? ms__model_devices(m, devs) : 0;
    for (int i = 0; by != NULL && i < n; i++)
        json_object_set_new(by, devs[i], json_integer((json_int_t)ms__model_charge(m, devs[i])));
    if (by != NULL)
        json_object_set_new(o, "memory_by_device", by);
}

/* What one viewer may see of the models (ms__status_json). */
typedef struct viewer {
    const ms__access *access;
    uid_t uid;
} viewer;

/* Another member's model, seen by a member: its worker pids are left out (null, []). */
static void hide_pids(json_t *o)
{
    json_object_set_new(o, "worker_pids", json_array());
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(o, "instances"), i, in)
        json_object_set_new(in, "pid", json_null());
}

static json_t *model_json(ms__model *m, int64_t now)
{
    json_t *o = json_object();
    json_t *pids = json_array(), *per_worker = json_array();
    if (o == NULL || pids == NULL || per_worker == NULL) {
        json_decref(o);
        json_decref(pids);
        json_decref(per_worker);
        return NULL;
    }
    uint64_t requests = m->requests_done, batches = m->batches_done, rows = 0, busy_ns = 0;
    for (int i = 0; i < m->nworkers; i++) {
        const ms__wproc *w = m->workers[i];
        json_array_append_new(pids, json_integer(w->pid));
        uint64_t wr = 0;
        if (w->stats != NULL) {
            wr = atomic_load(&w->stats->requests);
            requests += wr;
            batches += atomic_load(&w->stats->batches);
            rows += atomic_load(&w->stats->rows);
            busy_ns += atomic_load(&w->stats->busy_ns);
        }
        json_array_append_new(per_worker, json_integer((json_int_t)wr));
    }
    ms__measure_model(m);
    json_object_set_new(o, "tag", json_string(m->tag));
    json_object_set_new(o, "backend", json_string(m->spec.backend));
    version_json(o, m);
    json_object_set_new(o, "state", json_string(ms__model_state_name(m->state)));
    json_object_set_new(o, "device", json_string(device_of(m)));
    memory_json(o, m);
    json_object_set_new(o, "leases", json_integer(m->leases));
    json_object_set_new(o, "worker_pids", pids);
    json_object_set_new(o, "loads", json_integer(m->loads));
    json_object_set_new(o, "requests", json_integer((json_int_t)requests));
    json_object_set_new(o, "batches", json_integer((json_int_t)batches));
    /* Rows run by the live workers (rows / batches: the mean batch size), and each live
     * worker's requests, in the order of worker_pids. */
    json_object_set_new(o, "rows", json_integer((json_int_t)rows));
    json_object_set_new(o, "busy_s", json_real((double)busy_ns / 1e9)); /* in the backend */
    json_object_set_new(o, "worker_requests", per_worker);
    add_instances(o, m, now);
    json_t *brief = m->spec.python != NULL ? ms__spec_to_json_brief(&m->spec) : NULL;
    json_object_set_new(o, "spec", brief != NULL ? brief : json_incref(m->spec_json));
    if (m->state == MS__MODEL_READY && m->leases == 0)
        json_object_set_new(o, "idle_s", json_real((double)(now - m->last_used_ns) / 1e9));
    if (m->state == MS__MODEL_LOADING)
        add_load_progress(o, m);
    if (m->state == MS__MODEL_WAITING)
        json_object_set_new(o, "waiting_s", json_real((double)(now - m->wait_since_ns) / 1e9));
    if (m->state == MS__MODEL_FAILED) {
        json_object_set_new(o, "error", json_string(m->error));
        json_object_set_new(o, "error_code", json_integer(m->error_code));
    }
    return o;
}

/* {"budget_bytes", "used_bytes", "free_bytes", "total_bytes", "models": {tag: bytes}} */
static json_t *budget_json(const ms__models *ml, const ms__budget_dev *d, const viewer *v)
{
    json_t *o = json_object();
    json_t *held = json_object();
    if (o == NULL || held == NULL) {
        json_decref(o);
        json_decref(held);
        return NULL;
    }
    uint64_t budget = ms__budget_bytes(d), used = ms__budget_used(ml, d);
    for (int i = 0; i < ml->reg.nmodels; i++) {
        const ms__model *m = ml->reg.models[i];
        uint64_t bytes = ms__model_charges_memory(m) ? ms__model_charge(m, d->name) : 0;
        if (bytes > 0 && ms__owner_may_use(v->access, &m->owner, &m->spec, v->uid))
            json_object_set_new(held, m->tag, json_integer((json_int_t)bytes));
    }
    json_object_set_new(o, "budget_bytes", json_integer((json_int_t)budget));
    json_object_set_new(o, "used_bytes", json_integer((json_int_t)used));
    json_object_set_new(o, "free_bytes",
                        json_integer((json_int_t)(budget > used ? budget - used : 0)));
    json_object_set_new(o, "total_bytes", json_integer((json_int_t)d->total_bytes));
    if (d->percent > 0)
        json_object_set_new(o, "budget_percent", json_real(d->percent));
    json_object_set_new(o, "models", held);
    return o;
}

/* The models v may see: their JSON in models, their devices found in the budget table. */
static int models_json(ms__models *ml, const viewer *v, int64_t now, json_t *models)
{
    for (int i = 0; i < ml->reg.nmodels; i++) {
        ms__model *m = ml->reg.models[i];
        if (!ms__owner_may_use(v->access, &m->owner, &m->spec, v->uid))
            continue;
        json_t *mj = model_json(m, now);
        if (mj == NULL)
            return -1;
        if (v->access->has_group)
            json_object_set_new(mj, "owner_uid", json_integer(m->owner.uid));
        if (!ms__owner_manages(v->access, &m->owner, v->uid))
            hide_pids(mj);
        json_array_append_new(models, mj);
        const char *devs[MS__INSTANCES_MAX + 1]; /* its devices are listed below */
        int nd = ms__model_charges_memory(m) ? ms__model_devices(m, devs) : 0;
        for (int d = 0; d < nd; d++)
            ms__budget_find(ml, devs[d]);
    }
    return 0;
}

json_t *ms__status_json(ms__proto *p, uid_t viewer_uid)
{
    const viewer v = {&p->access, viewer_uid};
    ms__models *ml = p->models;
    int64_t now = ms__registry_now(&ml->reg);
    json_t *st = json_object();
    json_t *models = json_array();
    json_t *budgets = json_object();
    if (st == NULL || models == NULL || budgets == NULL)
        goto fail;
    if (models_json(ml, &v, now, models) != 0)
        goto fail;
    for (int i = 0; i < ml->budgets.n; i++) {
        json_t *b = budget_json(ml, &ml->budgets.dev[i], &v);
        if (b == NULL)
            goto fail;
        json_object_set_new(budgets, ml->budgets.dev[i].name, b);
    }
    json_object_set_new(st, "daemon_pid", json_integer(getpid()));
    json_object_set_new(st, "socket", json_string(p->socket_path));
    json_object_set_new(st, "uptime_s", json_real((double)(ms__now_ns() - p->start_ns) / 1e9));
    json_object_set_new(st, "clients", json_integer(ml->reg.nclients));
    json_object_set_new(st, "models", models);
    json_object_set_new(st, "budgets", budgets);
    return st;

fail:
    json_decref(st);
    json_decref(models);
    json_decref(budgets);
    return NULL;
}
