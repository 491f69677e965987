/* The client: connection, per-thread error messages, control requests (status, load, unload). */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/errors.h"
#include "internal.h"

/* The calling thread's last message: one for the last failed ms_connect(), one for the last
 * failed call on a client (tagged with that client's serial, so that a message is never shown
 * for another client). */
static _Thread_local char tls_connect_msg[MS__ERRLEN];
static _Thread_local uint64_t tls_client_serial;
static _Thread_local char tls_client_msg[MS__ERRLEN];

static atomic_uint_fast64_t next_serial = 1;

/* ---- fork ----------------------------------------------------------------------------------- */

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static ms_client *all_clients;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&all_lock);
}

/* The child is single-threaded: locks that other threads of the parent held are copied held, so
 * they are made anew rather than taken. */
static void fork_child(void)
{
    int64_t parent = (int64_t)getppid();
    for (ms_client *c = all_clients; c != NULL; c = c->all_next) {
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        c->lost = true;
        if (c->forked_from == 0)
            c->forked_from = parent;
        pthread_mutex_init(&c->lock, NULL);
        pthread_mutex_init(&c->models_lock, NULL);
        for (ms_model *m = c->models; m != NULL; m = m->next) {
            if (m->arena_fd >= 0)
                close(m->arena_fd);
            m->arena_fd = -1;
            m->alloc.fd = -1;
            pthread_mutex_init(&m->lock, NULL);
            pthread_cond_init(&m->slot_free, NULL);
        }
    }
    pthread_mutex_init(&all_lock, NULL);
}

static void atfork_register(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void ms__lib_fork_track(ms_client *c)
{
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&all_lock);
    c->all_prev = NULL;
    c->all_next = all_clients;
    if (all_clients != NULL)
        all_clients->all_prev = c;
    all_clients = c;
    pthread_mutex_unlock(&all_lock);
}

void ms__lib_fork_untrack(ms_client *c)
{
    pthread_mutex_lock(&all_lock);
    if (c->all_prev != NULL)
        c->all_prev->all_next = c->all_next;
    else if (all_clients == c)
        all_clients = c->all_next;
    if (c->all_next != NULL)
        c->all_next->all_prev = c->all_prev;
    c->all_prev = c->all_next = NULL;
    pthread_mutex_unlock(&all_lock);
}

int ms__lib_fail_msg(const ms_client *client, int code, const char *msg)
{
    if (client == NULL) {
        snprintf(tls_connect_msg, sizeof tls_connect_msg, "%s", msg);
    } else {
        /* msg may be tls_client_msg itself. */
        if (msg != tls_client_msg)
            snprintf(tls_client_msg, sizeof tls_client_msg, "%s", msg);
        tls_client_serial = client->serial;
    }
    return code;
}

