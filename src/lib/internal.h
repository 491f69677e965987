/*
 * libmodelshare's internal types, shared between the library's files and nowhere else.
 *
 * Locking: a client has one lock for its control socket (one request at a time) and one for its
 * list of models. A model has one lock for its allocator, its live tensors and its rings; it is
 * not held while a request waits for its response, so several threads of one process can have
 * requests in flight on one handle (up to MS__RING_SLOTS per instance). The allocator's
 * bookkeeping lives in this process's private memory, never in the shared arena.
 */
#ifndef MS_LIB_INTERNAL_H
#define MS_LIB_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "modelshare.h"
#include "../common/records.h"
#include "../common/ring.h"
#include "../common/paths.h"
#include "../common/proto.h"
#include "../common/util.h"

/* Free blocks of an arena, sorted by offset, never adjacent (coalesced on free). */
typedef struct ms__free_block {
    uint64_t off, len;
    struct ms__free_block *next;
} ms__free_block;

typedef struct ms__alloc {
    int fd;            /* the arena memfd, for punching holes; not owned */
    uint64_t start;    /* MS__ARENA_HEADER */
    uint64_t end;      /* the arena's capacity */
    uint64_t retained; /* about how many free bytes are still resident (not punched) */
    ms__free_block *free;
} ms__alloc;

struct ms_tensor {
    ms_model *model;
    uint64_t off;  /* bytes from the start of the arena */
    uint64_t size; /* bytes reserved in the arena (>= nbytes, MS__ARENA_ALIGN multiple) */
    size_t nbytes;
    int dtype;
    int rank;
    int64_t shape[MS_MAX_RANK];
    struct ms_tensor *prev, *next; /* the model's live tensors */
};

/* One instance of the model as this handle sees it: the worker's door and our ring set for it. */
typedef struct ms__inst {
    ms__door *door;
    ms__ring *ring;
    uint32_t tail;     /* entries we published: ours, the shared copy is for the worker */
    uint64_t busy;     /* slots in use: bit i for slot i */
    uint64_t orphaned; /* slots whose request timed out, still owned by the worker */
    ms_tensor *orphan_out[MS__RING_SLOTS]; /* their output room, freed when the worker is done */
} ms__inst;

struct ms_model {
    ms_client *client;
    int64_t lease;
    char tag[MS__TAG_MAX + 1];
    int arena_fd;
    void *arena_base;
    uint64_t arena_capacity;
    ms__sig sig_in, sig_out;
    pthread_mutex_t lock;
    pthread_cond_t slot_free; /* a slot was freed: for threads waiting for one */
    ms__alloc alloc;
    ms_tensor *tensors;
    uint64_t next_req_id;
    int64_t timeout_ns; /* per request; 0: none (ms_set_timeout) */
    /* Outputs the signature does not size (python models): bytes per input row of the last
     * output, and the size of the last call's answer, so that retries for room are rare. */
    uint64_t out_per_row;
    uint64_t call_room;
    int ninst;
    ms__inst *inst;               /* ninst entries */
    unsigned next_inst;           /* where the search for the least busy instance starts */
    struct ms_model *prev, *next; /* the client's models */
};

struct ms_client {
    int fd;
    char socket_path[MS__SOCKET_PATH_MAX + 1];
    uint64_t serial; /* unique per client in this process, for ms_errmsg */
    int64_t daemon_pid;
    pthread_mutex_t lock; /* the control socket */
    int64_t next_id;
    bool lost;
    int64_t forked_from; /* the parent's pid when this is a copy that fork() made, else 0 */
    pthread_mutex_t models_lock;
    ms_model *models;
    struct ms_client *all_prev, *all_next; /* every client of the process (fork handling) */
};

/* ---- fork (client.c) ---- */

/* Adds a client to, or removes it from, the process's list. In a child that fork() made, every
 * listed client loses its copies of the daemon connection and the arena descriptors (so that the
 * parent's leases end when the parent does, whatever its children do) and answers
 * MS_E_DAEMON_LOST from then on; mappings stay, so that outputs read in place stay readable. */
void ms__lib_fork_track(ms_client *client);
void ms__lib_fork_untrack(ms_client *client);

/* ---- errors (client.c) ---- */

/* Records message for the calling thread's last failed call on client (NULL: ms_connect) and
 * returns code. */
