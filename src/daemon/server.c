/*
 * modelshared's server: pid lock, listening socket, epoll loop, client connections and requests,
 * and the life of each model. See server.h and proto.h.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "../common/paths.h"
#include "../common/spec.h"
#include "modelshare.h"
#include "registry.h"
#include "server_int.h"
#include "supervisor.h"

/* A client that does not take a reply within this time is dropped. */
#define REPLY_TIMEOUT_MS 1000
#define ACCEPT_BATCH 64
#define EVENTS_MAX 64

static const char *const op_names[] = {"none", "acquire", "load", "unload"};

/* Removes the socket file, but only while the path is still the one this daemon bound: a newer
 * daemon may have bound the same path since (the directory was recreated, say). */
static void unlink_socket(ms__server *s)
{
    struct stat st;
    if (!s->sock_bound)
        return;
    s->sock_bound = false;
    if (lstat(s->socket_path, &st) != 0)
        return;
    if (st.st_dev != s->sock_dev || st.st_ino != s->sock_ino) {
        ms__log_info("%s is not this daemon's socket any more: left in place", s->socket_path);
        return;
    }
    unlink(s->socket_path);
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_watch(ms__server *s, conn *k, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = &k->ev};
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, k->fd, &ev) != 0)
        ms__log_warn("epoll_ctl on a client connection: %s", strerror(errno));
}

/* Marks k to be closed at the end of this turn of the loop. */
void ms__conn_kill(ms__server *s, conn *k, const char *why)
{
    (void)s;
    if (k->dead)
        return;
    k->dead = true;
    ms__log_debug("closing the connection of pid %ld: %s", (long)k->pid, why);
}

/* Sends msg (stolen) on k; a client that cannot take it is dropped. */
int ms__conn_send(ms__server *s, conn *k, json_t *msg, const int *fds, int nfds)
{
    char err[MS__ERRLEN];
    if (msg == NULL) {
        ms__conn_kill(s, k, "out of memory for a reply");
        return MS_E_NOMEM;
    }
    if (k->dead) {
        json_decref(msg);
        return MS_E_IO;
    }
    int rc = ms__msg_send(k->fd, msg, fds, nfds, REPLY_TIMEOUT_MS, err, sizeof err);
    json_decref(msg);
    if (rc != 0) {
        ms__log_info("dropping the client of pid %ld: %s", (long)k->pid, err);
        ms__conn_kill(s, k, err);
    }
    return rc;
}

int ms__conn_error(ms__server *s, conn *k, json_t *id, int code, const char *message)
{
    return ms__conn_send(s, k, ms__reply_err(id, code, message), NULL, 0);
}

static void pending_clear(conn *k)
{
    if (k->p_hdr != NULL)
        ms__arena_unmap(k->p_hdr, MS__ARENA_HEADER);
    if (k->p_arena_fd >= 0)
        close(k->p_arena_fd);
    json_decref(k->p_id);
    k->p_hdr = NULL;
    k->p_arena_fd = -1;
    k->p_id = NULL;
    k->p_model = NULL;
    k->p_spec = false;
    k->pending = MS__OP_NONE;
}

void ms__conn_set_pending(ms__server *s, conn *k, int op, json_t *id, ms__model *m, int arena_fd,
                          ms__arena_header *hdr, bool with_spec)
{
    k->pending = op;
    k->p_id = json_incref(id != NULL ? id : json_null());
    k->p_model = m;
    k->p_arena_fd = arena_fd;
    k->p_hdr = hdr;
    k->p_spec = with_spec;
    /* Only a hang-up is noticed until the answer: the next request waits in the socket. */
    conn_watch(s, k, EPOLLRDHUP);
    ms__log_debug("pid %ld waits for model \"%s\" (%s)", (long)k->pid, m->tag, op_names[op]);
}

/* Ends k's pending request; its next requests are read again. */
void ms__conn_resume(ms__server *s, conn *k)
{
    pending_clear(k);
    if (k->dead)
        return;
    conn_watch(s, k, EPOLLIN | EPOLLRDHUP);
    k->resume = true;
}

static void on_release_detach(ms__lease *l, void *ctx)
{
    ms__server *s = ctx;
    ms__detach_worker_lease(s, l);
}

static void conn_free(ms__server *s, conn *k)
{
    if (k->client != NULL) {
        if (k->client->nleases > 0)
            ms__log_info("client pid %ld went away: releasing its %d lease(s)", (long)k->pid,
                         k->client->nleases);
        ms__client_remove(&s->reg, k->client, on_release_detach, s);
    }
    pending_clear(k);
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, k->fd, NULL);
    close(k->fd);
    ms__reader_free(&k->rd);
    free(k);
}

