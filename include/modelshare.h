/*
 * modelshare.h — the C client API of modelshare.
 *
 * One daemon per machine (modelshared) holds each model once, in its own worker process, and
 * shares it with every process that acquires it by tag. Tensor bytes travel through shared
 * memory: a client writes its input into a tensor that already lives in memory the worker maps,
 * and reads the output in place.
 *
 * Conventions for the whole API (read once, they hold everywhere):
 *  - Every function that can fail returns an int: 0 on success, a negative MS_E_* code on error.
 *  - Output parameters (marked OUT) are written only on success.
 *  - Handles are opaque. Each has a create/destroy pair; destroy(NULL) is a no-op.
 *  - After a failed call on a client, ms_errmsg(client) returns a message that says what was
 *    expected and what came (for the calling thread's last failed call on that client).
 *  - Every function that takes a client, model or tensor answers MS_E_INVAL when it is NULL (and
 *    for any other argument its comment rules out), and MS_E_NOMEM when the calling process is
 *    out of memory; the Errors lists below name these only where they mean more.
 *  - The control calls (ms_status_json, ms_load, ms_unload, ms_swap, ms_acquire, ms_release)
 *    travel to the
 *    daemon: each can also give MS_E_DAEMON_LOST (the connection is gone, or the client was
 *    copied by fork()) and MS_E_PROTOCOL (the daemon answered something this library does not
 *    understand).
 *  - A client and everything made from it may be used from several threads at once. The control
 *    calls of one client (acquire, release, load, unload, swap, status) run concurrently: while
 *    one thread's ms_acquire waits for a model to load, another thread's control calls and
 *    ms_infer on the same client go on (up to 32 requests of a client in flight at once; past
 *    that, a new one waits for room).
 *  - A client does not cross fork(): in the child, the copies of every client, model handle and
 *    tensor answer MS_E_DAEMON_LOST (tensors' bytes stay readable), and their descriptors are
 *    closed at once, so the parent's leases end when the parent does, whatever the child does.
 *    The child connects again (and may ms_disconnect() the copies: nothing reaches the daemon).
 *
 * Typical use:
 *
 *     ms_client *c;  ms_model *m;  ms_tensor *x, *y;
 *     ms_connect(NULL, &c);                       // starts the daemon when none runs
 *     ms_acquire(c, "mlp", "{\"backend\":\"dense\",\"weights\":\"mlp.safetensors\"}", &m);
 *     int64_t shape[2] = {8, 1024};
 *     ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
 *     fill((float *)ms_tensor_data(x));           // written once, straight into shared memory
 *     ms_infer(m, x, &y);                         // y lives in shared memory too
 *     use((const float *)ms_tensor_data(y), ms_tensor_shape(y));
 *     ms_tensor_free(y); ms_tensor_free(x);
 *     ms_release(m);                              // one lease less; the model stays for keep_alive
 *     ms_disconnect(c);
 */
#ifndef MODELSHARE_H
#define MODELSHARE_H

#include <stddef.h>
#include <stdint.h>

#include "modelshare/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MS_BUILDING_LIBRARY)
#define MS_EXPORT __attribute__((visibility("default")))
#else
#define MS_EXPORT
#endif

/* ---------------------------------------------------------------------------------------------
 * Errors. One table, three views: the enum, ms_strerror() and ms_errname().
 * Codes are never renumbered; a retired code keeps its number.
 * ------------------------------------------------------------------------------------------- */
#define MS_ERRNO_MAP(X)                                                                            \
    X(INVAL, -1, "invalid argument")                                                               \
    X(NOMEM, -2, "out of host memory in the calling process")                                      \
    X(NO_DAEMON, -3, "no daemon answers and none could be started")                                \
    X(DAEMON_LOST, -4, "the connection to the daemon was lost")                                    \
    X(PROTOCOL, -5, "malformed message")                                                           \
    X(VERSION, -6, "protocol version mismatch between client and daemon")                          \
    X(UNKNOWN_TAG, -7, "no model with this tag")                                                   \
    X(SPEC_CONFLICT, -8, "the tag is loaded with a different spec")                                \
    X(SPEC, -9, "invalid model spec")                                                              \
    X(WEIGHTS, -10, "weights file missing, unreadable or malformed")                               \
    X(DTYPE, -11, "wrong tensor dtype")                                                            \
    X(SHAPE, -12, "wrong tensor shape")                                                            \
    X(TOO_LARGE, -13, "tensor or message too large")                                               \
    X(LOAD_FAILED, -14, "the worker failed to load the model")                                     \
    X(WORKER_LOST, -15, "the worker process serving the model died")                               \
    X(UNLOADED, -16, "the model was unloaded")                                                     \
    X(BUSY, -17, "the model has leases")                                                           \
    X(PERMISSION, -18, "permission denied")                                                        \
    X(NO_MEMORY, -19, "not enough memory in the device budget")                                    \
    X(TIMEOUT, -20, "timed out")                                                                   \
    X(DEVICE, -21, "device missing or unusable")                                                   \
    X(LIMIT, -22, "a resource limit was reached")                                                  \
    X(IO, -23, "system call failed")                                                               \
    X(BACKEND, -24, "the backend failed to run the model")

