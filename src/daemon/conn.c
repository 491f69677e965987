/* One client connection: open (peer check), send, its pending requests, close. See conn.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/env.h"
#include "../common/fdlimit.h"
#include "../common/log.h"
#include "conn.h"
#include "modelshare.h"

static const char *const op_names[] = {"none", "acquire", "load", "unload", "swap"};

void ms__proto_init(ms__proto *p, ms__models *models, int epfd, const char *socket_path,
                    int64_t start_ns)
{
    p->models = models;
    p->epfd = epfd;
    p->socket_path = socket_path;
    p->start_ns = start_ns;
    p->access = (ms__access){.uid = geteuid()};
    char err[MS__ERRLEN];
    double s;
    if (ms__env_number("MODELSHARE_READ_TIMEOUT", MS__READ_TIMEOUT_S, 0.001, 1e6, &s, err,
                       sizeof err) != 0)
        ms__log_warn("%s; using %g s", err, MS__READ_TIMEOUT_S);
    p->read_timeout_ns = (int64_t)(s * 1e9);
}

void ms__conn_rewatch(ms__conn *k)
{
    if (k->dead)
        return;
    /* Once the client closed its side there is nothing to read: only its last replies go. */
    uint32_t want = k->rd.eof ? 0 : EPOLLRDHUP;
    if (ms__conn_has_room(k) && !k->rd.eof)
        want |= EPOLLIN; /* at the bound, the next requests wait in the socket */
    if (k->wr.bytes > 0)
        want |= EPOLLOUT;
    if (want == k->watched)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = &k->ev};
    if (epoll_ctl(k->proto->epfd, EPOLL_CTL_MOD, k->fd, &ev) != 0) {
        ms__log_warn_limited("epoll_ctl on a client connection: %s", strerror(errno));
        return;
    }
    k->watched = want;
}

bool ms__conn_has_room(const ms__conn *k)
{
    return k->npend < MS__CONN_PENDING_MAX;
}

/* q no longer counts as waiting for its model (it ended, or its connection died). */
static void pend_unwait(ms__pend *q)
{
    if (!q->waits)
        return;
    q->waits = false;
    ms__model_waiter_drop(q->model, q->spec);
}

void ms__conn_kill(ms__conn *k, const char *why)
{
    if (k->dead)
        return;
    k->dead = true;
    ms__pend *q;
    TAILQ_FOREACH(q, &k->pends, link)
    pend_unwait(q);
    ms__log_debug("closing the connection of pid %ld: %s", (long)k->pid, why);
}

void ms__conn_flush(ms__conn *k)
{
    char err[MS__ERRLEN];
    if (k->dead)
        return;
    if (ms__writer_flush(&k->wr, k->fd, err, sizeof err) != 0) {
        ms__log_info("dropping the client of pid %ld: %s", (long)k->pid, err);
        ms__conn_kill(k, err);
        return;
    }
    ms__conn_rewatch(k);
}

int ms__conn_send(ms__conn *k, json_t *msg, const int *fds, int nfds)
{
    char err[MS__ERRLEN];
    if (msg == NULL) {
        ms__conn_kill(k, "out of memory for a reply");
        return MS_E_NOMEM;
    }
    if (k->dead) {
        json_decref(msg);
        return MS_E_IO;
    }
    int rc = ms__writer_push(&k->wr, msg, fds, nfds, err, sizeof err);
    json_decref(msg);
    if (rc != 0) {
        ms__log_warn_limited("dropping the client of pid %ld: cannot queue a reply: %s",
                             (long)k->pid, err);
        ms__conn_kill(k, err);
        return rc;
    }
    if (k->wr.nframes > 1 && k->wr.bytes > MS__CONN_OUTQ_MAX) {
        ms__log_info("dropping the client of pid %ld: it does not read its replies (%zu bytes in "
                     "%zu replies queued, expected at most %zu)",
                     (long)k->pid, k->wr.bytes, k->wr.nframes, MS__CONN_OUTQ_MAX);
        ms__conn_kill(k, "reply queue full");
        return MS_E_IO;
    }
    ms__conn_flush(k);
    return k->dead ? MS_E_IO : 0;
}

int ms__conn_error(ms__conn *k, json_t *id, int code, const char *message)
{
    return ms__conn_send(k, ms__reply_err(id, code, message), NULL, 0);
}

/* Ends q: what it owns is closed, q is out of k's list and freed. */
static void pend_free(ms__conn *k, ms__pend *q)
{
    pend_unwait(q);
    if (q->hdr != NULL)
        ms__arena_unmap(q->hdr, MS__ARENA_HEADER);
    if (q->arena_fd >= 0)
        close(q->arena_fd);
    json_decref(q->id);
    TAILQ_REMOVE(&k->pends, q, link);
    k->npend--;
    free(q);
}

ms__pend *ms__conn_set_pending(ms__proto *p, ms__conn *k, int op, json_t *id, ms__model *m,
                               int arena_fd, ms__arena_header *hdr, bool with_spec)
{
    (void)p;
    ms__pend *q = calloc(1, sizeof *q);
    if (q == NULL) {
        if (hdr != NULL)
            ms__arena_unmap(hdr, MS__ARENA_HEADER);
        if (arena_fd >= 0)
            close(arena_fd);
        ms__conn_error(k, id, MS_E_NOMEM, "modelshared is out of memory for a pending request");
        return NULL;
    }
    q->op = op;
    q->seq = ++k->pend_seq;
    q->id = json_incref(id != NULL ? id : json_null());
    q->model = m;
    q->arena_fd = arena_fd;
    q->hdr = hdr;
    q->spec = with_spec;
    q->waits = op == MS__OP_ACQUIRE || op == MS__OP_LOAD;
    if (q->waits)
        ms__model_waiter_add(m, with_spec);
    TAILQ_INSERT_TAIL(&k->pends, q, link);
    k->npend++;
    ms__conn_rewatch(k);
    ms__log_debug("pid %ld waits for model \"%s\" (%s; %d pending)", (long)k->pid, m->tag,
                  op_names[op], k->npend);
    return q;
}

