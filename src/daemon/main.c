/*
 * modelshared: the modelshare daemon.
 *
 *   modelshared [--socket PATH] [--foreground] [--idle-exit SECONDS] [--log-level LEVEL]
 *               [--memory host=SIZE,cuda:N=SIZE]
 *
 * Without --foreground it daemonizes, and the process that was started exits 0 only once the
 * socket listens (1 with the error on stderr otherwise): whoever starts it waits for that exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/env.h"
#include "../common/log.h"
#include "../common/paths.h"
#include "../common/util.h"
#include "modelshare.h"
#include "budget.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: modelshared [--socket PATH] [--foreground] [--idle-exit SECONDS]\n"
               "                   [--log-level error|warn|info|debug] [--memory BUDGETS]\n"
               "  --socket PATH       the control socket (default: $MODELSHARE_SOCKET, else\n"
               "                      $XDG_RUNTIME_DIR/modelshare/modelshared.sock, else\n"
               "                      /tmp/modelshare-$UID/modelshared.sock)\n"
               "  --foreground        do not daemonize; log to stderr\n"
               "  --idle-exit SECONDS exit when no model is loaded and no client is connected for\n"
               "                      that long (0: never, the default)\n"
               "  --log-level LEVEL   most verbose level logged (default info)\n"
               "  --memory BUDGETS    memory budget per device, in bytes (units KiB, MiB, GiB,\n"
               "                      KB, MB, GB, ...) or percent of the device's memory:\n"
               "                      host=16GiB,cuda:0=90%% (default: $MODELSHARE_MEMORY, else\n"
               "                      host=80%%, each GPU 90%%)\n"
               "Without --foreground the log goes to modelshared.log beside the socket.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "modelshared: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

/* Descriptors inherited from whoever started us (beyond 0, 1, 2) would stay open in the daemon
 * and in every worker: close them first. */
static void close_inherited_fds(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self)
            close(fd);
    }
    closedir(d);
}

