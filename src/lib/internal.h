/*
 * libmodelshare's internal types, shared between the library's files and nowhere else. What each
 * file offers the others is in its own header; the files call each other in one direction only:
 *
 *   errors.c    per-thread error messages, client serials, argument checks
 *   fork.c      the process's clients, made harmless in a child of fork()   calls: call
 *   connect.c   the daemon's socket, starting the daemon when none answers
 *   call.c      control requests to the daemon and their replies,   calls: errors, wait
 *               several threads' at once
 *   alloc.c     the arena allocator                                 calls: -
 *   tensor.c    tensors in a model's arena                          calls: errors, alloc
 *   link.c      another model's arena linked to a model's workers   calls: errors, call
 *   view.c      ms_tensor_view: bytes of a live tensor, no copy     calls: errors, tensor, link
 *   wait.c      a thread's wait options: its calls' own deadline,   calls: -
 *               a check that cancels a wait (Ctrl-C, asyncio)
 *   exchange.c  one request through a ring slot: submit, await      calls: errors, tensor, wait
 *   infer.c     ms_infer, ms_call, ms__infer_flags: output room,    calls: errors, tensor, exchange
 *               exchange, response
 *   multi.c     ms_infer_n: a manifest of named tensors, the    calls: errors, tensor, infer
 *               answer's manifest checked; ms_outputs_*, ms_text_*
 *   model.c     model handles: acquire, release, signature          calls: errors, call, alloc,
 *                                                                          tensor, link, wait
 *   client.c    clients: connect, disconnect, status, load, unload  calls: errors, call, connect,
 *                                                                          fork, model
 *
 * Locking: a client's control requests (call.c) run concurrently: its lock guards the state of
 * its requests in flight and is never held while a thread blocks on the socket; a send lock
 * keeps each request's bytes together; one waiting thread at a time reads the socket and hands
 * the others their replies (leader/follower, no thread of our own). A client has one more lock
 * for its list of models. A model has one lock for its allocator, its live tensors and its
 * rings; it is not held while a request waits for its response, so several threads of one
 * process can have
 * requests in flight on one handle (up to MS__RING_SLOTS per instance). The allocator's
 * bookkeeping lives in this process's private memory, never in the shared arena.
 */
#ifndef MS_LIB_INTERNAL_H
#define MS_LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "modelshare.h"
#include "alloc.h"
#include "../common/paths.h"
#include "../common/proto.h"
#include "../common/records.h"
#include "../common/signames.h"
#include "../common/ring.h"
#include "../common/util.h"

struct ms_tensor {
    ms_model *model; /* not owned: the tensor belongs to it */
    uint64_t off;    /* bytes from the start of the arena */
    uint64_t size;   /* bytes reserved in the arena (>= nbytes, MS__ARENA_ALIGN multiple) */
    size_t nbytes;
    int dtype;
    int rank;
    int64_t shape[MS_MAX_RANK];
    bool view; /* ms_tensor_view: bytes of another tensor, no room of its own */
    /* A view of bytes in another model's arena (a pipeline, link.c): arena is its linked arena's
     * index for this model's workers (records.h in_arena), src_base that arena's mapping in this
     * process and src_lease its model's lease. arena 0, src_base NULL: this model's own. */
    int arena;
    void *src_base;
    int64_t src_lease;
    LIST_ENTRY(ms_tensor) link; /* in the model's live tensors */
    /* A list of strings (ms_text_from): MS_TEXT_UTF8 or MS_TEXT_BYTES and its items; 0 else. */
    int text;
    uint64_t items;
    /* ms_infer_n's outputs: the decoded output manifest (offsets into the arena), owned. */
    struct ms__manifest *answer;
    /* Requests that timed out with this tensor among their inputs while their worker may still
     * read or write it (exchange.c's orphans): its room is not given back before they are done.
     * dropped: its owner freed it meanwhile, and the last of them frees it. Under the model lock.
     */
    int holds;
    bool dropped;
};

/* A client's control requests in flight at once, at most (its threads' and abandoned ones):
 * fewer than the daemon's reader takes descriptors for (two per request at most). */
#define MS__CALLS_MAX 32

/* The most inputs one request holds in the arena: its tensors and their manifest. */
#define MS__HELD_MAX (MS_MAX_TENSORS + 1)