typedef enum ms_error {
    MS_OK = 0,
#define MS__ERR_ENUM(name, code, text) MS_E_##name = (code),
    MS_ERRNO_MAP(MS__ERR_ENUM)
#undef MS__ERR_ENUM
} ms_error;

/* Static description of an error code ("no model with this tag"). Never NULL. */
MS_EXPORT const char *ms_strerror(int code);
/* Static name of an error code ("MS_E_UNKNOWN_TAG"). Never NULL. */
MS_EXPORT const char *ms_errname(int code);

/* Library version as MS_VERSION_HEX at run time. */
MS_EXPORT unsigned ms_version(void);

/* ---------------------------------------------------------------------------------------------
 * Tensors' element types. One table, every view: the enum, ms_dtype_name(), ms_dtype_size(), the
 * safetensors names the dense backend reads and the .npy descriptors the CLI reads and writes
 * (NULL: no .npy form). Values are stable; a retired value keeps its number.
 *   X(enum name, value, name, safetensors name, .npy descriptor, bytes per element)
 * ------------------------------------------------------------------------------------------- */
#define MS_DTYPE_MAP(X)                                                                            \
    X(FLOAT32, 1, "float32", "F32", "<f4", 4)                                                      \
    X(FLOAT16, 2, "float16", "F16", "<f2", 2)                                                      \
    X(BFLOAT16, 3, "bfloat16", "BF16", NULL, 2)                                                    \
    X(FLOAT64, 4, "float64", "F64", "<f8", 8)                                                      \
    X(INT8, 5, "int8", "I8", "|i1", 1)                                                             \
    X(UINT8, 6, "uint8", "U8", "|u1", 1)                                                           \
    X(INT16, 7, "int16", "I16", "<i2", 2)                                                          \
    X(INT32, 8, "int32", "I32", "<i4", 4)                                                          \
    X(INT64, 9, "int64", "I64", "<i8", 8)                                                          \
    X(BOOL, 10, "bool", "BOOL", "|b1", 1)

typedef enum ms_dtype {
#define MS__DTYPE_ENUM(name, value, text, st, npy, size) MS_##name = (value),
    MS_DTYPE_MAP(MS__DTYPE_ENUM)
#undef MS__DTYPE_ENUM
} ms_dtype;

#define MS_MAX_RANK 8

/* Size of one element in bytes; 0 for a value that is not an ms_dtype. */
MS_EXPORT size_t ms_dtype_size(ms_dtype dtype);
/* Static name ("float32"); "unknown" for a value that is not an ms_dtype. */
MS_EXPORT const char *ms_dtype_name(ms_dtype dtype);

/* ---------------------------------------------------------------------------------------------
 * Client: one connection to the daemon.
 * ------------------------------------------------------------------------------------------- */
typedef struct ms_client ms_client;

/* Connects to the daemon at socket_path, or, when socket_path is NULL, at the default path:
 * $MODELSHARE_SOCKET, else $XDG_RUNTIME_DIR/modelshare/modelshared.sock, else
 * /tmp/modelshare-$UID/modelshared.sock.
 * When no daemon answers there, starts one (the modelshared binary beside libmodelshare, or
 * $MODELSHARE_DAEMON) under a file lock, so that racing processes start exactly one, and waits
 * until it answers. A stale socket file left by a dead daemon does not stop this.
 *   out: OUT, the new client; the caller owns it and frees it with ms_disconnect().
 * Errors: MS_E_INVAL (out is NULL; socket_path empty or over 107 bytes; the default path too
 * long), MS_E_NO_DAEMON (none answers and none could be started, or $MODELSHARE_NO_AUTOSTART is
 * 1; the reason in ms_errmsg(NULL)), MS_E_PERMISSION (the socket or its lock belongs to another
 * user, or the daemon refused this uid), MS_E_VERSION (the daemon speaks another protocol),
 * MS_E_LIMIT (the daemon has its maximum of clients), MS_E_PROTOCOL, MS_E_NOMEM. */
