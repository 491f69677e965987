/*
 * Connecting to the daemon, and starting it when none answers: under a file lock beside the
 * socket, so that processes racing to start it start exactly one.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "connect.h"
#include "../common/env.h"
#include "../common/exitstatus.h"
#include "../common/fdlimit.h"
#include "internal.h"

extern char **environ;

#define LOCK_WAIT_S 30.0
#define CONNECT_WAIT_S 10.0
#define SPAWN_WAIT_S 30.0

/* Returns 0 with *fd connected, or -errno. */
static int try_connect(const char *path, int *fd)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    for (;;) {
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
        if (errno == EINTR)
            continue;
        int e = errno;
        close(s);
        return -e;
    }
    *fd = s;
    return 0;
}

static bool nobody_there(int e)
{
    return e == -ENOENT || e == -ECONNREFUSED;
}

static int connect_error(const char *path, int e, char *err, size_t errlen)
{
    if (e == -EMFILE)
        return ms__fd_limit_fail(err, errlen, "cannot make a socket to connect to the daemon",
                                 "this process", ms__fd_limit(0));
    if (e == -EACCES || e == -EPERM)
        return ms__fail(err, errlen, MS_E_PERMISSION, "cannot connect to the daemon at %s: %s",
                        path, strerror(-e));
    return ms__fail(err, errlen, MS_E_NO_DAEMON, "cannot connect to the daemon at %s: %s", path,
                    strerror(-e));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Trims trailing white space of the daemon's message. */
static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* Starts bin (the daemon) for the socket at path with its stderr on errfd: its own process
 * group, default signal handling, nothing blocked. Returns 0 with *pid, or an errno. */
static int spawn(const char *bin, const char *path, const char *idle, int errfd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, errfd, 2);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGCHLD);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGHUP);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    /* Its own process group: a Ctrl-C meant for the caller does not reach the daemon. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETPGROUP);
    char *argv[] = {(char *)bin, "--socket", (char *)path, "--idle-exit", (char *)idle, NULL};
    int e = posix_spawn(pid, bin, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return e;
}

/* What the daemon's first process wrote on its stderr (NUL-terminated, cut to fit). */
typedef struct errtext {
    char msg[MS__ERRLEN];
    size_t len;
} errtext;

/* Reads what the non-blocking fd has into t. */
static void drain(int fd, errtext *t)
{
    for (;;) {
        char buf[512];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            size_t take = (size_t)n;
            if (take > sizeof t->msg - 1 - t->len)
                take = sizeof t->msg - 1 - t->len;
            memcpy(t->msg + t->len, buf, take);
            t->len += take;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
}

/* Collects the stderr of pid (on fd) while waiting for THAT pid to exit, up to SPAWN_WAIT_S. The
 * daemonized process may keep the pipe open, so EOF is not the signal; the exit of the first
 * process is. Returns false when its status cannot be known (SIGCHLD ignored, or no exit in
 * time), else true with *status. */
static bool wait_first_exit(pid_t pid, int fd, errtext *t, int *status)
{
    double deadline = ms__now_s() + SPAWN_WAIT_S;
    bool exited = false;
    for (;;) {
        drain(fd, t);
        if (exited)
            return true;
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid) {
            exited = true;
            continue; /* one more drain of the pipe */
        }
        if (w < 0 && errno == ECHILD)
            return false; /* SIGCHLD ignored: the kernel reaped it */
        if (ms__now_s() > deadline)
            return false;
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 20);
    }
}

/*
 * Starts the daemon and waits until its first process exits (it does once the socket listens).
 * Returns 0 when it reported success (or when its status cannot be known: the caller ignores
 * SIGCHLD), else MS_E_NO_DAEMON with the reason, the daemon's own stderr included.
 */
