/*
 * The worker's serving loop: epoll over the control socket, the signal descriptor and every
 * attached client's channel. Each turn collects the requests that are ready, then runs them: one
 * at a time today, the place where batching across clients will go.
 *
 * A client controls what it writes in its arena and on its channel, nothing else: every request
 * is decoded against that client's arena before any byte of it is touched, and any error is
 * answered to that client only.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.h"
#include "../common/arena.h"
#include "../common/chan.h"
#include "../common/log.h"
#include "../common/proto.h"
#include "../common/util.h"
#include "modelshare.h"

#define EVENTS_MAX 64

/* Tags for epoll's data of the two fixed descriptors; clients use their slot pointer. */
static char ctrl_tag, signal_tag;

typedef struct client {
    bool dead; /* dropped this turn, freed at its end */
    struct client *next_dead;
    size_t slot; /* index in server.clients */
    int64_t lease;
    int chan_fd;
    int arena_fd;
    void *base;
    uint64_t capacity;
} client;

/* A request taken from a channel, waiting to run. */
typedef struct pending {
    client *c;
    size_t len;
    union {
        ms__req req;
        char bytes[sizeof(ms__req) + 64];
    } raw;
} pending;

typedef struct server {
    ms__worker *w;
    int ep;
    client **clients; /* MS__WORKER_CLIENTS_MAX slots */
    size_t nclients;
    pending pend[EVENTS_MAX];
    size_t npend;
    client *graveyard; /* dropped clients, freed once no event of this turn can name them */
    ms__reader rd;
} server;

static client *find(server *s, int64_t lease)
{
    for (size_t i = 0; i < MS__WORKER_CLIENTS_MAX; i++)
        if (s->clients[i] && s->clients[i]->lease == lease)
            return s->clients[i];
    return NULL;
}

static void drop(server *s, client *c, const char *why)
{
    s->clients[c->slot] = NULL;
    s->nclients--;
    epoll_ctl(s->ep, EPOLL_CTL_DEL, c->chan_fd, NULL);
    close(c->chan_fd);
    ms__arena_unmap(c->base, c->capacity);
    close(c->arena_fd);
    ms__log_debug("model \"%s\": client with lease %lld dropped (%s)", s->w->tag,
                  (long long)c->lease, why);
    /* Events and requests of this turn may still point at it: free it at the end of the turn. */
    c->dead = true;
    c->chan_fd = c->arena_fd = -1;
    c->base = NULL;
    c->next_dead = s->graveyard;
    s->graveyard = c;
}

static void bury(server *s)
{
    while (s->graveyard) {
        client *c = s->graveyard;
        s->graveyard = c->next_dead;
        free(c);
    }
}

static void attach(server *s, int64_t lease, int arena_fd, int chan_fd)
{
    char err[MS__ERRLEN];
    void *base = NULL;
    uint64_t cap = 0;

    if (s->nclients >= MS__WORKER_CLIENTS_MAX) {
        ms__log_error("model \"%s\": refusing client with lease %lld: %d clients attached already",
                      s->w->tag, (long long)lease, MS__WORKER_CLIENTS_MAX);
        goto fail;
    }
    if (find(s, lease) != NULL) {
        ms__log_error("model \"%s\": refusing a second attach of lease %lld", s->w->tag,
                      (long long)lease);
        goto fail;
    }
    int r = ms__arena_map(arena_fd, &base, &cap, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": cannot map the arena of lease %lld: %s", s->w->tag,
                      (long long)lease, err);
        goto fail;
    }
    int fl = fcntl(chan_fd, F_GETFL);
    if (fl < 0 || fcntl(chan_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        ms__log_error("model \"%s\": bad channel descriptor for lease %lld: %s", s->w->tag,
                      (long long)lease, strerror(errno));
        goto fail;
    }
    client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ms__log_error("model \"%s\": out of memory attaching lease %lld", s->w->tag,
                      (long long)lease);
        goto fail;
    }
    c->lease = lease;
    c->chan_fd = chan_fd;
    c->arena_fd = arena_fd;
    c->base = base;
    c->capacity = cap;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, chan_fd, &ev) < 0) {
        ms__log_error("model \"%s\": epoll_ctl for lease %lld: %s", s->w->tag, (long long)lease,
                      strerror(errno));
        free(c);
        goto fail;
    }
    for (size_t i = 0; i < MS__WORKER_CLIENTS_MAX; i++) {
        if (s->clients[i] == NULL) {
            s->clients[i] = c;
            c->slot = i;
            break;
        }
    }
    s->nclients++;
    ms__log_debug("model \"%s\": attached lease %lld (arena %llu bytes)", s->w->tag,
                  (long long)lease, (unsigned long long)cap);
    return;
