/*
 * Control requests to the daemon and their replies (call.h). Several threads of one client have
 * requests in flight at once: each writes its request under the send lock and waits for the
 * reply with its id. One of the waiting threads at a time reads the socket (the reader): it
 * hands each reply, descriptors and all, to the thread whose request it answers, and when its
 * own reply has come it leaves, and another waiting thread takes the role. No thread of our own
 * (fork.c): the readers are the callers.
 */
#include "call.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/errors.h"
#include "errors.h"
#include "wait.h"

/* While waiting for the daemon's reply, ask the thread's wait check (wait.h) this often. */
#define CHECK_MS 100

/* One request in flight whose thread waits for its reply, on that thread's stack. */
typedef struct ms__call {
    int64_t id;
    bool done;   /* its reply came: msg, fds, rc */
    json_t *msg; /* owned */
    int fds[MS__FDS_MAX];
    int nfds;
    int rc; /* 0, or MS_E_LIMIT: msg came whole, its descriptors did not (err says why) */
    char err[MS__ERRLEN];
    struct ms__call *next;
} ms__call;

/* One message as the reader got it. */
typedef struct incoming {
    json_t *msg; /* owned */
    int fds[MS__FDS_MAX];
    int nfds;
    int rc;
    char err[MS__ERRLEN];
} incoming;

void ms__lib_call_init(ms_client *client)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_mutex_init(&client->lock, NULL);
    pthread_mutex_init(&client->send_lock, NULL);
    pthread_cond_init(&client->changed, &a);
    pthread_condattr_destroy(&a);
    client->reading = false;
    client->calls = NULL;
    client->ncalls = 0;
    client->nabandoned = 0;
}

void ms__lib_call_destroy(ms_client *client)
{
    pthread_mutex_destroy(&client->lock);
    pthread_mutex_destroy(&client->send_lock);
    pthread_cond_destroy(&client->changed);
}

static void close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* Marks the client lost (under lock), code and message kept for the threads that wait. */
static __attribute__((format(printf, 3, 4))) void set_lost(ms_client *c, int code, const char *fmt,
                                                           ...)
{
    if (c->lost_code == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->lost_why, sizeof c->lost_why, fmt, ap);
        va_end(ap);
        c->lost_code = code;
    }
    c->lost = true;
}

/* Asks this thread's wait check, without the client's lock (it may take a language's lock). */
static bool cancelled_unlocked(ms_client *c)
{
    pthread_mutex_unlock(&c->lock);
    bool stop = ms__wait_cancelled();
    pthread_mutex_lock(&c->lock);
    return stop;
}

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

/* The lease a reply grants (0: none): a reply nobody takes gives it back. */
static int64_t granted_lease(const json_t *msg)
{
    json_t *lease = json_object_get(msg, "lease");
    if (!json_is_true(json_object_get(msg, "ok")) || !json_is_integer(lease))
        return 0;
    return json_integer_value(lease);
}

/* Whether id is abandoned; it is no longer when so (its reply is here). */
static bool take_abandoned(ms_client *c, int64_t id)
{
    for (int i = 0; i < c->nabandoned; i++) {
        if (c->abandoned[i] == id) {
            c->abandoned[i] = c->abandoned[--c->nabandoned];
            return true;
        }
    }
    return false;
}

static ms__call *find_call(ms_client *c, int64_t id)
{
    for (ms__call *k = c->calls; k != NULL; k = k->next)
        if (k->id == id)
            return k;
    return NULL;
}

static void unlist_call(ms_client *c, ms__call *call)
{
    for (ms__call **at = &c->calls; *at != NULL; at = &(*at)->next) {
        if (*at == call) {
            *at = call->next;
            c->ncalls--;
            return;
        }
    }
}

/* A reply carrying no id refuses the whole connection (another uid, too many clients): the
 * daemon sends it before reading anything, and closes. Its code and message, kept (under lock). */
static void refused(ms_client *c, const json_t *msg)
{
    json_t *code = json_object_get(msg, "code");
    const char *text = json_string_value(json_object_get(msg, "error"));
    int64_t k = json_is_integer(code) ? json_integer_value(code) : 0;
    if (k >= 0 || !ms__error_known(k))
        set_lost(c, MS_E_PROTOCOL, "the daemon refused the connection with an unknown code %lld",
                 (long long)k);
    else
        set_lost(c, (int)k, "%s", text ? text : ms_strerror((int)k));
}

/* Hands in (taken) to the thread whose reply it is, under lock. Returns the lease to give back
 * when it answers an abandoned request, else 0. An id nobody awaits: the client is lost. */
