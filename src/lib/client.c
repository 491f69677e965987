/* Clients: connect, disconnect, and the control requests on a whole client (status, load,
 * unload). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "call.h"
#include "connect.h"
#include "ctor.h"
#include "errors.h"
#include "fork.h"
#include "model.h"

/* The socket's path: socket_path, else the default (paths.h). Errors recorded for ms_connect. */
static int resolve_path(const char *socket_path, char *path, size_t pathlen)
{
    char err[MS__ERRLEN];
    if (socket_path == NULL) {
        int r = ms__socket_path_default(path, pathlen, err, sizeof err);
        return r < 0 ? ms__lib_fail_msg(NULL, r, err) : 0;
    }
    if (strlen(socket_path) == 0 || strlen(socket_path) > MS__SOCKET_PATH_MAX)
        return ms__lib_fail(NULL, MS_E_INVAL, "socket path: expected 1 to %d characters, got %zu",
                            MS__SOCKET_PATH_MAX, strlen(socket_path));
    snprintf(path, pathlen, "%s", socket_path);
    return 0;
}

/* A client on the connected socket fd (which it owns from here on, even on failure), listed for
 * fork handling. NULL when out of memory (recorded for ms_connect). */
static ms_client *client_new(int fd, const char *path)
{
    ms_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        ms__lib_fail(NULL, MS_E_NOMEM, "out of memory for a client");
        return NULL;
    }
    c->fd = fd;
    snprintf(c->socket_path, sizeof c->socket_path, "%s", path);
    c->serial = ms__lib_serial_next();
    ms__lib_call_init(c);
    pthread_mutex_init(&c->models_lock, NULL);
    LIST_INIT(&c->models);
    ms__lib_fork_track(c);
    return c;
}

/* The first request on a connection: our protocol version, the daemon's pid in return. */
static int hello(ms_client *c)
{
    json_t *req = json_pack("{s:s, s:i}", "op", "hello", "version", MS_PROTOCOL_VERSION);
    json_t *reply = NULL;
    int r;
    if (req == NULL) {
        r = ms__lib_fail(c, MS_E_NOMEM, "out of memory building hello");
    } else {
        r = ms__lib_call(c, req, NULL, 0, &reply, NULL, NULL, 0);
        json_decref(req);
    }
    if (r == MS_E_DAEMON_LOST)
        r = ms__lib_fail(c, MS_E_NO_DAEMON, "daemon at %s closed the connection at hello (%s)",
                         c->socket_path, ms_errmsg(c));
    if (r < 0)
        return r;
    json_t *pid = json_object_get(reply, "daemon_pid");
    if (json_is_integer(pid))
        c->daemon_pid = json_integer_value(pid);
    json_decref(reply);
    return 0;
}

MS_EXPORT int ms_connect(const char *socket_path, ms_client **out)
{
    char path[MS__SOCKET_PATH_MAX + 1];
    char err[MS__ERRLEN];
    int fd = -1;

    ms__lib_clear(NULL);
    if (out == NULL)
        return ms__lib_fail(NULL, MS_E_INVAL, "ms_connect: out is NULL");
    int r = resolve_path(socket_path, path, sizeof path);
    if (r < 0)
        return r;
    r = ms__lib_connect(path, &fd, err, sizeof err);
    if (r < 0)
        return ms__lib_fail_msg(NULL, r, err);
    ms_client *c = client_new(fd, path);
    if (c == NULL)
        return MS_E_NOMEM;
    r = hello(c);
    if (r < 0) {
        ms__lib_fail_msg(NULL, r, ms_errmsg(c));
        ms_disconnect(c);
        return r;
    }
    *out = c;
    return 0;
}

MS_EXPORT void ms_disconnect(ms_client *client)
{
    if (client == NULL)
        return;
    for (;;) {
        pthread_mutex_lock(&client->models_lock);
        ms_model *m = LIST_FIRST(&client->models);
        if (m != NULL)
            LIST_REMOVE(m, link);
        pthread_mutex_unlock(&client->models_lock);
        if (m == NULL)
            break;
        ms__lib_model_end(m);
    }
    ms__lib_fork_untrack(client);
    if (client->fd >= 0)
        close(client->fd);
    ms__lib_call_destroy(client);
    pthread_mutex_destroy(&client->models_lock);
    free(client);
}

