/* The daemon's bookkeeping of models, clients and leases. See registry.h. */
#include "registry.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modelshare.h"

const char *ms__model_state_name(int state)
{
    switch (state) {
    case MS__MODEL_LOADING:
        return "loading";
    case MS__MODEL_READY:
        return "ready";
    case MS__MODEL_FAILED:
        return "failed";
    case MS__MODEL_UNLOADING:
        return "unloading";
    case MS__MODEL_WAITING:
        return "waiting";
    default:
        return "unknown";
    }
}

const char *ms__inst_state_name(int state)
{
    switch (state) {
    case MS__INST_UP:
        return "up";
    case MS__INST_STARTING:
        return "starting";
    default:
        return "down";
    }
}

void ms__registry_init(ms__registry *r, ms__clock_fn clock, void *clock_ctx)
{
    memset(r, 0, sizeof *r);
    r->clock = clock;
    r->clock_ctx = clock_ctx;
    LIST_INIT(&r->clients);
    r->next_lease_id = 1;
}

int64_t ms__registry_now(const ms__registry *r)
{
    return r->clock != NULL ? r->clock(r->clock_ctx) : ms__now_ns();
}

static int64_t seconds_to_ns(double s)
{
    if (!(s > 0))
        return 0;
    if (s > 1e9) /* about 31 years: never, for a daemon */
        s = 1e9;
    return (int64_t)(s * 1e9);
}

/* ---- leases (list plumbing) ---- */

static void lease_unlink_model(ms__lease *l)
{
    ms__model *m = l->model;
    if (m == NULL)
        return;
    LIST_REMOVE(l, by_model);
    m->leases--;
    if (l->worker != NULL)
        l->worker->leases--;
    l->worker = NULL;
    l->model = NULL;
}

static void lease_unlink_client(ms__registry *r, ms__lease *l)
{
    ms__client *c = l->client;
    LIST_REMOVE(l, by_client);
    c->nleases--;
    r->nleases--;
}

static void lease_free_arena(ms__lease *l)
{
    if (l->hdr != NULL)
        ms__arena_unmap(l->hdr, MS__ARENA_HEADER);
    if (l->arena_fd >= 0)
        close(l->arena_fd);
    l->hdr = NULL;
    l->arena_fd = -1;
}

/* Keep-alive starts when a ready model has no lease. */
static void model_check_idle(ms__registry *r, ms__model *m, int64_t now)
{
    if (m->state == MS__MODEL_READY && m->leases == 0 && !m->idle_armed) {
        m->idle_armed = true;
        m->idle_deadline_ns = now + seconds_to_ns(m->spec.keep_alive);
    }
    (void)r;
}

int ms__lease_add(ms__registry *r, ms__client *c, ms__model *m, int arena_fd, ms__arena_header *hdr,
                  ms__lease **out, char *err, size_t errlen)
{
    if (m->state != MS__MODEL_READY || m->ninst == 0)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "model \"%s\": expected a ready model to lease, it is %s", m->tag,
                        ms__model_state_name(m->state));
    if (c->nleases >= MS__CLIENT_LEASES_MAX)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "expected at most %d leases per connection, this one already holds %d",
                        MS__CLIENT_LEASES_MAX, c->nleases);
    if (r->nleases >= MS__LEASES_MAX)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "expected at most %d leases in all, the daemon already holds %d",
                        MS__LEASES_MAX, r->nleases);
    ms__wproc *best = NULL;
    for (int i = 0; i < m->nworkers; i++)
        if (best == NULL || m->workers[i]->leases < best->leases)
            best = m->workers[i];
    ms__lease *l = calloc(1, sizeof *l);
    if (l == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a lease");
    l->id = r->next_lease_id++;
    l->client = c;
    l->model = m;
    l->worker = best;
    l->arena_fd = arena_fd;
    l->hdr = hdr;
    LIST_INSERT_HEAD(&c->lease_list, l, by_client);
    c->nleases++;
    r->nleases++;
    LIST_INSERT_HEAD(&m->lease_list, l, by_model);
    m->leases++;
    if (best != NULL)
        best->leases++;
    m->idle_armed = false;
    m->last_used_ns = ms__registry_now(r);
    *out = l;
    return 0;
}