static int64_t deliver(ms_client *c, incoming *in)
{
    json_t *rid = json_object_get(in->msg, "id");
    ms__call *call = json_is_integer(rid) ? find_call(c, json_integer_value(rid)) : NULL;
    int64_t give = 0;
    if (call != NULL) {
        call->msg = in->msg;
        memcpy(call->fds, in->fds, sizeof(int) * (size_t)in->nfds);
        call->nfds = in->nfds;
        call->rc = in->rc;
        snprintf(call->err, sizeof call->err, "%s", in->err);
        call->done = true;
        unlist_call(c, call); /* its room is free */
        return 0;
    }
    if (json_is_integer(rid) && take_abandoned(c, json_integer_value(rid))) {
        give = granted_lease(in->msg);
    } else if ((rid == NULL || json_is_null(rid)) &&
               json_is_false(json_object_get(in->msg, "ok"))) {
        refused(c, in->msg);
    } else {
        set_lost(c, MS_E_PROTOCOL,
                 "daemon reply out of step: got %s \"id\" that no request of this client awaits",
                 json_is_integer(rid) ? "an" : "no");
    }
    close_fds(in->fds, in->nfds);
    json_decref(in->msg);
    return give;
}

/* Gives back lease (granted to a request abandoned since) with a release whose reply is dropped
 * too; under lock, released while sending. */
static void give_back(ms_client *c, int64_t lease)
{
    char err[MS__ERRLEN];
    int64_t id = ++c->next_id;
    json_t *rel = json_pack("{s:s, s:I, s:I}", "op", "release", "id", (json_int_t)id, "lease",
                            (json_int_t)lease);
    if (rel == NULL) {
        set_lost(c, MS_E_NOMEM, "out of memory giving back the lease of an interrupted acquire");
        return;
    }
    c->abandoned[c->nabandoned++] = id; /* the room of the request that granted it */
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->send_lock);
    int r = ms__msg_send(c->fd, rel, NULL, 0, -1, err, sizeof err);
    pthread_mutex_unlock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    json_decref(rel);
    if (r < 0)
        set_lost(c, MS_E_DAEMON_LOST, "cannot give back the lease of an interrupted acquire");
}

/* The reader's turn, under lock (released while it blocks): reads one message and hands it
 * over. MS_E_TIMEOUT when this thread's wait check said to stop first. */
static int read_one(ms_client *c)
{
    incoming in = {0};
    c->reading = true;
    pthread_mutex_unlock(&c->lock);
    int r = await_readable(c);
    if (r == 0)
        in.rc =
            ms__msg_recv(c->fd, &in.msg, in.fds, &in.nfds, MS__FDS_MAX, -1, in.err, sizeof in.err);
    pthread_mutex_lock(&c->lock);
    if (r == 0 && in.rc < 0 && !(in.rc == MS_E_LIMIT && in.msg != NULL)) {
        /* Whatever went wrong, the stream is out of step now. */
        set_lost(c, in.rc == MS_E_IO ? MS_E_DAEMON_LOST : in.rc,
                 "lost the connection to the daemon at %s: %s", c->socket_path, in.err);
        close_fds(in.fds, in.nfds);
        json_decref(in.msg);
    } else if (r == 0) {
        int64_t give = deliver(c, &in);
        if (give != 0) /* still the reader: no later reply is read before the release goes */
            give_back(c, give);
    }
    c->reading = false;
    pthread_cond_broadcast(&c->changed);
    return r;
}

/* One step of a thread's wait, under lock: the reader's turn when no thread reads, else a wait
 * to be told of a change (a slice at most). MS_E_TIMEOUT when the thread's wait check says to
 * stop. */
