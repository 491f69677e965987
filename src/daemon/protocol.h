/*
 * The client protocol (proto.h) on the daemon's side: connections, their requests, and the
 * answers to the requests that wait for a model. It sits on the model life cycle (models.h) and
 * under the event loop (server.c), which calls only what is declared here.
 *
 * Files: conn.c (a connection: open, send, pending request, close), waiters.c (the answers when
 * a model settles), requests.c (the requests, and a connection's events), status.c.
 */
#ifndef MS_DAEMON_PROTOCOL_H
#define MS_DAEMON_PROTOCOL_H

#include <stdint.h>

#include "access.h"
#include "models.h"

typedef struct ms__conn ms__conn;

typedef struct ms__proto {
    ms__models *models;      /* not owned */
    int epfd;                /* connections are watched here (not owned) */
    const char *socket_path; /* for the status document (not owned) */
    int64_t start_ns;        /* the daemon's start, for the status document */
    int64_t read_timeout_ns; /* a client that leaves a frame half sent this long is dropped */
    ms__access access;       /* who may connect: the daemon's user, and its --group */
} ms__proto;

/* A client that sends part of a frame and no more for this long is dropped (default, seconds;
 * $MODELSHARE_READ_TIMEOUT overrides it). */
#define MS__READ_TIMEOUT_S 10.0

/* Descriptors modelshared keeps free below its RLIMIT_NOFILE for the clients it has: a new
 * connection that would leave fewer is refused (MS_E_LIMIT, naming the limit), an acquire that
 * would leave fewer than half of them too. Each lease holds one (its arena), each worker about
 * five (pidfd, control socket, stderr, door, stats page), a load a few more while it spawns. */
#define MS__DAEMON_FD_RESERVE 16

/* Nothing is allocated: p only points to what it is given. Reads $MODELSHARE_READ_TIMEOUT.
 * Admits the daemon's own user; the server sets p->access.has_group and gid for --group. */
void ms__proto_init(ms__proto *p, ms__models *models, int epfd, const char *socket_path,
                    int64_t start_ns);
/* A connection accepted on fd (close-on-exec, non-blocking), which this takes: the peer is
 * checked (p->access: another user outside the group is refused with MS_E_PERMISSION; a
 * connection that leaves fewer than MS__DAEMON_FD_RESERVE descriptors free, with MS_E_LIMIT), the
 * client recorded and fd watched (MS__EV_CONN). */
void ms__conn_open(ms__proto *p, int fd);
/* fd, a connection accepted with the spare descriptor when none was left, refused: MS_E_LIMIT
 * naming modelshared's RLIMIT_NOFILE (logged at most once a second), fd closed. */
void ms__conn_refuse_nofile(int fd);
/* epoll events on k: reads its requests and serves them. */
void ms__conn_on_event(ms__proto *p, ms__conn *k, uint32_t events);
/* Drops the clients that left a frame half sent for read_timeout_ns. Returns when to look again
 * (registry clock; INT64_MAX: not before something else happens). */
int64_t ms__proto_timers(ms__proto *p, int64_t now);
/* Frees the dead connections and serves the ones whose pending request ended. Call once a turn
 * of the loop, and after anything that may have ended pending requests. */
void ms__proto_sweep(ms__proto *p);
/* Serves one more buffered request of each connection that had one served this turn (a
 * connection is served one request a turn, so that none holds the loop). Returns how many may
 * still have more: the loop should not sleep while it is not 0. */
int ms__proto_serve_more(ms__proto *p);
/* The daemon stops: every connection is closed and freed (its leases released). */
void ms__proto_close_all(ms__proto *p);
/* Frees every connection at once. */
void ms__proto_free(ms__proto *p);
/* The model life cycle's ms__settled_fn, ctx the ms__proto: answers whoever waits for m. */
void ms__proto_settled(void *ctx, ms__model *m, int what, int code, const char *message);

#endif