MS_EXPORT int ms_connect(const char *socket_path, ms_client **out);

/* Closes the connection. Every lease still held through this client is released, and every
 * model handle and tensor made from it is freed: do not use them afterwards.
 * ms_disconnect(NULL) is a no-op. */
MS_EXPORT void ms_disconnect(ms_client *client);

/* For a child of fork() that wants the parent's connections gone at once: frees client, every
 * model handle and tensor made from it (do not use them afterwards), unmapping their shared
 * memory and closing this process's copies of their descriptors, and sends nothing to the
 * daemon: no lease is released on anyone's behalf, so the parent's leases stay the parent's,
 * untouched. With client NULL: every client this process got through fork() (those made in it
 * stay). Without it a child's copies answer MS_E_DAEMON_LOST and hold their mappings until
 * ms_disconnect() (which sends nothing either in a child). In the process that connected the
 * client, forgetting it closes the connection: the daemon then releases its leases as for a
 * process that exits. Not to be called while another thread uses the client.
 * Returns 0. */
MS_EXPORT int ms_client_forget(ms_client *client);

/* Message of the calling thread's last failed call on this client: what was expected, what came.
 * With client NULL: the last failed ms_connect() of this thread. Never NULL (empty when the last
 * call succeeded). The string belongs to the library and stays valid until this thread's next
 * call into the library. */
MS_EXPORT const char *ms_errmsg(const ms_client *client);

/* Daemon status as one JSON document (the same as `modelshare status --json`).
 *   out: OUT, a NUL-terminated string the caller frees with free().
 * Errors: MS_E_INVAL (out is NULL), MS_E_DAEMON_LOST, MS_E_PROTOCOL, MS_E_NOMEM. */
MS_EXPORT int ms_status_json(ms_client *client, char **out);

/* Loads a model without taking a lease: it stays loaded for its keep_alive (like `modelshare
 * load`). Returns once the model is ready. spec_json as ms_acquire()'s, but never NULL
 * (MS_E_SPEC). Errors as ms_acquire(). */
MS_EXPORT int ms_load(ms_client *client, const char *tag, const char *spec_json);

/* Unloads a model now: its worker process is stopped, and all its memory goes back to the
 * system. Refused with MS_E_BUSY while leases exist, unless force is non-zero; then the holders'
 * next calls fail with MS_E_UNLOADED. Errors: MS_E_INVAL (tag not 1 to 128 characters of
 * [A-Za-z0-9._:/@+-]), MS_E_UNKNOWN_TAG, MS_E_BUSY, MS_E_PERMISSION (group mode: another member's
 * model; only its owner, root and the daemon's uid may unload it), MS_E_DAEMON_LOST,
 * MS_E_PROTOCOL. */
MS_EXPORT int ms_unload(ms_client *client, const char *tag, int force);

/* ms_swap flags. */
#define MS_SWAP_DRAIN_FIRST 1u /* unload the old version before the new one loads */

/* Swaps the model loaded under tag to a new version while it serves:
 *   changes: a JSON object of the spec fields that change, e.g.
 *            {"weights": "v2.safetensors", "version": "2"} (relative weights paths are resolved
 *            against the caller's working directory); the other fields stay the loaded ones'.
 *            backend, device, devices and instances cannot change.
 *   flags:   0, or MS_SWAP_DRAIN_FIRST.
 * The new version loads in new worker processes while the old one serves; then each instance's
 * new requests go to the new version, the requests the old one already took are answered by it,
 * and the old workers exit. Leases and model handles stay valid and need no change: nothing a
 * client sent fails. Returns once the new version serves every instance. The model's spec is the
 * new one from then on (acquire it with that spec, or with none).
 * A new version that fails to load leaves the old one serving, and its error is returned. When
 * both versions do not fit a device's memory budget at once, MS_E_NO_MEMORY says so, unless
 * MS_SWAP_DRAIN_FIRST: then the old workers finish what they took and exit first, requests wait
 * in shared memory until the new version serves (or, if it fails to load, the old one again).
 * A new version whose signature (input and output dtypes and shapes, and the names, dtypes and
 * shapes of ms_model_input / ms_model_output) differs is refused with MS_E_SPEC_CONFLICT, the old
 * one serving on.
 * Errors: MS_E_INVAL (tag malformed), MS_E_UNKNOWN_TAG, MS_E_SPEC (changes not an object of spec
 * fields, or changing backend, device, devices or instances), MS_E_PERMISSION (group mode: another
 * member's model), MS_E_BUSY (not ready yet, or swapping already), MS_E_NO_MEMORY,
 * MS_E_SPEC_CONFLICT, the new version's load errors (MS_E_WEIGHTS, MS_E_LOAD_FAILED, ...),
 * MS_E_UNLOADED (unloaded during the swap). */
