/*
 * The daemon's talk with its workers as the model life cycle sees it: what they say on their
 * control socket ("ready", "failed", EOF) and on stderr, their exit, and the leases' arenas
 * attached to and detached from them (and the links between leases' arenas: links.c). A worker of a
 * ready model that exits is one instance lost (instances.c). See models.h.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/exitstatus.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

static void on_ready(ms__models *ml, ms__wproc *w)
{
    ms__model *m = w->model;
    if (m == NULL) {
        /* A worker of a load that already failed: it is being stopped. */
        return;
    }
    if (w->standby) {
        ms__swap_ready(ml, w);
        return;
    }
    ms__log_info("model \"%s\": worker %ld ready (%.1f MiB)", m->tag, (long)w->pid,
                 (double)w->memory_bytes / (1024.0 * 1024.0));
    if (m->state == MS__MODEL_READY && w->inst >= 0 && w->inst < m->ninst &&
        m->inst[w->inst].w == w && m->inst[w->inst].state == MS__INST_STARTING) {
        ms__instance_up(ml, m, w); /* a restart */
        return;
    }
    if (m->state != MS__MODEL_LOADING || !ms__model_all_ready(m))
        return;
    ms__model_ready(ml, m);
}

static void on_failed(ms__models *ml, ms__wproc *w, int code, const char *message)
{
    ms__model *m = w->model;
    if (m != NULL && w->standby) {
        ms__swap_failed(ml, w, code, message);
        return;
    }
    if (m == NULL || m->state != MS__MODEL_LOADING) {
        ms__log_warn("worker %ld: %s", (long)w->pid, message);
        return;
    }
    ms__model_fail(ml, m, code, message);
}

/* "ready": memory_bytes and signature. */
static void msg_ready(ms__models *ml, ms__wproc *w, const json_t *msg)
{
    char err[MS__ERRLEN];
    if (w->ready)
        return;
    json_t *mem = json_object_get(msg, "memory_bytes");
    json_t *sig = json_object_get(msg, "signature");
    if (!json_is_integer(mem) || json_integer_value(mem) < 0 ||
        ms__sig_from_json(sig, NULL, NULL, err, sizeof err) != 0) {
        ms__log_error("worker %ld: \"ready\" expected an integer memory_bytes >= 0 and a "
                      "signature, got something else; stopping it",
                      (long)w->pid);
        ms__sup_stop(&ml->sup, w, ms__registry_now(&ml->reg));
        return;
    }
    w->ready = true;
    w->memory_bytes = (uint64_t)json_integer_value(mem);
    w->signature = json_incref(sig != NULL ? sig : json_null());
    on_ready(ml, w);
}

/* "failed": an MS_E_* code and the error. */
static void msg_failed(ms__models *ml, ms__wproc *w, const json_t *msg)
{
    json_t *code = json_object_get(msg, "code");
    const char *text = json_string_value(json_object_get(msg, "error"));
    int c = json_is_integer(code) ? (int)json_integer_value(code) : MS_E_LOAD_FAILED;
    if (c >= 0 || !ms__error_known(c)) /* not an MS_E_* code */
        c = MS_E_LOAD_FAILED;
    w->said_failed = true;
    on_failed(ml, w, c, text != NULL ? text : "the worker failed to load the model");
}

static void on_msg(ms__models *ml, ms__wproc *w, const json_t *msg)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (op != NULL && strcmp(op, "ready") == 0)
        msg_ready(ml, w, msg);
    else if (op != NULL && strcmp(op, "failed") == 0)
        msg_failed(ml, w, msg);
    else if (op != NULL && strcmp(op, "drained") == 0)
        ms__swap_drained(ml, w, msg);
    else
        ms__log_warn("worker %ld sent an unknown message (op %s); ignored", (long)w->pid,
                     op != NULL ? op : "missing");
}