/* Frees the dead connections and serves the ones whose pending request ended. */
static void conns_sweep(ms__server *s)
{
    bool again = true;
    while (again) {
        again = false;
        for (ms__client *c = s->reg.clients, *next; c != NULL; c = next) {
            next = c->next;
            conn *k = c->user;
            if (k->dead) {
                conn_free(s, k);
                again = true;
                break; /* the list changed under us (leases released): start over */
            }
            if (k->resume) {
                k->resume = false;
                ms__serve_requests(s, k);
                again = true;
                break;
            }
        }
    }
}

static void refuse(int fd, int code, const char *message)
{
    char err[MS__ERRLEN];
    json_t *r = ms__reply_err(NULL, code, message);
    if (r != NULL)
        ms__msg_send(fd, r, NULL, 0, 200, err, sizeof err);
    json_decref(r);
    close(fd);
}

static void accept_one(ms__server *s, int fd)
{
    char err[MS__ERRLEN];
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        ms__log_warn("SO_PEERCRED: %s; closing the connection", strerror(errno));
        close(fd);
        return;
    }
    if (cred.uid != geteuid()) {
        snprintf(err, sizeof err, "modelshared of uid %lu refuses a client of uid %lu",
                 (unsigned long)geteuid(), (unsigned long)cred.uid);
        ms__log_warn("%s (pid %ld)", err, (long)cred.pid);
        refuse(fd, MS_E_PERMISSION, err);
        return;
    }
    conn *k = calloc(1, sizeof *k);
    if (k == NULL) {
        refuse(fd, MS_E_NOMEM, "modelshared is out of memory");
        return;
    }
    k->fd = fd;
    k->pid = cred.pid;
    k->ev.kind = MS__EV_CONN;
    k->ev.obj = k;
    k->p_arena_fd = -1;
    ms__reader_init(&k->rd);
    int rc = ms__client_add(&s->reg, cred.pid, cred.uid, k, &k->client, err, sizeof err);
    if (rc != 0) {
        ms__log_warn("refused a client of pid %ld: %s", (long)cred.pid, err);
        free(k);
        refuse(fd, rc, err);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &k->ev};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ms__log_warn("epoll_ctl for a client: %s", strerror(errno));
        ms__client_remove(&s->reg, k->client, NULL, NULL);
        free(k);
        close(fd);
        return;
    }
    ms__log_debug("client pid %ld connected", (long)cred.pid);
}

static void on_listen(ms__server *s)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            accept_one(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if ((errno == EMFILE || errno == ENFILE) && s->spare_fd >= 0) {
            /* Out of descriptors: accept with the spare one and close at once, so that the
             * client hears a refusal instead of waiting in the backlog forever. */
            ms__log_warn("out of file descriptors: refusing a client");
            close(s->spare_fd);
            fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0)
                close(fd);
            s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            continue;
        }
        ms__log_warn("accept: %s", strerror(errno));
        return;
    }
}

static void on_conn(ms__server *s, conn *k, uint32_t events)
{
    char err[MS__ERRLEN];
    if (k->dead)
        return;
    if (k->pending != MS__OP_NONE) {
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            ms__conn_kill(s, k, "hang-up while a request was pending");
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        int rc = ms__reader_fill(&k->rd, k->fd, err, sizeof err);
        if (rc != 0) {
            /* The framing is broken (or the socket is): say why, then close. */
            ms__log_info("client pid %ld: %s; closing its connection", (long)k->pid, err);
            ms__conn_error(s, k, NULL, rc, err);
            ms__conn_kill(s, k, err);
            return;
        }
    }
    ms__serve_requests(s, k);
    if (k->rd.eof && !k->dead)
        ms__conn_kill(s, k, "end of stream");
}

/* ---- workers -------------------------------------------------------------------------------- */

void ms__detach_worker_lease(ms__server *s, ms__lease *l)
{
    char err[MS__ERRLEN];
    /* Every instance of the model mapped the lease's arena. */
    ms__model *m = l->model;
    if (m == NULL || l->worker == NULL)
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
    (void)s;
}