void ms__lease_release(ms__registry *r, ms__lease *l)
{
    ms__model *m = l->model;
    lease_unlink_model(l);
    lease_unlink_client(r, l);
    lease_free_arena(l);
    free(l);
    if (m != NULL) {
        int64_t now = ms__registry_now(r);
        m->last_used_ns = now;
        model_check_idle(r, m, now);
    }
}

void ms__model_revoke_leases(ms__registry *r, ms__model *m)
{
    (void)r;
    while (!LIST_EMPTY(&m->lease_list)) {
        ms__lease *l = LIST_FIRST(&m->lease_list);
        if (l->hdr != NULL)
            atomic_store(&l->hdr->state, MS__ARENA_UNLOADED);
        lease_unlink_model(l);
    }
}

void ms__model_lease_pids(const ms__model *m, char *buf, size_t buflen)
{
    size_t pos = 0;
    if (buflen == 0)
        return;
    buf[0] = '\0';
    for (const ms__lease *l = LIST_FIRST(&m->lease_list); l != NULL; l = LIST_NEXT(l, by_model)) {
        bool seen = false;
        for (const ms__lease *k = LIST_FIRST(&m->lease_list); k != l; k = LIST_NEXT(k, by_model))
            if (k->client->pid == l->client->pid)
                seen = true;
        if (seen)
            continue;
        int n = snprintf(buf + pos, buflen - pos, "%s%ld", pos ? ", " : "", (long)l->client->pid);
        if (n < 0 || (size_t)n >= buflen - pos) {
            buf[pos] = '\0';
            return;
        }
        pos += (size_t)n;
    }
}

/* ---- clients ---- */

int ms__client_add(ms__registry *r, pid_t pid, uid_t uid, void *user, ms__client **out, char *err,
                   size_t errlen)
{
    if (r->nclients >= MS__CLIENTS_MAX)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "expected at most %d client connections, %d are open", MS__CLIENTS_MAX,
                        r->nclients);
    ms__client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a client");
    c->pid = pid;
    c->uid = uid;
    c->user = user;
    LIST_INIT(&c->lease_list);
    LIST_INSERT_HEAD(&r->clients, c, link);
    r->nclients++;
    *out = c;
    return 0;
}

void ms__client_remove(ms__registry *r, ms__client *c, void (*on_release)(ms__lease *, void *),
                       void *ctx)
{
    while (!LIST_EMPTY(&c->lease_list)) {
        ms__lease *l = LIST_FIRST(&c->lease_list);
        if (on_release != NULL && l->model != NULL)
            on_release(l, ctx);
        ms__lease_release(r, l);
    }
    LIST_REMOVE(c, link);
    r->nclients--;
    free(c);
}

ms__lease *ms__client_lease(const ms__client *c, uint64_t id)
{
    for (ms__lease *l = LIST_FIRST(&c->lease_list); l != NULL; l = LIST_NEXT(l, by_client))
        if (l->id == id)
            return l;
    return NULL;
}

/* ---- models ---- */

ms__model *ms__registry_find(const ms__registry *r, const char *tag)
{
    for (int i = 0; i < r->nmodels; i++)
        if (strcmp(r->models[i]->tag, tag) == 0)
            return r->models[i];
    return NULL;
}

uint64_t ms__model_over_memory(const ms__model *m)
{
    if (!m->measured || m->spec.memory == 0 || m->memory_bytes <= m->spec.memory)
        return 0;
    return m->memory_bytes - m->spec.memory;
}

int ms__registry_counted(const ms__registry *r)
{
    int n = 0;
    for (int i = 0; i < r->nmodels; i++)
        n += r->models[i]->state != MS__MODEL_UNLOADING;
    return n;
}

ms__model *ms__registry_lru_idle(const ms__registry *r)
{
    ms__model *lru = NULL;
    for (int i = 0; i < r->nmodels; i++) {
        ms__model *m = r->models[i];
        if (m->state == MS__MODEL_READY && m->swap == NULL && m->leases == 0 && m->waiters == 0 &&
            (lru == NULL || m->last_used_ns < lru->last_used_ns))
            lru = m;
    }
    return lru;
}

/* Room in r for one more model: at the limit, the least recently used failed model without
 * leases or workers is forgotten; else MS_E_LIMIT saying why. */