ms__pend *ms__conn_pend_find(ms__conn *k, uint64_t seq)
{
    ms__pend *q;
    TAILQ_FOREACH(q, &k->pends, link)
    {
        if (q->seq == seq)
            return q;
    }
    return NULL;
}

void ms__conn_resume(ms__proto *p, ms__conn *k, ms__pend *q)
{
    (void)p;
    pend_free(k, q);
    if (k->dead)
        return;
    ms__conn_rewatch(k);
    k->resume = true;
}

static void on_release_detach(ms__lease *l, void *ctx)
{
    (void)ctx;
    ms__workers_detach(l);
}

void ms__conn_free(ms__proto *p, ms__conn *k)
{
    if (k->client != NULL) {
        if (k->client->nleases > 0)
            ms__log_info("client pid %ld went away: releasing its %d lease(s)", (long)k->pid,
                         k->client->nleases);
        ms__client_remove(&p->models->reg, k->client, on_release_detach, NULL);
    }
    while (!TAILQ_EMPTY(&k->pends))
        pend_free(k, TAILQ_FIRST(&k->pends));
    /* What the socket takes now of the last replies (the reason it is closed, say); no wait. */
    char err[MS__ERRLEN];
    if (k->wr.bytes > 0)
        ms__writer_flush(&k->wr, k->fd, err, sizeof err);
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, k->fd, NULL);
    close(k->fd);
    ms__reader_free(&k->rd);
    ms__writer_free(&k->wr);
    free(k);
}

void ms__proto_free(ms__proto *p)
{
    while (!LIST_EMPTY(&p->models->reg.clients))
        ms__conn_free(p, LIST_FIRST(&p->models->reg.clients)->user);
}

static void refuse(int fd, int code, const char *message)
{
    char err[MS__ERRLEN];
    json_t *r = ms__reply_err(NULL, code, message);
    /* A fresh socket has room for it; if not, the refusal is lost, never waited for. */
    if (r != NULL)
        ms__msg_send(fd, r, NULL, 0, 0, err, sizeof err);
    json_decref(r);
    close(fd);
}

/* The peer of fd, refused (fd closed) when p->access does not admit it. */
static int peer_check(const ms__proto *p, int fd, struct ucred *cred)
{
    char err[MS__ERRLEN];
    int r = ms__access_check(&p->access, fd, cred, err, sizeof err);
    if (r == MS_E_PERMISSION) {
        ms__log_warn_limited("%s (pid %ld)", err, (long)cred->pid);
        refuse(fd, MS_E_PERMISSION, err);
    } else if (r != 0) {
        ms__log_warn_limited("%s; closing the connection", err);
        close(fd);
    }
    return r;
}

void ms__conn_refuse_nofile(int fd)
{
    char err[MS__ERRLEN];
    ms__fd_limit_fail(err, sizeof err, "refusing a new client", "modelshared", ms__fd_limit(0));
    ms__log_warn_limited("%s", err);
    refuse(fd, MS_E_LIMIT, err);
}

/* fd, a new connection, refused (closed) when it leaves modelshared fewer than
 * MS__DAEMON_FD_RESERVE descriptors: every one under fd is open (the lowest free comes first). */
static int room_check(int fd)
{
    long limit = ms__fd_limit(0);
    if (limit < 0 || (long)fd + MS__DAEMON_FD_RESERVE < limit)
        return 0;
    ms__conn_refuse_nofile(fd);
    return MS_E_LIMIT;
}

void ms__conn_open(ms__proto *p, int fd)
{
    char err[MS__ERRLEN];
    struct ucred cred;
    if (room_check(fd) != 0 || peer_check(p, fd, &cred) != 0)
        return;
    ms__conn *k = calloc(1, sizeof *k);
    if (k == NULL) {
        refuse(fd, MS_E_NOMEM, "modelshared is out of memory");
        return;
    }
    k->fd = fd;
    k->proto = p;
    k->pid = cred.pid;
    k->ev.kind = MS__EV_CONN;
    k->ev.obj = k;
    TAILQ_INIT(&k->pends);
    ms__reader_init(&k->rd);
    ms__writer_init(&k->wr);
    int rc = ms__client_add(&p->models->reg, cred.pid, cred.uid, k, &k->client, err, sizeof err);
    if (rc != 0) {
        ms__log_warn_limited("refused a client of pid %ld: %s", (long)cred.pid, err);
        free(k);
        refuse(fd, rc, err);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &k->ev};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ms__log_warn_limited("epoll_ctl for a client: %s", strerror(errno));
        ms__client_remove(&p->models->reg, k->client, NULL, NULL);
        free(k);
        close(fd);
        return;
    }
    k->watched = ev.events;
    ms__log_debug("client pid %ld connected", (long)cred.pid);
    /* A client in a PID namespace that is not the daemon's or below it (the daemon in a
     * container of its own, the clients in others) has no pid here: the kernel says 0. Nothing
     * depends on it (leases end with the connection), only the logs and messages name it. */
    static bool said_pid0;
    if (cred.pid == 0 && !said_pid0) {
        said_pid0 = true;
        ms__log_info("a client outside this daemon's PID namespace connected: its pid is not "
                     "visible here and shows as 0 in logs and messages; leases and release on "
                     "exit do not depend on it");
    }
}