static void on_worker_msg(ms__server *s, ms__wproc *w, json_t *msg)
{
    char err[MS__ERRLEN];
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (op != NULL && strcmp(op, "ready") == 0) {
        if (w->ready)
            return;
        json_t *mem = json_object_get(msg, "memory_bytes");
        json_t *sig = json_object_get(msg, "signature");
        if (!json_is_integer(mem) || json_integer_value(mem) < 0 ||
            ms__sig_from_json(sig, NULL, NULL, err, sizeof err) != 0) {
            ms__log_error("worker %ld: \"ready\" expected an integer memory_bytes >= 0 and a "
                          "signature, got something else; stopping it",
                          (long)w->pid);
            ms__sup_stop(&s->sup, w, ms__registry_now(&s->reg));
            return;
        }
        w->ready = true;
        w->memory_bytes = (uint64_t)json_integer_value(mem);
        w->signature = json_incref(sig != NULL ? sig : json_null());
        ms__on_worker_ready(s, w);
        return;
    }
    if (op != NULL && strcmp(op, "failed") == 0) {
        json_t *code = json_object_get(msg, "code");
        const char *text = json_string_value(json_object_get(msg, "error"));
        int c = json_is_integer(code) ? (int)json_integer_value(code) : MS_E_LOAD_FAILED;
        if (c >= 0 || !ms__error_known(c)) /* not an MS_E_* code */
            c = MS_E_LOAD_FAILED;
        w->said_failed = true;
        ms__on_worker_failed(s, w, c, text != NULL ? text : "the worker failed to load the model");
        return;
    }
    ms__log_warn("worker %ld sent an unknown message (op %s); ignored", (long)w->pid,
                 op != NULL ? op : "missing");
}

static void on_worker_ctrl(ms__server *s, ms__wproc *w)
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
        on_worker_msg(s, w, msg);
        json_decref(msg);
        if (w->ctrl_fd < 0)
            return;
    }
    if (eof) {
        /* A worker without its control socket can take no client: stop it. Its exit (through
         * the pidfd) then fails a load that waited for it. */
        ms__sup_ctrl_close(&s->sup, w);
        if (!w->stopping) {
            ms__log_warn("worker %ld closed its control socket: stopping it", (long)w->pid);
            ms__sup_stop(&s->sup, w, ms__registry_now(&s->reg));
        }
    }
}

static void on_worker_pid(ms__server *s, ms__wproc *w)
{
    int status;
    if (w->gone || ms__sup_reap(&s->sup, w, &status) == 0)
        return;
    /* Reaped: its pid may already belong to another process. Mark it stopped and killed so that
     * nothing below (a "failed" that fails the model, the EOF on its socket) signals that pid. */
    w->stopping = true;
    w->killed = true;
    /* Whatever it still said before it went counts ("failed" then exit). */
    if (w->ctrl_fd >= 0)
        on_worker_ctrl(s, w);
    ms__on_worker_exit(s, w, status);
}

/* ---- the loop ------------------------------------------------------------------------------- */

static bool models_idle(const ms__server *s)
{
    for (int i = 0; i < s->reg.nmodels; i++)
        if (s->reg.models[i]->state != MS__MODEL_FAILED)
            return false;
    return s->reg.nclients == 0 && s->sup.count == 0;
}

/* Begins the stop: no new clients, every connection closed, every worker stopped. */
static void begin_shutdown(ms__server *s, const char *why)
{
    if (s->stopping)
        return;
    ms__log_info("stopping (%s): %d worker(s) to stop", why, s->sup.count);
    s->stopping = true;
    if (s->listen_fd >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        close(s->listen_fd);
        s->listen_fd = -1;
        unlink_socket(s);
    }
    for (ms__client *c = s->reg.clients; c != NULL; c = c->next)
        ms__conn_kill(s, c->user, "daemon stopping");
    conns_sweep(s);
    for (int i = 0; i < s->reg.nmodels; i++)
        ms__model_set_unloading(s->reg.models[i]);
    int64_t now = ms__registry_now(&s->reg);
    for (ms__wproc *w = s->sup.all; w != NULL; w = w->next)
        ms__sup_stop(&s->sup, w, now);
}

