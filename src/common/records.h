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
#define MS__REQ_FLAGS_KNOWN MS__REQ_CALL

/* Client -> worker. All offsets are bytes from the start of the client's arena. */
typedef struct ms__req {
    uint32_t magic;
    uint32_t dtype;   /* ms_dtype of the input */
    uint32_t rank;    /* 0..MS_MAX_RANK */
    uint32_t flags;   /* 0, or MS__REQ_CALL */
    uint64_t id;      /* echoed in the response */
    int64_t shape[8]; /* rank dims used, the rest 0 */
    uint64_t in_off;  /* input bytes: [in_off, in_off + in_len) */
    uint64_t in_len;  /* = numel(shape) * dtype size */
    uint64_t out_off; /* room for the output: [out_off, out_off + out_cap) */
    uint64_t out_cap;
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */
} ms__req;

/* Worker -> client. */
typedef struct ms__resp {
    uint32_t magic;
    int32_t status; /* 0 or MS_E_*; MS_E_TOO_LARGE with out_len > out_cap: room too small,
                       the client makes out_len bytes of room and asks again */
    uint32_t dtype; /* output */
    uint32_t rank;
    uint64_t id;
    int64_t shape[8];
    uint64_t out_len; /* bytes of output written at out_off (or needed, see status) */
    char msg[400];    /* NUL-terminated message when status != 0 */
} ms__resp;

/* Pure decoders, fuzzed: check the size of the record, the magic, the dtype, the rank, every
 * dimension (>= 0), that in_len equals numel * dtype size without overflow, that both byte ranges
 * lie inside [MS__ARENA_DATA, arena_capacity) without overflow, that they are aligned to the
 * dtype's size, and that they do not overlap. Return 0 with *out filled, or MS_E_PROTOCOL /
 * MS_E_DTYPE / MS_E_SHAPE / MS_E_TOO_LARGE with a message saying what was expected. */
int ms__req_decode(const void *buf, size_t len, uint64_t arena_capacity, ms__req *out, char *err,
                   size_t errlen);
int ms__resp_decode(const void *buf, size_t len, ms__resp *out, char *err, size_t errlen);

#endif