MS_EXPORT int ms_swap(ms_client *client, const char *tag, const char *changes, unsigned flags);

/* ---------------------------------------------------------------------------------------------
 * Models: a lease on a model loaded by the daemon.
 * ------------------------------------------------------------------------------------------- */
typedef struct ms_model ms_model;

/* Acquires a lease on the model with this tag, loading it first when it is not loaded.
 *   tag:       1 to 128 characters of [A-Za-z0-9._:/@+-].
 *   spec_json: a JSON object, the model's spec (fields below). Relative weights paths are
 *              resolved against the caller's working directory. NULL: attach to the model
 *              already loaded under this tag, whatever its spec (MS_E_UNKNOWN_TAG when there is
 *              none); a model whose worker died is loaded again with the spec it had.
 *   out:       OUT, the lease; the caller owns it and ends it with ms_release().
 * Returns when the model is ready to serve, or with the load's error.
 *
 * Spec fields (unknown fields, wrong types and values out of range are MS_E_SPEC naming the
 * field):
 *   field           type                          default   meaning
 *   backend         "dense" | "python"            required  what runs the model ("identity":
 *                                                           tests)
 *   weights         string, a path (<= 4096 B)    none      safetensors file (required for dense)
 *   device          "cpu" | "cuda" | "cuda:N" |   "cpu"     where every instance runs; N
 *                   "auto"                                  0..63, "cuda" is cuda:0; "auto":
 *                                                           the cuda device the daemon knows
 *                                                           (--memory, NVML) with the most free
 *                                                           budget that holds the model, else
 *                                                           "cpu" when it knows none
 *   devices         null | "auto" | 1..16         null      the devices the instances are
 *                   distinct "cpu" / "cuda:N"               spread over, round-robin, the one
 *                                                           with the most free budget first
 *                                                           ("auto": every cuda device it
 *                                                           knows); device is then "auto" (any
 *                                                           other device beside it: MS_E_SPEC)
 *   output          "linear" | "softmax"          "linear"  the dense model's last activation
 *   keep_alive      number, seconds, 0..1e12      300       how long it stays loaded with no
 *                                                           lease (0: unload at once)
 *   max_batch       integer, 1..65536             64        rows per backend run at most (a
 *                                                           larger request runs in pieces)
 *   batch_sizes     null | increasing integers,   null      the row counts the model runs at:
 *                   1..65536, at most 32                    each run padded up to the next
 *   batch_delay_us  integer, 0..1000000           0         how long the oldest request waits
 *                                                           for more rows to batch with
 *   instances       integer, 1..64                1         worker processes serving the tag
 *   thread_safe     bool                          false     the model may run several calls
 *                                                           at once (python, identity: up to
 *                                                           threads batches at once)
 *   threads         null | integer, 0..64         null      batches a thread_safe model runs
 *                                                           at once (null, 0: one per CPU of
 *                                                           its worker); more than 1 only
 *                                                           with thread_safe true
 *   batchable       bool                          true      requests of several callers may
 *                                                 (dense,   be joined into one batch along the
 *                                                 identity) first dimension: each output row
 *                                                 false     depends only on its own input row
 *                                                 (python)  (a python model says so itself)
 *   memory          integer, bytes, 0..2^62       0         what the model needs, all its
 *                                                           instances together (0: the
 *                                                           backend's estimate); charged
 *                                                           evenly to its instances' devices
 *                                                           until measured
 *   load_timeout    number, seconds, 0..86400     60        how long a load may take, the wait
 *                                                           for memory in the budget and the
 *                                                           worker's load (a constructor)
 *                                                           included: past it the workers are
 *                                                           killed and the load fails with
 *                                                           MS_E_TIMEOUT naming its phase
 *   call_timeout    number, seconds, 0..86400     600       how long one batch may run, or a
 *                                                           worker not answer at all (stopped,
 *                                                           hung): past it the daemon kills
 *                                                           the worker (its requests fail with
 *                                                           MS_E_TIMEOUT) and restarts it, as
 *                                                           a crash toward max_restarts (0: off)
 *   max_restarts    integer, 0..100               5         crashed instances are restarted
 *                                                           (back-off 0.1 s doubling to 30 s);
 *                                                           one more crash within 60 s fails
 *                                                           the model (0: the first crash)
 *   python          object                        none      required for (and only for)
 *                                                           backend "python": constructor (or
 *                                                           constructor_size and
 *                                                           constructor_sha256 of a pickle the
 *                                                           Python package sends in a memfd),
 *                                                           executable, cwd, path, framework,
 *                                                           key, identity (the Python package
 *                                                           fills it; src/common/spec.h)
 *   version         null | string of 1..64        null      a label for what the tag serves
 *                   printable characters, no                (modelshare swap moves a tag from
 *                   spaces                                  one version to the next)
 *   pad             null | {"dim": 1..7,          null      requests of several tensors
 *                   "multiple": 1..65536,                   (ms_infer_n) that differ only
 *                   "value": {name: number},                along dim share a batch, padded
 *                   "cut": [name], "keep": [name]}          to the longest (rounded up to
 *                                                           multiple) with each name's value
 *                                                           (0); each output with dimension
 *                                                           dim is named in cut (cut back) or
 *                                                           keep, else the call fails
 *                                                           (batchable only)
 *   shared_with     "owner" | "group"             "owner"   in group mode (modelshared
 *                                                           --group): who besides its owner
 *                                                           (the uid that loaded it) may
 *                                                           acquire it (docs/SECURITY.md);
 *                                                           not compared, ignored by a
 *                                                           single-user daemon
 * Two specs are the same model when every field above but shared_with is equal; for python, the
 * framework and the key (else the pickled constructor, or its SHA-256) are compared, not where
 * the worker runs. In group mode, another member's model that is not shared_with "group" is
 * refused with MS_E_PERMISSION naming its owner.
 * Errors: MS_E_INVAL (tag malformed), MS_E_SPEC (names the field), MS_E_PERMISSION (group mode:
 * another member's model not shared with the group, a spec change of a failed model of another
 * member, a file this uid cannot read, the python backend where the daemon cannot run it as this
 * uid), MS_E_SPEC_CONFLICT (names each field, or python constructor part, that differs, with the
 * loaded and the asked value), MS_E_UNKNOWN_TAG (spec_json NULL and no such model), MS_E_WEIGHTS,
 * MS_E_DEVICE, MS_E_NO_MEMORY (does not fit the device's budget within load_timeout; names what
 * holds the memory), MS_E_LOAD_FAILED (the worker's message passed through), MS_E_LIMIT (too many
 * models, leases or workers), MS_E_UNLOADED (force-unloaded while loading), MS_E_TIMEOUT (the load
 * passed its load_timeout), MS_E_NOMEM, MS_E_DAEMON_LOST, MS_E_PROTOCOL. */
