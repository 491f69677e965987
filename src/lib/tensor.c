/* Tensors in a model's arena (tensor.h), and the public tensor API. The allocator that places
 * them is alloc.c. */
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

#include "errors.h"

int ms__tensor_new_locked(ms_model *model, uint64_t nbytes, ms_tensor **out)
{
    /* A copy that fork() made shares the parent's arena: placing a tensor from the copied
     * allocator would write over the parent's, and its rings are the parent's too. */
    if (model->client->forked_from != 0)
        return ms__lib_fail(model->client, MS_E_DAEMON_LOST,
                            "model \"%s\": this handle was acquired in process %lld, before "
                            "fork(): acquire the model again in this process",
                            model->tag, (long long)model->client->forked_from);
    ms_tensor *t = calloc(1, sizeof *t);
    if (t == NULL)
        return ms__lib_fail(model->client, MS_E_NOMEM, "out of memory for a tensor handle");
    int r = ms__alloc_get(&model->alloc, nbytes, &t->off, &t->size);
    if (r < 0) {
        free(t);
        return ms__lib_fail(model->client, MS_E_TOO_LARGE,
                            "a tensor of %llu bytes does not fit in the arena of model \"%s\": "
                            "the largest free block is %llu of %llu bytes (set "
                            "MODELSHARE_ARENA_BYTES for a larger arena)",
                            (unsigned long long)nbytes, model->tag,
                            (unsigned long long)ms__alloc_largest(&model->alloc),
                            (unsigned long long)model->arena_capacity);
    }
    t->model = model;
    t->nbytes = (size_t)nbytes;
    LIST_INSERT_HEAD(&model->tensors, t, link);
    *out = t;
    return 0;
}

void ms__tensor_free_locked(ms_tensor *t)
{
    if (t->holds > 0) {
        /* A timed-out request's worker may still read or write it: freed when done. */
        t->dropped = true;
        return;
    }
    ms_model *m = t->model;
    LIST_REMOVE(t, link);
    if (!t->view)
        ms__alloc_put(&m->alloc, t->off, t->size);
    free(t->answer);
    free(t);
}

void ms__tensor_hold_locked(ms_tensor *t)
{
    t->holds++;
}

void ms__tensor_unhold_locked(ms_tensor *t)
{
    if (--t->holds == 0 && t->dropped)
        ms__tensor_free_locked(t);
}

void ms__tensor_free_all_locked(ms_model *model)
{
    ms_tensor *t;
    while ((t = LIST_FIRST(&model->tensors)) != NULL) {
        LIST_REMOVE(t, link);
        free(t->answer);
        free(t);
    }
}

void ms__tensor_shrink_locked(ms_tensor *t, uint64_t keep)
{
    ms__alloc_shrink(&t->model->alloc, t->off, &t->size, keep);
}

int ms__tensor_check_shape(ms_model *model, int dtype, int rank, const int64_t *shape,
                           size_t *nbytes)
{
    size_t esize = ms_dtype_size(dtype);
    if (esize == 0)
        return ms__lib_fail(model->client, MS_E_DTYPE,
                            "tensor dtype: expected an ms_dtype from 1 to 10, got %d", dtype);
    if (rank < 0 || rank > MS_MAX_RANK)
        return ms__lib_fail(model->client, MS_E_INVAL, "tensor rank: expected 0 to %d, got %d",
                            MS_MAX_RANK, rank);
    if (rank > 0 && shape == NULL)
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "tensor shape: expected %d dimensions, got NULL", rank);
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0)
            return ms__lib_fail(model->client, MS_E_INVAL,
                                "tensor shape: expected dimensions >= 0, got %lld at index %d",
                                (long long)shape[i], i);
    size_t numel, n;
    if (!ms__shape_numel(rank, shape, &numel) || __builtin_mul_overflow(numel, esize, &n) ||
        n > model->arena_capacity)
        return ms__lib_fail(model->client, MS_E_TOO_LARGE,
                            "a %s tensor of this shape is larger than the arena of model \"%s\" "
                            "(%llu bytes; set MODELSHARE_ARENA_BYTES for a larger arena)",
                            ms_dtype_name(dtype), model->tag,
                            (unsigned long long)model->arena_capacity);
    *nbytes = n;
    return 0;
}

