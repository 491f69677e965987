/* One control request to the daemon and its reply (call.h). */
#include "call.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "../common/errors.h"
#include "errors.h"
#include "wait.h"

/* While waiting for the daemon's reply, ask the thread's wait check (wait.h) this often. */
#define CHECK_MS 100

/* Waits until the daemon's next message has begun to arrive (or the socket broke: the read says
 * so), asking the thread's wait check between slices: MS_E_TIMEOUT when it says to stop. */
static int await_readable(ms_client *client)
{
    for (;;) {
        struct pollfd p = {.fd = client->fd, .events = POLLIN};
        int n = poll(&p, 1, CHECK_MS);
        if (n > 0 || (n < 0 && errno != EINTR))
            return 0;
        if (ms__wait_cancelled())
            return MS_E_TIMEOUT;
    }
}

/* Reads and drops the reply to the interrupted request client->stale_id, giving back a lease it
 * granted (whose release's reply is dropped the same way). The connection stays in step. */
static int drain_stale(ms_client *client)
{
    char err[MS__ERRLEN];
    while (client->stale_id != 0) {
        json_t *msg = NULL;
        int got[MS__FDS_MAX], ngot = 0;
        if (await_readable(client) < 0)
            return ms__lib_fail(client, MS_E_TIMEOUT,
                                "interrupted while the answer to an earlier interrupted request "
                                "was awaited");
        int r = ms__msg_recv(client->fd, &msg, got, &ngot, MS__FDS_MAX, -1, err, sizeof err);
        if (r < 0 && !(r == MS_E_LIMIT && msg != NULL)) { /* lost descriptors: a whole reply */
            client->lost = true;
            return ms__lib_fail(client, MS_E_DAEMON_LOST,
                                "lost the connection to the daemon at %s: %s", client->socket_path,
                                err);
        }
        for (int i = 0; i < ngot; i++)
            close(got[i]);
        json_t *rid = json_object_get(msg, "id"), *lease = json_object_get(msg, "lease");
        bool ours = json_is_integer(rid) && json_integer_value(rid) == client->stale_id;
        json_int_t give = ours && json_is_true(json_object_get(msg, "ok")) && json_is_integer(lease)
                              ? json_integer_value(lease)
                              : 0;
        json_decref(msg);
        if (!ours) {
            client->lost = true;
            return ms__lib_fail(client, MS_E_PROTOCOL,
                                "daemon reply out of step after an "
                                "interrupted request");
        }
        client->stale_id = 0;
        if (give == 0)
            continue;
        json_t *rel = json_pack("{s:s, s:I, s:I}", "op", "release", "id",
                                (json_int_t)++client->next_id, "lease", give);
        r = rel != NULL ? ms__msg_send(client->fd, rel, NULL, 0, -1, err, sizeof err) : MS_E_NOMEM;
        json_decref(rel);
        if (r < 0) {
            client->lost = true;
            return ms__lib_fail(client, MS_E_DAEMON_LOST,
                                "cannot give back the lease of an interrupted acquire");
        }
        client->stale_id = client->next_id;
    }
    return 0;
}

/* A client made before fork() or whose connection broke is not used again. */
static int check_usable(ms_client *client)
{
    if (client->forked_from != 0)
        return ms__lib_fail(client, MS_E_DAEMON_LOST,
                            "this client was made in process %lld, before fork(): connect again "
                            "in this process",
                            (long long)client->forked_from);
    if (client->lost)
        return ms__lib_fail(client, MS_E_DAEMON_LOST,
                            "the connection to the daemon at %s was lost earlier; connect again",
                            client->socket_path);
    return 0;
}

/* Sends req with fds and receives the next message (*msg, with up to maxfds descriptors in got,
 * *ngot). A failure marks the client lost, except a request too large to send. */
