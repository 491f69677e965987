/*
 * modelshared's server: the pid lock, the listening socket and the epoll loop, the top of the
 * daemon's layers. Below it, each using only those under it: the protocol (protocol.h:
 * connections, requests, answers), the model life cycle (models.h: load, ready, failed,
 * keep-alive, unload), and the leaves (registry.h, supervisor.h, budget.h).
 */
#ifndef MS_DAEMON_SERVER_H
#define MS_DAEMON_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ms__server ms__server;

typedef struct ms__server_opts {
    const char *socket_path;
    double idle_exit_s;    /* 0: never */
    const char *log_level; /* passed to workers: "error" | "warn" | "info" | "debug" */
    const char *memory;    /* budgets, "host=16GiB,cuda:0=90%" (budget.h); NULL: defaults */
    const char *metrics;   /* --metrics address (hostport.h); NULL: no metrics, no TCP at all */
    int listen_fd;         /* an inherited listening socket (activation.h), taken; -1: none */
    bool has_group;        /* --group: its processes may connect too (access.h) */
    gid_t gid;
} ms__server_opts;

/* Prepares the socket directory, takes the exclusive lock on <socket>.pid (writing this
 * process's pid in it), removes a stale socket file, binds (mode 0600; with a group, 0660 and the
 * group's, in a directory of mode 0750 and the group's) and listens. With an inherited
 * listen_fd, none of that: the service manager made the socket and starts one daemon for it. With
 * opts->metrics it serves /metrics too (metrics.h), or fails before the socket listens. When
 * this returns 0 the daemon is ready: clients can connect. Errors: MS_E_BUSY ("another modelshared
 * is running (pid N) on P", or the metrics port is taken), MS_E_INVAL (a malformed metrics
 * address), MS_E_PERMISSION, MS_E_IO, with a message in err. *out is freed with
 * ms__server_free(). */
int ms__server_start(const ms__server_opts *opts, ms__server **out, char *err, size_t errlen);

/* Serves until SIGTERM or SIGINT (or the idle exit), then stops every worker and removes the
 * socket. Returns 0 on a clean stop, or a negative MS_E_* code when the loop could not run. */
int ms__server_run(ms__server *s);

/* Closes everything; NULL is a no-op. */
void ms__server_free(ms__server *s);

#endif
