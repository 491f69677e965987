/* The protocol layer's internals: one client connection and its pending requests, shared by
 * conn.c, waiters.c, requests.c and status.c (server.c sees protocol.h only). Calls go one way:
 * requests.c uses waiters.c and status.c, which use conn.c. */
#ifndef MS_DAEMON_CONN_H
#define MS_DAEMON_CONN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "../common/arena.h"
#include "../common/proto.h"
#include "protocol.h"

/* What a pending request waits for. */
enum { MS__OP_NONE = 0, MS__OP_ACQUIRE, MS__OP_LOAD, MS__OP_UNLOAD, MS__OP_SWAP };

/* Requests of one connection pending at once, at most: past it, the connection's next requests
 * wait in its socket until one ends (backpressure: nothing is refused or dropped). */
#define MS__CONN_PENDING_MAX 16

/* One request that waits for its model (an acquire or load for a load, an unload, a swap). */
typedef struct ms__pend {
    int op;                /* MS__OP_* */
    uint64_t seq;          /* unique in its connection, for ms__conn_pend_find */
    json_t *id;            /* owned reference */
    ms__model *model;      /* what it waits for */
    bool waits;            /* counted in model's waiters (acquire, load) until it ends or dies */
    int arena_fd;          /* owned, -1 when none */
    ms__arena_header *hdr; /* owned mapping, NULL when none */
    bool spec;             /* the request carried a spec (may start a fresh load) */
    int64_t deadline_ns;   /* registry clock; 0: none. An acquire's "timeout_ms": past it, it fails
                            * with MS_E_TIMEOUT (ms__proto_timers) */
    TAILQ_ENTRY(ms__pend) link; /* in its connection's pends, oldest first */
} ms__pend;

struct ms__conn {
    ms__evsrc ev;
    int fd; /* owned */
    pid_t pid;
    ms__proto *proto; /* not owned */
    ms__reader rd;
    ms__writer wr;      /* replies not yet written (at most MS__CONN_OUTQ_MAX bytes) */
    uint32_t watched;   /* the epoll events asked for now */
    int64_t partial_ns; /* since when part of a frame waits in rd (registry clock); 0: none */
    ms__client *client; /* registry record; its user field points back here */
    bool hello;
    bool dead;   /* to be freed at the next sweep */
    bool resume; /* a pending request ended: read its next requests */
    bool more;   /* served a request this turn: more may be buffered (ms__proto_serve_more) */
    /* The pending requests (owned), at most MS__CONN_PENDING_MAX; answered in any order, each
     * reply with its request's id. */
    TAILQ_HEAD(, ms__pend) pends;
    int npend;
    uint64_t pend_seq; /* the last ms__pend seq given */
};
/* Replies queued for a client that does not read them, at most (a reply always fits an empty
 * queue): beyond, the client is dropped. */
#define MS__CONN_OUTQ_MAX ((size_t)1 << 20)

/* ---- conn.c ---- */
/* Queues msg (stolen) for k with copies of the descriptors (not taken) and writes what the socket
 * takes now; the rest goes when k's socket is writable. Never waits. A client whose queue would
 * pass MS__CONN_OUTQ_MAX, or whose socket broke, is dropped. Returns 0 or the error. */
int ms__conn_send(ms__conn *k, json_t *msg, const int *fds, int nfds);
/* k's socket is writable: writes what it takes of k's queue. */
void ms__conn_flush(ms__conn *k);
/* Asks epoll for the events k needs now: input unless MS__CONN_PENDING_MAX requests are
 * pending, output while replies are queued, always a hang-up. */
void ms__conn_rewatch(ms__conn *k);
/* An error reply (code, message) to request id. */
int ms__conn_error(ms__conn *k, json_t *id, int code, const char *message);
/* Marks k to be closed at the next sweep; its requests no longer wait for their models. */
void ms__conn_kill(ms__conn *k, const char *why);
/* Whether k may take one more request now (fewer than MS__CONN_PENDING_MAX pending). */
bool ms__conn_has_room(const ms__conn *k);
/* k's request id waits for m (op MS__OP_*); takes a reference to id and ownership of arena_fd
 * and hdr. Returns the pending record (k's), or NULL after an error reply (out of memory; fd and
 * hdr closed). k's next requests are read meanwhile, up to MS__CONN_PENDING_MAX pending. */
ms__pend *ms__conn_set_pending(ms__proto *p, ms__conn *k, int op, json_t *id, ms__model *m,
                               int arena_fd, ms__arena_header *hdr, bool with_spec);
/* k's pending record with seq, NULL when it has ended. */
ms__pend *ms__conn_pend_find(ms__conn *k, uint64_t seq);
/* Ends k's pending request q (what it still owns is closed, q freed); k's next requests are read
 * again at the next sweep. */
void ms__conn_resume(ms__proto *p, ms__conn *k, ms__pend *q);
/* Releases k's leases (telling their workers), closes and frees k. */
void ms__conn_free(ms__proto *p, ms__conn *k);

/* ---- waiters.c ---- */
/* Leases ready m to k and replies (id) with the lease and the workers' doors; takes arena_fd
 * and hdr. On failure k gets the error. */
void ms__conn_grant(ms__proto *p, ms__conn *k, json_t *id, ms__model *m, int arena_fd,
                    ms__arena_header *hdr);
/* Every acquire, load and swap waiting for m, of every connection, gets the error. */
void ms__waiters_fail(ms__proto *p, ms__model *m, int code, const char *message);

/* ---- status.c ---- */
/* The status document (proto.h, docs/ARCHITECTURE.md, "Contracts") as uid viewer may see it: in
 * group mode a member other than root and the service sees only the models it may use
 * (ms__owner_may_use), and the worker pids of its own only. NULL when out of memory. */
json_t *ms__status_json(ms__proto *p, uid_t viewer);

#endif
