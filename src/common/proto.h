/*
 * The control protocol: length-prefixed JSON messages over Unix stream sockets, with file
 * descriptors passed as SCM_RIGHTS ancillary data.
 *
 * Frame: 4-byte little-endian length N (1 <= N <= MS__FRAME_MAX), then N bytes of UTF-8 JSON, one
 * object. A message that carries descriptors says how many in its "nfds" field; the descriptors
 * travel as SCM_RIGHTS attached to the frame's bytes, and the receiver takes that many from the
 * queue of descriptors received on the connection, in order.
 *
 * Two links use it:
 *
 * 1. client <-> daemon (the socket at ms__socket_path_default()). Each request has "op" and "id"
 *    (an integer chosen by the client); each reply echoes "id" and has "ok": true, or "ok": false
 *    with "code" (an MS_E_* value) and "error" (the message for ms_errmsg()). The daemon reads a
 *    connection's requests in order and answers each as soon as it can: a request that waits for
 *    a model (an acquire or load during a load, an unload, a swap) is answered later, and the
 *    connection's next requests are read and answered meanwhile, so replies may come in another
 *    order than their requests (a client matches them by "id"; ids of requests in flight at once
 *    must differ). Up to MS__CONN_PENDING_MAX (16, src/daemon/conn.h) such requests of one
 *    connection wait at once; past it the daemon reads nothing more from that connection until
 *    one is answered (the client's writes wait: nothing is refused). A client that sends one
 *    request at a time sees no difference.
 *
 *    {"op":"hello","id":1,"version":2}           -> {"ok":true,"version":2,"daemon_pid":123}
 *        Must be the first request; version is MS_PROTOCOL_VERSION (modelshare/version.h, 4
 *        now). A different version -> MS_E_VERSION and the daemon closes.
 *    {"op":"acquire","id":2,"tag":"t","spec":{...}|null,"nfds":1}   + fd: the client's arena memfd
 *        -> {"ok":true,"lease":7,"signature":SIG,"spec":{...canonical...},"nfds":2N} + fds: the
 *           door of each of the model's N workers (ring.h), in instance order, each as two
 *           descriptors: its page 0 opened read-only, then its bell page. Requests for
 *           instance i go in ring set i of the arena. The reply comes when the model is ready
 *           (or failed to load). An optional "timeout_ms" (0..86400000, 0 or null: none) bounds
 *           the wait: past it, MS_E_TIMEOUT, and the load goes on.
 *    {"op":"release","id":3,"lease":7}          -> {"ok":true}
 *    {"op":"load","id":4,"tag":"t","spec":{...}} -> {"ok":true}  (loaded, no lease kept)
 *    {"op":"unload","id":5,"tag":"t","force":false} -> {"ok":true}  (reply once the worker is gone)
 *    {"op":"swap","id":7,"tag":"t","spec":{"weights":"/v2.st","version":"2"},"drain_first":false}
 *        -> {"ok":true,"spec":{...canonical...},"version":"2"|null} once the new version serves
 *           every instance (src/daemon/swap.c); "spec" holds only the fields that change.
 *    A constructor in a memfd (common/ctorfd.h): a python spec whose "python" object has
 *    "constructor_size" and "constructor_sha256" (a pickle too large for the inline
 *    "constructor", up to 1 GiB) comes with one more descriptor, the memfd holding the pickle,
 *    sealed against write, shrink and grow: acquire "nfds":2 (the arena, then the memfd), load
 *    and swap "nfds":1. The daemon checks it (ms__ctorfd_check: MS_E_SPEC naming what was
 *    expected), keeps it with the model whose spec the request made (a request for a model that
 *    has its spec already: closed at once) and gives every worker of that spec a copy as fd 6.
 *    A memfd without such a spec, or such a spec without one, is MS_E_SPEC. A swap whose new
 *    spec keeps the loaded constructor (the same hash) may come without it.
 *    {"op":"link","id":8,"lease":7,"from":9}   -> {"ok":true,"arena":K}
 *        The workers of lease 7's model map lease 9's arena too (both leases of this connection;
 *        src/daemon/links.c), as linked arena K (1..8, records.h MS__ARENA_LINKS): requests of
 *        lease 7 may take their input there (in_arena K, in_link 9). The same K when linked
 *        already. Kept across restarts and swaps; dropped when lease 9 is released. Errors:
 *        MS_E_INVAL (not this connection's leases, the same lease), MS_E_UNLOADED, MS_E_LIMIT.
 *    {"op":"status","id":6}                     -> {"ok":true,"status":STATUS}
 *        STATUS is what `modelshare status --json` prints (see docs/ARCHITECTURE.md, "Contracts"):
 *        {"daemon_pid":..,"socket":"..","uptime_s":..,"clients":N,
 *         "models":[{"tag","backend","state","device","memory_bytes","leases","worker_pids":[..],
 *                    "loads","requests","batches","rows","busy_s","worker_requests":[..],
 *                    "spec":{..},"idle_s"?,"error"?, and budget fields (status.c)}],
 *         "budgets":{"host":{"budget_bytes":..,"used_bytes":..}}}
 *
 *    SIG (a model's signature) is {"input":{"dtype":"float32","shape":[-1,1024]},
 *                                  "output":{"dtype":"float32","shape":[-1,1000]}},
 *    and for a python model that names its tensors (an ONNX Runtime session, a Keras model) also
 *    "inputs":[{"name":"input_ids","dtype":"int64","shape":[-1,-1]},..] and "outputs":[..]
 *    (signames.h).
 *
 * 2. daemon <-> worker (a socketpair; the worker has it as file descriptor 3, its stats page as
 *    4 and its door as 5 (page 0, read-write) and 7 (bell page)).
 *    worker -> daemon:
 *    {"op":"ready","memory_bytes":N,"signature":SIG}
 *    {"op":"failed","code":-10,"error":"weights file ...: not a safetensors file (...)"}
 *    {"op":"drained","heads":[[lease,head],...]}  after "drain": the entries it took of each
 *                                         lease's ring; it then exits
 *    daemon -> worker:
 *    {"op":"attach","lease":7,"ring":i,"nfds":1}  + fd: the client's arena memfd; the worker
 *                                         serves ring set i in it (i: its instance number);
 *                                         "resume":true starts at the ring's tail (a restart),
 *                                         "head":H at entry H (a swap)
 *    {"op":"detach","lease":7}            the worker unmaps that arena (and the ones linked to it)
 *    {"op":"link","lease":7,"arena":K,"from":9,"nfds":1}  + fd: lease 9's arena, which requests
 *                                         of lease 7 may read their input in (in_arena K,
 *                                         in_link 9); after lease 7's attach
 *    {"op":"unlink","lease":7,"arena":K}  the worker unmaps linked arena K of lease 7 (between
 *                                         batches, once no runner thread holds a request of
 *                                         lease 7); sent before the daemon answers the release
 *                                         of lease 9
 *    {"op":"open","keep_inflight":bool}   after a restart's or swap's attaches: the door opens
 *    {"op":"drain"}                       a swap: take nothing more, say "drained", exit
 *    {"op":"takeover","nfds":2}           + fds: the instance's door (page 0, bell page), which a
 *                                         swap's new worker serves from now on (before its
 *                                         attaches)
 *    The worker's counters live in a shared page the daemon made (stats.h), not in messages.
 *    The daemon stops a worker with SIGTERM (SIGKILL after a grace period); a worker whose
 *    daemon dies gets SIGKILL (parent-death signal).
 */
