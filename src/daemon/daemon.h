/* Types shared by the daemon's files: limits, the epoll event sources and the worker record. */
#ifndef MS_DAEMON_H
#define MS_DAEMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "../common/proto.h"
#include "../common/stats.h"
#include "errtail.h"

/* Limits on what clients control. */
#define MS__MODELS_MAX                                                                             \
    256 /* registered and not unloading: past it, the LRU idle one is evicted                      \
         */
/* The registry's room: MS__MODELS_MAX, and as many again being unloaded (evicted ones whose
 * workers are still stopping). */
#define MS__MODELS_TABLE (2 * MS__MODELS_MAX)
#define MS__CLIENTS_MAX 1024
#define MS__CLIENT_LEASES_MAX 4096
#define MS__LEASES_MAX 65536 /* in all: each holds an arena descriptor in the daemon */
#define MS__INSTANCES_MAX 64

/* Bytes queued for a worker beyond which it counts as not reading its control socket. */
#define MS__WORKER_QUEUE_MAX (4u << 20)

/* Grace between SIGTERM and SIGKILL when a worker is stopped. */
#define MS__KILL_GRACE_NS (3 * 1000000000LL)

/* Restarts of crashed instances: the first after MS__RESTART_FIRST_NS, each next one after twice
 * as long, at most MS__RESTART_MAX_NS; an instance that ran MS__RESTART_WINDOW_NS starts again
 * from the first delay. A crash that has the spec's max_restarts others within
 * MS__RESTART_WINDOW_NS before it fails the model. */
#define MS__RESTART_FIRST_NS 100000000LL
#define MS__RESTART_MAX_NS (30 * 1000000000LL)
#define MS__RESTART_WINDOW_NS (60 * 1000000000LL)

/* What an epoll event points to. */
enum {
    MS__EV_LISTEN = 1,
    MS__EV_SIGNAL,
    MS__EV_CONN,
    MS__EV_WCTRL,
    MS__EV_WPID,
    MS__EV_WERR,
    MS__EV_METRICS /* the HTTP server of --metrics (metrics.h) */
};
typedef struct ms__evsrc {
    int kind;
    void *obj;
} ms__evsrc;

typedef struct ms__model ms__model;

/* One worker process. The registry counts its leases; the supervisor owns its descriptors. */
typedef struct ms__wproc {
    pid_t pid;
    int pidfd;   /* -1 once closed */
    int ctrl_fd; /* -1 once closed (EOF) */
    ms__reader reader;
    ms__writer wr;    /* what waits to be sent on ctrl_fd (ms__sup_send) */
    bool want_out;    /* EPOLLOUT watched on ctrl_fd: wr has bytes left */
    int epfd;         /* the epoll ctrl_fd is in (not owned), -1 when none */
    ms__stats *stats; /* the worker's counters page, NULL when none */
    int err_fd;       /* the read end of its stderr pipe; -1 once closed (EOF) */
    ms__errtail err;  /* what it wrote there last */
    int inst;         /* its instance of the model: ring inst of every lease, door inst */
    bool ready;       /* it said "ready" */
    bool said_failed; /* it said "failed" */
    bool stopping;    /* SIGTERM sent */
    bool killed;      /* SIGKILL sent */
    bool gone;        /* reaped and retired: ignore events that still point here */
    bool standby;     /* a swap's new worker, loading beside the old ones: not yet the model's */
    int64_t kill_at_ns;
    uint64_t memory_bytes; /* from "ready" */
    json_t *signature;     /* from "ready" */
    int fd_base;           /* descriptors it had open when it said "ready"; -1: unknown */
    char oom_file[192];    /* its memory cgroup's OOM kill count (oomkill.h); "" when none */
    long long oom_kills;   /* that count when it started; -1: unknown */
    int leases;            /* leases served by this worker */
    ms__model *model;      /* NULL once detached from its model (an old worker being stopped) */
    ms__evsrc ev_ctrl, ev_pid, ev_err;
    bool listed;                /* in the supervisor's list of live workers (else retired) */
    LIST_ENTRY(ms__wproc) link; /* the supervisor's list: live workers, or retired ones */
} ms__wproc;

LIST_HEAD(ms__wproc_list, ms__wproc);

#endif
