/* Checks shared by the backends whose models map rows to rows (dense, on the CPU and on CUDA). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "../common/util.h"

int ms__rows_output_for(const ms__tensor_view *in, int64_t in_width, int64_t out_width,
                        int64_t max_rows, ms__tensor_view *out, char *err, size_t errlen)
{
    if (in->dtype != MS_FLOAT32)
        return ms__fail(err, errlen, MS_E_DTYPE, "expected float32, got %s",
                        ms_dtype_name(in->dtype));
    if (in->rank != 2 || in->shape[0] < 0 || in->shape[1] != in_width) {
        char got[160];
        if (in->rank >= 0 && in->rank <= 8)
            ms__shape_str(in->rank, in->shape, got, sizeof got);
        else
            snprintf(got, sizeof got, "rank %d", in->rank);
        return ms__fail(err, errlen, MS_E_SHAPE, "expected [N, %" PRId64 "] (float32), got %s",
                        in_width, got);
    }
    if (in->shape[0] > max_rows)
        return ms__fail(err, errlen, MS_E_TOO_LARGE,
                        "expected at most %" PRId64 " rows in one call, got %" PRId64, max_rows,
                        in->shape[0]);
    out->dtype = MS_FLOAT32;
    out->rank = 2;
    memset(out->shape, 0, sizeof out->shape);
    out->shape[0] = in->shape[0];
    out->shape[1] = out_width;
    out->nbytes = (size_t)in->shape[0] * (size_t)out_width * sizeof(float);
    return 0;
}

int ms__rows_run_check(const ms__tensor_view *in, const ms__tensor_view *out, int64_t in_width,
                       int64_t out_width, int64_t max_rows, char *err, size_t errlen)
{
    ms__tensor_view want;
    int rc = ms__rows_output_for(in, in_width, out_width, max_rows, &want, err, errlen);
    if (rc < 0)
        return rc;
    size_t rows = (size_t)in->shape[0];
    size_t in_bytes = rows * (size_t)in_width * sizeof(float);
    if (in->nbytes < in_bytes || out->nbytes < want.nbytes || (rows && (!in->data || !out->data)))
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected %zu bytes of input and %zu of room for the output, got %zu and "
                        "%zu",
                        in_bytes, want.nbytes, in->nbytes, out->nbytes);
    return 0;
}
