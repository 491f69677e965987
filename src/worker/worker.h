/* modelshare-worker's internal interface between main.c (start-up, load) and serve.c (the loop). */
#ifndef MS_WORKER_H
#define MS_WORKER_H

#include "../backends/backend.h"
#include "../common/stats.h"

/* The worker's fixed descriptors, set up by the daemon. */
#define MS__WORKER_CTRL_FD 3
#define MS__WORKER_STATS_FD 4

/* Most clients attached at once. */
#define MS__WORKER_CLIENTS_MAX 4096

typedef struct ms__worker {
    const char *tag;
    const ms__backend_ops *backend;
    void *state;      /* the backend's loaded model */
    ms__stats *stats; /* shared counters page; may be NULL */
    int ctrl_fd;      /* to the daemon */
    int signal_fd;    /* SIGTERM, SIGINT */
} ms__worker;

/* Serves until the daemon goes away (control EOF) or SIGTERM comes. Returns 0 on a normal stop,
 * or a negative MS_E_* code when the loop itself could not run (logged). */
int ms__worker_serve(ms__worker *w);

#endif
