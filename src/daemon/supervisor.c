/* Worker processes: spawn from a plain exec context, watch, stop, reap. See supervisor.h. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/ctorfd.h"
#include "../common/log.h"
#include "../common/oomkill.h"
#include "../common/paths.h"
#include "modelshare.h"

/* Descriptors the child moves to 3, 4, 5 and 6 are first copied at or above this. */
#define CHILD_FD_HIGH 10

int ms__sup_init(ms__supervisor *s, int epfd, const char *log_level, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    LIST_INIT(&s->all);
    LIST_INIT(&s->retired);
    s->epfd = epfd;
    snprintf(s->log_level, sizeof s->log_level, "%s", log_level != NULL ? log_level : "info");
    if (ms__sibling_binary("modelshare-worker", "MODELSHARE_WORKER", s->worker_path,
                           sizeof s->worker_path) != 0)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "cannot tell where modelshare-worker is (set MODELSHARE_WORKER)");
    return 0;
}

static void list_add(ms__supervisor *s, ms__wproc *w)
{
    LIST_INSERT_HEAD(&s->all, w, link);
    w->listed = true;
    s->count++;
}

static void list_del(ms__supervisor *s, ms__wproc *w)
{
    LIST_REMOVE(w, link);
    w->listed = false;
    s->count--;
}

/* What a new worker is given, made before fork(); -1 / NULL once handed on. */
typedef struct spawn_fds {
    int sv[2];    /* control socketpair: [0] the daemon's end, [1] the worker's */
    int stats_fd; /* the worker's counters page */
    ms__stats *stats;
    int door_fd; /* its instance's door (page 0, read-write): not owned */
    int bell_fd; /* and its bell page: not owned */
    int ctor_fd; /* its model's constructor memfd, -1 when none: not owned */
    int errp[2]; /* its stderr pipe: [0] the daemon's end, [1] the worker's */
} spawn_fds;

/* In the child, its stderr the daemon's pipe: says why it could not start, and exits. */
static void child_fail(int status, const char *why)
{
    static const char head[] = "modelshare: the worker could not start: ";
    if (write(2, head, sizeof head - 1) >= 0 && write(2, why, strlen(why)) >= 0)
        (void)!write(2, "\n", 1);
    _exit(status);
}

/* In the child: becomes o (groups, gid, uid: raw system calls, this process has one thread),
 * keeping no privilege (no capabilities, ambient or not; no new ones by exec), and dies with the
 * daemon again (a change of credentials clears the parent-death signal). Exits the child
 * (status 124) when any of it fails: a worker never runs member code with the daemon's rights. */
static void child_become(pid_t parent, const ms__owner *o)
{
    if (syscall(SYS_setgroups, (size_t)o->ngroups, o->groups) != 0 ||
        syscall(SYS_setresgid, o->gid, o->gid, o->gid) != 0 ||
        syscall(SYS_setresuid, o->uid, o->uid, o->uid) != 0)
        child_fail(124, "cannot take the model owner's uid, gid and groups");
    uid_t r, e, su;
    if (getresuid(&r, &e, &su) != 0 || r != o->uid || e != o->uid || su != o->uid || setuid(0) == 0)
        child_fail(124, "the model owner's uid did not hold");
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* EINVAL before Linux 4.3 */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
        getppid() != parent)
        child_fail(124, "cannot drop privileges");
}

/* In the child, between fork and exec: only async-signal-safe calls. cwd and envp: NULL to keep
 * the daemon's; as: NULL to run as the daemon. */