static int room_for_one(ms__registry *r, char *err, size_t errlen)
{
    if (ms__registry_counted(r) >= MS__MODELS_MAX || r->nmodels >= MS__MODELS_TABLE) {
        /* A failed model without leases holds nothing but its error message: make room by
         * forgetting the least recently used one, or failed loads of distinct tags would fill
         * the table for good. */
        ms__model *old = NULL;
        for (int i = 0; i < r->nmodels; i++) {
            ms__model *f = r->models[i];
            if (f->state == MS__MODEL_FAILED && f->leases == 0 && f->nworkers == 0 &&
                (old == NULL || f->last_used_ns < old->last_used_ns))
                old = f;
        }
        if (old != NULL)
            ms__registry_remove(r, old);
    }
    if (ms__registry_counted(r) >= MS__MODELS_MAX)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "expected at most %d models, %d are registered and none is idle to evict "
                        "(each has leases or a load in progress): unload one first",
                        MS__MODELS_MAX, ms__registry_counted(r));
    if (r->nmodels >= MS__MODELS_TABLE)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "expected at most %d models, and %d more being unloaded; %d are "
                        "unloading now: try again once they are gone",
                        MS__MODELS_MAX, MS__MODELS_MAX, r->nmodels - ms__registry_counted(r));
    return 0;
}

int ms__registry_add(ms__registry *r, const char *tag, const ms__spec *spec, ms__model **out,
                     char *err, size_t errlen)
{
    if (!ms__tag_valid(tag))
        return ms__fail(
            err, errlen, MS_E_INVAL,
            "expected a tag of 1 to %d characters of [A-Za-z0-9._:/@+-], got \"%.160s\"",
            MS__TAG_MAX, tag);
    int rc = room_for_one(r, err, errlen);
    if (rc != 0)
        return rc;
    ms__model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a model");
    snprintf(m->tag, sizeof m->tag, "%s", tag);
    m->ctor_fd = -1;
    LIST_INIT(&m->lease_list);
    for (int i = 0; i < MS__INSTANCES_MAX; i++)
        m->inst[i].door_fds = (ms__door_fds){-1, -1, -1};
    if (ms__spec_copy(spec, &m->spec) != 0) {
        free(m);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a spec");
    }
    m->spec_json = ms__spec_to_json(&m->spec);
    if (m->spec_json == NULL) {
        ms__spec_free(&m->spec);
        free(m);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a spec");
    }
    m->state = MS__MODEL_LOADING;
    m->last_used_ns = ms__registry_now(r);
    r->models[r->nmodels++] = m;
    *out = m;
    return 0;
}

void ms__registry_remove(ms__registry *r, ms__model *m)
{
    while (!LIST_EMPTY(&m->lease_list))
        lease_unlink_model(LIST_FIRST(&m->lease_list));
    for (int i = 0; i < m->nworkers; i++)
        m->workers[i]->model = NULL;
    ms__model_instances_free(m);
    for (int i = 0; i < r->nmodels; i++) {
        if (r->models[i] == m) {
            memmove(&r->models[i], &r->models[i + 1],
                    sizeof r->models[0] * (size_t)(r->nmodels - i - 1));
            r->nmodels--;
            break;
        }
    }
    json_decref(m->spec_json);
    json_decref(m->signature);
    ms__spec_free(&m->spec);
    ms__model_ctor_set(m, -1);
    free(m);
}

void ms__model_ctor_set(ms__model *m, int ctor_fd)
{
    if (m->ctor_fd >= 0)
        close(m->ctor_fd);
    m->ctor_fd = ctor_fd;
}

int ms__model_spec_check(const ms__model *m, const ms__spec *spec, char *err, size_t errlen)
{
    if (ms__spec_equal(&m->spec, spec))
        return 0;
    char diff[760];
    ms__spec_diff(&m->spec, spec, diff, sizeof diff);
    bool python = m->spec.python_key != NULL && spec->python_key != NULL &&
                  strcmp(m->spec.python_key, spec->python_key) != 0;
    return ms__fail(err, errlen, MS_E_SPEC_CONFLICT,
                    "tag \"%s\" is loaded with another spec: %s. Processes share a tag only with "
                    "the same spec: give this model its own tag%s",
                    m->tag, diff,
                    python ? " (a Python constructor is known by its code, names and captured "
                             "values; Shared(..., key=...) names it yourself)"
                           : "");
}

