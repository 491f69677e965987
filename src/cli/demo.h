/*
 * `modelshare demo`, split in three: the parent's flow and report (cmd_demo.c), the child
 * processes (demo_child.c: one plain in-process load for comparison, and the N clients), and
 * the private daemon's life (demo_daemon.c).
 *
 * Children talk to the parent through one pipe each, in fixed-size messages written with one
 * write() (smaller than PIPE_BUF, so never torn). The parent starts the clients' work and ends
 * their leases by writing one byte per client to a shared "go" pipe, twice.
 */
#ifndef MS_CLI_DEMO_H
#define MS_CLI_DEMO_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cli.h"

#define MS__DEMO_CLIENTS_MAX 64
#define MS__DEMO_TAG "demo-mlp"

typedef struct ms__demo_cfg {
    int clients;
    int requests;
    int batch;
    int64_t layers[MS__CLI_LAYERS_MAX];
    int nlayers;
    char weights[PATH_MAX]; /* absolute */
    char spec[PATH_MAX + 128];
} ms__demo_cfg;

enum {
    MS__DEMO_MEASURED = 1, /* the plain load: pss_bytes, load_s, checksum */
    MS__DEMO_READY = 2,    /* a client holds its lease: load_s */
    MS__DEMO_DONE = 3,     /* a client ran its requests: t_start, t_end, checksum */
    MS__DEMO_ERROR = 4,    /* error */
};

typedef struct ms__demo_msg {
    int kind;
    int index;
    int32_t pid;
    uint64_t pss_bytes;
    double load_s;
    double t_start, t_end; /* CLOCK_MONOTONIC seconds, comparable between processes */
    double sum, abs_sum;   /* of the output for the shared fixed input */
    uint64_t hash;         /* FNV-1a of that output's bytes */
    char error[1024];
} ms__demo_msg;

/* Child processes. Both _exit(); neither returns. */
__attribute__((noreturn)) void ms__demo_measure_child(const ms__demo_cfg *cfg, int report_fd);
__attribute__((noreturn)) void ms__demo_client_child(const ms__demo_cfg *cfg, int index,
                                                     int report_fd, int go_fd);

/* The private daemon: a fresh 0700 directory under /tmp, $MODELSHARE_SOCKET pointing into it. */
int ms__demo_daemon_dir(char *dir, size_t dirlen, char *socket, size_t socketlen);
/* Stops the daemon (SIGTERM, SIGKILL after a grace period) and the worker pids given, waits
 * until they are gone and removes the directory. daemon_pid 0: asks the daemon on the socket for
 * its pid first (without starting one). Prints nothing. */
void ms__demo_daemon_stop(pid_t daemon_pid, const pid_t *workers, int nworkers, const char *dir);

#endif
