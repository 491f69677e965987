/* The Prometheus text exposition of the daemon's models and budgets (exposition.h). */
#include "exposition.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"

/* One model's instances, with their counters added up (gone workers and live ones). */
typedef struct model_sums {
    int n;
    ms__stats_sum inst[MS__INSTANCES_MAX];
} model_sums;

/* The instances metrics list for m: those of its current load, at least its spec's. */
static int inst_count(const ms__model *m)
{
    int n = m->spec.instances > m->ninst ? m->spec.instances : m->ninst;
    return n < 1 ? 1 : n > MS__INSTANCES_MAX ? MS__INSTANCES_MAX : n;
}

static void sum_model(const ms__model *m, model_sums *s)
{
    s->n = inst_count(m);
    memcpy(s->inst, m->inst_gone, sizeof(ms__stats_sum) * (size_t)s->n);
    for (int i = 0; i < m->nworkers; i++) {
        const ms__wproc *w = m->workers[i];
        if (w->inst >= 0 && w->inst < s->n)
            ms__stats_add(&s->inst[w->inst], w->stats);
    }
}

/* A label value as the format wants it: backslash, quote and newline escaped. */
static void put_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fputc('\\', f);
        if (*v == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*v, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{tag="T",instance="I"  (the caller closes the braces) */
static void inst_labels(FILE *f, const char *name, const char *suffix, const ms__model *m, int i)
{
    fprintf(f, "%s%s{tag=\"", name, suffix);
    put_label(f, m->tag);
    fprintf(f, "\",instance=\"%d\"", i);
}

typedef struct ctx {
    FILE *f;
    ms__models *ml;
    model_sums *sums; /* one per model, in the registry's order */
} ctx;

/* A per-instance counter: the uint64_t at offset off of each instance's sums, times scale. */
static void inst_counter(const ctx *c, const char *name, const char *help, size_t off, double scale)
{
    family(c->f, name, "counter", help);
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        for (int i = 0; i < c->sums[k].n; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&c->sums[k].inst[i] + off, sizeof v);
            inst_labels(c->f, name, "", m, i);
            if (scale == 1.0)
                fprintf(c->f, "} %llu\n", (unsigned long long)v);
            else
                fprintf(c->f, "} %.9g\n", (double)v * scale);
        }
    }
}

/* One histogram's series for instance i of m: cumulative buckets, sum and count (the count is
 * the buckets' total, so the two always agree). */
static void hist_series(FILE *f, const char *name, const ms__model *m, int i, const uint64_t *b,
                        int nb, uint64_t sum, bool ns)
{
    uint64_t cum = 0;
    for (int j = 0; j < nb; j++) {
        cum += b[j];
        inst_labels(f, name, "_bucket", m, i);
        if (j == nb - 1)
            fputs(",le=\"+Inf\"", f);
        else if (ns)
            fprintf(f, ",le=\"%g\"", (double)ms__hist_ns_bound(j) / 1e9);
        else
            fprintf(f, ",le=\"%llu\"", (unsigned long long)ms__hist_rows_bound(j));
        fprintf(f, "} %llu\n", (unsigned long long)cum);
    }
    inst_labels(f, name, "_sum", m, i);
    if (ns)
        fprintf(f, "} %.9g\n", (double)sum / 1e9);
    else
        fprintf(f, "} %llu\n", (unsigned long long)sum);
    inst_labels(f, name, "_count", m, i);
    fprintf(f, "} %llu\n", (unsigned long long)cum);
}

enum { H_ROWS, H_QUEUE, H_RUN };

static void inst_histogram(const ctx *c, const char *name, const char *help, int which)
{
    family(c->f, name, "histogram", help);
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        for (int i = 0; i < c->sums[k].n; i++) {
            const ms__stats_sum *s = &c->sums[k].inst[i];
            if (which == H_ROWS)
                hist_series(c->f, name, m, i, s->rows_bucket, MS__HIST_ROWS_BUCKETS, s->rows_sum,
                            false);
            else if (which == H_QUEUE)
                hist_series(c->f, name, m, i, s->queue_bucket, MS__HIST_NS_BUCKETS, s->queue_sum_ns,
                            true);
            else
                hist_series(c->f, name, m, i, s->run_bucket, MS__HIST_NS_BUCKETS, s->run_sum_ns,
                            true);
        }
    }
}