static void child_exec(pid_t parent, const spawn_fds *f, const ms__exec *x)
{
    const char *path = x->path, *cwd = x->cwd;
    char *const *argv = x->argv, *const *envp = x->envp;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(126);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* fails harmlessly for SIGKILL, SIGSTOP and gaps */
    /* Copies above 2 to 7 first, so that dup2 onto them never meets its own source. */
    int c = fcntl(f->sv[1], F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int t = fcntl(f->stats_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int d = fcntl(f->door_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int b = fcntl(f->bell_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int e = fcntl(f->errp[1], F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int k = f->ctor_fd >= 0 ? fcntl(f->ctor_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH) : -1;
    if (c < 0 || t < 0 || d < 0 || b < 0 || e < 0 || (f->ctor_fd >= 0 && k < 0) ||
        dup2(c, 3) != 3 || dup2(t, 4) != 4 || dup2(d, 5) != 5 || dup2(b, 7) != 7 ||
        dup2(e, 2) != 2 || (k >= 0 && dup2(k, MS__WORKER_CTOR_FD) != MS__WORKER_CTOR_FD))
        _exit(126);
    /* dup2 leaves 2 to 5, 7 (and 6) without close-on-exec: the worker inherits exactly these
     * (and 0, 1). */
    if (x->as != NULL)
        child_become(parent, x->as);
    if (cwd != NULL && chdir(cwd) != 0)
        child_fail(125, x->as != NULL ? "cannot enter its working directory (python.cwd) as the "
                                        "model's owner"
                                      : "cannot enter its working directory (python.cwd)");
    if (envp != NULL)
        execve(path, argv, envp);
    else
        execv(path, argv);
    child_fail(127, x->as != NULL ? "cannot run its program as the model's owner"
                                  : "cannot run its program");
}

static void spawn_fds_close(spawn_fds *f)
{
    for (int i = 0; i < 2; i++) {
        if (f->sv[i] >= 0)
            close(f->sv[i]);
        if (f->errp[i] >= 0)
            close(f->errp[i]);
    }
    if (f->stats_fd >= 0)
        close(f->stats_fd);
    ms__stats_unmap(f->stats);
    *f = (spawn_fds){.sv = {-1, -1},
                     .stats_fd = -1,
                     .door_fd = -1,
                     .bell_fd = -1,
                     .ctor_fd = -1,
                     .errp = {-1, -1}};
}

/* On failure everything made is closed again. x's door stays the instance's, its ctor_fd the
 * model's. */
static int spawn_fds_make(spawn_fds *f, const ms__exec *x, char *err, size_t errlen)
{
    *f = (spawn_fds){.sv = {-1, -1},
                     .stats_fd = -1,
                     .door_fd = x->door_fd,
                     .bell_fd = x->bell_fd,
                     .ctor_fd = x->ctor_fd,
                     .errp = {-1, -1}};
    int rc;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv) != 0 ||
        pipe2(f->errp, O_CLOEXEC) != 0) {
        rc = ms__fail(err, errlen, errno == EMFILE || errno == ENFILE ? MS_E_LIMIT : MS_E_IO,
                      "socketpair or pipe for a worker: %s", strerror(errno));
        goto fail;
    }
    rc = ms__stats_create(&f->stats_fd, &f->stats);
    if (rc != 0) {
        rc = ms__fail(err, errlen, rc, "cannot create the stats page for a worker: %s",
                      strerror(errno));
        goto fail;
    }
    if (x->door_fd < 0 || x->bell_fd < 0) {
        rc = ms__fail(err, errlen, MS_E_LOAD_FAILED, "the instance has no door");
        goto fail;
    }
    return 0;
fail:
    spawn_fds_close(f);
    return rc;
}

/* Watches w: its pidfd (without one, kernels before 5.3 or valgrind, SIGCHLD reaps it) and its
 * control socket. */
static void worker_watch(ms__supervisor *s, ms__wproc *w)
{
    w->pidfd = (int)syscall(SYS_pidfd_open, w->pid, 0); /* always close-on-exec */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->ev_pid};
    if (w->pidfd >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, w->pidfd, &ev) != 0) {
        close(w->pidfd);
        w->pidfd = -1;
    }
    if (w->pidfd < 0)
        ms__log_debug("worker %ld: no pidfd (%s); reaped on SIGCHLD", (long)w->pid,
                      strerror(errno));
    ev.events = EPOLLIN;
    ev.data.ptr = &w->ev_err;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, w->err_fd, &ev) != 0) {
        /* Its stderr then goes unread: the pipe fills and the worker blocks writing. */
        ms__log_error("cannot watch the stderr of worker %ld: %s", (long)w->pid, strerror(errno));
        close(w->err_fd);
        w->err_fd = -1;
    }
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = &w->ev_ctrl;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, w->ctrl_fd, &ev) != 0) {
        /* Without its control socket the worker is useless; the pidfd still reaps it. */
        ms__log_error("cannot watch the control socket of worker %ld: %s", (long)w->pid,
                      strerror(errno));
        close(w->ctrl_fd);
        w->ctrl_fd = -1;
    }
}

/* In the parent after fork: the process exists, so it is always recorded, never lost. Takes the
 * daemon's descriptors from f and closes the worker's. */