fail:
    if (base)
        ms__arena_unmap(base, cap);
    close(arena_fd);
    close(chan_fd);
}

/* One control message: attach or detach. */
static void control_msg(server *s, json_t *msg, int *fds, int nfds)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    json_t *lease = json_object_get(msg, "lease");
    if (op && strcmp(op, "attach") == 0 && json_is_integer(lease) && nfds == 2) {
        attach(s, json_integer_value(lease), fds[0], fds[1]);
        return;
    }
    if (op && strcmp(op, "detach") == 0 && json_is_integer(lease)) {
        client *c = find(s, json_integer_value(lease));
        if (c)
            drop(s, c, "detached");
        else
            ms__log_debug("model \"%s\": detach of unknown lease %lld", s->w->tag,
                          (long long)json_integer_value(lease));
    } else {
        ms__log_warn("model \"%s\": ignoring control message op \"%s\" (lease %s, %d fds)",
                     s->w->tag, op ? op : "(none)", json_is_integer(lease) ? "set" : "missing",
                     nfds);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* Reads what the control socket has. Returns 1 when the daemon is gone. */
static int control_readable(server *s)
{
    char err[MS__ERRLEN];
    int r = ms__reader_fill(&s->rd, s->w->ctrl_fd, err, sizeof err);
    for (;;) {
        json_t *msg = NULL;
        int fds[MS__FDS_MAX];
        int nfds = 0;
        int q = ms__reader_next(&s->rd, &msg, fds, &nfds, err, sizeof err);
        if (q < 0) {
            ms__log_error("model \"%s\": bad message from the daemon: %s", s->w->tag, err);
            return 1;
        }
        if (msg == NULL)
            break;
        control_msg(s, msg, fds, nfds);
        json_decref(msg);
    }
    if (r < 0) {
        ms__log_error("model \"%s\": control socket: %s", s->w->tag, err);
        return 1;
    }
    if (s->rd.eof) {
        ms__log_info("model \"%s\": the daemon closed the control socket; exiting", s->w->tag);
        return 1;
    }
    return 0;
}

/* Takes one record from a client's channel into the pending list. */
static void channel_readable(server *s, client *c, uint32_t events)
{
    pending *p = &s->pend[s->npend];
    ssize_t n;
    do
        n = recv(c->chan_fd, &p->raw, sizeof p->raw, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        p->c = c;
        p->len = (size_t)n;
        s->npend++;
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !(events & (EPOLLHUP | EPOLLERR)))
        return;
    drop(s, c, n == 0 || (events & EPOLLHUP) ? "channel closed" : "channel error");
}

static void respond(server *s, client *c, ms__resp *resp)
{
    ssize_t n;
    do
        n = send(c->chan_fd, resp, sizeof *resp, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof *resp)
        drop(s, c, "cannot send a response");
}

/* Counters in the shared stats page, relaxed: the daemon only reads them for status. */
#define STAT_ADD(s, field, v)                                                                      \
    do {                                                                                           \
        if ((s)->w->stats)                                                                         \
            atomic_fetch_add_explicit(&(s)->w->stats->field, (v), memory_order_relaxed);           \
    } while (0)

static void respond_error(server *s, client *c, uint64_t id, int code, const char *msg)
{
    ms__resp resp;
    memset(&resp, 0, sizeof resp);
    resp.magic = MS__RESP_MAGIC;
    resp.status = code;
    resp.id = id;
    snprintf(resp.msg, sizeof resp.msg, "%s", msg);
    STAT_ADD(s, requests, 1);
    STAT_ADD(s, errors, 1);
    respond(s, c, &resp);
}

/* Runs one request. */
static void run_one(server *s, pending *p)
{
    char err[MS__ERRLEN];
    client *c = p->c;
    ms__req req;
    uint64_t id = 0;

    if (p->len >= offsetof(ms__req, id) + sizeof id)
        memcpy(&id, p->raw.bytes + offsetof(ms__req, id), sizeof id);
    int r = ms__req_decode(&p->raw, p->len, c->capacity, &req, err, sizeof err);
    if (r < 0) {
        respond_error(s, c, id, r, err);
        return;
    }
    const ms__backend_ops *be = s->w->backend;
    ms__tensor_view in, out;
    memset(&in, 0, sizeof in);
    memset(&out, 0, sizeof out);
    in.dtype = (int)req.dtype;
    in.rank = (int)req.rank;
    for (int i = 0; i < in.rank; i++)
        in.shape[i] = req.shape[i];
    in.data = (char *)c->base + req.in_off;
    in.nbytes = (size_t)req.in_len;
    r = be->output_for(s->w->state, &in, &out, err, sizeof err);
    if (r < 0) {
        respond_error(s, c, req.id, r, err);
        return;
    }
    if (out.rank < 0 || out.rank > MS_MAX_RANK || ms_dtype_size(out.dtype) == 0) {
        respond_error(s, c, req.id, MS_E_BACKEND, "the backend described an invalid output");
        return;
    }
    ms__resp resp;
    memset(&resp, 0, sizeof resp);
    resp.magic = MS__RESP_MAGIC;
    resp.id = req.id;
    if (out.nbytes > req.out_cap) {
        resp.status = MS_E_TOO_LARGE;
        resp.out_len = out.nbytes;
        snprintf(resp.msg, sizeof resp.msg, "output needs %zu bytes, the request has room for %llu",
                 out.nbytes, (unsigned long long)req.out_cap);
        STAT_ADD(s, requests, 1);
        STAT_ADD(s, errors, 1);
        respond(s, c, &resp);
        return;
    }
    out.data = (char *)c->base + req.out_off;
    int64_t t0 = ms__now_ns();
    r = be->run(s->w->state, &in, &out, err, sizeof err);
    int64_t t1 = ms__now_ns();
    STAT_ADD(s, busy_ns, (uint64_t)(t1 - t0));
    STAT_ADD(s, batches, 1);
    if (r < 0) {
        respond_error(s, c, req.id, r, err);
        return;
    }
    STAT_ADD(s, rows, in.rank >= 1 ? (uint64_t)in.shape[0] : 1);
    STAT_ADD(s, requests, 1);
    resp.dtype = (uint32_t)out.dtype;
    resp.rank = (uint32_t)out.rank;
    for (int i = 0; i < out.rank; i++)
        resp.shape[i] = out.shape[i];
    resp.out_len = out.nbytes;
    respond(s, c, &resp);
}

/* Runs what this turn collected. Batching across clients will gather rows here. */
static void run_pending(server *s)
{
    for (size_t i = 0; i < s->npend; i++)
        if (!s->pend[i].c->dead)
            run_one(s, &s->pend[i]);
    s->npend = 0;
}

/* Returns 1 when a stop signal came. */
static int signal_readable(server *s)
{
    unsigned char signo;
    ssize_t n = read(s->w->signal_fd, &signo, 1);
    if (n == 1) {
        ms__log_info("model \"%s\": signal %u, stopping", s->w->tag, signo);
        return 1;
    }
    return 0;
}

int ms__worker_serve(ms__worker *w)
{
    server s;
    int rc = 0;

    memset(&s, 0, sizeof s);
    s.w = w;
    ms__reader_init(&s.rd);
    s.clients = calloc(MS__WORKER_CLIENTS_MAX, sizeof *s.clients);
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    if (s.clients == NULL || s.ep < 0) {
        ms__log_error("model \"%s\": cannot set up the serving loop: %s", w->tag,
                      s.clients ? strerror(errno) : "out of memory");
        rc = s.clients ? MS_E_IO : MS_E_NOMEM;
        goto out;
    }
    int fl = fcntl(w->ctrl_fd, F_GETFL);
    if (fl >= 0)
        fcntl(w->ctrl_fd, F_SETFL, fl | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ctrl_tag};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &signal_tag};
    if (epoll_ctl(s.ep, EPOLL_CTL_ADD, w->ctrl_fd, &ev) < 0 ||
        epoll_ctl(s.ep, EPOLL_CTL_ADD, w->signal_fd, &sev) < 0) {
        ms__log_error("model \"%s\": epoll_ctl: %s", w->tag, strerror(errno));
        rc = MS_E_IO;
        goto out;
    }

    for (;;) {
        struct epoll_event evs[EVENTS_MAX];
        int n = epoll_wait(s.ep, evs, EVENTS_MAX, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ms__log_error("model \"%s\": epoll_wait: %s", w->tag, strerror(errno));
            rc = MS_E_IO;
            break;
        }
        /* Control and signals first: a detach must not leave a request on unmapped memory. */
        int stop = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &signal_tag)
                stop |= signal_readable(&s);
            else if (evs[i].data.ptr == &ctrl_tag)
                stop |= control_readable(&s);
        }
        if (stop)
            break;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &signal_tag || p == &ctrl_tag)
                continue;
            client *c = p;
            if (!c->dead)
                channel_readable(&s, c, evs[i].events);
        }
        run_pending(&s);
        bury(&s);
    }
out:
    if (s.clients) {
        for (size_t i = 0; i < MS__WORKER_CLIENTS_MAX; i++)
            if (s.clients[i])
                drop(&s, s.clients[i], "worker stopping");
        free(s.clients);
    }
    bury(&s);
    ms__reader_free(&s.rd);
    if (s.ep >= 0)
        close(s.ep);
    return rc;
}
