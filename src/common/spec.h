/*
 * A model's spec: what to load and how to serve it. Parsed from a JSON object; unknown fields,
 * wrong types and out-of-range values are MS_E_SPEC errors that name the field.
 *
 * Fields and defaults:
 *   backend        "dense" | "python" | "identity" (tests)      (required)
 *   weights        path of a safetensors file                   (required for dense)
 *   device         "cpu" | "cuda:N"                             "cpu"
 *   output         "linear" | "softmax"                         "linear" (dense)
 *   keep_alive     seconds a model with no lease stays loaded   300 (0: unload at once)
 *   max_batch      rows per backend run, 1..65536               64
 *   batch_delay_us wait for more rows after the oldest, 0..1e6  0
 *   instances      worker processes for this tag, 1..64         1
 *   thread_safe    bool                                         false
 *   batchable      bool                                         true
 *   memory         bytes the model needs (0: estimate)          0
 *   load_timeout   seconds to wait for memory, 0..86400         60
 */
#ifndef MS_SPEC_H
#define MS_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { MS__OUTPUT_LINEAR = 0, MS__OUTPUT_SOFTMAX = 1 };

typedef struct ms__spec {
    char backend[16];
    char *weights; /* malloc'd, NULL when absent */
    char device[32];
    int output;
    double keep_alive;
    int max_batch;
    int batch_delay_us;
    int instances;
    bool thread_safe;
    bool batchable;
    uint64_t memory;
    double load_timeout;
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
/* True when two specs describe the same model (every field equal). */
bool ms__spec_equal(const ms__spec *a, const ms__spec *b);
void ms__spec_free(ms__spec *spec);
/* Deep copy. */
int ms__spec_copy(const ms__spec *src, ms__spec *dst);

#endif