int ms__model_spec_replace(ms__model *m, const ms__spec *spec, char *err, size_t errlen)
{
    ms__spec copy;
    if (ms__spec_copy(spec, &copy) != 0)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a spec");
    json_t *j = ms__spec_to_json(&copy);
    if (j == NULL) {
        ms__spec_free(&copy);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a spec");
    }
    ms__spec_free(&m->spec);
    json_decref(m->spec_json);
    m->spec = copy;
    m->spec_json = j;
    return 0;
}

void ms__model_begin_load(ms__registry *r, ms__model *m)
{
    m->state = MS__MODEL_LOADING;
    m->loads++;
    m->error_code = 0;
    m->error[0] = '\0';
    json_decref(m->signature);
    m->signature = NULL;
    m->memory_bytes = 0;
    m->estimate_bytes = 0;
    m->measured = false;
    ms__model_split_memory(m);
    m->idle_armed = false;
    m->last_used_ns = ms__registry_now(r);
    m->load_since_ns = m->last_used_ns;
    m->ncrash = 0;
}

int ms__model_add_worker(ms__model *m, ms__wproc *w)
{
    if (m->nworkers >= MS__INSTANCES_MAX || w->inst < 0 || w->inst >= MS__INSTANCES_MAX)
        return MS_E_LIMIT;
    m->workers[m->nworkers++] = w;
    w->model = m;
    m->inst[w->inst].w = w;
    m->inst[w->inst].state = MS__INST_STARTING;
    return 0;
}

void ms__model_instances_free(ms__model *m)
{
    for (int i = 0; i < m->ninst; i++) {
        ms__instance *in = &m->inst[i];
        ms__door_unmap(in->door);
        ms__door_fds_close(&in->door_fds);
        memset(in, 0, sizeof *in);
        in->door_fds = (ms__door_fds){-1, -1, -1};
    }
    m->ninst = 0;
}

void ms__model_detach_worker(ms__model *m, ms__wproc *w)
{
    for (ms__lease *l = LIST_FIRST(&m->lease_list); l != NULL; l = LIST_NEXT(l, by_model))
        if (l->worker == w)
            l->worker = NULL;
    w->leases = 0;
    if (w->inst >= 0 && w->inst < MS__INSTANCES_MAX && m->inst[w->inst].w == w)
        m->inst[w->inst].w = NULL;
    for (int i = 0; i < m->nworkers; i++) {
        if (m->workers[i] == w) {
            memmove(&m->workers[i], &m->workers[i + 1],
                    sizeof m->workers[0] * (size_t)(m->nworkers - i - 1));
            m->nworkers--;
            break;
        }
    }
    if (w->model == m)
        w->model = NULL;
}

bool ms__model_all_ready(const ms__model *m)
{
    if (m->nworkers == 0)
        return false;
    for (int i = 0; i < m->nworkers; i++)
        if (!m->workers[i]->ready)
            return false;
    return true;
}

void ms__model_set_ready(ms__registry *r, ms__model *m)
{
    int64_t now = ms__registry_now(r);
    m->state = MS__MODEL_READY;
    ms__model_memory_from_workers(m);
    json_decref(m->signature);
    m->signature = NULL;
    if (m->nworkers > 0 && m->workers[0]->signature != NULL)
        m->signature = json_incref(m->workers[0]->signature);
    for (int i = 0; i < m->ninst; i++) {
        m->inst[i].state = MS__INST_UP;
        m->inst[i].up_since_ns = now;
    }
    m->last_used_ns = now;
    m->idle_armed = false;
    model_check_idle(r, m, now);
}

void ms__model_set_failed(ms__model *m, int code, const char *message)
{
    m->state = MS__MODEL_FAILED;
    m->error_code = code;
    snprintf(m->error, sizeof m->error, "%s", message != NULL ? message : "");
    m->idle_armed = false;
    m->memory_bytes = 0;
    m->measured = false;
    ms__model_split_memory(m);
}

void ms__model_set_unloading(ms__model *m)
{
    m->state = MS__MODEL_UNLOADING;
    m->idle_armed = false;
}

void ms__model_set_admitted(ms__model *m)
{
    m->state = MS__MODEL_LOADING;
}

