/* Fuzzes the .npy header parser: an accepted header must describe a sane array. */
#include <stdint.h>
#include <stdlib.h>

#include "modelshare.h"
#include "../../src/common/npy.h"
#include "../../src/common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[MS__ERRLEN];
    ms__npy_header h;
    if (ms__npy_parse(data, size, &h, err, sizeof err) != 0)
        return 0;
    size_t numel;
    if (h.data_offset > size || h.rank < 0 || h.rank > 8 || ms_dtype_size(h.dtype) == 0 ||
        !ms__shape_numel(h.rank, h.shape, &numel) || numel * ms_dtype_size(h.dtype) != h.nbytes)
        abort();
    return 0;
}