int ms__lib_fail(const ms_client *client, int code, const char *fmt, ...)
{
    char buf[MS__ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ms__lib_fail_msg(client, code, buf);
}

void ms__lib_clear(const ms_client *client)
{
    if (client == NULL)
        tls_connect_msg[0] = '\0';
    else if (tls_client_serial == client->serial)
        tls_client_msg[0] = '\0';
}

MS_EXPORT const char *ms_errmsg(const ms_client *client)
{
    if (client == NULL)
        return tls_connect_msg;
    if (tls_client_serial != 0 && tls_client_serial == client->serial)
        return tls_client_msg;
    return "";
}

int ms__lib_call(ms_client *client, json_t *req, const int *fds, int nfds, json_t **reply,
                 int *rfds, int *rnfds, int maxfds)
{
    char err[MS__ERRLEN];
    json_t *msg = NULL;
    int got[MS__FDS_MAX];
    int ngot = 0;
    int r;

    if (maxfds > MS__FDS_MAX)
        maxfds = MS__FDS_MAX;
    pthread_mutex_lock(&client->lock);
    if (client->forked_from != 0) {
        r = ms__lib_fail(client, MS_E_DAEMON_LOST,
                         "this client was made in process %lld, before fork(): connect again in "
                         "this process",
                         (long long)client->forked_from);
        goto out;
    }
    if (client->lost) {
        r = ms__lib_fail(client, MS_E_DAEMON_LOST,
                         "the connection to the daemon at %s was lost earlier; connect again",
                         client->socket_path);
        goto out;
    }
    int64_t id = ++client->next_id;
    if (json_object_set_new(req, "id", json_integer(id)) != 0) {
        r = ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
        goto out;
    }
    r = ms__msg_send(client->fd, req, fds, nfds, -1, err, sizeof err);
    if (r == MS_E_TOO_LARGE) {
        r = ms__lib_fail(client, r, "request too large: %s", err);
        goto out;
    }
    if (r < 0) {
        /* The daemon may have refused this connection (another uid, too many clients) and
         * closed it before reading anything: its refusal is still there to be read. */
        char why[MS__ERRLEN];
        client->lost = true;
        if (ms__msg_recv(client->fd, &msg, got, &ngot, maxfds, 200, why, sizeof why) != 0 ||
            !json_is_false(json_object_get(msg, "ok"))) {
            r = ms__lib_fail(client, MS_E_DAEMON_LOST,
                             "lost the connection to the daemon at %s: %s", client->socket_path,
                             err);
            goto out;
        }
    } else {
        r = ms__msg_recv(client->fd, &msg, got, &ngot, maxfds, -1, err, sizeof err);
        if (r < 0) {
            /* Whatever went wrong, the stream is out of step now. */
            client->lost = true;
            if (r == MS_E_IO)
                r = MS_E_DAEMON_LOST;
            r = ms__lib_fail(client, r, "lost the connection to the daemon at %s: %s",
                             client->socket_path, err);
            goto out;
        }
    }
    json_t *rid = json_object_get(msg, "id");
    /* A refusal of the whole connection (another uid, too many clients) carries no id: the
     * daemon sends it before reading anything and closes. Report its code and message. */
    if ((!rid || json_is_null(rid)) && json_is_false(json_object_get(msg, "ok")))
        client->lost = true;
    else if (!json_is_integer(rid) || json_integer_value(rid) != id) {
        client->lost = true;
        r = ms__lib_fail(client, MS_E_PROTOCOL,
                         "daemon reply out of step: expected \"id\": %lld, got %s", (long long)id,
                         json_is_integer(rid) ? "another id" : "none");
        goto out;
    }
    json_t *ok = json_object_get(msg, "ok");
    if (!json_is_boolean(ok)) {
        r = ms__lib_fail(client, MS_E_PROTOCOL, "daemon reply without a boolean \"ok\" field");
        goto out;
    }
    if (!json_is_true(ok)) {
        json_t *code = json_object_get(msg, "code");
        const char *text = json_string_value(json_object_get(msg, "error"));
        int64_t c = json_is_integer(code) ? json_integer_value(code) : 0;
        if (c >= 0 || !ms__error_known(c))
            r = ms__lib_fail(client, MS_E_PROTOCOL,
                             "daemon refused the request with an unknown code %lld: %s",
                             (long long)c, text ? text : "(no message)");
        else
            r = ms__lib_fail_msg(client, (int)c, text ? text : ms_strerror((int)c));
        goto out;
    }
    *reply = msg;
    msg = NULL;
    for (int i = 0; i < ngot; i++)
        rfds[i] = got[i];
    if (rnfds)
        *rnfds = ngot;
    ngot = 0;
    r = 0;
out:
    pthread_mutex_unlock(&client->lock);
    for (int i = 0; i < ngot; i++)
        close(got[i]);
    json_decref(msg);
    return r;
}

MS_EXPORT int ms_connect(const char *socket_path, ms_client **out)
{
    char path[MS__SOCKET_PATH_MAX + 1];
    char err[MS__ERRLEN];
    int fd = -1;
    int r;

    ms__lib_clear(NULL);
    if (out == NULL)
        return ms__lib_fail(NULL, MS_E_INVAL, "ms_connect: out is NULL");
    if (socket_path == NULL) {
        r = ms__socket_path_default(path, sizeof path, err, sizeof err);
        if (r < 0)
            return ms__lib_fail_msg(NULL, r, err);
    } else {
        if (strlen(socket_path) == 0 || strlen(socket_path) > MS__SOCKET_PATH_MAX)
            return ms__lib_fail(NULL, MS_E_INVAL,
                                "socket path: expected 1 to %d characters, got %zu",
                                MS__SOCKET_PATH_MAX, strlen(socket_path));
        snprintf(path, sizeof path, "%s", socket_path);
    }
    r = ms__lib_connect(path, &fd, err, sizeof err);
    if (r < 0)
        return ms__lib_fail_msg(NULL, r, err);

    ms_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return ms__lib_fail(NULL, MS_E_NOMEM, "out of memory for a client");
    }
    c->fd = fd;
    snprintf(c->socket_path, sizeof c->socket_path, "%s", path);
    c->serial = atomic_fetch_add(&next_serial, 1);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->models_lock, NULL);
    ms__lib_fork_track(c);

    json_t *req = json_pack("{s:s, s:i}", "op", "hello", "version", MS_PROTOCOL_VERSION);
    json_t *reply = NULL;
    if (req == NULL) {
        r = ms__lib_fail(c, MS_E_NOMEM, "out of memory building hello");
    } else {
        r = ms__lib_call(c, req, NULL, 0, &reply, NULL, NULL, 0);
        json_decref(req);
    }
    if (r == MS_E_DAEMON_LOST) {
        r = ms__lib_fail(c, MS_E_NO_DAEMON, "daemon at %s closed the connection at hello (%s)",
                         path, ms_errmsg(c));
    }
    if (r < 0) {
        ms__lib_fail_msg(NULL, r, ms_errmsg(c));
        ms_disconnect(c);
        return r;
    }
    json_t *pid = json_object_get(reply, "daemon_pid");
    if (json_is_integer(pid))
        c->daemon_pid = json_integer_value(pid);
    json_decref(reply);
    *out = c;
    return 0;
}

