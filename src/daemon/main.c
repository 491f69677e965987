/*
 * modelshared: the modelshare daemon.
 *
 *   modelshared [--socket PATH] [--foreground] [--idle-exit SECONDS] [--log-level LEVEL]
 *               [--memory host=SIZE,cuda:N=SIZE] [--group GROUP] [--metrics [HOST:]PORT]
 *
 * Without --foreground it daemonizes, and the process that was started exits 0 only once the
 * socket listens (1 with the error on stderr otherwise): whoever starts it waits for that exit.
 * Started by a service manager with a listening socket (activation.h), it serves on that one and
 * stays in the foreground.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/env.h"
#include "../common/hostport.h"
#include "../common/log.h"
#include "../common/paths.h"
#include "../common/util.h"
#include "modelshare.h"
#include "access.h"
#include "activation.h"
#include "budget.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: modelshared [--socket PATH] [--foreground] [--idle-exit SECONDS]\n"
               "                   [--log-level error|warn|info|debug] [--memory BUDGETS]\n"
               "                   [--group GROUP] [--metrics ADDR]\n"
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
               "  --metrics ADDR      serve /metrics (Prometheus) over HTTP on ADDR: PORT (on\n"
               "                      127.0.0.1), 127.0.0.1:PORT, [::1]:PORT, or 0.0.0.0:PORT for\n"
               "                      every interface (default: $MODELSHARE_METRICS, else off)\n"
               "  --group GROUP       also serve the processes of this Unix group (name or gid):\n"
               "                      the socket and its directory become the group's (0660,\n"
               "                      0750); a machine-wide daemon (contrib/systemd)\n"
               "Without --foreground the log goes to modelshared.log beside the socket.\n"
               "Started with a socket by systemd (LISTEN_FDS), it serves on that socket in the\n"
               "foreground.\n");
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
static void close_inherited_fds(int first)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0u, 0u) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return;
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (fd >= first && fd != self)
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

/* What the command line asks for. */
typedef struct daemon_args {
    const char *socket_arg;                    /* --socket, NULL for the default */
    const char *level_name;                    /* --log-level */
    const char *memory;                        /* --memory, else $MODELSHARE_MEMORY, else NULL */
    const char *metrics;                       /* --metrics, else $MODELSHARE_METRICS, else NULL */
    const char *group;                         /* --group, else NULL */
    bool foreground;                           /* --foreground */
    gid_t gid;                                 /* --group's */
    int listen_fd;                             /* inherited from a service manager, else -1 */
    double idle_exit;                          /* --idle-exit */
    char socket_path[MS__SOCKET_PATH_MAX + 1]; /* resolved by resolve_socket() */
} daemon_args;

enum {
    OPT_SOCKET = 256,
    OPT_FOREGROUND,
    OPT_IDLE_EXIT,
    OPT_LOG_LEVEL,
    OPT_MEMORY,
    OPT_GROUP,
    OPT_METRICS
};

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"foreground", no_argument, NULL, OPT_FOREGROUND},
    {"idle-exit", required_argument, NULL, OPT_IDLE_EXIT},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"group", required_argument, NULL, OPT_GROUP},
    {NULL, 0, NULL, 0},
};

/* One option from getopt_long (word: the argument it came from). Returns -1 to go on, else the
 * exit status. */
static int take_option(int c, const char *word, const char *value, daemon_args *a)
{
    switch (c) {
    case 'h':
        usage(stdout);
        return 0;
    case OPT_FOREGROUND:
        a->foreground = true;
        return -1;
    case OPT_SOCKET:
        a->socket_arg = value;
        return -1;
    case OPT_MEMORY:
        a->memory = value;
        return -1;
    case OPT_METRICS:
        a->metrics = value;
        return -1;
    case OPT_GROUP:
        a->group = value;
        return -1;
    case OPT_IDLE_EXIT: {
        char *end;
        errno = 0;
        a->idle_exit = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || !isfinite(a->idle_exit) ||
            a->idle_exit < 0 || a->idle_exit > 1e9)
            return usage_error("--idle-exit: expected a number of seconds >= 0, got \"%s\"", value);
        return -1;
    }
    case OPT_LOG_LEVEL:
        if (ms__log_level_parse(value) < 0)
            return usage_error("--log-level: expected error, warn, info or debug, got \"%s\"",
                               value);
        a->level_name = value;
        return -1;
    case ':':
        return usage_error("%s needs a value", word);
    default:
        return usage_error("unknown argument \"%s\"", word);
    }
}

/* getopt_long over argv, in order, stopping at the first word that is not an option. Returns -1
 * to go on, else the exit status (0 after --help, 2 after a usage error). */
static int parse_args(int argc, char **argv, daemon_args *a)
{
    opterr = 0;
    for (;;) {
        int at = optind; /* the word getopt_long looks at */
        int c = getopt_long(argc, argv, "+:h", long_options, NULL);
        if (c == -1)
            break;
        int rc = take_option(c, at < argc ? argv[at] : "", optarg, a);
        if (rc >= 0)
            return rc;
    }
    if (optind < argc)
        return usage_error("unknown argument \"%s\"", argv[optind]);
    return -1;
}

/* The socket path (--socket, else the default) and a --memory that parses. Returns -1 to go on,
 * else the exit status. */