MS_EXPORT int ms_acquire(ms_client *client, const char *tag, const char *spec_json, ms_model **out);

/* ms_acquire() that waits at most timeout_us (0: as long as ms_acquire) for the model to be ready:
 * past it, MS_E_TIMEOUT (the daemon answers, the client stays usable, and the load goes on for
 * the others that wait for it). Errors: those of ms_acquire(), and MS_E_INVAL (more than a day). */
MS_EXPORT int ms_acquire_timeout(ms_client *client, const char *tag, const char *spec_json,
                                 uint64_t timeout_us, ms_model **out);

/* Ends the lease and frees the handle (and every tensor still allocated from it). At zero leases
 * the model stays loaded for its keep_alive, then its worker exits. ms_release(NULL) is a no-op
 * returning 0. Returns MS_E_DAEMON_LOST if the daemon could not be told (the handle is freed all
 * the same; the daemon releases leases of lost connections itself). */
MS_EXPORT int ms_release(ms_model *model);

/* Describes the model's input and output: dtype (an ms_dtype value; 0 when not known), rank and
 * shape, with -1 for a dimension that may vary (the batch). Any OUT pointer may be NULL. shape
 * arrays hold MS_MAX_RANK entries. Dimensions of a backend that does not know its signature are
 * all -1 and rank 0. A model of several named tensors says them with ms_model_inputs_count and
 * ms_model_input (below, with ms_infer_n). Errors: MS_E_INVAL (model NULL). */
MS_EXPORT int ms_model_signature(const ms_model *model, int *in_dtype, int *in_rank,
                                 int64_t *in_shape, int *out_dtype, int *out_rank,
                                 int64_t *out_shape);

/* ---------------------------------------------------------------------------------------------
 * Tensors in shared memory. Each model handle has its own arena, shared with the worker.
 * ------------------------------------------------------------------------------------------- */
typedef struct ms_tensor ms_tensor;

