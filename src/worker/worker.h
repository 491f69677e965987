/* modelshare-worker's internal interface between main.c (start-up, load) and serve.c (the loop). */
#ifndef MS_WORKER_H
#define MS_WORKER_H

#include <signal.h>
#include <stdbool.h>

#include "../backends/backend.h"
#include "../common/ring.h"
#include "../common/stats.h"

/* The worker's fixed descriptors, set up by the daemon. */
#define MS__WORKER_CTRL_FD 3
#define MS__WORKER_STATS_FD 4
#define MS__WORKER_DOOR_FD 5 /* its door's page 0, read-write */
#define MS__WORKER_BELL_FD 7 /* its door's bell page */

/* How long the loop keeps looking for work after the last request before it sleeps, unless
 * $MODELSHARE_SPIN_US says otherwise. */
#define MS__WORKER_SPIN_US 200

/* Most clients attached at once: each has a hint bit in the door. */
#define MS__WORKER_CLIENTS_MAX MS__DOOR_HINTS
/* Most requests in one batch, and most bytes staged for one (a single request of any size runs
 * in place, unstaged). */
#define MS__BATCH_REQS_MAX 1024
#define MS__BATCH_BYTES_MAX (64u << 20)

typedef struct ms__worker {
    const char *tag;
    const ms__backend_ops *backend;
    void *state;                 /* the backend's loaded model */
    ms__stats *stats;            /* shared counters page; may be NULL */
    ms__door *door;              /* this worker's door: its clients ring it */
    int ctrl_fd;                 /* to the daemon */
    volatile sig_atomic_t *stop; /* set by SIGTERM / SIGINT (which also ring the door) */
    int max_batch;               /* rows per backend run (spec; at most the largest batch size) */
    const int *batch_sizes;      /* the row counts a run is padded to (spec), increasing */
    int nbatch_sizes;            /* 0: no padding */
    int pad_dim; /* spec "pad": requests of several tensors may differ along it (0: none) */
    int64_t batch_delay_ns; /* wait for more rows after the oldest (spec) */
    bool batchable;         /* false: one request per backend run */
    int64_t spin_ns;        /* keep looking this long after the last request, then sleep */
    int threads;            /* batches run at once: 1 (the loop runs each itself), or 2 to
                             * MS__WORKER_THREADS_MAX runner threads (a thread_safe spec, a concurrent
                             * backend: ms__worker_threads) */
} ms__worker;

/* Most runner threads of one worker (spec threads). */
#define MS__WORKER_THREADS_MAX 64

/* How many batches a worker of this spec runs at once through be: 1 unless the spec says
 * thread_safe and the backend may be called concurrently; then spec threads, or when that is
 * 0 (null) the CPUs this process may run on, at most MS__WORKER_THREADS_MAX. */
int ms__worker_threads(const ms__spec *spec, const ms__backend_ops *be);

/* Finds the backend that serves spec (ms__backend_open for modelshare-worker; the Python
 * extension's opener gives its python backend). Same contract as ms__backend_open. */
typedef int (*ms__backend_opener)(const ms__spec *spec, const ms__backend_ops **out, char *err,
                                  size_t errlen);

/* The whole worker: parses argv (--tag, --spec, --log-level), takes fds 3, 4, 5 and 7 from the
 * daemon, loads the model through the backend that opener gives, tells the daemon it is ready,
 * serves until told to stop, and unloads. Returns the process's exit status (0, 1, or 2 for a
 * usage error). modelshare-worker's main() and `python -m modelshare.worker` both run it. */
int ms__worker_main(int argc, char **argv, ms__backend_opener opener);

/* Serves until the daemon goes away (control EOF) or a stop signal comes. Returns 0 on a normal
 * stop, or a negative MS_E_* code when the loop itself could not run (logged). */
int ms__worker_serve(ms__worker *w);

#endif
