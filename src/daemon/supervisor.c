/* Worker processes: spawn, watch, stop, reap. See supervisor.h. */
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
#include "../common/paths.h"
#include "../common/ring.h"
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
    int door_fd; /* its instance's door: not owned */
    int ctor_fd; /* its model's constructor memfd, -1 when none: not owned */
    int errp[2]; /* its stderr pipe: [0] the daemon's end, [1] the worker's */
} spawn_fds;

/* In the child, between fork and exec: only async-signal-safe calls. cwd and envp: NULL to keep
 * the daemon's. */
static void child_exec(pid_t parent, const spawn_fds *f, const char *path, char *const argv[],
                       const char *cwd, char *const envp[])
{
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
    /* Copies above 2 to 6 first, so that dup2 onto them never meets its own source. */
    int c = fcntl(f->sv[1], F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int t = fcntl(f->stats_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int d = fcntl(f->door_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int e = fcntl(f->errp[1], F_DUPFD_CLOEXEC, CHILD_FD_HIGH);
    int k = f->ctor_fd >= 0 ? fcntl(f->ctor_fd, F_DUPFD_CLOEXEC, CHILD_FD_HIGH) : -1;
    if (c < 0 || t < 0 || d < 0 || e < 0 || (f->ctor_fd >= 0 && k < 0) || dup2(c, 3) != 3 ||
        dup2(t, 4) != 4 || dup2(d, 5) != 5 || dup2(e, 2) != 2 ||
        (k >= 0 && dup2(k, MS__WORKER_CTOR_FD) != MS__WORKER_CTOR_FD))
        _exit(126);
    /* dup2 leaves 2 to 5 (and 6) without close-on-exec: the worker inherits exactly these (and
     * 0, 1). */
    if (cwd != NULL && chdir(cwd) != 0)
        _exit(125);
    if (envp != NULL)
        execve(path, argv, envp);
    else
        execv(path, argv);
    _exit(127);
}

/* How a python worker starts: the acquiring client's interpreter, working directory and
 * sys.path (as PYTHONPATH), running `-m modelshare.worker`. All of it is made before fork(). */
typedef struct py_launch {
    json_t *obj; /* the spec's "python" object */
    char **envp; /* the daemon's environment, PYTHONPATH replaced (the strings are not copied) */
    char *pythonpath;
} py_launch;

static void py_launch_free(py_launch *pl)
{
    json_decref(pl->obj);
    free(pl->envp);
    free(pl->pythonpath);
    memset(pl, 0, sizeof *pl);
}

extern char **environ;

static int py_launch_make(const ms__spec *spec, py_launch *pl, char *err, size_t errlen)
{
    memset(pl, 0, sizeof *pl);
    pl->obj = json_loads(spec->python, 0, NULL);
    const json_t *path = json_object_get(pl->obj, "path");
    if (pl->obj == NULL || !json_is_string(json_object_get(pl->obj, "executable")) ||
        !json_is_string(json_object_get(pl->obj, "cwd")) || !json_is_array(path))
        goto nomem; /* the spec was checked: only memory can fail here */
    size_t len = strlen("PYTHONPATH=") + 1, i;
    json_t *e;
    json_array_foreach(path, i, e) len += strlen(json_string_value(e)) + 1;
    pl->pythonpath = malloc(len);
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    pl->envp = calloc(n + 2, sizeof *pl->envp);
    if (pl->pythonpath == NULL || pl->envp == NULL)
        goto nomem;
    char *p = pl->pythonpath;
    p += sprintf(p, "PYTHONPATH=");
    json_array_foreach(path, i, e) p += sprintf(p, "%s%s", i > 0 ? ":" : "", json_string_value(e));
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (strncmp(environ[j], "PYTHONPATH=", 11) != 0 &&
            strncmp(environ[j], "PYTHONHOME=", 11) != 0)
            pl->envp[k++] = environ[j];
    pl->envp[k++] = pl->pythonpath;
    pl->envp[k] = NULL;
    const char *exe = json_string_value(json_object_get(pl->obj, "executable"));
    if (access(exe, X_OK) != 0) {
        int rc = ms__fail(err, errlen, MS_E_LOAD_FAILED,
                          "python worker: interpreter %s: expected an executable file, got %s", exe,
                          strerror(errno));
        py_launch_free(pl);
        return rc;
    }
    return 0;
nomem:
    py_launch_free(pl);
    return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a python worker");
}

/* What a worker runs: program, argv, working directory and environment, made before fork(). */
typedef struct spawn_cmd {
    py_launch pl;    /* a python worker's launch (empty for the dense worker) */
    bool python;     /* the spec has a "python" constructor */
    char *spec_text; /* owned: the instance's spec, passed as --spec */
    const char *path, *cwd;
    char **envp;      /* NULL: the daemon's environment */
    char **pinned;    /* owned array (strings not copied): envp with the GPU pinned, or NULL */
    char visible[48]; /* "CUDA_VISIBLE_DEVICES=N" */
    char *argv[10];   /* points into spec_text, the model's tag and the supervisor */
} spawn_cmd;

static void spawn_cmd_free(spawn_cmd *c)
{
    py_launch_free(&c->pl);
    free(c->spec_text);
    c->spec_text = NULL;
    free(c->pinned);
    c->pinned = NULL;
}

/* The spec a worker of an instance on device gets: device as it sees it ("cpu", or "cuda:0" for
 * a GPU, which CUDA_VISIBLE_DEVICES leaves it alone with), devices null. New text, or NULL. */
static char *instance_spec(const json_t *spec_json, const char *device)
{
    json_t *j = json_deep_copy(spec_json);
    if (j == NULL)
        return NULL;
    bool gpu = strncmp(device, "cuda:", 5) == 0;
    if (device[0] != '\0')
        json_object_set_new(j, "device", json_string(gpu ? "cuda:0" : "cpu"));
    json_object_set_new(j, "devices", json_null());
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return text;
}

/* A worker of an instance on "cuda:N" sees that GPU alone, as its device 0:
 * CUDA_VISIBLE_DEVICES=N, with CUDA_DEVICE_ORDER=PCI_BUS_ID so that N is NVML's N. The rest of
 * its environment is c->envp's (or the daemon's); on the CPU it is left as it is. */
static int pin_gpu(spawn_cmd *c, const char *device)
{
    if (strncmp(device, "cuda:", 5) != 0)
        return 0;
    char **base = c->envp != NULL ? c->envp : environ;
    size_t n = 0;
    while (base[n] != NULL)
        n++;
    c->pinned = calloc(n + 3, sizeof *c->pinned);
    if (c->pinned == NULL)
        return MS_E_NOMEM;
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (strncmp(base[j], "CUDA_VISIBLE_DEVICES=", 21) != 0 &&
            strncmp(base[j], "CUDA_DEVICE_ORDER=", 18) != 0)
            c->pinned[k++] = base[j];
    snprintf(c->visible, sizeof c->visible, "CUDA_VISIBLE_DEVICES=%s", device + 5);
    c->pinned[k++] = c->visible;
    c->pinned[k++] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    c->envp = c->pinned;
    return 0;
}

/* Checks that m can have one more worker and what it runs. On success *c is freed with
 * spawn_cmd_free(). */
static int spawn_cmd_make(ms__supervisor *s, ms__model *m, const ms__spec *spec,
                          const json_t *spec_json, const char *device, spawn_cmd *c, char *err,
                          size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->python = spec->python != NULL;
    if (c->python) {
        int rc = py_launch_make(spec, &c->pl, err, errlen);
        if (rc < 0)
            return rc;
    } else if (access(s->worker_path, X_OK) != 0) {
        return ms__fail(err, errlen, MS_E_LOAD_FAILED,
                        "worker program %s: expected an executable file, got %s", s->worker_path,
                        strerror(errno));
    }
    if (m->nworkers >= MS__INSTANCES_MAX) {
        py_launch_free(&c->pl);
        return ms__fail(err, errlen, MS_E_LIMIT, "expected at most %d workers per model",
                        MS__INSTANCES_MAX);
    }
    c->spec_text = instance_spec(spec_json, device);
    if (c->spec_text == NULL) {
        py_launch_free(&c->pl);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a worker");
    }
    char *tail[] = {"--tag", m->tag, "--spec", c->spec_text, "--log-level", s->log_level, NULL};
    int n = 0;
    c->path = s->worker_path;
    if (c->python) {
        c->path = json_string_value(json_object_get(c->pl.obj, "executable"));
        c->cwd = json_string_value(json_object_get(c->pl.obj, "cwd"));
        c->envp = c->pl.envp;
        c->argv[n++] = (char *)c->path;
        c->argv[n++] = "-m";
        c->argv[n++] = "modelshare.worker";
    } else {
        c->argv[n++] = s->worker_path;
    }
    memcpy(&c->argv[n], tail, sizeof tail);
    if (pin_gpu(c, device) != 0) {
        spawn_cmd_free(c);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a worker");
    }
    return 0;
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
    *f =
        (spawn_fds){.sv = {-1, -1}, .stats_fd = -1, .door_fd = -1, .ctor_fd = -1, .errp = {-1, -1}};
}

/* On failure everything made is closed again. door_fd stays the instance's, ctor_fd the
 * model's. */
static int spawn_fds_make(spawn_fds *f, int door_fd, int ctor_fd, char *err, size_t errlen)
{
    *f = (spawn_fds){
        .sv = {-1, -1}, .stats_fd = -1, .door_fd = door_fd, .ctor_fd = ctor_fd, .errp = {-1, -1}};
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
    if (door_fd < 0) {
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
static void worker_adopt(ms__supervisor *s, ms__model *m, ms__wproc *w, pid_t pid, spawn_fds *f,
                         bool standby)
{
    w->pid = pid;
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
    list_add(s, w);
    if (standby) {
        w->model = m;
        w->standby = true;
    } else {
        ms__model_add_worker(m, w);
    }
    fcntl(w->ctrl_fd, F_SETFL, fcntl(w->ctrl_fd, F_GETFL) | O_NONBLOCK);
    fcntl(w->err_fd, F_SETFL, fcntl(w->err_fd, F_GETFL) | O_NONBLOCK);
    worker_watch(s, w);
}

/* Starts a worker of spec on door_fd (with ctor_fd, -1: none) for instance inst of m; standby:
 * not linked to m yet. */
static int spawn(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                 const json_t *spec_json, int door_fd, int ctor_fd, bool standby, ms__wproc **out,
                 char *err, size_t errlen)
{
    spawn_cmd cmd;
    spawn_fds fds;
    const char *device = inst >= 0 && inst < MS__INSTANCES_MAX ? m->inst_device[inst] : "";
    if (spec->python_ctor_size > 0 && ctor_fd < 0) /* the request checks make this impossible */
        return ms__fail(err, errlen, MS_E_LOAD_FAILED,
                        "python worker: the spec's constructor is in a memfd, and the model has "
                        "none");
    int rc = spawn_cmd_make(s, m, spec, spec_json, device, &cmd, err, errlen);
    if (rc != 0)
        return rc;
    ms__wproc *w = calloc(1, sizeof *w);
    if (w == NULL) {
        spawn_cmd_free(&cmd);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a worker");
    }
    w->pidfd = w->ctrl_fd = w->err_fd = -1;
    w->inst = inst;
    ms__reader_init(&w->reader);
    rc = spawn_fds_make(&fds, door_fd, spec->python_ctor_size > 0 ? ctor_fd : -1, err, errlen);
    if (rc != 0)
        goto fail;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        rc = ms__fail(err, errlen, MS_E_LOAD_FAILED, "cannot fork a worker: %s", strerror(errno));
        spawn_fds_close(&fds);
        goto fail;
    }
    if (pid == 0)
        child_exec(parent, &fds, cmd.path, cmd.argv, cmd.cwd, cmd.envp);
    worker_adopt(s, m, w, pid, &fds, standby);
    ms__log_info("model \"%s\": started worker %ld for instance %d%s on %s (%s%s)", m->tag,
                 (long)pid, inst, standby ? " of a swap" : "", device[0] ? device : "cpu", cmd.path,
                 cmd.python ? " -m modelshare.worker" : "");
    spawn_cmd_free(&cmd);
    if (out != NULL)
        *out = w;
    return 0;

fail:
    free(w);
    spawn_cmd_free(&cmd);
    return rc;
}

int ms__sup_spawn(ms__supervisor *s, ms__model *m, int inst, char *err, size_t errlen)
{
    return spawn(s, m, inst, &m->spec, m->spec_json,
                 inst >= 0 && inst < m->ninst ? m->inst[inst].door_fd : -1, m->ctor_fd, false, NULL,
                 err, errlen);
}

int ms__sup_spawn_standby(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                          const json_t *spec_json, int door_fd, int ctor_fd, ms__wproc **out,
                          char *err, size_t errlen)
{
    return spawn(s, m, inst, spec, spec_json, door_fd, ctor_fd, true, out, err, errlen);
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
    return ms__reader_next(&w->reader, msg, NULL, NULL, err, errlen);
}

void ms__sup_ctrl_close(ms__supervisor *s, ms__wproc *w)
{
    if (w->ctrl_fd < 0)
        return;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, w->ctrl_fd, NULL);
    close(w->ctrl_fd);
    w->ctrl_fd = -1;
    ms__reader_free(&w->reader);
}

int ms__sup_send(ms__wproc *w, const json_t *msg, const int *fds, int nfds, char *err,
                 size_t errlen)
{
    if (w->ctrl_fd < 0)
        return ms__fail(err, errlen, MS_E_WORKER_LOST, "worker %ld: control socket is closed",
                        (long)w->pid);
    return ms__msg_send(w->ctrl_fd, msg, fds, nfds, 1000, err, errlen);
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