/* Frees c (already out of the process's list) and its handles without a word to the daemon. */
static void forget(ms_client *c)
{
    for (;;) {
        ms_model *m = LIST_FIRST(&c->models);
        if (m == NULL)
            break;
        LIST_REMOVE(m, link);
        ms__lib_model_drop(m);
    }
    if (c->fd >= 0)
        close(c->fd);
    ms__lib_call_destroy(c);
    pthread_mutex_destroy(&c->models_lock);
    free(c);
}

MS_EXPORT int ms_client_forget(ms_client *client)
{
    if (client != NULL) {
        ms__lib_fork_untrack(client);
        forget(client);
        return 0;
    }
    for (ms_client *c; (c = ms__lib_fork_take_inherited()) != NULL;)
        forget(c);
    return 0;
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

/* Sends req (taken; NULL: out of memory building it) with ctor_fd when it is one (not taken;
 * "nfds" added) and waits for its answer, of which only the status matters. */
static int request_fd(ms_client *client, json_t *req, int ctor_fd)
{
    if (req == NULL)
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
    int nfds = ctor_fd >= 0 ? 1 : 0;
    if (nfds > 0 && json_object_set_new(req, "nfds", json_integer(nfds)) != 0) {
        json_decref(req);
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
    }
    json_t *reply = NULL;
    int r = ms__lib_call(client, req, nfds > 0 ? &ctor_fd : NULL, nfds, &reply, NULL, NULL, 0);
    json_decref(req);
    json_decref(reply);
    return r;
}

static int request(ms_client *client, json_t *req)
{
    return request_fd(client, req, -1);
}

MS_EXPORT int ms_load(ms_client *client, const char *tag, const char *spec_json)
{
    return ms__load_ctor(client, tag, spec_json, -1);
}

int ms__load_ctor(ms_client *client, const char *tag, const char *spec_json, int ctor_fd)
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
    return request_fd(client, req, ctor_fd);
}

MS_EXPORT int ms_unload(ms_client *client, const char *tag, int force)
{
    if (client == NULL)
        return MS_E_INVAL;
    ms__lib_clear(client);
    if (ms__lib_check_tag(client, tag) != 0)
        return MS_E_INVAL;
    json_t *req = json_pack("{s:s, s:s, s:b}", "op", "unload", "tag", tag, "force", force != 0);
    return request(client, req);
}

MS_EXPORT int ms_swap(ms_client *client, const char *tag, const char *changes, unsigned flags)
{
    return ms__swap_ctor(client, tag, changes, flags, -1);
}

int ms__swap_ctor(ms_client *client, const char *tag, const char *changes, unsigned flags,
                  int ctor_fd)
{
    char err[MS__ERRLEN];
    json_t *spec = NULL;

    if (client == NULL)
        return MS_E_INVAL;
    ms__lib_clear(client);
    if (ms__lib_check_tag(client, tag) != 0)
        return MS_E_INVAL;
    if (changes == NULL)
        return ms__lib_fail(client, MS_E_SPEC,
                            "ms_swap: expected the spec fields to change, got NULL");
    if ((flags & ~MS_SWAP_DRAIN_FIRST) != 0)
        return ms__lib_fail(client, MS_E_INVAL,
                            "ms_swap: expected flags 0 or "
                            "MS_SWAP_DRAIN_FIRST, got %u",
                            flags);
    int r = ms__lib_spec_prepare(changes, &spec, err, sizeof err);
    if (r < 0)
        return ms__lib_fail_msg(client, r, err);
    json_t *req = json_pack("{s:s, s:s, s:o, s:b}", "op", "swap", "tag", tag, "spec", spec,
                            "drain_first", (flags & MS_SWAP_DRAIN_FIRST) != 0);
    return request_fd(client, req, ctor_fd);
}
