/* Helpers of a backend run that run.c and pieces.c share: staging buffers and the soundness of a
 * backend's output description (a leaf: it calls no other file of the worker). */
#include <stdbool.h>
#include <stdlib.h>

#include "serve.h"
#include "../common/util.h"
#include "modelshare.h"

int ms__stage_grow(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 65536;
    while (c < need)
        c *= 2;
    void *p = realloc(*buf, c);
    if (p == NULL)
        return MS_E_NOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

/* A backend's output description is sound: a dtype, a rank, nbytes that match the shape. */
bool ms__output_sound(const ms__tensor_view *o)
{
    size_t esize = ms_dtype_size(o->dtype), numel, n;
    return esize != 0 && o->rank >= 0 && o->rank <= MS_MAX_RANK &&
           ms__shape_numel(o->rank, o->shape, &numel) &&
           !__builtin_mul_overflow(numel, esize, &n) && n == o->nbytes &&
           (o->data != NULL || n == 0);
}