static int check_args(daemon_args *a)
{
    char err[MS__ERRLEN];
    if (a->listen_fd >= 0) {
        a->foreground = true; /* the service manager supervises us */
        if (a->socket_arg != NULL && strcmp(a->socket_arg, a->socket_path) != 0)
            return usage_error("--socket: the inherited socket is %s", a->socket_path);
    } else if (a->socket_arg != NULL) {
        if (strlen(a->socket_arg) == 0 || strlen(a->socket_arg) > MS__SOCKET_PATH_MAX)
            return usage_error("--socket: expected a path of 1 to 107 bytes, got \"%s\"",
                               a->socket_arg);
        snprintf(a->socket_path, sizeof a->socket_path, "%s", a->socket_arg);
    } else if (ms__socket_path_default(a->socket_path, sizeof a->socket_path, err, sizeof err) !=
               0) {
        fprintf(stderr, "modelshared: %s\n", err);
        return 1;
    }
    if (a->group != NULL && ms__access_parse_group(a->group, &a->gid, err, sizeof err) != 0)
        return usage_error("%s", err);
    if (a->memory != NULL && a->memory[0] != '\0') {
        ms__budgets check;
        ms__budgets_init(&check);
        if (ms__budgets_parse(&check, a->memory, err, sizeof err) != 0)
            return usage_error("%s", err);
    }
    ms__hostport hp;
    if (a->metrics != NULL && ms__hostport_parse(a->metrics, &hp, err, sizeof err) != 0)
        return usage_error("--metrics: %s", err);
    return -1;
}

/* The server could not start: says why on the ready pipe (daemonized) or on stderr. */
static void report_start_failure(int ready_fd, const char *err)
{
    if (ready_fd < 0) {
        fprintf(stderr, "modelshared: %s\n", err);
        return;
    }
    char msg[MS__ERRLEN + 2];
    int n = snprintf(msg, sizeof msg, "E%s", err);
    ms__log_error("%s", err);
    write_all(ready_fd, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    close(ready_fd);
}

/* Starts the server, tells whoever waits that it listens (ready_fd, -1 when none) and serves
 * until it stops. Returns the exit status. */
static int serve(const daemon_args *a, int level, int ready_fd)
{
    static const char *const canonical[] = {"error", "warn", "info", "debug"};
    char err[MS__ERRLEN];
    ms__server_opts opts = {
        .socket_path = a->socket_path,
        .idle_exit_s = a->idle_exit,
        .log_level = canonical[level],
        .memory = a->memory,
        .metrics = a->metrics,
        .listen_fd = a->listen_fd,
        .has_group = a->group != NULL,
        .gid = a->gid,
    };
    /* Group mode: no other process of this uid (a service's python worker) reads the daemon's
     * descriptors (clients' arenas) or memory through /proc (docs/SECURITY.md). */
    if (a->group != NULL && prctl(PR_SET_DUMPABLE, 0) != 0)
        ms__log_warn("prctl(PR_SET_DUMPABLE, 0): %s", strerror(errno));
    ms__server *s = NULL;
    int rc = ms__server_start(&opts, &s, err, sizeof err);
    if (rc != 0) {
        report_start_failure(ready_fd, err);
        return 1;
    }
    ms__log_info("listening on %s%s (pid %ld, idle exit %s%g s)", a->socket_path,
                 a->listen_fd >= 0 ? ", a socket from the service manager" : "", (long)getpid(),
                 a->idle_exit > 0 ? "" : "off, ", a->idle_exit);
    if (a->group != NULL)
        ms__log_info("group mode: %s", geteuid() == 0
                                           ? "running as root: each member's workers run with "
                                             "its uid and groups, its files opened with its rights"
                                           : "not root: members other than this uid may not load "
                                             "python models or weights files (docs/SECURITY.md)");
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible != NULL)
        ms__log_warn("CUDA_VISIBLE_DEVICES=%s in the daemon's environment does not choose its "
                     "cards: a spec's \"cuda:N\" is NVML's card N (PCI bus order), and each GPU "
                     "worker gets CUDA_VISIBLE_DEVICES=N",
                     visible);
    if (ready_fd >= 0) {
        write_all(ready_fd, "OK", 2);
        close(ready_fd);
    }
    rc = ms__server_run(s);
    ms__server_free(s);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    char err[MS__ERRLEN];
    daemon_args a = {.level_name = "info",
                     .memory = ms__env_str("MODELSHARE_MEMORY", NULL),
                     .metrics = ms__env_str("MODELSHARE_METRICS", NULL)};

    if (ms__activation_take(&a.listen_fd, a.socket_path, sizeof a.socket_path, err, sizeof err) !=
        0) {
        fprintf(stderr, "modelshared: %s\n", err);
        return 1;
    }
    close_inherited_fds(a.listen_fd >= 0 ? MS__ACTIVATION_FD + 1 : 3);
    int rc = parse_args(argc, argv, &a);
    if (rc < 0)
        rc = check_args(&a);
    if (rc >= 0)
        return rc;
    int level = ms__log_level_parse(a.level_name);

    signal(SIGPIPE, SIG_IGN);
    int ready_fd = -1;
    if (!a.foreground && daemonize(a.socket_path, &ready_fd) != 0)
        return 1;
    ms__log_init("modelshared", level);
    return serve(&a, level, ready_fd);
}