static int send_and_receive(ms_client *client, json_t *req, const int *fds, int nfds, json_t **msg,
                            int *got, int *ngot, int maxfds, int64_t id)
{
    char err[MS__ERRLEN];
    int r = ms__msg_send(client->fd, req, fds, nfds, -1, err, sizeof err);
    if (r == MS_E_TOO_LARGE)
        return ms__lib_fail(client, r, "request too large: %s", err);
    if (r < 0) {
        /* The daemon may have refused this connection (another uid, too many clients) and
         * closed it before reading anything: its refusal is still there to be read. */
        char why[MS__ERRLEN];
        client->lost = true;
        *msg = NULL;
        int rr = ms__msg_recv(client->fd, msg, got, ngot, maxfds, 200, why, sizeof why);
        if (rr != 0 && *msg != NULL) { /* its descriptors were lost: not a refusal */
            json_decref(*msg);
            *msg = NULL;
        }
        if (rr != 0 || !json_is_false(json_object_get(*msg, "ok")))
            return ms__lib_fail(client, MS_E_DAEMON_LOST,
                                "lost the connection to the daemon at %s: %s", client->socket_path,
                                err);
        return 0;
    }
    if (await_readable(client) < 0) {
        /* Interrupted (Ctrl-C): the reply comes later, and is dropped then. */
        client->stale_id = id;
        return ms__lib_fail(client, MS_E_TIMEOUT,
                            "interrupted while waiting for the daemon's answer; the connection "
                            "stays usable");
    }
    r = ms__msg_recv(client->fd, msg, got, ngot, maxfds, -1, err, sizeof err);
    if (r == MS_E_LIMIT && *msg != NULL) {
        /* The reply came whole but its descriptors did not (this process at its RLIMIT_NOFILE):
         * the connection is fine; the caller gives back what the reply granted. */
        return ms__lib_fail_msg(client, r, err);
    }
    if (r < 0) {
        /* Whatever went wrong, the stream is out of step now. */
        client->lost = true;
        if (r == MS_E_IO)
            r = MS_E_DAEMON_LOST;
        return ms__lib_fail(client, r, "lost the connection to the daemon at %s: %s",
                            client->socket_path, err);
    }
    return 0;
}

/* Checks that msg answers request id: 0 when it says "ok": true, else its refusal's code and
 * message (recorded), or MS_E_PROTOCOL. */
static int check_reply(ms_client *client, json_t *msg, int64_t id)
{
    json_t *rid = json_object_get(msg, "id");
    /* A refusal of the whole connection (another uid, too many clients) carries no id: the
     * daemon sends it before reading anything and closes. Report its code and message. */
    if ((!rid || json_is_null(rid)) && json_is_false(json_object_get(msg, "ok"))) {
        client->lost = true;
    } else if (!json_is_integer(rid) || json_integer_value(rid) != id) {
        client->lost = true;
        return ms__lib_fail(client, MS_E_PROTOCOL,
                            "daemon reply out of step: expected \"id\": %lld, got %s",
                            (long long)id, json_is_integer(rid) ? "another id" : "none");
    }
    json_t *ok = json_object_get(msg, "ok");
    if (!json_is_boolean(ok))
        return ms__lib_fail(client, MS_E_PROTOCOL, "daemon reply without a boolean \"ok\" field");
    if (json_is_true(ok))
        return 0;
    json_t *code = json_object_get(msg, "code");
    const char *text = json_string_value(json_object_get(msg, "error"));
    int64_t c = json_is_integer(code) ? json_integer_value(code) : 0;
    if (c >= 0 || !ms__error_known(c))
        return ms__lib_fail(client, MS_E_PROTOCOL,
                            "daemon refused the request with an unknown code %lld: %s",
                            (long long)c, text ? text : "(no message)");
    return ms__lib_fail_msg(client, (int)c, text ? text : ms_strerror((int)c));
}

int ms__lib_call(ms_client *client, json_t *req, const int *fds, int nfds, json_t **reply,
                 int *rfds, int *rnfds, int maxfds)
{
    json_t *msg = NULL;
    int got[MS__FDS_MAX];
    int ngot = 0;

    if (maxfds > MS__FDS_MAX)
        maxfds = MS__FDS_MAX;
    pthread_mutex_lock(&client->lock);
    int r = check_usable(client);
    if (r == 0)
        r = drain_stale(client);
    if (r < 0)
        goto out;
    int64_t id = ++client->next_id;
    if (json_object_set_new(req, "id", json_integer(id)) != 0) {
        r = ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
        goto out;
    }
    r = send_and_receive(client, req, fds, nfds, &msg, got, &ngot, maxfds, id);
    if (r == MS_E_LIMIT && msg != NULL) {
        /* Its descriptors were lost: a reply that granted something is handed to the caller to
         * give back, with the limit's message kept. */
        char keep[MS__ERRLEN];
        snprintf(keep, sizeof keep, "%s", ms_errmsg(client));
        if (check_reply(client, msg, id) == 0) {
            *reply = msg;
            msg = NULL;
        }
        r = ms__lib_fail_msg(client, MS_E_LIMIT, keep);
        goto out;
    }
    if (r < 0)
        goto out;
    r = check_reply(client, msg, id);
    if (r < 0)
        goto out;
    *reply = msg;
    msg = NULL;
    for (int i = 0; i < ngot; i++)
        rfds[i] = got[i];
    if (rnfds)
        *rnfds = ngot;
    ngot = 0;
out:
    pthread_mutex_unlock(&client->lock);
    for (int i = 0; i < ngot; i++)
        close(got[i]);
    json_decref(msg);
    return r;
}
