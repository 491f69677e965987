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
/* Leases m to k and replies (id) with the lease and the channel. Takes arena_fd and hdr. */
void ms__attach(ms__server *s, conn *k, json_t *id, ms__model *m, int arena_fd,
                ms__arena_header *hdr);

/* models.c */
/* Starts a load of m (loads + 1, instances workers). On failure m is failed (and its waiters
 * answered) and the code is returned. */
int ms__start_load(ms__server *s, ms__model *m);
/* Stops m's workers; once they are reaped the model is removed, or loaded again when acquires
 * with a spec wait for it. m may be gone when this returns. */
void ms__begin_unload(ms__server *s, ms__model *m);
void ms__on_worker_ready(ms__server *s, ms__wproc *w);
void ms__on_worker_failed(ms__server *s, ms__wproc *w, int code, const char *message);
/* The worker was reaped (status from waitpid); frees w. */
void ms__on_worker_exit(ms__server *s, ms__wproc *w, int status);

/* status.c */
json_t *ms__status_json(ms__server *s);

#endif