/* Failed requests by code: only the codes that came (slot 0: a code outside the table). */
static void errors_by_code(const ctx *c)
{
    const char *name = "modelshare_errors_total";
    family(c->f, name, "counter", "Requests a model's instance answered with an error, by code.");
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        for (int i = 0; i < c->sums[k].n; i++)
            for (int e = 0; e < MS__STATS_CODES; e++) {
                uint64_t v = c->sums[k].inst[i].errors_by_code[e];
                if (v == 0)
                    continue;
                inst_labels(c->f, name, "", m, i);
                fprintf(c->f, ",code=\"%s\"} %llu\n", e == 0 ? "other" : ms_errname(-e),
                        (unsigned long long)v);
            }
    }
}

static void inst_restarts(const ctx *c)
{
    const char *name = "modelshare_restarts_total";
    family(c->f, name, "counter", "Workers started again after an instance's worker died.");
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        for (int i = 0; i < c->sums[k].n; i++) {
            inst_labels(c->f, name, "", m, i);
            fprintf(c->f, "} %llu\n", (unsigned long long)m->inst_restarts[i]);
        }
    }
}

/* How long each instance's worker has been stuck (a batch running, or its loop not turning). */
static void inst_stuck(const ctx *c)
{
    const char *name = "modelshare_instance_stuck_seconds";
    family(c->f, name, "gauge",
           "How long an instance's worker has run one batch, or not turned its loop (stopped, "
           "hung); the daemon kills it past the spec's call_timeout. 0 when it is not stuck.");
    int64_t now = ms__now_ns();
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        for (int i = 0; i < m->ninst; i++) {
            const ms__instance *in = &m->inst[i];
            int64_t ns = in->state == MS__INST_UP && in->w != NULL && in->w->stats != NULL
                             ? ms__stats_stuck_ns(in->w->stats, now)
                             : 0;
            inst_labels(c->f, name, "", m, i);
            fprintf(c->f, "} %.3f\n", (double)ns / 1e9);
        }
    }
}

/* name{tag="T"} v for every model; v from get. */
static void model_metric(const ctx *c, const char *name, const char *type, const char *help,
                         uint64_t (*get)(const ms__model *))
{
    family(c->f, name, type, help);
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        fprintf(c->f, "%s{tag=\"", name);
        put_label(c->f, m->tag);
        fprintf(c->f, "\"} %llu\n", (unsigned long long)get(m));
    }
}

/* modelshare_memory_bytes{tag="T",device="D"}: what each model is charged on each device its
 * instances use (the host memory of GPU instances on "host"); 0 on its first instance's device
 * while it charges nothing. */
static void memory_metric(const ctx *c)
{
    const char *name = "modelshare_memory_bytes";
    family(c->f, name, "gauge",
           "Bytes a model is charged on a device's budget (measured once loaded).");
    for (int k = 0; k < c->ml->reg.nmodels; k++) {
        const ms__model *m = c->ml->reg.models[k];
        const char *devs[MS__INSTANCES_MAX + 1];
        bool charges = ms__model_charges_memory(m);
        int n = charges ? ms__model_devices(m, devs) : 1;
        if (!charges)
            devs[0] = ms__model_inst_budget(m, 0);
        for (int d = 0; d < n; d++) {
            fprintf(c->f, "%s{tag=\"", name);
            put_label(c->f, m->tag);
            fputs("\",device=\"", c->f);
            put_label(c->f, devs[d]);
            fprintf(c->f, "\"} %llu\n",
                    (unsigned long long)(charges ? ms__model_charge(m, devs[d]) : 0));
        }
    }
}

/* A per-tag counter from the tally (kept after the model goes): loads, or evictions. */
static void tally_metric(const ctx *c, const char *name, const char *help, bool evictions)
{
    family(c->f, name, "counter", help);
    const ms__tally *t = &c->ml->tally;
    for (int i = 0; i < t->n; i++) {
        fprintf(c->f, "%s{tag=\"", name);
        put_label(c->f, t->e[i].tag);
        fprintf(c->f, "\"} %llu\n",
                (unsigned long long)(evictions ? t->e[i].evictions : t->e[i].loads));
    }
}

static uint64_t get_leases(const ms__model *m)
{
    return m->leases > 0 ? (uint64_t)m->leases : 0;
}
static uint64_t get_ready(const ms__model *m)
{
    return m->state == MS__MODEL_READY;
}