int ms__lib_fail(const ms_client *client, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same with a message already formatted. */
int ms__lib_fail_msg(const ms_client *client, int code, const char *msg);
/* Empties the calling thread's message for client (NULL: ms_connect's), at the start of each
 * public call: ms_errmsg() is empty after a call that succeeded. */
void ms__lib_clear(const ms_client *client);
/* 0 when tag is valid (ms__tag_valid), else MS_E_INVAL with a message saying what a tag is. */
int ms__lib_check_tag(ms_client *client, const char *tag);

/* ---- control requests (client.c) ---- */

/* Sends req (adding "id"; req stays the caller's) with fds, waits for the reply. A reply with
 * "ok": false gives its code and message (recorded for ms_errmsg). On success *reply is the
 * reply (caller owns) and up to maxfds descriptors arrive in rfds (*rnfds). EOF or a broken
 * socket: MS_E_DAEMON_LOST, and the client stays lost. */
int ms__lib_call(ms_client *client, json_t *req, const int *fds, int nfds, json_t **reply,
                 int *rfds, int *rnfds, int maxfds);

/* ---- connecting (connect.c) ---- */

/* Connects to the daemon at path, starting it when none answers. *fd is the connected socket.
 * Errors: MS_E_NO_DAEMON, MS_E_PERMISSION, MS_E_INVAL, with the message in err. */
int ms__lib_connect(const char *path, int *fd, char *err, size_t errlen);

/* ---- specs (model.c) ---- */

/* Parses spec_json into a JSON object with "weights" made absolute. *out new reference.
 * MS_E_SPEC with a message when the text is not a JSON object. */
int ms__lib_spec_prepare(const char *spec_json, json_t **out, char *err, size_t errlen);

/* Ends a model handle already unlinked from its client: tells the daemon (unless the connection
 * is lost), unmaps the doors and the arena, frees every tensor and the handle. Returns 0 or
 * MS_E_DAEMON_LOST (message recorded). */
int ms__lib_model_end(ms_model *model);

/* ---- arena allocator (tensor.c) ---- */

int ms__alloc_init(ms__alloc *a, int fd, uint64_t start, uint64_t end);
void ms__alloc_destroy(ms__alloc *a);
/* First fit of size bytes (rounded up to MS__ARENA_ALIGN, at least MS__ARENA_ALIGN). Returns 0
 * with *off and *got (bytes reserved), MS_E_TOO_LARGE when no free block is large enough, or
 * MS_E_NOMEM. */
int ms__alloc_get(ms__alloc *a, uint64_t size, uint64_t *off, uint64_t *got);
/* Returns [off, off + len) to the free list, coalescing; punches a hole when 1 MiB or more. */
void ms__alloc_put(ms__alloc *a, uint64_t off, uint64_t len);
/* Largest free block, for messages. */
uint64_t ms__alloc_largest(const ms__alloc *a);

/* Makes a tensor of the model with nbytes of room (model lock held). Shape is set by the caller.
 * Errors: MS_E_TOO_LARGE (message recorded), MS_E_NOMEM. */
int ms__tensor_new_locked(ms_model *model, uint64_t nbytes, ms_tensor **out);
/* Frees a tensor (model lock held). */
void ms__tensor_free_locked(ms_tensor *t);
/* Gives back the tail of a tensor's room beyond keep bytes (model lock held). */
void ms__tensor_shrink_locked(ms_tensor *t, uint64_t keep);

/* ---- the data plane (exchange.c) ---- */

/* A request in flight: which instance and slot it occupies. */
typedef struct ms__ticket {
    unsigned inst, slot;
    uint64_t id;
    int64_t deadline_ns;
} ms__ticket;

/* Publishes req (its id and deadline are filled in here) in a free slot of the least busy
 * instance and rings that worker's door (model lock held; it is released while waiting for a
 * free slot). Errors: MS_E_WORKER_LOST / MS_E_UNLOADED (message recorded). */
int ms__submit(ms_model *model, ms__req *req, ms__ticket *tk);
/* Waits for the response to tk without the model lock: spins a bounded time, then sleeps on the
 * slot, looking every 100 ms whether the worker or the daemon is gone. Then, with the lock held
 * again, copies the decoded response to *resp and frees the slot. On MS_E_TIMEOUT the slot and
 * out (the request's output room) stay the worker's until it completes: they are freed then.
 * Errors: MS_E_TIMEOUT, MS_E_WORKER_LOST, MS_E_UNLOADED, MS_E_DAEMON_LOST, MS_E_PROTOCOL
 * (message recorded). The response's own status is left for the caller. Returns with the model
 * lock held. */
int ms__await(ms_model *model, const ms__ticket *tk, ms_tensor *out, ms__resp *resp);
/* Frees the slots of timed-out requests that the worker has completed since (model lock held). */
void ms__reap_orphans(ms_model *model);

#endif