MS_EXPORT void ms_disconnect(ms_client *client)
{
    if (client == NULL)
        return;
    for (;;) {
        pthread_mutex_lock(&client->models_lock);
        ms_model *m = client->models;
        if (m != NULL) {
            client->models = m->next;
            if (m->next)
                m->next->prev = NULL;
            m->prev = m->next = NULL;
        }
        pthread_mutex_unlock(&client->models_lock);
        if (m == NULL)
            break;
        ms__lib_model_end(m);
    }
    ms__lib_fork_untrack(client);
    if (client->fd >= 0)
        close(client->fd);
    pthread_mutex_destroy(&client->lock);
    pthread_mutex_destroy(&client->models_lock);
    free(client);
}

MS_EXPORT int ms_status_json(ms_client *client, char **out)
{
    if (client == NULL || out == NULL)
        return client ? ms__lib_fail(client, MS_E_INVAL, "ms_status_json: out is NULL")
                      : MS_E_INVAL;
    ms__lib_clear(client);
    json_t *req = json_pack("{s:s}", "op", "status");
    if (req == NULL)
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
    json_t *reply = NULL;
    int r = ms__lib_call(client, req, NULL, 0, &reply, NULL, NULL, 0);
    json_decref(req);
    if (r < 0)
        return r;
    json_t *status = json_object_get(reply, "status");
    if (!json_is_object(status)) {
        json_decref(reply);
        return ms__lib_fail(client, MS_E_PROTOCOL,
                            "status reply: expected a \"status\" object, got none");
    }
    char *text = json_dumps(status, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(reply);
    if (text == NULL)
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory writing the status");
    /* json_dumps allocates with jansson's allocator (malloc by default); the caller free()s. */
    *out = text;
    return 0;
}

int ms__lib_check_tag(ms_client *client, const char *tag)
{
    if (tag != NULL && ms__tag_valid(tag))
        return 0;
    return ms__lib_fail(client, MS_E_INVAL,
                        "tag: expected 1 to %d characters of [A-Za-z0-9._:/@+-], got \"%.200s\"",
                        MS__TAG_MAX, tag ? tag : "(null)");
}

MS_EXPORT int ms_load(ms_client *client, const char *tag, const char *spec_json)
{
    char err[MS__ERRLEN];
    json_t *spec = NULL;

    if (client == NULL)
        return MS_E_INVAL;
    ms__lib_clear(client);
    if (ms__lib_check_tag(client, tag) != 0)
        return MS_E_INVAL;
    if (spec_json == NULL)
        return ms__lib_fail(client, MS_E_SPEC, "ms_load: expected a spec, got NULL");
    int r = ms__lib_spec_prepare(spec_json, &spec, err, sizeof err);
    if (r < 0)
        return ms__lib_fail_msg(client, r, err);
    json_t *req = json_pack("{s:s, s:s, s:o}", "op", "load", "tag", tag, "spec", spec);
    if (req == NULL)
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
    json_t *reply = NULL;
    r = ms__lib_call(client, req, NULL, 0, &reply, NULL, NULL, 0);
    json_decref(req);
    json_decref(reply);
    return r;
}

MS_EXPORT int ms_unload(ms_client *client, const char *tag, int force)
{
    if (client == NULL)
        return MS_E_INVAL;
    ms__lib_clear(client);
    if (ms__lib_check_tag(client, tag) != 0)
        return MS_E_INVAL;
    json_t *req = json_pack("{s:s, s:s, s:b}", "op", "unload", "tag", tag, "force", force != 0);
    if (req == NULL)
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
    json_t *reply = NULL;
    int r = ms__lib_call(client, req, NULL, 0, &reply, NULL, NULL, 0);
    json_decref(req);
    json_decref(reply);
    return r;
}