void ms__worker_on_ctrl(ms__models *ml, ms__wproc *w)
{
    char err[MS__ERRLEN];
    if (w->gone)
        return;
    int rc = ms__sup_ctrl_fill(w, err, sizeof err);
    bool eof = rc != 0 || w->reader.eof;
    if (rc != 0)
        ms__log_warn("worker %ld control socket: %s", (long)w->pid, err);
    for (;;) {
        json_t *msg = NULL;
        rc = ms__sup_ctrl_next(w, &msg, err, sizeof err);
        if (rc != 0) {
            ms__log_warn("worker %ld sent a bad message: %s", (long)w->pid, err);
            if (rc != MS_E_PROTOCOL) {
                eof = true;
                break;
            }
            continue;
        }
        if (msg == NULL)
            break;
        on_msg(ml, w, msg);
        json_decref(msg);
        if (w->ctrl_fd < 0)
            return;
    }
    if (eof) {
        /* A worker without its control socket can take no client: stop it. Its exit (through
         * the pidfd) then fails a load that waited for it. */
        ms__sup_ctrl_close(&ml->sup, w);
        if (!w->stopping) {
            ms__log_warn("worker %ld closed its control socket: stopping it", (long)w->pid);
            ms__sup_stop(&ml->sup, w, ms__registry_now(&ml->reg));
        }
    }
}

/* The worker was reaped (status from waitpid); retires w. */
static void on_worker_exit(ms__models *ml, ms__wproc *w, int status)
{
    char how[128], msg[MS__ERRLEN];
    ms__exit_text(status, how, sizeof how);
    ms__model *m = w->model;
    if (m == NULL) {
        ms__log_info("worker %ld %s", (long)w->pid, how);
        ms__sup_retire(&ml->sup, w);
        return;
    }
    if (w->standby) {
        ms__log_info("model \"%s\": worker %ld of the new version %s", m->tag, (long)w->pid, how);
        ms__swap_standby_exit(ml, w, how);
        ms__sup_retire(&ml->sup, w);
        return;
    }
    bool was_ready = w->ready;
    ms__worker_detach(w);
    if (m->state == MS__MODEL_READY) {
        if (!ms__swap_old_exit(ml, m, w))
            ms__instance_lost(ml, m, w, status);
        ms__sup_retire(&ml->sup, w);
        return;
    }
    ms__log_info("model \"%s\": worker %ld %s", m->tag, (long)w->pid, how);
    if (m->state == MS__MODEL_LOADING) {
        if (was_ready)
            snprintf(msg, sizeof msg, "worker %ld %s while the other instances were loading",
                     (long)w->pid, how);
        else
            snprintf(msg, sizeof msg, "worker %s before the model was ready", how);
        ms__model_fail(ml, m, MS_E_LOAD_FAILED, msg);
    } else if (m->state == MS__MODEL_UNLOADING) {
        ms__verify_release(m, w);
        if (m->nworkers == 0)
            ms__unload_done(ml, m);
    }
    ms__sup_retire(&ml->sup, w);
}

void ms__worker_on_pid(ms__models *ml, ms__wproc *w)
{
    int status;
    if (w->gone || ms__sup_reap(&ml->sup, w, &status) == 0)
        return;
    /* Reaped: its pid may already belong to another process. Mark it stopped and killed so that
     * nothing below (a "failed" that fails the model, the EOF on its socket) signals that pid. */
    w->stopping = true;
    w->killed = true;
    /* Whatever it still said before it went counts ("failed" then exit, its last stderr). */
    if (w->ctrl_fd >= 0)
        ms__worker_on_ctrl(ml, w);
    for (int i = 0; i < 64 && w->err_fd >= 0; i++)
        ms__sup_stderr_read(&ml->sup, w);
    on_worker_exit(ml, w, status);
}

void ms__worker_on_stderr(ms__models *ml, ms__wproc *w)
{
    if (!w->gone)
        ms__sup_stderr_read(&ml->sup, w);
}

