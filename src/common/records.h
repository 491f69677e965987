/*
 * The records of the data plane: a request (client -> worker) asks the worker to run its model on
 * a tensor in the client's arena; a response (worker -> client) says what came out. They travel
 * in the slots of the rings in shared memory (ring.h). Each side decodes what the other wrote
 * with the pure functions below before it uses any field.
 */
#ifndef MS_RECORDS_H
#define MS_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#define MS__REQ_MAGIC 0x4d535251u  /* "MSRQ" */
#define MS__RESP_MAGIC 0x4d535250u /* "MSRP" */

/* flags: a method call, not a tensor run. Its input is a uint8 tensor holding a pickled
 * (name, args, kwargs) and its output a uint8 tensor holding the pickled answer (python backend).
 * Calls are never batched. */
#define MS__REQ_CALL 1u
/* flags: the caller reads an answer that is not one array (the python package does; the C API
 * does not). A python model's run that returns anything else (a dict, a float, a list of strings)
 * is then answered with status MS__RESP_OBJECT and a uint8 tensor holding the pickled answer,
 * instead of an error. Only from a model that is not batchable (a batchable one answers one array
 * whether or not its request was merged).
 */
#define MS__REQ_OBJECT 2u
/* flags: the input bytes are this request's own copy, which nobody reads after the call: the model
 * may write them (the python backend hands it a writable array; by default a read-only one, since
 * an input passed by reference is the caller's memory). */
#define MS__REQ_OWN_INPUT 4u
/* flags: several named tensors (protocol 3). The input is a uint8 tensor of rank 1 holding an
 * input manifest (manifest.h: 16 + 128 * n bytes, n <= 16) that lists the tensors, in this arena
 * or linked ones; the answer is uint8 [out_len] in the output room: the output manifest, then the
 * outputs' bytes. Not with MS__REQ_CALL. */
#define MS__REQ_MULTI 8u
/* Bytes of an input manifest: 0 to 16 tensors (manifest.h checks it agrees). */
#define MS__REQ_MULTI_MIN 16u
#define MS__REQ_MULTI_MAX (16u + 16u * 128u)
#define MS__REQ_FLAGS_KNOWN (MS__REQ_CALL | MS__REQ_OBJECT | MS__REQ_OWN_INPUT | MS__REQ_MULTI)

/* A response's status for a request with MS__REQ_OBJECT: success, and the output is the pickled
 * answer (uint8, rank 1), not a tensor of the model. */
#define MS__RESP_OBJECT 1

/* Arenas of other leases of the same client that a lease's workers map too (the daemon's
 * "link", proto.h): a request's input may lie in one of them, so that the output of one model
 * goes into another with no copy (a pipeline). in_arena 0 is the lease's own arena, k in
 * 1..MS__ARENA_LINKS the k-th linked one. The output always goes in the lease's own arena. */
#define MS__ARENA_LINKS 8

/* Client -> worker. All offsets are bytes from the start of the client's arena; in_off from the
 * start of arena in_arena. */
typedef struct ms__req {
    uint32_t magic;
    uint32_t dtype;   /* ms_dtype of the input */
    uint32_t rank;    /* 0..MS_MAX_RANK */
    uint32_t flags;   /* MS__REQ_* bits */
    uint64_t id;      /* echoed in the response */
    int64_t shape[8]; /* rank dims used, the rest 0 */
    uint64_t in_off;  /* input bytes: [in_off, in_off + in_len) */
    uint64_t in_len;  /* = numel(shape) * dtype size */
    uint64_t out_off; /* room for the output: [out_off, out_off + out_cap) */
    uint64_t out_cap;
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */
    uint32_t in_arena;   /* where the input lies: 0 the own arena, k a linked one (above) */
    uint32_t reserved;   /* 0 */
    uint64_t in_link;    /* in_arena k: the lease whose arena it is (the worker checks that it maps
                            that one at k: an index is reused after an unlink); 0 for arena 0 */
} ms__req;

/* Worker -> client. */
typedef struct ms__resp {
    uint32_t magic;
    int32_t status; /* 0, MS__RESP_OBJECT, or MS_E_*; MS_E_TOO_LARGE with out_len > out_cap:
                       room too small, the client makes out_len bytes of room and asks again */
    uint32_t dtype; /* output */
    uint32_t rank;
    uint64_t id;
    int64_t shape[8];
    uint64_t out_len; /* bytes of output written at out_off (or needed, see status) */
    char msg[400];    /* NUL-terminated message when status != 0 */
} ms__resp;

/* Pure decoders, fuzzed: check the size of the record, the magic, the dtype, the rank, every
 * dimension (>= 0), that in_len equals numel * dtype size without overflow, that in_arena is 0 or
 * a linked arena (linked: MS__ARENA_LINKS capacities, 0 where none is linked; NULL: none), that
 * the input lies inside [MS__ARENA_DATA, capacity) of its arena and the output room inside
 * [MS__ARENA_DATA, arena_capacity) without overflow, that they are aligned to the dtype's size,
 * and, when both are in the own arena (in_arena 0), that they do not overlap. Return 0 with *out
 * filled, or MS_E_PROTOCOL / MS_E_DTYPE / MS_E_SHAPE / MS_E_TOO_LARGE with a message saying what
 * was expected. */
int ms__req_decode(const void *buf, size_t len, uint64_t arena_capacity, const uint64_t *linked,
                   ms__req *out, char *err, size_t errlen);
int ms__resp_decode(const void *buf, size_t len, ms__resp *out, char *err, size_t errlen);

#endif
