/*
 * A model's spec: what to load and how to serve it. Parsed from a JSON object; unknown fields,
 * wrong types and out-of-range values are MS_E_SPEC errors that name the field.
 *
 * Fields and defaults:
 *   backend        "dense" | "python" | "identity" (tests)      (required)
 *   weights        path of a safetensors file                   (required for dense)
 *   device         "cpu" | "cuda:N" | "auto": every instance on    "cpu"
 *                  it; "auto": the cuda device (of the daemon's budget table) with the most free
 *                  budget that holds the whole model, else "cpu" when the table has none
 *   devices        null | "auto" | a list of 1..16 distinct "cpu" / "cuda:N": the devices the
 *                  instances are spread over (each instance to the one with the most free budget
 *                  left after those placed before it; "auto": every cuda device of the budget
 *                  table, else "cpu"). With devices, device is "auto" (given or not); any other
 *                  device beside devices is an error naming both fields.             null
 *   output         "linear" | "softmax"                         "linear" (dense)
 *   keep_alive     seconds a model with no lease stays loaded   300 (0: unload at once)
 *   max_batch      rows per backend run, 1..65536               64
 *   batch_delay_us wait for more rows after the oldest, 0..1e6  0
 *   instances      worker processes for this tag, 1..64         1
 *   thread_safe    bool                                         false
 *   threads        null | 0..64: batches run at once when        null (the CPUs the worker
 *                  thread_safe (runner threads in the worker);   may run on; 0 is the same)
 *                  more than 1 only with thread_safe true
 *   batchable      bool: callers' requests may be merged into    true (dense, identity);
 *                  one batch (each output row depends only on    false (python)
 *                  its own input row)
 *   memory         bytes the model needs (0: estimate)          0
 *   load_timeout   seconds a load may take, waiting for memory   60
 *                  and constructing included, 0..86400
 *   call_timeout   seconds one batch may run (or the worker stop  600
 *                  turning) before the daemon kills the worker and
 *                  restarts it, 0..86400 (0: never)
 *   batch_sizes    null | increasing row counts the model runs  null (any count up to max_batch)
 *                  at (1..65536, at most 32): a batch is padded
 *                  up to the next one, a request larger than
 *                  the largest is split (padding rows never
 *                  reach a caller)
 *   pad            null | {dim, multiple, value}: requests of    null (ms__spec_pad)
 *                  several tensors padded along dim
 *   max_restarts   restarts of crashed instances within 60 s     5
 *                  before the model is marked failed, 0..100 (0: the first crash fails it)
 *   version        null | a label of 1..64 printable characters  null
 *                  (no spaces): which version of the model the tag serves (modelshare swap)
 *   shared_with    "owner" | "group": in group mode (modelshared  "owner"
 *                  --group), who besides its owner (the uid that loaded it) may acquire the model;
 *                  ignored by a single-user daemon. Not compared: the loaded model's value holds
 *                  (its owner changes it with swap). Left out of the canonical JSON when "owner".
 *   python         object, required for (and only for) backend "python":
 *     constructor  base64 of the pickled constructor, at most 98304 characters (the spec reaches
 *                  the worker on its command line); null when the pickle is in a memfd
 *     constructor_size    instead of constructor, for a larger pickle: its size, 1 to 2^30
 *     constructor_sha256  bytes, and its SHA-256 (64 lowercase hex digits); the pickle itself
 *                  travels in a sealed memfd with the request (ctorfd.h). Exactly one of
 *                  constructor and these two is given.
 *     executable   absolute path of the interpreter to run the worker with         (required)
 *     cwd          absolute path of the worker's working directory                 (required)
 *     path         the client's sys.path: at most 256 strings                      []
 *     framework    null | "torch" | "tensorflow" | "jax" | "onnxruntime": its memory
 *                  cap is set; torch and onnxruntime models get the worker's adapter null
 *     key          null | SHA-256 hex: the constructor's identity, compared instead of the
 *                  pickle, which differs from process to process for the same code (the Python
 *                  package sets it: a fingerprint of the code, names and captured values, or
 *                  the user's key=)                                                 null
 *     identity     null | object of at most 32 parts (name: text of at most 200 bytes): what
 *                  the key is made of, so that a conflict names the parts that differ    null
 *   Two python specs are the same model when their key (else constructor, or
 *   constructor_sha256) and framework are
 *   equal (with the other fields): executable, cwd and path say where the first acquirer's worker
 * runs and are not compared, so processes of one job in different folders share the model.
 */
