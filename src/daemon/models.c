/* The life of a model: load, ready, failed, unload, and the requests that wait for it. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "modelshare.h"
#include "server_int.h"

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* Unlinks w from its model, keeping its counters in the model's totals. */
static void worker_detach(ms__wproc *w)
{
    ms__model *m = w->model;
    if (m == NULL)
        return;
    if (w->stats != NULL) {
        m->requests_done += atomic_load(&w->stats->requests);
        m->batches_done += atomic_load(&w->stats->batches);
    }
    ms__model_detach_worker(m, w);
}

/* Answers every acquire and load waiting for m with an error. */
static void fail_waiters(ms__server *s, ms__model *m, int code, const char *message)
{
    for (ms__client *c = LIST_FIRST(&s->reg.clients); c != NULL; c = LIST_NEXT(c, link)) {
        conn *k = c->user;
        if (k->dead || k->p_model != m ||
            (k->pending != MS__OP_ACQUIRE && k->pending != MS__OP_LOAD))
            continue;
        ms__conn_error(s, k, k->p_id, code, message);
        ms__conn_resume(s, k);
    }
}

/* m failed: its workers are stopped (and forgotten by it), waiters get the error. */
void ms__model_fail(ms__server *s, ms__model *m, int code, const char *message)
{
    ms__log_error("model \"%s\": %s (%s)", m->tag, message, ms_errname(code));
    ms__model_set_failed(m, code, message);
    int64_t now = ms__registry_now(&s->reg);
    while (m->nworkers > 0) {
        ms__wproc *w = m->workers[0];
        worker_detach(w);
        ms__sup_stop(&s->sup, w, now);
    }
    fail_waiters(s, m, code, m->error);
}

int ms__start_load(ms__server *s, ms__model *m)
{
    ms__model_begin_load(&s->reg, m);
    ms__log_info("model \"%s\": loading (load %u, backend %s, device %s, %d instance(s))", m->tag,
                 m->loads, m->spec.backend, m->spec.device, m->spec.instances);
    return ms__admit(s, m);
}

int ms__spawn_workers(ms__server *s, ms__model *m)
{
    char err[MS__ERRLEN];
    for (int i = 0; i < m->spec.instances; i++) {
        int rc = ms__sup_spawn(&s->sup, m, err, sizeof err);
        if (rc != 0) {
            ms__model_fail(s, m, rc, err);
            return rc;
        }
    }
    return 0;
}

void ms__on_worker_ready(ms__server *s, ms__wproc *w)
{
    ms__model *m = w->model;
    if (m == NULL) {
        /* A worker of a load that already failed: it is being stopped. */
        return;
    }
    ms__log_info("model \"%s\": worker %ld ready (%.1f MiB)", m->tag, (long)w->pid,
                 mib(w->memory_bytes));
    if (m->state != MS__MODEL_LOADING || !ms__model_all_ready(m))
        return;
    ms__model_set_ready(&s->reg, m);
    ms__measure_model(s, m);
    ms__log_info("model \"%s\" ready: %d worker(s), %.1f MiB measured on %s (estimate %.1f MiB)",
                 m->tag, m->nworkers, mib(m->memory_bytes), ms__budget_device(m->spec.device),
                 mib(m->estimate_bytes));
    for (ms__client *c = LIST_FIRST(&s->reg.clients); c != NULL; c = LIST_NEXT(c, link)) {
        conn *k = c->user;
        if (k->dead || k->p_model != m)
            continue;
        if (k->pending == MS__OP_ACQUIRE) {
            json_t *id = json_incref(k->p_id);
            int fd = k->p_arena_fd;
            ms__arena_header *hdr = k->p_hdr;
            k->p_arena_fd = -1;
            k->p_hdr = NULL;
            ms__conn_resume(s, k);
            ms__attach(s, k, id, m, fd, hdr);
            json_decref(id);
        } else if (k->pending == MS__OP_LOAD) {
            ms__conn_send(s, k, ms__reply_ok(k->p_id), NULL, 0);
            ms__conn_resume(s, k);
        }
    }
}

