/* The status document (proto.h, DESIGN.md's contract for `modelshare status --json`). */
#include <stdatomic.h>
#include <unistd.h>

#include "../common/procmem.h"
#include "server_int.h"

/* Memory of m now: each live worker's proportional set size, else what it said when ready. */
static uint64_t model_memory(const ms__model *m)
{
    uint64_t sum = 0;
    for (int i = 0; i < m->nworkers; i++) {
        const ms__wproc *w = m->workers[i];
        if (!w->ready)
            continue;
        uint64_t pss;
        if (ms__proc_pss(w->pid, &pss) == 0 && pss > 0)
            sum += pss;
        else
            sum += w->memory_bytes;
    }
    return sum;
}

static json_t *model_json(const ms__server *s, const ms__model *m, int64_t now, uint64_t *mem)
{
    json_t *o = json_object();
    json_t *pids = json_array(), *per_worker = json_array();
    if (o == NULL || pids == NULL || per_worker == NULL) {
        json_decref(o);
        json_decref(pids);
        json_decref(per_worker);
        return NULL;
    }
    uint64_t requests = m->requests_done, batches = m->batches_done, rows = 0;
    for (int i = 0; i < m->nworkers; i++) {
        const ms__wproc *w = m->workers[i];
        json_array_append_new(pids, json_integer(w->pid));
        uint64_t wr = 0;
        if (w->stats != NULL) {
            wr = atomic_load(&w->stats->requests);
            requests += wr;
            batches += atomic_load(&w->stats->batches);
            rows += atomic_load(&w->stats->rows);
        }
        json_array_append_new(per_worker, json_integer((json_int_t)wr));
    }
    *mem = model_memory(m);
    json_object_set_new(o, "tag", json_string(m->tag));
    json_object_set_new(o, "backend", json_string(m->spec.backend));
    json_object_set_new(o, "state", json_string(ms__model_state_name(m->state)));
    json_object_set_new(o, "device", json_string(m->spec.device));
    json_object_set_new(o, "memory_bytes", json_integer((json_int_t)*mem));
    json_object_set_new(o, "leases", json_integer(m->leases));
    json_object_set_new(o, "worker_pids", pids);
    json_object_set_new(o, "loads", json_integer(m->loads));
    json_object_set_new(o, "requests", json_integer((json_int_t)requests));
    json_object_set_new(o, "batches", json_integer((json_int_t)batches));
    /* Rows run by the live workers (rows / batches: the mean batch size), and each live
     * worker's requests, in the order of worker_pids. */
    json_object_set_new(o, "rows", json_integer((json_int_t)rows));
    json_object_set_new(o, "worker_requests", per_worker);
    json_object_set(o, "spec", m->spec_json);
    if (m->state == MS__MODEL_READY && m->leases == 0)
        json_object_set_new(o, "idle_s", json_real((double)(now - m->last_used_ns) / 1e9));
    if (m->state == MS__MODEL_FAILED) {
        json_object_set_new(o, "error", json_string(m->error));
        json_object_set_new(o, "error_code", json_integer(m->error_code));
    }
    (void)s;
    return o;
}

json_t *ms__status_json(ms__server *s)
{
    int64_t now = ms__registry_now(&s->reg);
    json_t *st = json_object();
    json_t *models = json_array();
    json_t *budgets = json_object();
    json_t *host = json_object();
    if (st == NULL || models == NULL || budgets == NULL || host == NULL)
        goto fail;
    uint64_t used = 0;
    for (int i = 0; i < s->reg.nmodels; i++) {
        uint64_t mem = 0;
        json_t *mj = model_json(s, s->reg.models[i], now, &mem);
        if (mj == NULL)
            goto fail;
        json_array_append_new(models, mj);
        used += mem;
    }
    uint64_t total = 0, avail = 0;
    if (ms__sys_mem(&total, &avail) != 0)
        total = 0;
    json_object_set_new(host, "budget_bytes", json_integer((json_int_t)(total / 10 * 8)));
    json_object_set_new(host, "used_bytes", json_integer((json_int_t)used));
    json_object_set_new(budgets, "host", host);
    json_object_set_new(st, "daemon_pid", json_integer(getpid()));
    json_object_set_new(st, "socket", json_string(s->socket_path));
    json_object_set_new(st, "uptime_s", json_real((double)(ms__now_ns() - s->start_ns) / 1e9));
    json_object_set_new(st, "clients", json_integer(s->reg.nclients));
    json_object_set_new(st, "models", models);
    json_object_set_new(st, "budgets", budgets);
    return st;

fail:
    json_decref(st);
    json_decref(models);
    json_decref(budgets);
    json_decref(host);
    return NULL;
}