#ifndef MS_PROTO_H
#define MS_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Largest frame body, and most descriptors in one message. */
#define MS__FRAME_MAX (1u << 20)
/* An acquire reply carries two descriptors per instance (MS__INSTANCES_MAX): its door, read-only,
 * and its bell page (ring.h). */
#define MS__FDS_MAX 128

/* Pure decoder, used by every reader and fuzzed directly: looks at buf[0..len) and
 *  - returns 0 and sets *consumed to 0 when more bytes are needed for a whole frame,
 *  - returns 0, sets *msg (a JSON object, caller owns a reference) and *consumed (4 + N) when a
 *    whole frame is there,
 *  - returns MS_E_TOO_LARGE (length over MS__FRAME_MAX or zero) or MS_E_PROTOCOL (not JSON, not
 *    an object) with a message in err.
 */
int ms__frame_decode(const uint8_t *buf, size_t len, json_t **msg, size_t *consumed, char *err,
                     size_t errlen);

/* Encodes msg as a frame into a new malloc'd buffer (*out, *outlen; caller frees). */
int ms__frame_encode(const json_t *msg, uint8_t **out, size_t *outlen, char *err, size_t errlen);

/* Sends msg (plus nfds descriptors, attached to the first byte) on a blocking or non-blocking
 * stream socket. On a non-blocking socket it waits with poll() up to timeout_ms for room (-1:
 * forever). Does not take ownership of msg or the fds. MSG_NOSIGNAL: a closed peer is an error,
 * not a SIGPIPE. Errors: MS_E_IO (peer gone, timeout), MS_E_TOO_LARGE. */
int ms__msg_send(int fd, const json_t *msg, const int *fds, int nfds, int timeout_ms, char *err,
                 size_t errlen);

