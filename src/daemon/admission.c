/*
 * Memory budgets in the daemon: the decision for one load against its device's budget (fits,
 * evict idle models in least-recently-used order, wait, or never), and the messages about it.
 * The policy itself is budget.c's; load.c acts on the plan (a wait is a state with a deadline,
 * never a blocked loop). See models_int.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/nvml.h"
#include "../common/procmem.h"
#include "placement.h"
#include "modelshare.h"
#include "models_int.h"

int ms__admission_init(ms__budgets *b, const char *memory, char *err, size_t errlen)
{
    ms__budgets_init(b);
    if (memory != NULL && memory[0] != '\0') {
        int rc = ms__budgets_parse(b, memory, err, errlen);
        if (rc != 0)
            return rc;
    }
    ms__budget_dev *host = ms__budgets_get(b, "host");
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
        ms__budget_dev *d = ms__budgets_get(b, name);
        if (d != NULL)
            ms__nvml_device_memory(i, &d->total_bytes, &used);
    }
    return 0;
}

bool ms__model_charges_memory(const ms__model *m)
{
    return m->state == MS__MODEL_LOADING || m->state == MS__MODEL_READY ||
           m->state == MS__MODEL_UNLOADING;
}

ms__budget_dev *ms__budget_find(ms__models *ml, const char *name)
{
    ms__budget_dev *d = ms__budgets_get(&ml->budgets, name);
    if (d != NULL && d->total_bytes == 0 && strncmp(d->name, "cuda:", 5) == 0) {
        uint64_t total, used;
        unsigned index = (unsigned)strtoul(d->name + 5, NULL, 10);
        if (ms__nvml_device_memory(index, &total, &used) == 0)
            d->total_bytes = total;
    }
    return d;
}

/* What the models but skip hold on dev now. */
static uint64_t used_but(const ms__models *ml, const ms__budget_dev *dev, const ms__model *skip)
{
    uint64_t used = 0;
    for (int i = 0; i < ml->reg.nmodels; i++) {
        const ms__model *m = ml->reg.models[i];
        if (m != skip && ms__model_charges_memory(m))
            used += ms__model_charge(m, dev->name);
    }
    return used;
}

uint64_t ms__budget_used(const ms__models *ml, const ms__budget_dev *dev)
{
    return used_but(ml, dev, NULL);
}

/* Whether one of o's instances is on budget device dev (a GPU model's host memory is charged to
 * "host" without one). */
static bool has_instance_on(const ms__model *o, const char *dev)
{
    for (int i = 0; i < o->spec.instances && i < MS__INSTANCES_MAX; i++)
        if (strcmp(ms__model_inst_budget(o, i), dev) == 0)
            return true;
    return false;
}

/* Other model o as a holder of bytes on budget device dev. Only a model with an instance on dev
 * may be evicted for room there: the host memory of a GPU model's workers counts as used on
 * "host", but evicting a GPU model for host room is not done. */
static ms__holder holder_of(const ms__model *o, const char *dev, uint64_t bytes)
{
    return (ms__holder){
        .bytes = bytes,
        .last_used_ns = o->last_used_ns,
        .idle = o->state == MS__MODEL_READY && o->leases == 0 && o->waiters == 0 &&
                o->swap == NULL && has_instance_on(o, dev),
        .unloading = o->state == MS__MODEL_UNLOADING,
    };
}

/* The models holding memory on dev (but m), as holders for the plan. */
static int holders_of(ms__models *ml, const ms__model *m, const ms__budget_dev *dev,
                      ms__model **who, ms__holder *h)
{
    int n = 0;
    for (int i = 0; i < ml->reg.nmodels; i++) {
        ms__model *o = ml->reg.models[i];
        uint64_t bytes = o != m && ms__model_charges_memory(o) ? ms__model_charge(o, dev->name) : 0;
        if (bytes == 0)
            continue;
        who[n] = o;
        h[n] = holder_of(o, dev->name, bytes);
        n++;
    }
    return n;
}

int ms__admission_over(ms__models *ml, ms__budget_dev *dev, ms__admission *a)
{
    a->dev = dev;
    a->need = 0;
    a->budget = ms__budget_bytes(dev);
    a->n = holders_of(ml, NULL, dev, a->who, a->h);
    return ms__over_plan(a->budget, a->h, a->n, a->evict);
}

/* What the models but skip hold on dev that neither an eviction nor an unload in progress frees
 * (leased, loading, waited on, swapping; on "host", GPU models' host memory). */
