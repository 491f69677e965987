/*
 * modelshared's server: the pid lock, the listening socket and the epoll loop. The loop hands
 * each event down: connections to the protocol (protocol.h), workers to the model life cycle
 * (models.h). See server.h.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
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

#include "../common/log.h"
#include "../common/paths.h"
#include "modelshare.h"
#include "metrics.h"
#include "models.h"
#include "protocol.h"

#define ACCEPT_BATCH 64
#define EVENTS_MAX 64

struct ms__server {
    char socket_path[PATH_MAX];
    int lock_fd, listen_fd, epfd, sig_fd, spare_fd; /* owned, -1 when closed */
    bool sock_bound; /* the socket file is ours: sock_dev and sock_ino identify it */
    dev_t sock_dev;
    ino_t sock_ino;
    double idle_exit_s;
    bool idle_tracking;
    int64_t idle_since_ns;
    int64_t start_ns;
    ms__models models;    /* the model life cycle; models.stopping: the daemon stops */
    ms__proto proto;      /* the client connections */
    ms__metrics *metrics; /* --metrics, NULL when off */
    ms__evsrc ev_listen, ev_signal;
};

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

static void on_listen(ms__server *s)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            ms__conn_open(&s->proto, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if ((errno == EMFILE || errno == ENFILE) && s->spare_fd >= 0) {
            /* Out of descriptors: accept with the spare one, so that the client hears why it
             * is refused instead of waiting in the backlog forever (logged at most once a
             * second). */
            close(s->spare_fd);
            s->spare_fd = -1;
            fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0)
                ms__conn_refuse_nofile(fd);
            s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                return;
            continue;
        }
        ms__log_warn_limited("accept: %s", strerror(errno));
        return;
    }
}

/* ---- the loop ------------------------------------------------------------------------------- */

/* Begins the stop: no new clients, every connection closed, every worker stopped. */
static void begin_shutdown(ms__server *s, const char *why)
{
    if (s->models.stopping)
        return;
    ms__log_info("stopping (%s): %d worker(s) to stop", why, s->models.sup.count);
    if (s->listen_fd >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        close(s->listen_fd);
        s->listen_fd = -1;
        unlink_socket(s);
    }
    ms__proto_close_all(&s->proto);
    ms__models_shutdown(&s->models);
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
    /* Workers without a pidfd are reaped here. */
    if (child)
        ms__workers_reap_unwatched(&s->models);
}

/* The idle exit: begins the stop once nothing was loaded or connected for idle_exit_s. Returns
 * when to look again (INT64_MAX: not before something else happens). */
static int64_t idle_exit_check(ms__server *s, int64_t now)
{
    if (s->models.stopping || s->idle_exit_s <= 0)
        return INT64_MAX;
    if (!ms__models_idle(&s->models)) {
        s->idle_tracking = false;
        return INT64_MAX;
    }
    if (!s->idle_tracking) {
        s->idle_tracking = true;
        s->idle_since_ns = now;
    }
    int64_t at = s->idle_since_ns + (int64_t)(s->idle_exit_s * 1e9);
    if (now < at)
        return at;
    char why[64];
    snprintf(why, sizeof why, "idle for %g s", s->idle_exit_s);
    begin_shutdown(s, why);
    return INT64_MAX;
}

/* Milliseconds from now until at, for epoll_wait: 0 to 60000. */
static int ms_until(const ms__server *s, int64_t at)
{
    int64_t ms = (at - ms__registry_now(&s->models.reg) + 999999) / 1000000;
    if (ms < 0)
        ms = 0;
    if (ms > 60000)
        ms = 60000;
    return (int)ms;
}

/* Keep-alive expiries, SIGKILL after the grace, half-sent frames, idle exit. Returns the epoll
 * timeout in ms. */
static int run_timers(ms__server *s)
{
    int64_t now = ms__registry_now(&s->models.reg);
    int64_t next = ms__models_timers(&s->models, now);
    int64_t idle_at = idle_exit_check(s, now);
    int64_t conn_at = ms__proto_timers(&s->proto, now);
    if (idle_at < next)
        next = idle_at;
    if (conn_at < next)
        next = conn_at;
    if (s->models.stopping && s->models.sup.count == 0)
        return 0;
    if (next == INT64_MAX)
        return -1;
    return ms_until(s, next);
}