/* Blocking receive of one message on a blocking stream socket: *msg (caller owns), and up to
 * maxfds descriptors in fds (*nfds set; O_CLOEXEC). Descriptors beyond what the message's "nfds"
 * declares are closed. timeout_ms -1 waits forever. Errors: MS_E_IO (EOF: message "connection
 * closed"), MS_E_TIMEOUT, MS_E_PROTOCOL, MS_E_TOO_LARGE; MS_E_LIMIT with *msg set (the caller
 * owns it) and no descriptors: they were lost, this process being at its RLIMIT_NOFILE (err
 * names it), and the stream is still whole. */
int ms__msg_recv(int fd, json_t **msg, int *fds, int *nfds, int maxfds, int timeout_ms, char *err,
                 size_t errlen);

/* Incremental reader for non-blocking sockets (the daemon). */
typedef struct ms__reader {
    uint8_t *buf;
    size_t len, cap;
    int fds[MS__FDS_MAX * 2];
    int nfds;
    int eof;
    size_t lost_at[8]; /* where frames begin whose descriptors were lost (RLIMIT_NOFILE) */
    int nlost;
} ms__reader;

void ms__reader_init(ms__reader *r);
/* Closes queued descriptors, frees the buffer. */
void ms__reader_free(ms__reader *r);
/* Reads what the socket has (recvmsg until EAGAIN), queueing descriptors. Returns 0 (r->eof set
 * on EOF), MS_E_IO, MS_E_TOO_LARGE (buffer would exceed a frame), or MS_E_LIMIT (too many queued
 * descriptors). */
int ms__reader_fill(ms__reader *r, int fd, char *err, size_t errlen);
/* Takes the next whole message if there is one: returns 0 with *msg NULL when none is complete
 * yet; with *msg set, also moves the message's declared "nfds" descriptors into fds (*nfds), and
 * fails with MS_E_PROTOCOL if fewer were received than declared or nfds > MS__FDS_MAX.
 * MS_E_LIMIT with *msg set (the caller owns it) and *nfds 0: the message's descriptors were
 * lost, this process being at its limit of open files (err names RLIMIT_NOFILE); the stream is
 * whole, so the caller answers this one message with the error and goes on. */
int ms__reader_next(ms__reader *r, json_t **msg, int *fds, int *nfds, char *err, size_t errlen);

/* Outgoing frames of a non-blocking stream socket, written as fast as the peer takes them and
 * never waited for (the daemon's replies). A frame keeps copies of its descriptors (owned) until
 * its first byte goes: they travel with that byte, as ms__reader and ms__msg_recv expect, and
 * frames are never joined in one send. */
typedef struct ms__wframe ms__wframe;
typedef struct ms__writer {
    ms__wframe *head, *tail; /* owned, oldest first */
    size_t bytes;            /* queued, not yet written */
    size_t nframes;          /* queued frames, the one being written included */
} ms__writer;

void ms__writer_init(ms__writer *w);
/* Drops what is queued (closing the descriptors' copies). NULL is a no-op. */
void ms__writer_free(ms__writer *w);
/* Queues msg (not taken) with copies of nfds descriptors (not taken; O_CLOEXEC copies). Errors:
 * MS_E_INVAL, MS_E_TOO_LARGE (over MS__FRAME_MAX), MS_E_NOMEM, MS_E_LIMIT (no descriptor left
 * for a copy); nothing is queued then. */
int ms__writer_push(ms__writer *w, const json_t *msg, const int *fds, int nfds, char *err,
                    size_t errlen);
/* Writes what the socket takes now, without blocking: 0 when all is written or the socket is
 * full (w->bytes says which), MS_E_IO when the peer is gone. */
int ms__writer_flush(ms__writer *w, int fd, char *err, size_t errlen);

/* Reply helpers: {"id":id,"ok":true} (caller adds fields) and
 * {"id":id,"ok":false,"code":code,"error":message}. Return new references. */
json_t *ms__reply_ok(json_t *id);
json_t *ms__reply_err(json_t *id, int code, const char *message);

/* Signature <-> JSON. */
typedef struct ms__sig {
    int dtype; /* ms_dtype, 0 when unknown */
    int rank;  /* 0 when unknown */
    int64_t shape[8];
} ms__sig;
json_t *ms__sig_to_json(const ms__sig *in, const ms__sig *out);
int ms__sig_from_json(const json_t *j, ms__sig *in, ms__sig *out, char *err, size_t errlen);
/* One side of it ({"dtype":..,"shape":[..]}; NULL or null: not known) into *s; which names it
 * in err. Errors: MS_E_PROTOCOL. */
int ms__sig_side_from(const json_t *o, const char *which, ms__sig *s, char *err, size_t errlen);

/* "an integer", "a string", ... for messages that say what came; "nothing" for NULL. Static. */
const char *ms__json_kind(const json_t *j);

#endif