/* The original process: waits for the daemon's word on the pipe. */
static int wait_ready(int rfd, pid_t child, const char *log_path)
{
    char buf[MS__ERRLEN + 8];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(rfd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    waitpid(child, NULL, 0);
    if (len >= 2 && memcmp(buf, "OK", 2) == 0)
        return 0;
    if (len > 1 && buf[0] == 'E') {
        fprintf(stderr, "modelshared: %s\n", buf + 1);
        return 1;
    }
    fprintf(stderr, "modelshared: the daemon exited before it was ready (see %s)\n", log_path);
    return 1;
}

/* fork, setsid, fork; stdin from /dev/null, stdout and stderr to the log. Returns in the daemon
 * with *ready_fd set; the original process exits here. */
static int daemonize(const char *socket_path, int *ready_fd)
{
    char err[MS__ERRLEN], log_path[4200];
    int rc = ms__socket_dir_prepare(socket_path, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "modelshared: %s\n", err);
        return 1;
    }
    const char *slash = strrchr(socket_path, '/');
    if (slash == NULL)
        snprintf(log_path, sizeof log_path, "modelshared.log");
    else
        snprintf(log_path, sizeof log_path, "%.*s/modelshared.log", (int)(slash - socket_path),
                 socket_path);
    int logfd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (logfd < 0) {
        fprintf(stderr, "modelshared: cannot open the log %s: %s\n", log_path, strerror(errno));
        return 1;
    }
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int p[2];
    if (nullfd < 0 || pipe2(p, O_CLOEXEC) != 0) {
        fprintf(stderr, "modelshared: %s\n", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "modelshared: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid > 0) {
        close(p[1]);
        exit(wait_ready(p[0], pid, log_path));
    }
    close(p[0]);
    if (setsid() < 0)
        _exit(1);
    pid = fork();
    if (pid < 0) {
        char msg[128];
        int n = snprintf(msg, sizeof msg, "Efork: %s", strerror(errno));
        write_all(p[1], msg, (size_t)n);
        _exit(1);
    }
    if (pid > 0)
        _exit(0);
    /* The daemon. dup2 onto 0, 1, 2 clears close-on-exec: workers log to the same file. */
    dup2(nullfd, STDIN_FILENO);
    dup2(logfd, STDOUT_FILENO);
    dup2(logfd, STDERR_FILENO);
    close(nullfd);
    close(logfd);
    *ready_fd = p[1];
    return 0;
}

int main(int argc, char **argv)
{
    char err[MS__ERRLEN], socket_path[MS__SOCKET_PATH_MAX + 1];
    const char *socket_arg = NULL, *level_name = "info",
               *memory = ms__env_str("MODELSHARE_MEMORY", NULL);
    bool foreground = false;
    double idle_exit = 0;

    close_inherited_fds();

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--foreground") == 0) {
            foreground = true;
        } else if (strcmp(a, "--socket") == 0 || strcmp(a, "--idle-exit") == 0 ||
                   strcmp(a, "--log-level") == 0 || strcmp(a, "--memory") == 0) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "--memory") == 0) {
                memory = v;
            } else if (strcmp(a, "--socket") == 0) {
                socket_arg = v;
            } else if (strcmp(a, "--idle-exit") == 0) {
                char *end;
                errno = 0;
                idle_exit = strtod(v, &end);
                if (errno != 0 || end == v || *end != '\0' || !isfinite(idle_exit) ||
                    idle_exit < 0 || idle_exit > 1e9)
                    return usage_error("--idle-exit: expected a number of seconds >= 0, got "
                                       "\"%s\"",
                                       v);
            } else {
                if (ms__log_level_parse(v) < 0)
                    return usage_error(
                        "--log-level: expected error, warn, info or debug, got \"%s\"", v);
                level_name = v;
            }
        } else {
            return usage_error("unknown argument \"%s\"", a);
        }
    }
    if (socket_arg != NULL) {
        if (strlen(socket_arg) == 0 || strlen(socket_arg) > MS__SOCKET_PATH_MAX)
            return usage_error("--socket: expected a path of 1 to 107 bytes, got \"%s\"",
                               socket_arg);
        snprintf(socket_path, sizeof socket_path, "%s", socket_arg);
    } else if (ms__socket_path_default(socket_path, sizeof socket_path, err, sizeof err) != 0) {
        fprintf(stderr, "modelshared: %s\n", err);
        return 1;
    }
    if (memory != NULL && memory[0] != '\0') {
        ms__budgets check;
        ms__budgets_init(&check);
        if (ms__budgets_parse(&check, memory, err, sizeof err) != 0)
            return usage_error("%s", err);
    }
    int level = ms__log_level_parse(level_name);
    static const char *const canonical[] = {"error", "warn", "info", "debug"};

    signal(SIGPIPE, SIG_IGN);
    int ready_fd = -1;
    if (!foreground && daemonize(socket_path, &ready_fd) != 0)
        return 1;
    ms__log_init("modelshared", level);

    ms__server_opts opts = {
        .socket_path = socket_path,
        .idle_exit_s = idle_exit,
        .log_level = canonical[level],
        .memory = memory,
    };
    ms__server *s = NULL;
    int rc = ms__server_start(&opts, &s, err, sizeof err);
    if (rc != 0) {
        if (ready_fd >= 0) {
            char msg[MS__ERRLEN + 2];
            int n = snprintf(msg, sizeof msg, "E%s", err);
            ms__log_error("%s", err);
            write_all(ready_fd, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
            close(ready_fd);
        } else {
            fprintf(stderr, "modelshared: %s\n", err);
        }
        return 1;
    }
    ms__log_info("listening on %s (pid %ld, idle exit %s%g s)", socket_path, (long)getpid(),
                 idle_exit > 0 ? "" : "off, ", idle_exit);
    if (ready_fd >= 0) {
        write_all(ready_fd, "OK", 2);
        close(ready_fd);
    }
    rc = ms__server_run(s);
    ms__server_free(s);
    return rc == 0 ? 0 : 1;
}