/* One instance of the model as this handle sees it: the worker's door and our ring set for it. */
typedef struct ms__inst {
    ms__door *door;    /* mapped, owned */
    ms__ring *ring;    /* in the arena */
    uint32_t tail;     /* entries we published: ours, the shared copy is for the worker */
    uint64_t busy;     /* slots in use: bit i for slot i */
    uint64_t orphaned; /* slots whose request timed out, still owned by the worker */
    ms_tensor *orphan_out[MS__RING_SLOTS]; /* their output room, freed when the worker is done */
    /* Their inputs with room in the arena (a copy made for the call, a manifest): held (holds)
     * until the worker is done, NULL-ended when fewer than MS__HELD_MAX. */
    ms_tensor *orphan_in[MS__RING_SLOTS][MS__HELD_MAX];
    uint32_t slot_gen[MS__RING_SLOTS]; /* the door's gen each slot was submitted in */
} ms__inst;

struct ms_model {
    ms_client *client; /* not owned: the model belongs to it */
    int64_t lease;
    char tag[MS__TAG_MAX + 1];
    int arena_fd; /* owned; -1 in a child of fork() */
    void *arena_base;
    uint64_t arena_capacity;
    ms__sig sig_in, sig_out;
    /* The named inputs and outputs the model says (signames.h); counts -1 when it does not. */
    ms__sig_entry sig_ins[MS__MF_MAX], sig_outs[MS__MF_MAX];
    int nsig_in, nsig_out;
    pthread_mutex_t lock;
    pthread_cond_t slot_free; /* a slot was freed: for threads waiting for one */
    ms__alloc alloc;
    LIST_HEAD(, ms_tensor) tensors; /* live tensors, owned */
    uint64_t next_req_id;
    int64_t timeout_ns; /* per request; 0: none (ms_set_timeout) */
    /* Outputs the signature does not size (python models): bytes per input row of the last
     * output, and the size of the last call's answer, so that retries for room are rare. */
    uint64_t out_per_row;
    uint64_t call_room;
    uint64_t multi_room; /* the last ms_infer_n answer's size */
    /* Arenas of other models of this client that this model's workers map (link.c): the lease
     * of linked arena k at links[k - 1], 0 where none. Under lock. */
    int64_t links[MS__ARENA_LINKS];
    int ninst;
    ms__inst *inst;     /* ninst entries, owned */
    unsigned next_inst; /* where the search for the least busy instance starts */
    /* How long the workers took to answer, submit to done as they stamp it (an average of the
     * recent requests, ns; 0 before the first): [1] for requests that had to wake a sleeping
     * worker, [0] for the others. It sizes the spin before sleeping (exchange.c). */
    _Atomic int64_t answer_ns[2];
    LIST_ENTRY(ms_model) link; /* in the client's models */
};

struct ms_client {
    int fd; /* the control socket, owned; -1 in a child of fork() */
    char socket_path[MS__SOCKET_PATH_MAX + 1];
    uint64_t serial; /* unique per client in this process, for ms_errmsg */
    int64_t daemon_pid;
    /* Control requests (call.c). lock guards what follows it up to forked_from; it is never
     * held while a thread blocks on the socket. */
    pthread_mutex_t lock;
    pthread_mutex_t send_lock; /* held while one request is written to the socket */
    pthread_cond_t changed;    /* a reply was handed over, the reader left, or room came */
    bool reading;              /* a thread reads the socket now; the others wait on changed */
    int64_t next_id;
    _Atomic bool lost; /* the connection broke: set by call.c, exchange.c and fork.c */
    int lost_code;     /* why, when call.c saw it break (0: not seen there) */
    char lost_why[MS__ERRLEN];
    /* The requests in flight whose threads wait (on their stacks, not owned), and the ids of
     * requests whose wait was interrupted (Ctrl-C, a cancelled task): their replies are dropped
     * when they come, a lease they grant given back. Together at most MS__CALLS_MAX: past it, a
     * new request waits for room. */
    struct ms__call *calls;
    int ncalls;
    int64_t abandoned[MS__CALLS_MAX];
    int nabandoned;
    int64_t forked_from; /* the parent's pid when this is a copy that fork() made, else 0 */
    pthread_mutex_t models_lock;
    LIST_HEAD(, ms_model) models; /* owned */
    LIST_ENTRY(ms_client) all;    /* every client of the process (fork.c) */
};

#endif