/* Allocates a tensor in the model's shared memory. Its contents are undefined.
 *   rank:  0 to MS_MAX_RANK;  shape: rank dimensions, each >= 0.
 *   out:   OUT, the tensor; owned by the caller, freed with ms_tensor_free() (or by
 *          ms_release() of its model).
 * Errors: MS_E_INVAL (model or out NULL, rank or a dimension out of range, shape NULL with
 * rank > 0), MS_E_DTYPE (not an ms_dtype), MS_E_TOO_LARGE (over the arena's free room: its size
 * is $MODELSHARE_ARENA_BYTES, a size like "64MiB" or "4GB" (4e9 bytes), default 4 GiB of address
 * space, of which only what is written uses memory), MS_E_DAEMON_LOST (made before fork()). */
MS_EXPORT int ms_tensor_alloc(ms_model *model, ms_dtype dtype, int rank, const int64_t *shape,
                              ms_tensor **out);

/* ms_tensor_alloc() followed by one copy of nbytes from data, which must equal the tensor's
 * size. For callers whose input already lives elsewhere. Errors as ms_tensor_alloc(), and
 * MS_E_INVAL when nbytes is not the tensor's size or data is NULL with nbytes > 0. */
MS_EXPORT int ms_tensor_from(ms_model *model, ms_dtype dtype, int rank, const int64_t *shape,
                             const void *data, size_t nbytes, ms_tensor **out);

/* A tensor for bytes already in shared memory, inside one live tensor (one from
 * ms_tensor_alloc() or an output) of this model or of another model acquired through the same
 * client: ms_infer() on it sends no byte, as ms_infer() on that tensor would, with this dtype
 * and shape. Nothing is copied or reserved. This is how models make a pipeline with no copy:
 *
 *     ms_infer(a, x, &ya);                       // ya lives in a's shared memory
 *     ms_tensor_view(b, ms_tensor_dtype(ya), ms_tensor_rank(ya), ms_tensor_shape(ya),
 *                    ms_tensor_data(ya), &v);    // b's workers read it in place
 *     ms_infer(b, v, &yb);                       // yb lives in b's shared memory
 *
 * The first view of another model's memory on a model asks the daemon once to map that model's
 * shared memory into this model's workers (a "link", kept until that other model is released;
 * at most 8 per model handle). Outputs always go to the model's own shared memory.
 *   data:  where its bytes start, aligned to the dtype's size.
 *   out:   OUT, the view; owned by the caller, freed with ms_tensor_free() (which frees nothing of
 *          the tensor it lies in). Valid while that tensor is: the tensor (and for another
 *          model's, its model handle) must stay alive until every ms_infer() on the view has
 *          returned; ms_infer() on a view whose model was released fails with MS_E_INVAL.
 * Errors: as ms_tensor_alloc() for dtype, rank and shape; MS_E_INVAL when the bytes are not all
 * inside one live tensor of this model or of another model of this client (memory elsewhere:
 * copy it with ms_tensor_from()); for another model's: MS_E_LIMIT (8 other models' memory
 * linked to this handle already: release one, or copy), MS_E_UNLOADED, MS_E_DAEMON_LOST,
 * MS_E_PROTOCOL. */
MS_EXPORT int ms_tensor_view(ms_model *model, ms_dtype dtype, int rank, const int64_t *shape,
                             const void *data, ms_tensor **out);

/* Frees a tensor. ms_tensor_free(NULL) is a no-op. */
MS_EXPORT void ms_tensor_free(ms_tensor *tensor);

/* The tensor's bytes, in shared memory: writable for inputs, readable in place for outputs.
 * Valid until the tensor is freed. */
MS_EXPORT void *ms_tensor_data(const ms_tensor *tensor);
MS_EXPORT size_t ms_tensor_nbytes(const ms_tensor *tensor);
/* 0 for NULL. */
MS_EXPORT ms_dtype ms_tensor_dtype(const ms_tensor *tensor);
MS_EXPORT int ms_tensor_rank(const ms_tensor *tensor);
/* Pointer to rank dimensions, owned by the tensor. */
MS_EXPORT const int64_t *ms_tensor_shape(const ms_tensor *tensor);

/* Runs the model on input (a tensor of this model, or a view made with ms_tensor_view() on this
 * model, which may lie in another model's memory: then that model's handle and tensor must live
 * until this call returns) and returns the output.
 *   output: OUT, a new tensor in the same shared memory, owned by the caller (ms_tensor_free()).
 * Errors: MS_E_DTYPE / MS_E_SHAPE (what the model expects and what came; the model keeps serving),
 * MS_E_TOO_LARGE, MS_E_WORKER_LOST (the worker died while it ran this request: the daemon
 * restarts it and the handle stays usable; or the model failed after max_restarts crashes:
 * acquire again to load it again),
 * MS_E_UNLOADED (the model was force-unloaded), MS_E_BACKEND, MS_E_INVAL (input of another model
 * handle: pass another model's output through ms_tensor_view() on this one, no copy; or a view
 * whose model was released),
 * MS_E_TIMEOUT (see ms_set_timeout), MS_E_DAEMON_LOST.
 * Several threads may call ms_infer on one model handle at once: their requests are in flight
 * together (up to 64 per instance of the model) and the worker batches them with everyone
 * else's. */
