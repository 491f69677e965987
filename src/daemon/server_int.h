/* The server's internals shared by server.c (loop, connections), requests.c (the client
 * protocol), models.c (the life of a model) and status.c. */
#ifndef MS_DAEMON_SERVER_INT_H
#define MS_DAEMON_SERVER_INT_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/arena.h"
#include "../common/proto.h"
#include "budget.h"
#include "daemon.h"
#include "registry.h"
#include "server.h"
#include "supervisor.h"

/* What a connection waits for (one request at a time). */
enum { MS__OP_NONE = 0, MS__OP_ACQUIRE, MS__OP_LOAD, MS__OP_UNLOAD };

typedef struct conn {
    ms__evsrc ev;
    int fd;
    pid_t pid;
    ms__reader rd;
    ms__client *client; /* registry record; its user field points back here */
    bool hello;
    bool dead;   /* to be freed at the end of the loop's turn */
    bool resume; /* its pending request ended: read its next requests */
    /* The pending request. */
    int pending;
    json_t *p_id;
    ms__model *p_model;
    int p_arena_fd; /* owned while pending, -1 when none */
    ms__arena_header *p_hdr;
    bool p_spec; /* the request carried a spec (may start a fresh load) */
} conn;

struct ms__server {
    char socket_path[PATH_MAX];
    int lock_fd, listen_fd, epfd, sig_fd, spare_fd;
    bool sock_bound; /* the socket file is ours: sock_dev and sock_ino identify it */
    dev_t sock_dev;
    ino_t sock_ino;
    double idle_exit_s;
    bool idle_tracking;
    int64_t idle_since_ns;
    int64_t start_ns;
    bool stopping;
    ms__registry reg;
    ms__supervisor sup;
    ms__budgets budgets;
    int64_t next_measure_ns; /* next periodic measurement of loaded models */
    ms__evsrc ev_listen, ev_signal;
};

/* server.c */
int ms__conn_send(ms__server *s, conn *k, json_t *msg, const int *fds, int nfds); /* steals msg */
int ms__conn_error(ms__server *s, conn *k, json_t *id, int code, const char *message);
void ms__conn_kill(ms__server *s, conn *k, const char *why);
/* k waits for m; takes ownership of arena_fd and hdr. */
void ms__conn_set_pending(ms__server *s, conn *k, int op, json_t *id, ms__model *m, int arena_fd,
                          ms__arena_header *hdr, bool with_spec);
void ms__conn_resume(ms__server *s, conn *k);
void ms__detach_worker_lease(ms__server *s, ms__lease *l);

/* requests.c: serves k's buffered requests until one is pending or none is left. */
void ms__serve_requests(ms__server *s, conn *k);
/* Leases m to k: attaches the arena to every worker of m and replies (id) with the lease and the
 * workers' doors. Takes arena_fd and hdr. */
void ms__attach(ms__server *s, conn *k, json_t *id, ms__model *m, int arena_fd,
                ms__arena_header *hdr);

/* models.c */
/* Starts a load of m (loads + 1): admission to its device's budget (admission.c), then its
 * instances workers. m may wait for memory (state waiting) instead. On failure m is failed (and
 * its waiters answered) and the code is returned. */
int ms__start_load(ms__server *s, ms__model *m);
/* Spawns m's workers (m admitted, state loading). */
int ms__spawn_workers(ms__server *s, ms__model *m);
/* m failed: its workers are stopped, those waiting for it get code and message. */
void ms__model_fail(ms__server *s, ms__model *m, int code, const char *message);
/* Stops m's workers; once they are reaped the model is removed, or loaded again when acquires
 * with a spec wait for it. m may be gone when this returns. */
void ms__begin_unload(ms__server *s, ms__model *m);
void ms__on_worker_ready(ms__server *s, ms__wproc *w);
void ms__on_worker_failed(ms__server *s, ms__wproc *w, int code, const char *message);
/* The worker was reaped (status from waitpid); frees w. */
void ms__on_worker_exit(ms__server *s, ms__wproc *w, int status);

/* admission.c: memory budgets. */
/* Reads the budgets (--memory text, NULL for the defaults) and the host's total memory. */
int ms__admission_init(ms__server *s, const char *memory, char *err, size_t errlen);
/* m (state loading, no worker) asks for its estimate on its device: starts its workers, evicts
 * idle models and waits, waits, or fails at once when m is larger than the whole budget. */
int ms__admit(ms__server *s, ms__model *m);
/* Re-checks every waiting model (after leases dropped, models unloaded, or time passed): admits,
 * evicts, times out with MS_E_NO_MEMORY, or forgets a load nobody waits for any more. Returns the
 * earliest load_timeout deadline still running, or INT64_MAX. */
int64_t ms__admission_run(ms__server *s);
/* The budget record of m's device (its total memory looked up when still unknown). */
ms__budget_dev *ms__model_budget(ms__server *s, const ms__model *m);
/* Bytes charged on device dev by the models that hold memory there. */
uint64_t ms__budget_used(ms__server *s, const ms__budget_dev *dev);

/* measure.c: measured memory and verified release. */
/* Replaces m's charge with what its workers hold now (PSS on the host, NVML on a GPU). */
void ms__measure_model(ms__server *s, ms__model *m);
/* Measures every loaded model when the period has passed; returns the next time to. */
int64_t ms__measure_due(ms__server *s, int64_t now);
/* w of model m was reaped: confirms its process is gone (and, on a GPU, that NVML no longer
 * lists it), logging what it returned. */
void ms__verify_release(ms__server *s, const ms__model *m, const ms__wproc *w);

/* status.c */
json_t *ms__status_json(ms__server *s);

#endif