static int spawn_daemon(const char *path, char *err, size_t errlen)
{
    char bin[4096];
    int pipefd[2] = {-1, -1};

    if (ms__sibling_binary("modelshared", "MODELSHARE_DAEMON", bin, sizeof bin) < 0)
        return ms__fail(err, errlen, MS_E_NO_DAEMON,
                        "no daemon answers at %s and the path of modelshared is too long", path);
    const char *idle = ms__env_str("MODELSHARE_IDLE_EXIT", "600"); /* the daemon checks it */
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return ms__fail(err, errlen, MS_E_NO_DAEMON, "cannot start %s: pipe: %s", bin,
                        strerror(errno));
    /* Only our end is non-blocking: the daemon's stderr stays a normal blocking pipe. */
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    pid_t pid;
    int e = spawn(bin, path, idle, pipefd[1], &pid);
    close(pipefd[1]);
    if (e != 0) {
        close(pipefd[0]);
        return ms__fail(err, errlen, MS_E_NO_DAEMON, "cannot start %s: %s", bin, strerror(e));
    }
    errtext t = {.len = 0};
    int status = 0;
    bool known = wait_first_exit(pid, pipefd[0], &t, &status);
    close(pipefd[0]);
    t.msg[t.len] = '\0';
    trim(t.msg);

    if (!known || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        return 0;
    char how[128];
    ms__exit_text(status, how, sizeof how);
    return ms__fail(err, errlen, MS_E_NO_DAEMON, "daemon %s for %s %s: %s", bin, path, how,
                    t.len ? t.msg : "(no message)");
}

/* Locks the start lock, polling up to LOCK_WAIT_S. Returns the locked fd or an error. */
static int start_lock(const char *path, int *lockfd, char *err, size_t errlen)
{
    char lockpath[MS__SOCKET_PATH_MAX + 64];
    if (ms__path_with_suffix(path, ".start.lock", lockpath, sizeof lockpath) < 0)
        return ms__fail(err, errlen, MS_E_NO_DAEMON, "lock path for %s is too long", path);
    int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return ms__fail(err, errlen, errno == EACCES ? MS_E_PERMISSION : MS_E_NO_DAEMON,
                        "no daemon answers at %s and the start lock %s cannot be opened: %s", path,
                        lockpath, strerror(errno));
    double deadline = ms__now_s() + LOCK_WAIT_S;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(fd);
            return ms__fail(err, errlen, MS_E_NO_DAEMON, "cannot lock %s: %s", lockpath,
                            strerror(e));
        }
        if (ms__now_s() > deadline) {
            close(fd);
            return ms__fail(err, errlen, MS_E_NO_DAEMON,
                            "no daemon answers at %s, and another process held the start lock "
                            "%s for %.0f s",
                            path, lockpath, LOCK_WAIT_S);
        }
        sleep_ms(10);
    }
    *lockfd = fd;
    return 0;
}

/* With the start lock held: connects when another process started the daemon meanwhile, else
 * starts it and connects once its socket answers (up to CONNECT_WAIT_S). */
static int start_and_connect(const char *path, int *fd, char *err, size_t errlen)
{
    char why[MS__ERRLEN];
    int e = try_connect(path, fd);
    if (e == 0)
        return 0;
    if (!nobody_there(e))
        return connect_error(path, e, err, errlen);
    int spawned = spawn_daemon(path, why, sizeof why);
    double deadline = ms__now_s() + (spawned < 0 ? 0.0 : CONNECT_WAIT_S);
    int delay = 5;
    for (;;) {
        e = try_connect(path, fd);
        if (e == 0)
            return 0;
        if (spawned < 0)
            return ms__fail(err, errlen, MS_E_NO_DAEMON, "no daemon answers at %s: %s", path, why);
        if (!nobody_there(e))
            return connect_error(path, e, err, errlen);
        if (ms__now_s() > deadline)
            return ms__fail(err, errlen, MS_E_NO_DAEMON,
                            "started a daemon for %s, but it did not answer within %.0f s (%s)",
                            path, CONNECT_WAIT_S, strerror(-e));
        sleep_ms(delay);
        if (delay < 100)
            delay *= 2;
    }
}

int ms__lib_connect(const char *path, int *fd, char *err, size_t errlen)
{
    int e = try_connect(path, fd);
    if (e == 0)
        return 0;
    if (!nobody_there(e))
        return connect_error(path, e, err, errlen);
    if (strcmp(ms__env_str("MODELSHARE_NO_AUTOSTART", ""), "1") == 0)
        return ms__fail(err, errlen, MS_E_NO_DAEMON,
                        "no daemon answers at %s (%s) and MODELSHARE_NO_AUTOSTART=1: start "
                        "one there (modelshared --socket %s; in containers, the node's daemon "
                        "or a sidecar, with that socket's directory mounted here), or unset "
                        "MODELSHARE_NO_AUTOSTART to let this process start it",
                        path, strerror(-e), path);

    char why[MS__ERRLEN];
    int r = ms__socket_dir_prepare(path, why, sizeof why);
    if (r < 0)
        return ms__fail(err, errlen, r == MS_E_PERMISSION ? r : MS_E_NO_DAEMON,
                        "no daemon answers at %s and none can be started: %s", path, why);
    int lockfd = -1;
    r = start_lock(path, &lockfd, err, errlen);
    if (r < 0)
        return r;
    r = start_and_connect(path, fd, err, errlen);
    flock(lockfd, LOCK_UN);
    close(lockfd);
    return r;
}