static uint64_t get_over(const ms__model *m)
{
    return ms__model_over_memory(m);
}

static void model_metrics(const ctx *c)
{
    tally_metric(c, "modelshare_loads_total", "Loads of a tag's model started.", false);
    tally_metric(c, "modelshare_evictions_total",
                 "Times a tag's model was evicted (idle, least recently used) to make room for "
                 "another.",
                 true);
    model_metric(c, "modelshare_leases", "gauge", "Leases held on a model now.", get_leases);
    memory_metric(c);
    model_metric(c, "modelshare_over_memory_bytes", "gauge",
                 "Bytes by which a model's measured memory exceeds its spec's memory (0: within).",
                 get_over);
    model_metric(c, "modelshare_ready", "gauge", "1 when a model is loaded and serving, else 0.",
                 get_ready);
}

static void device_metric(const ctx *c, const char *name, const char *help, int which)
{
    family(c->f, name, "gauge", help);
    for (int i = 0; i < c->ml->budgets.n; i++) {
        const ms__budget_dev *d = &c->ml->budgets.dev[i];
        uint64_t budget = ms__budget_bytes(d), used = ms__budget_used(c->ml, d);
        uint64_t v = which == 0 ? budget : which == 1 ? used : budget > used ? budget - used : 0;
        fprintf(c->f, "%s{device=\"", name);
        put_label(c->f, d->name);
        fprintf(c->f, "\"} %llu\n", (unsigned long long)v);
    }
}

static void daemon_metrics(const ctx *c)
{
    device_metric(c, "modelshare_device_budget_bytes", "A device's memory budget.", 0);
    device_metric(c, "modelshare_device_used_bytes", "Bytes the models hold on a device.", 1);
    device_metric(c, "modelshare_device_free_bytes", "A device's budget not held by models.", 2);
    family(c->f, "modelshare_clients", "gauge", "Client processes connected now.");
    fprintf(c->f, "modelshare_clients %d\n", c->ml->reg.nclients);
    family(c->f, "modelshare_daemon_evictions_total", "counter",
           "Models evicted since the daemon started, whatever their tag.");
    fprintf(c->f, "modelshare_daemon_evictions_total %llu\n", (unsigned long long)c->ml->evictions);
}

static void instance_metrics(const ctx *c)
{
    inst_counter(c, "modelshare_requests_total",
                 "Requests a model's instance completed (success or error).",
                 offsetof(ms__stats_sum, requests), 1.0);
    inst_counter(c, "modelshare_rows_total", "Rows (first dimension) a model's instance ran.",
                 offsetof(ms__stats_sum, rows), 1.0);
    inst_counter(c, "modelshare_batches_total", "Backend runs of a model's instance.",
                 offsetof(ms__stats_sum, batches), 1.0);
    inst_counter(c, "modelshare_busy_seconds_total",
                 "Time a model's instance spent in its backend.", offsetof(ms__stats_sum, busy_ns),
                 1e-9);
    errors_by_code(c);
    inst_restarts(c);
    inst_stuck(c);
    inst_histogram(c, "modelshare_batch_rows", "Rows per backend run.", H_ROWS);
    inst_histogram(c, "modelshare_queue_wait_seconds",
                   "From a client's submit to the worker taking the request into a batch.",
                   H_QUEUE);
    inst_histogram(c, "modelshare_run_seconds", "One backend run.", H_RUN);
}

int ms__exposition(ms__models *ml, char **text, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    ctx c = {.ml = ml, .sums = NULL};
    if (ml->reg.nmodels > 0) {
        c.sums = malloc(sizeof *c.sums * (size_t)ml->reg.nmodels);
        if (c.sums == NULL)
            return MS_E_NOMEM;
    }
    for (int k = 0; k < ml->reg.nmodels; k++)
        sum_model(ml->reg.models[k], &c.sums[k]); /* memory: as measured every 2 s */
    c.f = open_memstream(&buf, &n);
    if (c.f == NULL) {
        free(c.sums);
        return MS_E_NOMEM;
    }
    instance_metrics(&c);
    model_metrics(&c);
    daemon_metrics(&c);
    bool bad = ferror(c.f) != 0;
    if (fclose(c.f) != 0 || bad) {
        free(buf);
        free(c.sums);
        return MS_E_NOMEM;
    }
    free(c.sums);
    *text = buf;
    *len = n;
    return 0;
}