/* Hands one epoll event down. */
static void dispatch(ms__server *s, const struct epoll_event *ev)
{
    ms__evsrc *src = ev->data.ptr;
    switch (src->kind) {
    case MS__EV_LISTEN:
        if (!s->models.stopping)
            on_listen(s);
        break;
    case MS__EV_SIGNAL:
        on_signal(s);
        break;
    case MS__EV_CONN:
        ms__conn_on_event(&s->proto, src->obj, ev->events);
        break;
    case MS__EV_WCTRL:
        ms__worker_on_ctrl(&s->models, src->obj, ev->events);
        break;
    case MS__EV_WPID:
        ms__worker_on_pid(&s->models, src->obj);
        break;
    case MS__EV_WERR:
        ms__worker_on_stderr(&s->models, src->obj);
        break;
    case MS__EV_METRICS:
        ms__metrics_run(src->obj);
        break;
    default:
        break;
    }
}

/* Loads waiting for memory, timers and the connections whose requests ended. Returns the epoll
 * timeout in ms (-1: none). */
static int before_wait(ms__server *s)
{
    ms__proto_sweep(&s->proto);
    int more = ms__proto_serve_more(&s->proto);
    ms__proto_sweep(&s->proto);
    /* Loads waiting for memory: leases dropped, models went, or time passed. */
    int64_t admit_at = s->models.stopping ? INT64_MAX : ms__admission_run(&s->models);
    ms__proto_sweep(&s->proto);
    int timeout = run_timers(s);
    if (admit_at != INT64_MAX) {
        int ms = ms_until(s, admit_at);
        if (timeout < 0 || ms < timeout)
            timeout = ms;
    }
    int http_ms = ms__metrics_timeout_ms(s->metrics);
    if (http_ms >= 0 && (timeout < 0 || http_ms < timeout))
        timeout = http_ms;
    ms__proto_sweep(&s->proto);
    return more > 0 ? 0 : timeout; /* buffered requests wait: look at the sockets, don't sleep */
}

int ms__server_run(ms__server *s)
{
    struct epoll_event evs[EVENTS_MAX];
    for (;;) {
        int timeout = before_wait(s);
        if (s->models.stopping && s->models.sup.count == 0)
            break;
        int n = epoll_wait(s->epfd, evs, EVENTS_MAX, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ms__log_error("epoll_wait: %s", strerror(errno));
            return MS_E_IO;
        }
        bool was_stopping = s->models.stopping;
        for (int i = 0; i < n; i++) {
            dispatch(s, &evs[i]);
            if (s->models.stopping && !was_stopping)
                break; /* connections were freed: the rest of this batch is stale */
        }
        ms__sup_collect(&s->models.sup);
        if (n == 0)
            ms__metrics_run(s->metrics); /* its timeouts: idle connections closed */
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

/* --group: the socket's directory (this user's, 0700 as prepared) becomes the group's, 0750,
 * so that its members can reach the socket; nobody but this user may write in it. */
static int share_dir_with_group(const char *socket_path, gid_t gid, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(socket_path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", slash == socket_path ? 1 : (int)(slash - socket_path),
                 socket_path);
    struct stat st;
    if (stat(dir, &st) != 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot stat %s: %s", dir, strerror(errno));
    if ((st.st_gid != gid && chown(dir, (uid_t)-1, gid) != 0) ||
        chmod(dir, (st.st_mode & 0755) | 0750) != 0)
        return ms__fail(err, errlen, errno == EPERM ? MS_E_PERMISSION : MS_E_IO,
                        "--group: cannot give the socket directory %s to group %lu (mode 0750): "
                        "%s",
                        dir, (unsigned long)gid, strerror(errno));
    return 0;
}

/* The socket file's owner and mode: this user only, or with a group, its members too. */
static int socket_mode(const char *path, const ms__server_opts *opts, char *err, size_t errlen)
{
    if (opts->has_group && chown(path, (uid_t)-1, opts->gid) != 0)
        return ms__fail(err, errlen, errno == EPERM ? MS_E_PERMISSION : MS_E_IO,
                        "--group: cannot give %s to group %lu: %s", path, (unsigned long)opts->gid,
                        strerror(errno));
    if (chmod(path, opts->has_group ? 0660 : 0600) != 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot chmod %s: %s", path, strerror(errno));
    return 0;
}

static int listen_socket(ms__server *s, const ms__server_opts *opts, char *err, size_t errlen)
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
    int rc = socket_mode(s->socket_path, opts, err, errlen);
    if (rc != 0)
        return rc;
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

/* Signals through a signalfd, the epoll set, the spare descriptor for refusals. */
static int open_loop_fds(ms__server *s, char *err, size_t errlen)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->sig_fd < 0 || s->epfd < 0)
        return ms__fail(err, errlen, MS_E_IO, "signalfd/epoll: %s", strerror(errno));
    return 0;
}

static int watch_listen_and_signals(ms__server *s, char *err, size_t errlen)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->ev_listen};
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &s->ev_signal};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sig_fd, &sev) != 0)
        return ms__fail(err, errlen, MS_E_IO, "epoll_ctl: %s", strerror(errno));
    return 0;
}