static uint64_t kept_but(const ms__models *ml, const ms__budget_dev *dev, const ms__model *skip)
{
    uint64_t kept = 0;
    for (int i = 0; i < ml->reg.nmodels; i++) {
        const ms__model *o = ml->reg.models[i];
        uint64_t bytes =
            o != skip && ms__model_charges_memory(o) ? ms__model_charge(o, dev->name) : 0;
        ms__holder h = holder_of(o, dev->name, bytes);
        if (bytes > 0 && !h.idle && !h.unloading)
            kept += bytes;
    }
    return kept;
}

/* "\"a\" 150.0 MiB (2 leases), \"b\" 100.0 MiB (loading)" into buf. */
static void holders_text(ms__model *const *who, const ms__holder *h, int n, char *buf,
                         size_t buflen)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && pos + 1 < buflen; i++) {
        char size[32], what[48];
        ms__bytes_str(h[i].bytes, size, sizeof size);
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

void ms__admission_plan(ms__models *ml, const ms__model *m, const char *dev, ms__admission *a)
{
    memset(a, 0, sizeof *a);
    a->dev = ms__budget_find(ml, dev);
    if (a->dev == NULL) {
        a->plan = MS__ADMIT_FITS;
        return;
    }
    a->need = ms__model_charge(m, a->dev->name);
    a->budget = ms__budget_bytes(a->dev);
    a->n = holders_of(ml, m, a->dev, a->who, a->h);
    a->plan = ms__admit_plan(a->budget, a->need, a->h, a->n, a->evict, &a->free_now);
    ms__bytes_str(a->need, a->need_s, sizeof a->need_s);
    ms__bytes_str(a->free_now, a->free_s, sizeof a->free_s);
    ms__bytes_str(a->budget, a->budget_s, sizeof a->budget_s);
}

bool ms__admission_unloads_cover(const ms__admission *a)
{
    uint64_t unloading = 0;
    for (int i = 0; i < a->n; i++)
        if (a->h[i].unloading)
            unloading += a->h[i].bytes;
    return a->need <= a->free_now + unloading;
}

void ms__admission_never_text(const ms__admission *a, const ms__model *m, char *buf, size_t buflen)
{
    snprintf(buf, buflen,
             "model \"%s\" needs %s (%llu bytes) on %s, more than the whole budget of %s "
             "(%llu bytes; set it with modelshared --memory %s=SIZE)",
             m->tag, a->need_s, (unsigned long long)a->need, a->dev->name, a->budget_s,
             (unsigned long long)a->budget, a->dev->name);
}

void ms__admission_log_wait(const ms__admission *a, const ms__model *m)
{
    char held[700];
    holders_text(a->who, a->h, a->n, held, sizeof held);
    ms__log_info("model \"%s\": waits up to %g s for %s on %s (%s free of %s; held by %s)", m->tag,
                 m->spec.load_timeout, a->need_s, a->dev->name, a->free_s, a->budget_s, held);
}

void ms__admission_timeout_text(const ms__admission *a, const ms__model *m, char *buf,
                                size_t buflen)
{
    char held[700];
    holders_text(a->who, a->h, a->n, held, sizeof held);
    snprintf(buf, buflen,
             "not enough memory on %s for model \"%s\": it needs %s (%llu bytes), %s "
             "(%llu bytes) of the %s budget are free after waiting %g s (load_timeout); "
             "held by %.500s",
             a->dev->name, m->tag, a->need_s, (unsigned long long)a->need, a->free_s,
             (unsigned long long)a->free_now, a->budget_s, m->spec.load_timeout, held);
}

int ms__model_devices(const ms__model *m, const char **names)
{
    int n = 0;
    bool host = false;
    for (int i = 0; i < m->spec.instances && i < MS__INSTANCES_MAX; i++) {
        const char *d = ms__model_inst_budget(m, i);
        int k = 0;
        while (k < n && strcmp(names[k], d) != 0)
            k++;
        if (k == n)
            names[n++] = d;
        host |= strcmp(d, "host") == 0;
    }
    if (!host && ms__model_charge(m, "host") > 0)
        names[n++] = "host";
    return n;
}

/* "cuda:N" that NVML (when there is a driver) says does not exist: MS_E_DEVICE. */
static int device_exists(const char *dev, char *err, size_t errlen)
{
    if (strncmp(dev, "cuda:", 5) != 0 || ms__nvml_open(NULL, 0) != 0)
        return 0;
    unsigned index = (unsigned)strtoul(dev + 5, NULL, 10), n = ms__nvml_device_count();
    if (index < n)
        return 0;
    if (n == 0)
        return ms__fail(err, errlen, MS_E_DEVICE, "%s does not exist: no CUDA device here", dev);
    return ms__fail(err, errlen, MS_E_DEVICE, "%s does not exist: %u device%s (cuda:0 to cuda:%u)",
                    dev, n, n == 1 ? "" : "s", n - 1);
}

/* The devices m may be placed on (spec names: "cpu", "cuda:N"): its devices list, else every
 * cuda device the daemon knows ("auto": named in --memory or found by NVML, and not one that
 * NVML says does not exist), else "cpu". Returns how many. */
static int candidates(const ms__models *ml, const ms__spec *spec, const char **names)
{
    int n = 0;
    for (int i = 0; i < spec->ndevices; i++)
        names[n++] = spec->devices[i];
    if (spec->ndevices > 0)
        return n;
    for (int i = 0; i < ml->budgets.n && n < MS__DEVICES_MAX; i++) {
        const ms__budget_dev *d = &ml->budgets.dev[i];
        if (strncmp(d->name, "cuda:", 5) == 0 && (d->configured || d->total_bytes > 0) &&
            device_exists(d->name, NULL, 0) == 0)
            names[n++] = d->name;
    }
    if (n == 0)
        names[n++] = "cpu";
    return n;
}

/* What placement counts as used on a device: what is held there now; when nothing has room
 * now, what no eviction frees (so the device where evicting idle models makes room wins); when
 * even that leaves no room, nothing (by budget alone: admission there waits for leases). */
enum { USED_NOW, USED_KEPT, USED_NONE };

/* The placement table of m's candidates names[0..nc) with used counted as said. */
static void place_table(ms__models *ml, const ms__model *m, const char **names, int nc, int used,
                        ms__place_dev *t)
{
    for (int c = 0; c < nc; c++) {
        ms__budget_dev *d = ms__budget_find(ml, ms__budget_device(names[c]));
        uint64_t u = d == NULL || used == USED_NONE ? 0
                     : used == USED_NOW             ? used_but(ml, d, m)
                                                    : kept_but(ml, d, m);
        t[c] = (ms__place_dev){names[c], d != NULL ? ms__budget_bytes(d) : 0, u};
    }
}

/* placement.c's answer for m over its candidates: out[i] is instance i's device. */
static int place(ms__models *ml, ms__model *m, const char **out, char *err, size_t errlen)
{
    const char *names[MS__DEVICES_MAX];
    ms__place_dev t[MS__DEVICES_MAX];
    int nc = candidates(ml, &m->spec, names), n = m->spec.instances, where[MS__INSTANCES_MAX];
    uint64_t need = (m->estimate_bytes + (uint64_t)n - 1) / (uint64_t)n;
    bool spread = m->spec.ndevices > 0 || m->spec.devices_auto;
    char why[MS__ERRLEN];
    int rc = MS_E_NO_MEMORY;
    for (int used = USED_NOW; used <= USED_NONE && rc == MS_E_NO_MEMORY; used++) {
        place_table(ml, m, names, nc, used, t);
        rc = ms__place(t, nc, need, n, spread, where, why, sizeof why);
    }
    if (rc != 0)
        return ms__fail(err, errlen, rc,
                        "model \"%s\": cannot place its %d instance(s) even on empty devices: %s",
                        m->tag, n, why);
    for (int i = 0; i < n; i++)
        out[i] = names[where[i]];
    return 0;
}

int ms__admission_place(ms__models *ml, ms__model *m, char *err, size_t errlen)
{
    const char *out[MS__INSTANCES_MAX];
    int n = m->spec.instances < MS__INSTANCES_MAX ? m->spec.instances : MS__INSTANCES_MAX;
    for (int i = 0; i < n; i++)
        out[i] = m->spec.device;
    if (ms__spec_placed(&m->spec)) {
        int rc = place(ml, m, out, err, errlen);
        if (rc != 0)
            return rc;
    }
    for (int i = 0; i < n; i++) {
        int rc = device_exists(out[i], err, errlen);
        if (rc != 0)
            return rc;
        snprintf(m->inst_device[i], sizeof m->inst_device[i], "%s", out[i]);
    }
    return 0;
}
