/*
 * Memory budgets in the daemon: a load is admitted to its device's budget, evicts idle models in
 * least-recently-used order, or waits (a state with a deadline, never a blocked loop) until
 * leases drop or load_timeout passes, then fails with MS_E_NO_MEMORY naming what holds the
 * memory. The decision itself is budget.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/backend.h"
#include "../common/log.h"
#include "../common/nvml.h"
#include "../common/procmem.h"
#include "modelshare.h"
#include "server_int.h"

int ms__admission_init(ms__server *s, const char *memory, char *err, size_t errlen)
{
    ms__budgets_init(&s->budgets);
    if (memory != NULL && memory[0] != '\0') {
        int rc = ms__budgets_parse(&s->budgets, memory, err, errlen);
        if (rc != 0)
            return rc;
    }
    ms__budget_dev *host = ms__budgets_get(&s->budgets, "host");
    uint64_t total = 0;
    if (host != NULL && ms__sys_mem(&total, NULL) == 0)
        host->total_bytes = total;
    /* Every GPU NVML sees gets its budget (90% unless configured). */
    char why[MS__ERRLEN];
    if (ms__nvml_open(why, sizeof why) != 0) {
        ms__log_info("GPU budgets off until a GPU model asks: %s", why);
        return 0;
    }
    unsigned n = ms__nvml_device_count();
    for (unsigned i = 0; i < n && i < MS__DEVICES_MAX - 1; i++) {
        char name[MS__DEVICE_NAME_MAX];
        uint64_t used;
        snprintf(name, sizeof name, "cuda:%u", i);
        ms__budget_dev *d = ms__budgets_get(&s->budgets, name);
        if (d != NULL)
            ms__nvml_device_memory(i, &d->total_bytes, &used);
    }
    return 0;
}

static bool charges_memory(const ms__model *m)
{
    return m->state == MS__MODEL_LOADING || m->state == MS__MODEL_READY ||
           m->state == MS__MODEL_UNLOADING;
}

static bool same_device(const ms__model *m, const ms__budget_dev *dev)
{
    return strcmp(ms__budget_device(m->spec.device), dev->name) == 0;
}

ms__budget_dev *ms__model_budget(ms__server *s, const ms__model *m)
{
    ms__budget_dev *d = ms__budgets_get(&s->budgets, ms__budget_device(m->spec.device));
    if (d != NULL && d->total_bytes == 0 && strncmp(d->name, "cuda:", 5) == 0) {
        uint64_t total, used;
        unsigned index = (unsigned)strtoul(d->name + 5, NULL, 10);
        if (ms__nvml_device_memory(index, &total, &used) == 0)
            d->total_bytes = total;
    }
    return d;
}

uint64_t ms__budget_used(ms__server *s, const ms__budget_dev *dev)
{
    uint64_t used = 0;
    for (int i = 0; i < s->reg.nmodels; i++) {
        const ms__model *m = s->reg.models[i];
        if (charges_memory(m) && same_device(m, dev))
            used += m->memory_bytes;
    }
    return used;
}

/* True when a connection waits for m (an acquire or a load). */
static bool has_waiters(ms__server *s, const ms__model *m)
{
    for (ms__client *c = LIST_FIRST(&s->reg.clients); c != NULL; c = LIST_NEXT(c, link)) {
        const conn *k = c->user;
        if (!k->dead && k->p_model == m &&
            (k->pending == MS__OP_ACQUIRE || k->pending == MS__OP_LOAD))
            return true;
    }
    return false;
}

/* The models holding memory on dev (but m), as holders for the plan. */
static int holders_of(ms__server *s, const ms__model *m, const ms__budget_dev *dev, ms__model **who,
                      ms__holder *h)
{
    int n = 0;
    for (int i = 0; i < s->reg.nmodels; i++) {
        ms__model *o = s->reg.models[i];
        if (o == m || !charges_memory(o) || !same_device(o, dev))
            continue;
        who[n] = o;
        h[n] = (ms__holder){
            .bytes = o->memory_bytes,
            .last_used_ns = o->last_used_ns,
            .idle = o->state == MS__MODEL_READY && o->leases == 0 && !has_waiters(s, o),
            .unloading = o->state == MS__MODEL_UNLOADING,
        };
        n++;
    }
    return n;
}

/* "\"a\" 150.0 MiB (2 leases), \"b\" 100.0 MiB (loading)" into buf. */
static void holders_text(ms__model *const *who, int n, char *buf, size_t buflen)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && pos + 1 < buflen; i++) {
        char size[32], what[48];
        ms__bytes_str(who[i]->memory_bytes, size, sizeof size);
        if (who[i]->state == MS__MODEL_READY && who[i]->leases > 0)
            snprintf(what, sizeof what, "%d lease%s", who[i]->leases,
                     who[i]->leases == 1 ? "" : "s");
        else if (who[i]->state == MS__MODEL_READY)
            snprintf(what, sizeof what, "idle");
        else
            snprintf(what, sizeof what, "%s", ms__model_state_name(who[i]->state));
        int k = snprintf(buf + pos, buflen - pos, "%s\"%s\" %s (%s)", i > 0 ? ", " : "",
                         who[i]->tag, size, what);
        if (k < 0 || (size_t)k >= buflen - pos)
            break;
        pos += (size_t)k;
    }
    if (n == 0)
        snprintf(buf, buflen, "nothing else (the budget is smaller than the model)");
}