MS_EXPORT int ms_infer(ms_model *model, const ms_tensor *input, ms_tensor **output);

/* A method call on a model of the python backend: input is a uint8 tensor of rank 1 (of this
 * model) holding the pickled (name, args, kwargs); the output, a new uint8 tensor of rank 1 owned
 * by the caller (ms_tensor_free()), holds the pickled answer: ("ok", value) or ("error",
 * exception, traceback text). The Python package makes and reads these; calls are never batched
 * and, unless the spec says thread_safe, run one at a time with the model's other work.
 * An answer larger than the room made for it (1 MiB, or the last answer's size) makes the call
 * run a second time with the room it needs.
 * Errors: MS_E_INVAL (not uint8 of rank 1, or a backend without methods), MS_E_WORKER_LOST,
 * MS_E_BACKEND, MS_E_TIMEOUT, MS_E_UNLOADED, MS_E_DAEMON_LOST, as ms_infer(). */
MS_EXPORT int ms_call(ms_model *model, const ms_tensor *input, ms_tensor **output);

/* Gives every later ms_infer and ms_call on this handle a deadline timeout_us after it starts (0:
 * none, the default). A request past its deadline fails with MS_E_TIMEOUT, whatever it waits for:
 * a free slot (a worker that stopped answering holds the 64 slots of its instance with requests
 * that timed out), an instance being restarted, or its answer. The worker skips a request it has
 * not started before its deadline, and an answer that comes late is discarded. What a timed-out
 * request holds (its ring slot, its output room in the arena, and its inputs: one freed meanwhile
 * with ms_tensor_free keeps its room until then) is given back when the worker is
 * done with it or is replaced (the daemon restarts a worker that dies): until then at most 64 per
 * instance stay held, and later requests time out rather than wait for them, however many.
 * Errors: MS_E_INVAL (model NULL, or more than INT64_MAX / 1000 microseconds). */
MS_EXPORT int ms_set_timeout(ms_model *model, uint64_t timeout_us);

/* ---------------------------------------------------------------------------------------------
 * Several named tensors per request (protocol 3): ms_infer_n.
 *
 * A request carries up to MS_MAX_TENSORS named tensors (and lists of strings), each a tensor of
 * the model (ms_tensor_alloc, ms_tensor_from, ms_tensor_view, an output, ms_text_from): only a
 * small manifest naming them is written, the tensors' bytes go by reference. The answer is one
 * tensor holding every output (a manifest and the outputs' bytes, in the model's shared memory):
 * read it with ms_outputs_count() and ms_outputs_get(), free it with ms_tensor_free(), which frees
 * them all. The python backend calls the model as the form says (model(t0, t1), model(name=t),
 * model({name: t})) and answers what it returns (one tensor, a tuple, a list or a dict of them,
 * lists of str or bytes). The dense backend takes one tensor: ms_infer(). A model whose spec says
 * batchable merges requests of several callers whose tensors agree on names, dtypes and every
 * dimension but the first (lists: concatenated), and each caller gets its own rows of every
 * output.
 * ------------------------------------------------------------------------------------------- */
#define MS_MAX_TENSORS 16 /* inputs, and outputs, of one request */
#define MS_NAME_MAX 32    /* bytes of a name, its NUL included: 1 to 31 of [A-Za-z0-9_.:-] */
/* Element kinds of named tensors besides the ms_dtype values: a list of strings. Its bytes:
 * the number of items (uint64), each item's length (uint64), then the items one after another
 * (ms_text_from() writes them; ms_text_item() reads one). UTF-8 reaches a python model as str,
 * BYTES as bytes. */
#define MS_TEXT_UTF8 64
#define MS_TEXT_BYTES 65
/* How the model is called with the named inputs (ms_infer_n's form). */
#define MS_CALL_ARGS 0   /* model(t0, t1, ...): names "0", "1", ... in order */
#define MS_CALL_KWARGS 1 /* model(name=t, ...) */
#define MS_CALL_DICT 2   /* model({name: t, ...}) */
/* What the model answered (ms_outputs_count's *form). */
#define MS_ANSWER_DICT 2  /* a dict (or a mapping): outputs by name */
#define MS_ANSWER_ONE 3   /* one tensor or list, named "0" */
#define MS_ANSWER_TUPLE 4 /* a tuple: "0", "1", ... */
#define MS_ANSWER_LIST 5  /* a list of tensors: "0", "1", ... */
typedef struct ms_named {
    const char *name;        /* not owned; copied into the request */
    const ms_tensor *tensor; /* not owned: a tensor of this model, alive until the call returns */
} ms_named;
/* An output, described in place: every pointer is into the outputs tensor, valid until it is
 * freed. */
