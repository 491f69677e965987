/* Memory estimates by backend, for the daemon's admission (which must not link BLAS or CUDA). */
#include <string.h>

#include "backend.h"
#include "dense/dense.h"

uint64_t ms__backend_estimate(const ms__spec *spec)
{
    if (strcmp(spec->backend, "dense") == 0)
        return ms__dense_estimate(spec);
    return 0;
}
