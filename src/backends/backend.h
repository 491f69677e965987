/*
 * The interface every backend implements. A worker process hosts exactly one loaded model of one
 * backend; the CLI's in-process benchmark and measurement use the same calls.
 *
 * Tensors here are plain (pointer, dtype, rank, shape). Errors are MS_E_* codes with a message in
 * err; a failed run leaves the model usable.
 */
#ifndef MS_BACKEND_H
#define MS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/manifest.h"
#include "../common/proto.h" /* ms__sig */
#include "../common/spec.h"
#include "modelshare.h" /* MS_FLOAT32 */

typedef struct ms__tensor_view {
    int dtype;
    int rank;
    int64_t shape[8];
    void *data;
    size_t nbytes;
    /* An input to run_dynamic for one request that runs alone: its MS__REQ_OBJECT and
     * MS__REQ_OWN_INPUT flags (records.h); 0 everywhere else (a batch, a piece, an output). */
    uint32_t flags;
} ms__tensor_view;

/* One request of several named tensors (MS__REQ_MULTI) as run_multi sees it: its decoded input
 * manifest, each tensor's bytes in the worker's mapping, and the room its answer goes in. */
typedef struct ms__multi_req {
    const ms__manifest *mf;
    void *data[MS__MF_MAX]; /* entry i's bytes (mf->e[i].len of them): the client's memory */
    void *room;             /* the output room: room_cap bytes at arena offset room_off */
    uint64_t room_off, room_cap;
    uint32_t flags;   /* MS__REQ_OBJECT when it runs alone and the caller takes any answer */
    int64_t rows;     /* its rows (every entry's first dimension; a list's items) */
    int status;       /* OUT: 0 (out_len bytes written), MS_E_TOO_LARGE (out_len needed), or
                         another MS_E_* code for this request alone (msg) */
    uint64_t out_len; /* OUT */
    char msg[320];    /* OUT: status's message, NUL-terminated */
} ms__multi_req;

typedef struct ms__backend_ops {
    const char *name;
    /* Loads the model described by spec. *state is the backend's, freed by unload(). Errors:
     * MS_E_WEIGHTS (file missing, unreadable, not safetensors, corrupt header, shapes that do not
     * chain), MS_E_DEVICE, MS_E_SPEC, MS_E_NOMEM. */
    int (*load)(const ms__spec *spec, void **state, char *err, size_t errlen);
    /* The model's signature (dims that vary are -1). */
    void (*signature)(void *state, ms__sig *in, ms__sig *out);
    /* Optional (NULL: the model's tensors have no names). The model's named inputs and outputs:
     * a new object {"inputs":[..],"outputs":[..]} (signames.h), owned by the caller, or NULL when
     * the model does not say them. Called once, after load. */
    json_t *(*signature_named)(void *state);
    /* Output dtype/rank/shape/nbytes for this input (data pointers ignored), after checking the
     * input: MS_E_DTYPE / MS_E_SHAPE with "expected float32 [N, 1024], got float32 [3, 1000]". */
    int (*output_for)(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                      size_t errlen);
    /* Runs the model: in is checked by output_for; out->data has out->nbytes of room. */
    int (*run)(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
               size_t errlen);
    /* Estimated bytes the model will hold once loaded, from the spec alone (weights file header),
     * before loading. May return 0 when unknown. */
    uint64_t (*estimate)(const ms__spec *spec);
    void (*unload)(void *state);
    /* Optional (NULL: output_for describes every output before the run). For a backend that
     * learns its output only by running the model (python): runs it on in and describes the
     * output in *out, whose data the backend owns and keeps valid until its next call. The
     * worker then checks the output (and, for a batch, that it has one row per input row) and
     * copies each request's rows to its room. output_for and run are not used for such a
     * backend. Errors: MS_E_BACKEND with the model's own message. Returns MS__RESP_OBJECT (1),
     * only when in->flags has MS__REQ_OBJECT, when the model answered something other than one
     * array: *out is then a uint8 tensor of rank 1 holding the pickled answer. */
    int (*run_dynamic)(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                       size_t errlen);
    /* Optional (NULL: the backend has no methods). A method call (requests with MS__REQ_CALL):
     * in_len bytes in, the answer in *out and *out_len, owned by the backend until its next
     * call. A method that raised is an answer too (the backend encodes it); an error code is for
     * a call that could not be made at all. */
    int (*call)(void *state, const void *in, size_t in_len, const void **out, size_t *out_len,
                char *err, size_t errlen);
    /* Optional (NULL: the backend takes one tensor; requests of several are refused with
     * MS_E_INVAL). Runs n requests of several named tensors (manifest.h) as one call: n > 1 only
     * for a batchable model, whose requests then agree on names, dtypes and every dimension but
     * the first; each request's rows of every output go to its room (the output manifest, then
     * the bytes, offsets in the client's arena). Returns 0 with each request's status and
     * out_len set, or an error (err) for all of them. */
    int (*run_multi)(void *state, ms__multi_req *reqs, size_t n, char *err, size_t errlen);
    /* Optional (NULL: nothing to do). The worker has mapped a client's arena at [base, base +
     * len) (mapped: true), or is about to unmap it (false). A GPU backend registers ranges of it
     * for DMA (pins.h) and must drop them here before the arena goes. */
    void (*arena)(void *state, void *base, size_t len, bool mapped);
    /* Whether run, run_dynamic and call may be called from several threads at once on one
     * state (each with its own tensors). The worker does so only when the spec also says
     * thread_safe (the model's own promise): up to spec threads calls at once. An output that
     * run_dynamic or call owns is then the calling thread's, valid until that thread's next call.
     * output_for is called from the loop's thread while runs go on: it must not touch what a run
     * changes. Backends with scratch memory in their state (dense) leave it false. */
    bool concurrent;
    /* Optional (NULL: nothing to do). A runner thread of the worker starts (true), before its
     * first call, or ends (false), after its last: the python backend keeps the thread's
     * interpreter state for the thread's life. */
    void (*thread)(void *state, bool start);
} ms__backend_ops;