static int wait_step(ms_client *c)
{
    if (!c->reading)
        return read_one(c);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += CHECK_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int r = pthread_cond_timedwait(&c->changed, &c->lock, &ts);
    if (r == ETIMEDOUT && cancelled_unlocked(c))
        return MS_E_TIMEOUT;
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

/* Lists call with a new id set in req, once there is room (under lock). */
static int begin_call(ms_client *c, json_t *req, ms__call *call)
{
    while (c->ncalls + c->nabandoned >= MS__CALLS_MAX && !c->lost) {
        if (wait_step(c) < 0)
            return ms__lib_fail(c, MS_E_TIMEOUT,
                                "interrupted while waiting for room for a request (%d in flight)",
                                MS__CALLS_MAX);
    }
    int r = check_usable(c);
    if (r < 0)
        return r;
    call->id = ++c->next_id;
    if (json_object_set_new(req, "id", json_integer(call->id)) != 0)
        return ms__lib_fail(c, MS_E_NOMEM, "out of memory building a request");
    call->next = c->calls;
    c->calls = call;
    c->ncalls++;
    return 0;
}

/* The send failed (under lock, call unlisted): the daemon may have refused this connection
 * (another uid, too many clients) and closed it before reading anything; its refusal is still
 * there to be read when no other thread reads. */
static int send_failed(ms_client *c, const char *err)
{
    if (!c->reading && !c->lost) {
        incoming in = {0};
        c->reading = true;
        pthread_mutex_unlock(&c->lock);
        int rr =
            ms__msg_recv(c->fd, &in.msg, in.fds, &in.nfds, MS__FDS_MAX, 200, in.err, sizeof in.err);
        pthread_mutex_lock(&c->lock);
        c->reading = false;
        close_fds(in.fds, in.nfds);
        json_t *rid = json_object_get(in.msg, "id");
        if (rr == 0 && (rid == NULL || json_is_null(rid)) &&
            json_is_false(json_object_get(in.msg, "ok")))
            refused(c, in.msg);
        json_decref(in.msg);
    }
    set_lost(c, MS_E_DAEMON_LOST, "lost the connection to the daemon at %s: %s", c->socket_path,
             err);
    pthread_cond_broadcast(&c->changed);
    return ms__lib_fail_msg(c, c->lost_code, c->lost_why);
}

/* Writes req (its id set) with fds: 0, or the failure (the call unlisted). */
static int send_call(ms_client *c, json_t *req, const int *fds, int nfds, ms__call *call)
{
    char err[MS__ERRLEN];
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->send_lock);
    int r = ms__msg_send(c->fd, req, fds, nfds, -1, err, sizeof err);
    pthread_mutex_unlock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    if (r == 0)
        return 0;
    unlist_call(c, call);
    if (r == MS_E_TOO_LARGE)
        return ms__lib_fail(c, r, "request too large: %s", err);
    return send_failed(c, err);
}

/* The thread's interrupted wait (under lock): call is abandoned, its reply dropped when it
 * comes; one here already is dropped now, a lease it granted given back. */
static int abandon(ms_client *c, ms__call *call)
{
    unlist_call(c, call);
    if (call->done) {
        int64_t give = granted_lease(call->msg);
        close_fds(call->fds, call->nfds);
        json_decref(call->msg);
        call->msg = NULL;
        if (give != 0)
            give_back(c, give);
    } else {
        c->abandoned[c->nabandoned++] = call->id;
    }
    pthread_cond_broadcast(&c->changed);
    return ms__lib_fail(c, MS_E_TIMEOUT,
                        "interrupted while waiting for the daemon's answer; the connection "
                        "stays usable");
}

/* Waits for call's reply (under lock): 0 with call->done, or the failure (call unlisted). */
static int await_call(ms_client *c, ms__call *call)
{
    while (!call->done && !c->lost) {
        if (wait_step(c) < 0)
            return abandon(c, call);
    }
    if (call->done)
        return 0;
    unlist_call(c, call);
    pthread_cond_broadcast(&c->changed);
    if (c->lost_code == 0)
        return check_usable(c);
    return ms__lib_fail_msg(c, c->lost_code, c->lost_why);
}

/* Checks call's reply: 0 when it says "ok": true, else its refusal's code and message
 * (recorded), or MS_E_PROTOCOL. */
static int check_reply(ms_client *client, const json_t *msg)
{
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

/* Hands call's reply to the caller (see call.h). */
static int finish(ms_client *client, ms__call *call, json_t **reply, int *rfds, int *rnfds,
                  int maxfds)
{
    int r = check_reply(client, call->msg);
    if (call->rc == MS_E_LIMIT) {
        /* Its descriptors were lost: a reply that granted something is handed to the caller to
         * give back, with the limit's message kept. */
        if (r == 0) {
            *reply = call->msg;
            call->msg = NULL;
        }
        return ms__lib_fail_msg(client, MS_E_LIMIT, call->err);
    }
    if (r < 0)
        return r;
    *reply = call->msg;
    call->msg = NULL;
    int n = call->nfds < maxfds ? call->nfds : maxfds;
    for (int i = 0; i < n; i++)
        rfds[i] = call->fds[i];
    close_fds(call->fds + n, call->nfds - n);
    call->nfds = 0;
    if (rnfds)
        *rnfds = n;
    return 0;
}

int ms__lib_call(ms_client *client, json_t *req, const int *fds, int nfds, json_t **reply,
                 int *rfds, int *rnfds, int maxfds)
{
    ms__call call = {.nfds = 0};
    if (maxfds > MS__FDS_MAX)
        maxfds = MS__FDS_MAX;
    pthread_mutex_lock(&client->lock);
    int r = check_usable(client);
    if (r == 0)
        r = begin_call(client, req, &call);
    if (r == 0)
        r = send_call(client, req, fds, nfds, &call);
    if (r == 0)
        r = await_call(client, &call);
    pthread_mutex_unlock(&client->lock);
    if (r == 0 && call.done) {
        r = finish(client, &call, reply, rfds, rnfds, maxfds);
        close_fds(call.fds, call.nfds);
        json_decref(call.msg);
    }
    return r;
}