static void evict(ms__server *s, ms__model *victim, const ms__model *for_whom)
{
    char size[32];
    ms__bytes_str(victim->memory_bytes, size, sizeof size);
    ms__log_info("model \"%s\": evicted (idle, least recently used, %s on %s) to make room for "
                 "\"%s\"",
                 victim->tag, size, ms__budget_device(victim->spec.device), for_whom->tag);
    ms__begin_unload(s, victim);
}

/* One decision for m; returns its result (FITS: workers started; NEVER and timeouts: m failed). */
static int decide(ms__server *s, ms__model *m, int64_t now)
{
    ms__model *who[MS__MODELS_MAX];
    ms__holder h[MS__MODELS_MAX];
    bool marks[MS__MODELS_MAX];
    char msg[MS__ERRLEN], held[700], need_s[32], free_s[32], budget_s[32];
    ms__budget_dev *dev = ms__model_budget(s, m);
    if (dev == NULL) {
        m->state = MS__MODEL_LOADING;
        ms__spawn_workers(s, m);
        return MS__ADMIT_FITS;
    }
    uint64_t budget = ms__budget_bytes(dev), free_now = 0;
    int n = holders_of(s, m, dev, who, h);
    int plan = ms__admit_plan(budget, m->memory_bytes, h, n, marks, &free_now);
    ms__bytes_str(m->memory_bytes, need_s, sizeof need_s);
    ms__bytes_str(free_now, free_s, sizeof free_s);
    ms__bytes_str(budget, budget_s, sizeof budget_s);
    switch (plan) {
    case MS__ADMIT_FITS:
        if (m->state == MS__MODEL_WAITING)
            ms__log_info("model \"%s\": admitted after waiting %.1f s for memory on %s", m->tag,
                         (double)(now - m->wait_since_ns) / 1e9, dev->name);
        m->state = MS__MODEL_LOADING;
        ms__spawn_workers(s, m);
        return plan;
    case MS__ADMIT_NEVER:
        snprintf(msg, sizeof msg,
                 "model \"%s\" needs %s (%llu bytes) on %s, more than the whole budget of %s "
                 "(%llu bytes; set it with modelshared --memory %s=SIZE)",
                 m->tag, need_s, (unsigned long long)m->memory_bytes, dev->name, budget_s,
                 (unsigned long long)budget, dev->name);
        ms__model_fail(s, m, MS_E_NO_MEMORY, msg);
        return plan;
    case MS__ADMIT_EVICT:
        for (int i = 0; i < n; i++)
            if (marks[i])
                evict(s, who[i], m);
        break;
    default:
        break;
    }
    if (m->state != MS__MODEL_WAITING) {
        m->state = MS__MODEL_WAITING;
        m->wait_since_ns = now;
        m->wait_deadline_ns = now + (int64_t)(m->spec.load_timeout * 1e9);
        holders_text(who, n, held, sizeof held);
        ms__log_info("model \"%s\": waits up to %g s for %s on %s (%s free of %s; held by %s)",
                     m->tag, m->spec.load_timeout, need_s, dev->name, free_s, budget_s, held);
        return plan;
    }
    /* Evictions and unloads in progress always finish (within the kill grace): wait for them. */
    if (plan == MS__ADMIT_WAIT && now >= m->wait_deadline_ns) {
        uint64_t unloading = 0;
        for (int i = 0; i < n; i++)
            if (h[i].unloading)
                unloading += h[i].bytes;
        if (m->memory_bytes <= free_now + unloading)
            return plan;
        holders_text(who, n, held, sizeof held);
        snprintf(msg, sizeof msg,
                 "not enough memory on %s for model \"%s\": it needs %s (%llu bytes), %s "
                 "(%llu bytes) of the %s budget are free after waiting %g s (load_timeout); "
                 "held by %.500s",
                 dev->name, m->tag, need_s, (unsigned long long)m->memory_bytes, free_s,
                 (unsigned long long)free_now, budget_s, m->spec.load_timeout, held);
        ms__model_fail(s, m, MS_E_NO_MEMORY, msg);
    }
    return plan;
}

int ms__admit(ms__server *s, ms__model *m)
{
    m->estimate_bytes = m->spec.memory > 0 ? m->spec.memory : ms__backend_estimate(&m->spec);
    m->memory_bytes = m->estimate_bytes;
    m->measured = false;
    int plan = decide(s, m, ms__registry_now(&s->reg));
    if (m->state == MS__MODEL_FAILED)
        return m->error_code;
    (void)plan;
    return 0;
}

int64_t ms__admission_run(ms__server *s)
{
    ms__model *waiting[MS__MODELS_MAX];
    int n = 0;
    int64_t next = INT64_MAX;
    for (int i = 0; i < s->reg.nmodels; i++)
        if (s->reg.models[i]->state == MS__MODEL_WAITING)
            waiting[n++] = s->reg.models[i];
    if (n == 0)
        return next;
    /* First come, first served. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && waiting[j]->wait_since_ns < waiting[j - 1]->wait_since_ns; j--) {
            ms__model *t = waiting[j];
            waiting[j] = waiting[j - 1];
            waiting[j - 1] = t;
        }
    int64_t now = ms__registry_now(&s->reg);
    for (int i = 0; i < n; i++) {
        ms__model *m = waiting[i];
        if (!has_waiters(s, m)) {
            ms__log_info("model \"%s\": nobody waits for its load any more: forgotten", m->tag);
            ms__registry_remove(&s->reg, m);
            continue;
        }
        decide(s, m, now);
        /* Past its deadline it only waits for unloads in progress: look again soon. */
        int64_t due = m->wait_deadline_ns > now ? m->wait_deadline_ns : now + 100000000;
        if (m->state == MS__MODEL_WAITING && due < next)
            next = due;
    }
    return next;
}