/* Everything of a started server, in order; the first failure stops it. */
static int start_steps(ms__server *s, const ms__server_opts *opts, char *err, size_t errlen)
{
    bool inherited = opts->listen_fd >= 0;
    s->listen_fd = opts->listen_fd;
    if (strlen(opts->socket_path) >= sizeof s->socket_path)
        return ms__fail(err, errlen, MS_E_INVAL, "socket path too long");
    snprintf(s->socket_path, sizeof s->socket_path, "%s", opts->socket_path);
    int rc = inherited ? 0 : ms__socket_dir_prepare(s->socket_path, err, errlen);
    if (rc == 0 && !inherited && opts->has_group)
        rc = share_dir_with_group(s->socket_path, opts->gid, err, errlen);
    if (rc != 0)
        return rc;
    raise_fd_limit();
    rc = inherited ? 0 : lock_pidfile(s, err, errlen);
    if (rc == 0)
        rc = open_loop_fds(s, err, errlen);
    if (rc != 0)
        return rc;
    ms__proto_init(&s->proto, &s->models, s->epfd, s->socket_path, s->start_ns);
    s->proto.access.has_group = opts->has_group;
    s->proto.access.gid = opts->gid;
    rc = ms__models_start(&s->models, s->epfd, opts->memory, opts->log_level, err, errlen);
    if (rc == 0 && opts->metrics != NULL)
        rc = ms__metrics_open(opts->metrics, &s->models, s->epfd, &s->metrics, err, errlen);
    if (rc == 0 && !inherited)
        rc = listen_socket(s, opts, err, errlen);
    if (rc == 0)
        rc = watch_listen_and_signals(s, err, errlen);
    return rc;
}

int ms__server_start(const ms__server_opts *opts, ms__server **out, char *err, size_t errlen)
{
    ms__server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        if (opts->listen_fd >= 0)
            close(opts->listen_fd);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory");
    }
    s->lock_fd = s->listen_fd = s->epfd = s->sig_fd = s->spare_fd = -1;
    s->idle_exit_s = opts->idle_exit_s;
    s->start_ns = ms__now_ns();
    s->ev_listen.kind = MS__EV_LISTEN;
    s->ev_signal.kind = MS__EV_SIGNAL;
    ms__models_init(&s->models, ms__proto_settled, &s->proto);
    /* Nothing is watched yet: start_steps() gives the protocol the epoll set once it exists. */
    ms__proto_init(&s->proto, &s->models, -1, s->socket_path, s->start_ns);
    int rc = start_steps(s, opts, err, errlen);
    if (rc != 0) {
        ms__server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void ms__server_free(ms__server *s)
{
    if (s == NULL)
        return;
    ms__metrics_close(s->metrics);
    ms__proto_free(&s->proto);
    ms__models_free(&s->models);
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
