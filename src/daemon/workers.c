/*
 * What workers say, decoded: their control socket ("ready", "failed", "drained", EOF), their
 * stderr and their exit. Each piece of news is handed to the life-cycle owner (lifecycle.c),
 * which alone decides what it means for the model. See models.h.
 */
#include <stdatomic.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <string.h>

#include "../common/errors.h"
#include "../common/exitstatus.h"
#include "../common/fdlimit.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

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
        ml->ops->stop(&ml->sup, w, ms__registry_now(&ml->reg));
        return;
    }
    w->ready = true;
    w->memory_bytes = (uint64_t)json_integer_value(mem);
    w->fd_base = ms__fd_count(w->pid); /* before any lease is attached (attach.c) */
    w->signature = json_incref(sig != NULL ? sig : json_null());
    ms__life_worker_ready(ml, w);
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
    ms__life_worker_failed(ml, w, c, text != NULL ? text : "the worker failed to load the model");
}

static void on_msg(ms__models *ml, ms__wproc *w, const json_t *msg)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (op != NULL && strcmp(op, "ready") == 0)
        msg_ready(ml, w, msg);
    else if (op != NULL && strcmp(op, "failed") == 0)
        msg_failed(ml, w, msg);
    else if (op != NULL && strcmp(op, "drained") == 0)
        ms__life_worker_drained(ml, w, msg);
    else
        ms__log_warn_limited("worker %ld sent an unknown message (op %s); ignored", (long)w->pid,
                             op != NULL ? op : "missing");
}

void ms__worker_on_ctrl(ms__models *ml, ms__wproc *w, uint32_t events)
{
    char err[MS__ERRLEN];
    if (w->gone || w->ctrl_fd < 0)
        return;
    int rc = (events & EPOLLOUT) ? ms__sup_ctrl_flush(w, err, sizeof err) : 0;
    if (rc == 0)
        rc = ms__sup_ctrl_fill(w, err, sizeof err);
    bool eof = rc != 0 || w->reader.eof;
    if (rc != 0)
        ms__log_warn_limited("worker %ld control socket: %s", (long)w->pid, err);
    for (;;) {
        json_t *msg = NULL;
        rc = ms__sup_ctrl_next(w, &msg, err, sizeof err);
        if (rc != 0) {
            ms__log_warn_limited("worker %ld sent a bad message: %s", (long)w->pid, err);
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
            ml->ops->stop(&ml->sup, w, ms__registry_now(&ml->reg));
        }
    }
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
        ms__worker_on_ctrl(ml, w, EPOLLIN);
    for (int i = 0; i < 64 && w->err_fd >= 0; i++)
        ms__sup_stderr_read(&ml->sup, w);
    ms__life_worker_exit(ml, w, status);
    ms__sup_retire(&ml->sup, w);
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