static void on_signal(ms__server *s)
{
    struct signalfd_siginfo si;
    bool child = false;
    while (read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            begin_shutdown(s, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        if (si.ssi_signo == SIGCHLD)
            child = true;
    }
    /* Workers without a pidfd are reaped here (signals merge: try them all). */
    for (ms__wproc *w = s->sup.all, *next; child && w != NULL; w = next) {
        next = w->next;
        if (w->pidfd < 0)
            on_worker_pid(s, w);
    }
}

/* Keep-alive expiries, SIGKILL after the grace, idle exit. Returns the epoll timeout in ms. */
static int run_timers(ms__server *s)
{
    int64_t now = ms__registry_now(&s->reg);
    int64_t next = INT64_MAX, t;
    if (!s->stopping) {
        t = ms__measure_due(s, now);
        if (t < next)
            next = t;
        ms__model *m;
        while ((m = ms__registry_expired(&s->reg)) != NULL) {
            ms__log_info("model \"%s\": idle for its keep-alive of %g s: unloading", m->tag,
                         m->spec.keep_alive);
            ms__begin_unload(s, m);
        }
        if (ms__registry_next_deadline(&s->reg, &t) && t < next)
            next = t;
    }
    if (ms__sup_timers(&s->sup, now, &t) && t < next)
        next = t;
    if (!s->stopping && s->idle_exit_s > 0) {
        if (models_idle(s)) {
            if (!s->idle_tracking) {
                s->idle_tracking = true;
                s->idle_since_ns = now;
            }
            int64_t at = s->idle_since_ns + (int64_t)(s->idle_exit_s * 1e9);
            if (now >= at) {
                char why[64];
                snprintf(why, sizeof why, "idle for %g s", s->idle_exit_s);
                begin_shutdown(s, why);
            } else if (at < next) {
                next = at;
            }
        } else {
            s->idle_tracking = false;
        }
    }
    if (s->stopping && s->sup.count == 0)
        return 0;
    if (next == INT64_MAX)
        return -1;
    int64_t ms = (next - ms__registry_now(&s->reg) + 999999) / 1000000;
    if (ms < 0)
        ms = 0;
    if (ms > 60000)
        ms = 60000;
    return (int)ms;
}

int ms__server_run(ms__server *s)
{
    struct epoll_event evs[EVENTS_MAX];
    for (;;) {
        conns_sweep(s);
        /* Loads waiting for memory: leases dropped, models went, or time passed. */
        int64_t admit_at = s->stopping ? INT64_MAX : ms__admission_run(s);
        conns_sweep(s);
        int timeout = run_timers(s);
        if (admit_at != INT64_MAX) {
            int64_t ms = (admit_at - ms__registry_now(&s->reg) + 999999) / 1000000;
            if (ms < 0)
                ms = 0;
            if (timeout < 0 || ms < timeout)
                timeout = (int)(ms > 60000 ? 60000 : ms);
        }
        conns_sweep(s);
        if (s->stopping && s->sup.count == 0)
            break;
        int n = epoll_wait(s->epfd, evs, EVENTS_MAX, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ms__log_error("epoll_wait: %s", strerror(errno));
            return MS_E_IO;
        }
        bool was_stopping = s->stopping;
        for (int i = 0; i < n; i++) {
            ms__evsrc *src = evs[i].data.ptr;
            switch (src->kind) {
            case MS__EV_LISTEN:
                if (!s->stopping)
                    on_listen(s);
                break;
            case MS__EV_SIGNAL:
                on_signal(s);
                break;
            case MS__EV_CONN:
                on_conn(s, src->obj, evs[i].events);
                break;
            case MS__EV_WCTRL:
                on_worker_ctrl(s, src->obj);
                break;
            case MS__EV_WPID:
                on_worker_pid(s, src->obj);
                break;
            default:
                break;
            }
            if (s->stopping && !was_stopping)
                break; /* connections were freed: the rest of this batch is stale */
        }
        ms__sup_collect(&s->sup);
    }
    ms__log_info("stopped");
    return 0;
}

/* ---- start and stop ------------------------------------------------------------------------- */

static int lock_pidfile(ms__server *s, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (ms__path_with_suffix(s->socket_path, ".pid", path, sizeof path) != 0)
        return ms__fail(err, errlen, MS_E_INVAL, "socket path too long for its pid file");
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0)
        return ms__fail(err, errlen, errno == EACCES ? MS_E_PERMISSION : MS_E_IO,
                        "cannot open the pid file %s: %s", path, strerror(errno));
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK)
            return ms__fail(err, errlen, MS_E_IO, "cannot lock %s: %s", path, strerror(errno));
        char buf[32] = "";
        ssize_t n = pread(s->lock_fd, buf, sizeof buf - 1, 0);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        return ms__fail(err, errlen, MS_E_BUSY, "another modelshared is running (pid %ld) on %s",
                        pid, s->socket_path);
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, buf, (size_t)len, 0) != len)
        return ms__fail(err, errlen, MS_E_IO, "cannot write the pid file %s: %s", path,
                        strerror(errno));
    return 0;
}