static void worker_adopt(ms__supervisor *s, ms__wproc *w, pid_t pid, spawn_fds *f)
{
    w->pid = pid;
    /* The OOM killer's count now: one more when it dies of SIGKILL says who killed it. */
    w->oom_kills = -1;
    if (ms__oom_file(pid, w->oom_file, sizeof w->oom_file) == 0)
        w->oom_kills = ms__oom_kills(w->oom_file);
    w->ctrl_fd = f->sv[0];
    w->err_fd = f->errp[0];
    w->stats = f->stats;
    f->sv[0] = f->errp[0] = -1;
    f->stats = NULL;
    spawn_fds_close(f);
    w->ev_ctrl.kind = MS__EV_WCTRL;
    w->ev_ctrl.obj = w;
    w->ev_pid.kind = MS__EV_WPID;
    w->ev_pid.obj = w;
    w->ev_err.kind = MS__EV_WERR;
    w->ev_err.obj = w;
    w->epfd = s->epfd;
    list_add(s, w);
    fcntl(w->ctrl_fd, F_SETFL, fcntl(w->ctrl_fd, F_GETFL) | O_NONBLOCK);
    fcntl(w->err_fd, F_SETFL, fcntl(w->err_fd, F_GETFL) | O_NONBLOCK);
    worker_watch(s, w);
}

int ms__sup_exec(ms__supervisor *s, const ms__exec *x, ms__wproc **out, char *err, size_t errlen)
{
    spawn_fds fds;
    ms__wproc *w = calloc(1, sizeof *w);
    if (w == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a worker");
    w->pidfd = w->ctrl_fd = w->err_fd = w->epfd = -1;
    w->inst = x->inst;
    w->fd_base = -1;
    ms__reader_init(&w->reader);
    ms__writer_init(&w->wr);
    int rc = spawn_fds_make(&fds, x, err, errlen);
    if (rc != 0) {
        free(w);
        return rc;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rc = ms__fail(err, errlen, MS_E_LOAD_FAILED, "cannot fork a worker: %s", strerror(errno));
        spawn_fds_close(&fds);
        free(w);
        return rc;
    }
    if (pid == 0)
        child_exec(parent, &fds, x);
    worker_adopt(s, w, pid, &fds);
    *out = w;
    return 0;
}

void ms__sup_stop(ms__supervisor *s, ms__wproc *w, int64_t now)
{
    (void)s;
    if (w->stopping)
        return;
    w->stopping = true;
    w->kill_at_ns = now + MS__KILL_GRACE_NS;
    if (kill(w->pid, SIGTERM) != 0 && errno != ESRCH)
        ms__log_warn("cannot stop worker %ld: %s", (long)w->pid, strerror(errno));
}

void ms__sup_kill(ms__supervisor *s, ms__wproc *w)
{
    (void)s;
    if (w->killed)
        return;
    w->killed = true;
    if (kill(w->pid, SIGKILL) != 0 && errno != ESRCH)
        ms__log_warn("cannot kill worker %ld: %s", (long)w->pid, strerror(errno));
}

bool ms__sup_timers(ms__supervisor *s, int64_t now, int64_t *next)
{
    bool any = false;
    for (ms__wproc *w = LIST_FIRST(&s->all); w != NULL; w = LIST_NEXT(w, link)) {
        if (!w->stopping || w->killed)
            continue;
        if (now >= w->kill_at_ns) {
            ms__log_warn("worker %ld did not stop within %lld s of SIGTERM: sending SIGKILL",
                         (long)w->pid, (long long)(MS__KILL_GRACE_NS / 1000000000LL));
            kill(w->pid, SIGKILL);
            w->killed = true;
            continue;
        }
        if (!any || w->kill_at_ns < *next)
            *next = w->kill_at_ns;
        any = true;
    }
    return any;
}

int ms__sup_ctrl_fill(ms__wproc *w, char *err, size_t errlen)
{
    if (w->ctrl_fd < 0)
        return ms__fail(err, errlen, MS_E_IO, "control socket closed");
    int rc = ms__reader_fill(&w->reader, w->ctrl_fd, err, errlen);
    if (rc != 0)
        return rc;
    return 0;
}

int ms__sup_ctrl_next(ms__wproc *w, json_t **msg, char *err, size_t errlen)
{
    /* Workers send no descriptors: any they declare are a protocol error. */
    int rc = ms__reader_next(&w->reader, msg, NULL, NULL, err, errlen);
    if (rc != 0 && *msg != NULL) {
        json_decref(*msg);
        *msg = NULL;
    }
    return rc;
}

void ms__sup_ctrl_close(ms__supervisor *s, ms__wproc *w)
{
    if (w->ctrl_fd < 0)
        return;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->ctrl_fd, NULL);
    close(w->ctrl_fd);
    w->ctrl_fd = -1;
    ms__reader_free(&w->reader);
    ms__writer_free(&w->wr);
    w->want_out = false;
}