void ms__workers_reap_unwatched(ms__models *ml)
{
    /* Signals merge: try them all. */
    for (ms__wproc *w = LIST_FIRST(&ml->sup.all), *next; w != NULL; w = next) {
        next = LIST_NEXT(w, link);
        if (w->pidfd < 0)
            ms__worker_on_pid(ml, w);
    }
}

/* Sends lease l's arena to w for ring w->inst ("resume": the ring goes on from its tail). */
static int attach_one(ms__wproc *w, const ms__lease *l, bool resume, char *err, size_t errlen)
{
    json_t *att = json_pack("{s:s, s:I, s:i, s:i, s:b}", "op", "attach", "lease", (json_int_t)l->id,
                            "ring", w->inst, "nfds", 1, "resume", resume);
    int rc = att != NULL ? ms__sup_send(w, att, &l->arena_fd, 1, err, errlen)
                         : ms__fail(err, errlen, MS_E_NOMEM, "out of memory");
    json_decref(att);
    return rc;
}

int ms__workers_attach(ms__lease *l, int *doors, char *err, size_t errlen)
{
    char why[MS__ERRLEN];
    ms__model *m = l->model;
    /* Every instance maps the arena and serves its own ring set in it (ring i for instance i);
     * the client gets every instance's door, in the same order, and picks one per request. An
     * instance that is down gets the lease when it is back (ms__workers_reattach). */
    for (int i = 0; i < m->ninst; i++) {
        ms__instance *in = &m->inst[i];
        if (in->state == MS__INST_UP && in->w != NULL &&
            attach_one(in->w, l, false, why, sizeof why) != 0)
            return ms__fail(err, errlen, MS_E_WORKER_LOST,
                            "model \"%s\": cannot attach to worker %ld: %.800s", m->tag,
                            (long)in->w->pid, why);
        doors[i] = in->door_fd;
    }
    return 0;
}

int ms__workers_reattach(ms__wproc *w, char *err, size_t errlen)
{
    char why[MS__ERRLEN];
    ms__model *m = w->model;
    for (ms__lease *l = LIST_FIRST(&m->lease_list); l != NULL; l = LIST_NEXT(l, by_model))
        if (attach_one(w, l, true, why, sizeof why) != 0 ||
            ms__links_send(w, l, why, sizeof why) != 0)
            return ms__fail(err, errlen, MS_E_WORKER_LOST, "cannot attach lease %llu: %.800s",
                            (unsigned long long)l->id, why);
    json_t *open = json_pack("{s:s}", "op", "open");
    int rc = open != NULL ? ms__sup_send(w, open, NULL, 0, why, sizeof why) : MS_E_NOMEM;
    json_decref(open);
    if (rc != 0)
        return ms__fail(err, errlen, MS_E_WORKER_LOST, "cannot open its door: %.800s",
                        rc == MS_E_NOMEM ? "out of memory" : why);
    return 0;
}

void ms__workers_detach(ms__lease *l)
{
    char err[MS__ERRLEN];
    /* First the workers of other models that read l's arena (links.c) hear that it goes. */
    ms__links_drop(l);
    /* Every live worker of the model has mapped the lease's arena, or will be told of it
     * (a restarted one that is still loading just hears of a lease it does not know). */
    ms__model *m = l->model;
    if (m == NULL)
        return;
    json_t *msg = json_pack("{s:s, s:I}", "op", "detach", "lease", (json_int_t)l->id);
    if (msg == NULL)
        return;
    for (int i = 0; i < m->nworkers; i++) {
        ms__wproc *w = m->workers[i];
        if (w->ctrl_fd >= 0 && ms__sup_send(w, msg, NULL, 0, err, sizeof err) != 0)
            ms__log_warn("cannot tell worker %ld to detach lease %llu: %s", (long)w->pid,
                         (unsigned long long)l->id, err);
    }
    json_decref(msg);
}
