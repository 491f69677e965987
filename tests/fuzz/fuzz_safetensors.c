/* Fuzzes the safetensors header parser: the input is a whole file, parsed once whole and once
 * with only its header given, and every accepted tensor must lie inside the data section. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/safetensors.h"
#include "../../src/common/util.h"

static void check(const ms__st_file *f, uint64_t file_size)
{
    if (f->data_start + f->data_len != file_size)
        abort();
    for (size_t i = 0; i < f->ntensors; i++) {
        const ms__st_tensor *t = &f->tensors[i];
        if (t->begin > t->end || t->end > f->data_len || t->rank < 0 || t->rank > 8 || !t->name)
            abort();
        size_t numel;
        if (!ms__shape_numel(t->rank, t->shape, &numel))
            abort();
        if (t->dtype && numel * ms_dtype_size(t->dtype) != t->end - t->begin)
            abort();
        if (ms__st_find(f, t->name) == NULL)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[MS__ERRLEN];
    ms__st_file f;
    if (ms__st_parse(data, size, size, &f, err, sizeof err) == 0) {
        check(&f, size);
        ms__st_free(&f);
    }
    if (size >= 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = (n << 8) | data[i];
        if (n <= size - 8 && ms__st_parse(data, (size_t)n + 8, size, &f, err, sizeof err) == 0) {
            check(&f, size);
            ms__st_free(&f);
        }
    }
    return 0;
}