typedef struct ms_output {
    const char *name;
    int dtype; /* an ms_dtype, or MS_TEXT_UTF8 / MS_TEXT_BYTES (then shape[0] is the items) */
    int rank;
    int64_t shape[MS_MAX_RANK];
    const void *data;
    size_t nbytes;
} ms_output;
/* What the model says of one of its inputs or outputs (ms_model_input, ms_model_output). */
typedef struct ms_tensor_info {
    const char *name; /* the model's name for it, owned by the model handle (valid until
                         ms_release); NULL for the one unnamed tensor of ms_infer (dense) */
    int dtype;        /* an ms_dtype, MS_TEXT_UTF8 / MS_TEXT_BYTES (a list of strings), or 0 when
                         not known */
    int rank;         /* -1 when not known (then shape is all -1) */
    int64_t shape[MS_MAX_RANK]; /* rank dimensions, -1 for one that varies; the rest -1 */
} ms_tensor_info;
/* How many inputs (outputs) the model says it has, in its order: the named ones of a python
 * model whose framework says them (an ONNX Runtime session: its inputs and outputs; a Keras
 * model: its inputs and outputs by name), 1 for a model of one unnamed tensor each way (dense:
 * the ms_model_signature one), 0 when the model does not say (other python models, identity).
 * Outputs are in the order a tuple answer has them. Errors: MS_E_INVAL (model NULL). */
MS_EXPORT int ms_model_inputs_count(const ms_model *model);
MS_EXPORT int ms_model_outputs_count(const ms_model *model);
/* Describes input (output) i, 0 <= i < its count, in *out (written only on success). Errors:
 * MS_E_INVAL (model or out NULL, i out of range). */
MS_EXPORT int ms_model_input(const ms_model *model, int i, ms_tensor_info *out);
MS_EXPORT int ms_model_output(const ms_model *model, int i, ms_tensor_info *out);
/* Runs the model on n named inputs (1 to MS_MAX_TENSORS, names unique) called as form says.
 *   outputs: OUT, one new tensor holding every output, owned by the caller (ms_tensor_free()).
 * Errors: MS_E_INVAL (a NULL or repeated name, a name that is not 1 to 31 of [A-Za-z0-9_.:-],
 * form unknown, a tensor of another model handle, n out of range; a backend that takes one
 * tensor: the dense backend), MS_E_LIMIT (over MS_MAX_TENSORS outputs), MS_E_BACKEND (the
 * model's error; a batchable model's output that has not one row per input row), and as
 * ms_infer(). */
MS_EXPORT int ms_infer_n(ms_model *model, const ms_named *inputs, int n, int form,
                         ms_tensor **outputs);
/* The number of outputs in outputs (from ms_infer_n), and in *form (may be NULL) the structure
 * the model answered (MS_ANSWER_*). Errors: MS_E_INVAL (not an ms_infer_n output). */
MS_EXPORT int ms_outputs_count(const ms_tensor *outputs, int *form);
/* Describes output i (0 <= i < ms_outputs_count) in *out. Errors: MS_E_INVAL. */
MS_EXPORT int ms_outputs_get(const ms_tensor *outputs, int i, ms_output *out);
/* A list of n strings (items[i] of lens[i] bytes; kind MS_TEXT_UTF8 or MS_TEXT_BYTES) as a new
 * tensor of the model, for ms_infer_n.
 *   out: OUT, owned by the caller (ms_tensor_free()).
 * Errors: MS_E_INVAL (kind, NULL items with n > 0, n over 2^24), MS_E_TOO_LARGE, as
 * ms_tensor_alloc(). */
MS_EXPORT int ms_text_from(ms_model *model, int kind, size_t n, const char *const *items,
                           const size_t *lens, ms_tensor **out);
/* Item i of a list output (dtype MS_TEXT_*): *bytes (not NUL-terminated, in the outputs tensor)
 * and *len. Errors: MS_E_INVAL (not a list, i out of range). */
MS_EXPORT int ms_text_item(const ms_output *list, size_t i, const char **bytes, size_t *len);
#ifdef __cplusplus
}
#endif
#endif