static int listen_socket(ms__server *s, char *err, size_t errlen)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(s->socket_path);
    if (len == 0 || len >= sizeof addr.sun_path)
        return ms__fail(err, errlen, MS_E_INVAL, "socket path must be 1 to %zu bytes, got %zu",
                        sizeof addr.sun_path - 1, len);
    memcpy(addr.sun_path, s->socket_path, len + 1);
    /* We hold the lock: a socket file there is a dead daemon's. */
    if (unlink(s->socket_path) != 0 && errno != ENOENT)
        return ms__fail(err, errlen, MS_E_IO, "cannot remove the stale socket %s: %s",
                        s->socket_path, strerror(errno));
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->listen_fd < 0)
        return ms__fail(err, errlen, MS_E_IO, "socket: %s", strerror(errno));
    if (bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return ms__fail(err, errlen, errno == EACCES ? MS_E_PERMISSION : MS_E_IO,
                        "cannot bind %s: %s", s->socket_path, strerror(errno));
    struct stat st;
    if (lstat(s->socket_path, &st) != 0) {
        int e = errno;
        unlink(s->socket_path); /* just bound: nobody else can have it yet */
        return ms__fail(err, errlen, MS_E_IO, "cannot stat %s after bind: %s", s->socket_path,
                        strerror(e));
    }
    s->sock_bound = true;
    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;
    if (chmod(s->socket_path, 0600) != 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot chmod %s: %s", s->socket_path,
                        strerror(errno));
    if (listen(s->listen_fd, 128) != 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot listen on %s: %s", s->socket_path,
                        strerror(errno));
    return 0;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int ms__server_start(const ms__server_opts *opts, ms__server **out, char *err, size_t errlen)
{
    int rc;
    ms__server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory");
    s->lock_fd = s->listen_fd = s->epfd = s->sig_fd = s->spare_fd = -1;
    s->idle_exit_s = opts->idle_exit_s;
    s->start_ns = ms__now_ns();
    s->ev_listen.kind = MS__EV_LISTEN;
    s->ev_signal.kind = MS__EV_SIGNAL;
    ms__registry_init(&s->reg, NULL, NULL);
    if (strlen(opts->socket_path) >= sizeof s->socket_path) {
        rc = ms__fail(err, errlen, MS_E_INVAL, "socket path too long");
        goto fail;
    }
    snprintf(s->socket_path, sizeof s->socket_path, "%s", opts->socket_path);

    rc = ms__socket_dir_prepare(s->socket_path, err, errlen);
    if (rc != 0)
        goto fail;
    raise_fd_limit();
    rc = lock_pidfile(s, err, errlen);
    if (rc != 0)
        goto fail;

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->sig_fd < 0 || s->epfd < 0) {
        rc = ms__fail(err, errlen, MS_E_IO, "signalfd/epoll: %s", strerror(errno));
        goto fail;
    }
    rc = ms__admission_init(s, opts->memory, err, errlen);
    if (rc != 0)
        goto fail;
    rc = ms__sup_init(&s->sup, s->epfd, opts->log_level, err, errlen);
    if (rc != 0)
        goto fail;
    rc = listen_socket(s, err, errlen);
    if (rc != 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->ev_listen};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &s->ev_signal};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sig_fd, &sev) != 0) {
        rc = ms__fail(err, errlen, MS_E_IO, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }
    *out = s;
    return 0;

fail:
    ms__server_free(s);
    return rc;
}

void ms__server_free(ms__server *s)
{
    if (s == NULL)
        return;
    while (s->reg.clients != NULL)
        conn_free(s, s->reg.clients->user);
    /* Workers still there (only when the loop failed): they must not outlive us. */
    while (s->sup.all != NULL) {
        ms__wproc *w = s->sup.all;
        kill(w->pid, SIGKILL);
        int status;
        while (ms__sup_reap(&s->sup, w, &status) == 0)
            usleep(1000);
        if (w->model != NULL)
            ms__model_detach_worker(w->model, w);
        ms__sup_free(&s->sup, w);
    }
    ms__sup_collect(&s->sup);
    ms__registry_destroy(&s->reg);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    unlink_socket(s);
    if (s->sig_fd >= 0)
        close(s->sig_fd);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->spare_fd >= 0)
        close(s->spare_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
}