#ifndef MS_SPEC_H
#define MS_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MS__OUTPUT_LINEAR = 0, MS__OUTPUT_SOFTMAX = 1 };
enum { MS__SPEC_BATCH_SIZES_MAX = 32 };
enum { MS__SPEC_PAD_VALUES_MAX = 16 };

/* Spec field "pad" (spec_pad.c): requests of several named tensors that differ only along
 * dimension dim share a batch, each tensor that has that dimension padded to the batch's longest
 * (rounded up to multiple) with its name's value (0 when not named). Each output that has the
 * dimension is named in cut (cut back to each caller's length) or keep (returned as it is):
 * whether an output's dimension dim is the padded one cannot be guessed from its size (a pooled
 * (B, D) answer with D equal to the padded length would be cut wrongly), so an output named in
 * neither fails the call (the python worker checks it on every call, padded or not). dim 0: no
 * pad. */
typedef struct ms__spec_pad {
    int dim;      /* 1..7, 0: none */
    int multiple; /* 1..65536 */
    int nvalues, ncut, nkeep;
    char names[MS__SPEC_PAD_VALUES_MAX][32]; /* NUL-padded */
    double values[MS__SPEC_PAD_VALUES_MAX];
    char cut[MS__SPEC_PAD_VALUES_MAX][32];  /* output names, NUL-padded */
    char keep[MS__SPEC_PAD_VALUES_MAX][32]; /* output names, NUL-padded */
} ms__spec_pad;
/* Parses the "pad" field's value into *pad (null: none): an object {"dim": 1..7, "multiple":
 * 1..65536 (default 1), "value": {name: number, ...}, "cut": [name, ...], "keep": [name, ...]
 * (each at most 16 names of 1 to 31 bytes; a name in both cut and keep is an error)}.
 * MS_E_SPEC naming the part. */
int ms__spec_pad_parse(const json_t *v, ms__spec_pad *pad, char *err, size_t errlen);
/* The field's canonical JSON (null when none; ms__spec_to_json leaves the field out then); NULL
 * when out of memory. */
json_t *ms__spec_pad_json(const ms__spec_pad *pad);
/* The most entries of "devices", and the room for one ("cuda:63"). */
enum { MS__SPEC_DEVICES_MAX = 16, MS__SPEC_DEVICE_LEN = 8 };

/* The spec's fields, one line each, in the order messages list them (the "unknown spec field"
 * message, include/modelshare.h's table, which tests/unit/test_spec.c checks against this one):
 *   X(name, default, keyword)
 *     name     the JSON field; spec.c has parse_<name>, json_<name> and same_<name> for it
 *     default  the value a spec without the field gets, as JSON text run through the field's own
 *              parser; NULL: none (backend is required, python only with backend "python").
 *              batchable's default also depends on the backend (spec.c: backend_defaults).
 *     keyword  1: the Python package takes it as a keyword argument (modelshare._core
 *              .SPEC_FIELDS); 0: its factories set it (backend, weights, python).
 * The canonical JSON has them sorted by name; ms__spec_equal and ms__spec_diff compare every one.
 */
#define MS__SPEC_FIELDS(X)                                                                         \
    X(backend, NULL, 0)                                                                            \
    X(weights, "null", 0)                                                                          \
    X(device, "\"cpu\"", 1)                                                                        \
    X(devices, "null", 1)                                                                          \
    X(output, "\"linear\"", 1)                                                                     \
    X(keep_alive, "300", 1)                                                                        \
    X(max_batch, "64", 1)                                                                          \
    X(batch_sizes, "null", 1)                                                                      \
    X(batch_delay_us, "0", 1)                                                                      \
    X(instances, "1", 1)                                                                           \
    X(thread_safe, "false", 1)                                                                     \
    X(threads, "null", 1)                                                                          \
    X(batchable, "true", 1)                                                                        \
    X(memory, "0", 1)                                                                              \
    X(load_timeout, "60", 1)                                                                       \
    X(call_timeout, "600", 1)                                                                      \
    X(max_restarts, "5", 1)                                                                        \
    X(python, NULL, 0)                                                                             \
    X(version, "null", 1)                                                                          \
    X(pad, "null", 1)                                                                              \
    X(shared_with, "\"owner\"", 1)

