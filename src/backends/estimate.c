/* Memory estimates by backend, for the daemon's admission (which must not link BLAS or CUDA). */
#include <string.h>

#include "backend.h"
#include "dense/dense.h"

uint64_t ms__backend_estimate(const ms__spec *spec)
{
    uint64_t one = strcmp(spec->backend, "dense") == 0 ? ms__dense_estimate(spec) : 0;
    /* Every instance is a worker process with a copy of its own: the spec's memory, which this
     * stands in for, is all of them together. */
    uint64_t n = spec->instances > 1 ? (uint64_t)spec->instances : 1;
    return one > UINT64_MAX / n ? UINT64_MAX : one * n;
}