int ms__sup_ctrl_flush(ms__wproc *w, char *err, size_t errlen)
{
    int rc = ms__writer_flush(&w->wr, w->ctrl_fd, err, errlen);
    if (rc != 0)
        return rc;
    bool want = w->wr.bytes > 0;
    if (want != w->want_out && w->epfd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0),
                                 .data.ptr = &w->ev_ctrl};
        if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, w->ctrl_fd, &ev) != 0)
            return ms__fail(err, errlen, MS_E_IO, "worker %ld: cannot watch its control socket: %s",
                            (long)w->pid, strerror(errno));
        w->want_out = want;
    }
    return 0;
}

int ms__sup_send(ms__wproc *w, const json_t *msg, const int *fds, int nfds, char *err,
                 size_t errlen)
{
    if (w->ctrl_fd < 0)
        return ms__fail(err, errlen, MS_E_WORKER_LOST, "worker %ld: control socket is closed",
                        (long)w->pid);
    if (w->wr.bytes > MS__WORKER_QUEUE_MAX)
        return ms__fail(err, errlen, MS_E_IO,
                        "worker %ld does not read its control socket: %zu bytes wait for it, "
                        "expected at most %u",
                        (long)w->pid, w->wr.bytes, MS__WORKER_QUEUE_MAX);
    int rc = ms__writer_push(&w->wr, msg, fds, nfds, err, errlen);
    return rc != 0 ? rc : ms__sup_ctrl_flush(w, err, errlen);
}

int ms__sup_reap(ms__supervisor *s, ms__wproc *w, int *status)
{
    (void)s;
    int st;
    pid_t r;
    do
        r = waitpid(w->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0) {
        /* Not our child any more (cannot happen unless reaped elsewhere): treat as gone. */
        *status = 0;
        return 1;
    }
    *status = st;
    return 1;
}

static void release_resources(ms__supervisor *s, ms__wproc *w)
{
    ms__sup_ctrl_close(s, w);
    ms__reader_free(&w->reader);
    if (w->pidfd >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->pidfd, NULL);
        close(w->pidfd);
        w->pidfd = -1;
    }
    ms__stats_unmap(w->stats);
    w->stats = NULL;
    ms__sup_stderr_read(s, w);
    ms__errtail_flush(&w->err, STDERR_FILENO);
    if (w->err_fd >= 0) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->err_fd, NULL);
        close(w->err_fd);
    }
    w->err_fd = -1;
    json_decref(w->signature);
    w->signature = NULL;
    ms__writer_free(&w->wr);
    if (w->listed)
        list_del(s, w);
}

void ms__sup_free(ms__supervisor *s, ms__wproc *w)
{
    if (w == NULL)
        return;
    release_resources(s, w);
    free(w);
}

void ms__sup_retire(ms__supervisor *s, ms__wproc *w)
{
    release_resources(s, w);
    w->gone = true;
    w->model = NULL;
    LIST_INSERT_HEAD(&s->retired, w, link);
}

void ms__sup_collect(ms__supervisor *s)
{
    while (!LIST_EMPTY(&s->retired)) {
        ms__wproc *w = LIST_FIRST(&s->retired);
        LIST_REMOVE(w, link);
        free(w);
    }
}

void ms__sup_stderr_read(ms__supervisor *s, ms__wproc *w)
{
    char buf[4096];
    /* At most 64 KiB per call: a chatty worker does not hold up the loop. */
    for (int i = 0; i < 16 && w->err_fd >= 0; i++) {
        ssize_t n = read(w->err_fd, buf, sizeof buf);
        if (n > 0) {
            ms__errtail_feed(&w->err, buf, (size_t)n, STDERR_FILENO);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->err_fd, NULL);
            close(w->err_fd);
            w->err_fd = -1;
        }
        return;
    }
}