/* The longest version label. */
#define MS__SPEC_VERSION_MAX 64

/* The most max_restarts a spec may ask for. */
#define MS__SPEC_RESTARTS_MAX 100

typedef struct ms__spec {
    char backend[16];
    char *weights;   /* malloc'd, NULL when absent */
    char device[32]; /* "cpu", "cuda:N" or "auto" */
    /* devices: ndevices entries ("cpu", "cuda:N"), or devices_auto; neither: null. */
    char devices[MS__SPEC_DEVICES_MAX][MS__SPEC_DEVICE_LEN];
    int ndevices;
    bool devices_auto;
    int output;
    double keep_alive;
    int max_batch;
    int batch_delay_us;
    int instances;
    bool thread_safe;
    int threads; /* 0: as many as the worker's CPUs (ms__worker_threads) */
    bool batchable;
    uint64_t memory;
    double load_timeout;
    double call_timeout; /* seconds one batch may run before the daemon kills the worker; 0 off */
    int batch_sizes[MS__SPEC_BATCH_SIZES_MAX]; /* increasing; unused entries 0 */
    int nbatch_sizes;                          /* 0: any row count up to max_batch */
    int max_restarts;
    ms__spec_pad pad;                       /* "pad": dim 0 when none */
    char version[MS__SPEC_VERSION_MAX + 1]; /* "" when none */
    bool shared_group;                      /* shared_with "group" */
    char *python;     /* malloc'd canonical JSON of the "python" object, NULL when absent */
    char *python_key; /* malloc'd: what two python specs compare (constructor, framework) */
    /* python.constructor_size: the pickle travels in a sealed memfd of this many bytes beside
     * the request, which the model's workers get as fd 6 (ctorfd.h); 0: it is inline in
     * python.constructor. */
    uint64_t python_ctor_size;
} ms__spec;

/* Parses a JSON object into *out (defaults applied). Returns 0, or MS_E_SPEC with a message like
 * "spec field \"max_batch\": expected an integer from 1 to 65536, got \"ten\"" or
 * "unknown spec field \"weigths\" (known: backend, weights, ...)". *out is freed with
 * ms__spec_free() only after success. */
int ms__spec_from_json(const json_t *obj, ms__spec *out, char *err, size_t errlen);
/* Same, from text. */
int ms__spec_parse(const char *text, ms__spec *out, char *err, size_t errlen);
/* Canonical JSON (every field, defaults included, sorted keys). New reference. */
json_t *ms__spec_to_json(const ms__spec *spec);
/* The canonical JSON with the python constructor shortened to its length and a hash, for
 * messages and status. New reference. */
json_t *ms__spec_to_json_brief(const ms__spec *spec);
/* What differs between two specs, field by field, as ms__spec_equal compares them:
 * "max_batch: loaded 8, asked 16; constructor part closure.path: loaded '/a', asked '/b'".
 * Writes "" when they are equal; buf is always terminated (cut with "..." when full). */
void ms__spec_diff(const ms__spec *loaded, const ms__spec *asked, char *buf, size_t buflen);
/* True when two specs describe the same model (every field equal). */
bool ms__spec_equal(const ms__spec *a, const ms__spec *b);
/* True when one field (a name of MS__SPEC_FIELDS) is equal in a and b, as ms__spec_equal
 * compares it; false for a name that is not a field. */
bool ms__spec_field_equal(const ms__spec *a, const ms__spec *b, const char *field);
/* The most rows one backend run takes: max_batch, or the largest of batch_sizes when smaller. */
int ms__spec_run_rows(const ms__spec *spec);
void ms__spec_free(ms__spec *spec);
/* True when the daemon chooses the devices (device "auto" or devices given). */
bool ms__spec_placed(const ms__spec *spec);
/* Deep copy. */
int ms__spec_copy(const ms__spec *src, ms__spec *dst);

#endif