void ms__on_worker_failed(ms__server *s, ms__wproc *w, int code, const char *message)
{
    ms__model *m = w->model;
    if (m == NULL || m->state != MS__MODEL_LOADING) {
        ms__log_warn("worker %ld: %s", (long)w->pid, message);
        return;
    }
    ms__model_fail(s, m, code, message);
}

/* m's last worker is gone while unloading: remove it, or load it again for those who wait. */
static void unload_done(ms__server *s, ms__model *m)
{
    bool reload = false;
    ms__log_info("model \"%s\": unloaded: its workers are gone, %.1f MiB returned to %s", m->tag,
                 mib(m->memory_bytes), ms__budget_device(m->spec.device));
    for (ms__client *c = LIST_FIRST(&s->reg.clients); c != NULL; c = LIST_NEXT(c, link)) {
        conn *k = c->user;
        if (k->dead || k->p_model != m)
            continue;
        if (k->pending == MS__OP_UNLOAD) {
            ms__conn_send(s, k, ms__reply_ok(k->p_id), NULL, 0);
            ms__conn_resume(s, k);
        } else if (k->p_spec) {
            reload = true;
        }
    }
    if (reload && !s->stopping) {
        ms__start_load(s, m);
        return;
    }
    char msg[MS__ERRLEN];
    snprintf(msg, sizeof msg,
             "model \"%s\" was unloaded and nothing is loaded under that tag now (acquire it "
             "with a spec to load it)",
             m->tag);
    fail_waiters(s, m, MS_E_UNKNOWN_TAG, msg);
    ms__registry_remove(&s->reg, m);
}

void ms__begin_unload(ms__server *s, ms__model *m)
{
    ms__model_set_unloading(m);
    int64_t now = ms__registry_now(&s->reg);
    for (int i = 0; i < m->nworkers; i++)
        ms__sup_stop(&s->sup, m->workers[i], now);
    if (m->nworkers == 0)
        unload_done(s, m);
}

void ms__on_worker_exit(ms__server *s, ms__wproc *w, int status)
{
    char how[128], msg[MS__ERRLEN];
    ms__sup_exit_text(status, how, sizeof how);
    ms__model *m = w->model;
    if (m == NULL) {
        ms__log_info("worker %ld %s", (long)w->pid, how);
        ms__sup_retire(&s->sup, w);
        return;
    }
    bool was_ready = w->ready;
    worker_detach(w);
    switch (m->state) {
    case MS__MODEL_LOADING:
        if (was_ready)
            snprintf(msg, sizeof msg, "worker %ld %s while the other instances were loading",
                     (long)w->pid, how);
        else
            snprintf(msg, sizeof msg, "worker %s before the model was ready", how);
        ms__log_info("model \"%s\": worker %ld %s", m->tag, (long)w->pid, how);
        ms__model_fail(s, m, MS_E_LOAD_FAILED, msg);
        break;
    case MS__MODEL_READY:
        /* Clients waiting on their rings look at their arena's state: tell them. */
        for (ms__lease *l = LIST_FIRST(&m->lease_list); l != NULL; l = LIST_NEXT(l, by_model))
            if (l->hdr != NULL)
                atomic_store(&l->hdr->state, MS__ARENA_LOST);
        snprintf(msg, sizeof msg, "worker %ld %s", (long)w->pid, how);
        ms__model_fail(s, m, MS_E_WORKER_LOST, msg);
        break;
    case MS__MODEL_UNLOADING:
        ms__log_info("model \"%s\": worker %ld %s", m->tag, (long)w->pid, how);
        ms__verify_release(s, m, w);
        if (m->nworkers == 0)
            unload_done(s, m);
        break;
    default:
        ms__log_info("model \"%s\": worker %ld %s", m->tag, (long)w->pid, how);
        break;
    }
    ms__sup_retire(&s->sup, w);
}