void ms__model_set_waiting(ms__model *m, int64_t now)
{
    m->state = MS__MODEL_WAITING;
    m->wait_since_ns = now;
    m->wait_deadline_ns = now + (int64_t)(m->spec.load_timeout * 1e9);
}

void ms__model_set_estimate(ms__model *m, uint64_t bytes)
{
    m->estimate_bytes = bytes;
    m->memory_bytes = bytes;
    m->measured = false;
    ms__model_split_memory(m);
}

void ms__model_new_estimate(ms__model *m, uint64_t bytes)
{
    m->estimate_bytes = bytes;
}

static int inst_count(const ms__model *m)
{
    int n = m->spec.instances;
    return n < 1 ? 1 : n > MS__INSTANCES_MAX ? MS__INSTANCES_MAX : n;
}

void ms__model_split_memory(ms__model *m)
{
    int n = inst_count(m);
    for (int i = 0; i < n; i++) {
        m->inst_bytes[i] = ms__even_part(m->memory_bytes, n, i);
        m->inst_host_bytes[i] = 0;
    }
    m->host_bytes = 0;
}

void ms__model_memory_from_workers(ms__model *m)
{
    m->memory_bytes = 0;
    for (int i = 0; i < m->nworkers; i++)
        m->memory_bytes += m->workers[i]->memory_bytes;
    ms__model_split_memory(m);
    for (int i = 0; i < m->nworkers; i++)
        if (m->workers[i]->inst >= 0 && m->workers[i]->inst < MS__INSTANCES_MAX)
            m->inst_bytes[m->workers[i]->inst] = m->workers[i]->memory_bytes;
}

const char *ms__model_inst_budget(const ms__model *m, int i)
{
    const char *d = m->inst_device[i];
    return strncmp(d, "cuda:", 5) == 0 ? d : "host";
}

uint64_t ms__model_charge(const ms__model *m, const char *dev)
{
    int n = inst_count(m);
    bool host = strcmp(dev, "host") == 0;
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        const char *d = ms__model_inst_budget(m, i);
        bool gpu = strcmp(d, "host") != 0;
        if (strcmp(d, dev) == 0)
            sum += m->inst_bytes[i] + ms__even_part(m->swap_bytes, n, i);
        if (gpu && host)
            sum += m->inst_host_bytes[i];
    }
    return sum;
}

void ms__model_waiter_add(ms__model *m, bool with_spec)
{
    m->waiters++;
    if (with_spec)
        m->spec_waiters++;
}

void ms__model_waiter_drop(ms__model *m, bool with_spec)
{
    if (m->waiters > 0)
        m->waiters--;
    if (with_spec && m->spec_waiters > 0)
        m->spec_waiters--;
}

void ms__model_touch(ms__registry *r, ms__model *m)
{
    int64_t now = ms__registry_now(r);
    m->last_used_ns = now;
    if (m->idle_armed)
        m->idle_deadline_ns = now + seconds_to_ns(m->spec.keep_alive);
}

/* ---- keep-alive ---- */

bool ms__registry_next_deadline(const ms__registry *r, int64_t *deadline_ns)
{
    bool any = false;
    for (int i = 0; i < r->nmodels; i++) {
        const ms__model *m = r->models[i];
        if (!m->idle_armed)
            continue;
        if (!any || m->idle_deadline_ns < *deadline_ns)
            *deadline_ns = m->idle_deadline_ns;
        any = true;
    }
    return any;
}

ms__model *ms__registry_expired(ms__registry *r)
{
    int64_t now = ms__registry_now(r);
    for (int i = 0; i < r->nmodels; i++) {
        ms__model *m = r->models[i];
        if (m->idle_armed && m->state == MS__MODEL_READY && m->leases == 0 &&
            now >= m->idle_deadline_ns) {
            m->idle_armed = false;
            return m;
        }
    }
    return NULL;
}

void ms__registry_destroy(ms__registry *r)
{
    while (!LIST_EMPTY(&r->clients))
        ms__client_remove(r, LIST_FIRST(&r->clients), NULL, NULL);
    while (r->nmodels > 0) {
        ms__model *m = r->models[r->nmodels - 1];
        while (m->nworkers > 0)
            ms__model_detach_worker(m, m->workers[m->nworkers - 1]);
        ms__registry_remove(r, m);
    }
}
