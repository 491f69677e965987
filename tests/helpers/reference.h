/*
 * reference.h — the model as a helper client runs it itself, in its own process, for reference
 * answers (dense), and the helpers' shared arithmetic. Used by ms-planeclient and ms-chaosclient.
 */
#ifndef MS_TEST_REFERENCE_H
#define MS_TEST_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#include "../../src/backends/backend.h"
#include "../../src/common/spec.h"

typedef struct reference {
    const ms__backend_ops *be;
    void *state; /* owned: the backend's loaded model */
    ms__spec spec;
    size_t reduction; /* the longest sum behind an output: the layers' input widths added (dense);
                         0 for a backend that computes no sums (identity) */
} reference;

/* Loads the model of spec_json in this process; 0, or 1 after printing "error ...". */
int reference_load(reference *r, const char *spec_json);
void reference_free(reference *r);
/* Runs the reference on x [rows, width]: a malloc'd output (the caller frees it) and its size in
 * *nbytes; NULL when the backend refuses. */
float *reference_run(reference *r, const float *x, int64_t rows, int64_t width, size_t *nbytes);
/* Index of the first value of got that differs from want by more than float rounding, or -1 when
 * they agree. The server runs a request's rows in batches of other sizes (merged with other
 * clients' rows, or split), and BLAS picks its kernels by the row count and the CPU (OpenBLAS on
 * Haswell, SkylakeX, Zen...): the last bits may differ. The bound is FLT_EPSILON times the
 * reduction length (r->reduction) times 4, relative to the answer's scale (the largest |want|,
 * at least 1), as tests/testlib.py's assert_close_across_batches; a reduction of 0 (no sums:
 * identity) asks for the same bits. */
long first_mismatch(const reference *r, const float *got, const float *want, size_t n);
/* splitmix64: a well-mixed 64-bit value of x. */
uint64_t mix(uint64_t x);

#endif