/* The signature of a model of rows: float32 [N, in_width] -> float32 [N, out_width]. */
static inline void ms__sig_rows(ms__sig *in, ms__sig *out, int64_t in_width, int64_t out_width)
{
    *in = (ms__sig){.dtype = MS_FLOAT32, .rank = 2, .shape = {-1, in_width}};
    *out = (ms__sig){.dtype = MS_FLOAT32, .rank = 2, .shape = {-1, out_width}};
}

/* For a model of rows, float32 [N, in_width] -> float32 [N, out_width] with N <= max_rows:
 * checks in (MS_E_DTYPE / MS_E_SHAPE / MS_E_TOO_LARGE, saying what was expected) and describes
 * the output in *out (its data untouched). */
int ms__rows_output_for(const ms__tensor_view *in, int64_t in_width, int64_t out_width,
                        int64_t max_rows, ms__tensor_view *out, char *err, size_t errlen);
/* Before a run of such a model: the same checks, and that in and out hold the bytes the run
 * reads and writes (MS_E_INVAL). */
int ms__rows_run_check(const ms__tensor_view *in, const ms__tensor_view *out, int64_t in_width,
                       int64_t out_width, int64_t max_rows, char *err, size_t errlen);

/* The backend named name ("dense"), or NULL. These are the CPU backends built in. */
const ms__backend_ops *ms__backend_find(const char *name);

/* The backend that serves spec: a built-in one, or for "dense" on "cuda:N" the CUDA backend,
 * loaded with dlopen from libmodelshare-cuda.so ($MODELSHARE_CUDA_BACKEND, else beside the
 * program, else in ../lib of an installed tree). The library stays loaded for the process's life.
 * Errors: MS_E_SPEC (no such backend), MS_E_DEVICE with the reason ("no CUDA driver: libcuda.so.1
 * not found", "CUDA backend not built: ..."). */
int ms__backend_open(const ms__spec *spec, const ms__backend_ops **out, char *err, size_t errlen);

/* Bytes a model of this spec will hold on its device, all its instances together (each holds a
 * copy), from the backend's estimate (spec->memory is not looked at); 0 when unknown. Cheap: reads
 * at most the weights file's header. */
uint64_t ms__backend_estimate(const ms__spec *spec);

/* The symbol libmodelshare-cuda.so exports: its ms__backend_ops. */
#define MS__CUDA_BACKEND_SYMBOL "ms__cuda_dense_ops"
#define MS__CUDA_BACKEND_LIB "libmodelshare-cuda.so"

#endif