MS_EXPORT int ms_tensor_alloc(ms_model *model, ms_dtype dtype, int rank, const int64_t *shape,
                              ms_tensor **out)
{
    size_t nbytes;
    ms_tensor *t;

    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (out == NULL)
        return ms__lib_fail(model->client, MS_E_INVAL, "ms_tensor_alloc: out is NULL");
    int r = ms__tensor_check_shape(model, dtype, rank, shape, &nbytes);
    if (r < 0)
        return r;
    pthread_mutex_lock(&model->lock);
    r = ms__tensor_new_locked(model, nbytes, &t);
    if (r == 0) {
        t->dtype = dtype;
        t->rank = rank;
        for (int i = 0; i < rank; i++)
            t->shape[i] = shape[i];
    }
    pthread_mutex_unlock(&model->lock);
    if (r == 0)
        *out = t;
    return r;
}

MS_EXPORT int ms_tensor_from(ms_model *model, ms_dtype dtype, int rank, const int64_t *shape,
                             const void *data, size_t nbytes, ms_tensor **out)
{
    size_t need;
    ms_tensor *t;

    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (out == NULL)
        return ms__lib_fail(model->client, MS_E_INVAL, "ms_tensor_from: out is NULL");
    int r = ms__tensor_check_shape(model, dtype, rank, shape, &need);
    if (r < 0)
        return r;
    if (nbytes != need) {
        char s[256];
        ms__shape_str(rank, shape, s, sizeof s);
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "tensor data: expected %zu bytes for %s %s, got %zu", need,
                            ms_dtype_name(dtype), s, nbytes);
    }
    if (data == NULL && nbytes > 0)
        return ms__lib_fail(model->client, MS_E_INVAL, "tensor data: expected bytes, got NULL");
    r = ms_tensor_alloc(model, dtype, rank, shape, &t);
    if (r < 0)
        return r;
    if (nbytes > 0)
        memcpy(ms_tensor_data(t), data, nbytes);
    *out = t;
    return 0;
}

bool ms__tensor_holds_locked(const ms_model *m, uint64_t off, uint64_t n)
{
    const ms_tensor *t;
    LIST_FOREACH(t, &m->tensors, link)
    if (!t->view && !t->dropped && off >= t->off && off - t->off <= t->nbytes &&
        n <= t->nbytes - (off - t->off))
        return true;
    return false;
}

MS_EXPORT void ms_tensor_free(ms_tensor *tensor)
{
    if (tensor == NULL)
        return;
    ms_model *m = tensor->model;
    pthread_mutex_lock(&m->lock);
    ms__tensor_free_locked(tensor);
    pthread_mutex_unlock(&m->lock);
}

MS_EXPORT void *ms_tensor_data(const ms_tensor *tensor)
{
    if (tensor == NULL)
        return NULL;
    if (tensor->src_base != NULL)
        return (char *)tensor->src_base + tensor->off;
    return (char *)tensor->model->arena_base + tensor->off;
}

MS_EXPORT size_t ms_tensor_nbytes(const ms_tensor *tensor)
{
    return tensor ? tensor->nbytes : 0;
}

MS_EXPORT ms_dtype ms_tensor_dtype(const ms_tensor *tensor)
{
    return tensor ? tensor->dtype : 0;
}

MS_EXPORT int ms_tensor_rank(const ms_tensor *tensor)
{
    return tensor ? tensor->rank : 0;
}

MS_EXPORT const int64_t *ms_tensor_shape(const ms_tensor *tensor)
{
    return tensor ? tensor->shape : NULL;
}
