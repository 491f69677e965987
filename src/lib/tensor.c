/*
 * Tensors in a model's arena, and the allocator that places them: first fit over
 * [MS__ARENA_DATA, capacity), MS__ARENA_ALIGN aligned, free blocks coalesced. Freed memory stays
 * resident up to RETAIN_MAX bytes, so that a loop of large requests reuses pages that both
 * processes have already mapped (no page faults, no zeroing); beyond that, large freed blocks are
 * handed back to the kernel with a hole punch. The bookkeeping is in private memory only: the
 * worker, which maps the same arena, can neither read nor corrupt it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "../common/arena.h"

#define PUNCH_MIN (1ull << 20)
#define RETAIN_MAX (64ull << 20)

int ms__alloc_init(ms__alloc *a, int fd, uint64_t start, uint64_t end)
{
    memset(a, 0, sizeof *a);
    a->fd = fd;
    a->start = start;
    a->end = end;
    if (end <= start)
        return 0;
    a->free = malloc(sizeof *a->free);
    if (a->free == NULL)
        return MS_E_NOMEM;
    a->free->off = start;
    a->free->len = end - start;
    a->free->next = NULL;
    return 0;
}

void ms__alloc_destroy(ms__alloc *a)
{
    ms__free_block *b = a->free;
    while (b) {
        ms__free_block *next = b->next;
        free(b);
        b = next;
    }
    a->free = NULL;
}

static uint64_t round_up(uint64_t n)
{
    if (n == 0)
        return MS__ARENA_ALIGN;
    if (n > UINT64_MAX - (MS__ARENA_ALIGN - 1))
        return 0;
    return (n + MS__ARENA_ALIGN - 1) & ~(uint64_t)(MS__ARENA_ALIGN - 1);
}

int ms__alloc_get(ms__alloc *a, uint64_t size, uint64_t *off, uint64_t *got)
{
    uint64_t want = round_up(size);
    if (want == 0)
        return MS_E_TOO_LARGE;
    ms__free_block **link = &a->free;
    for (ms__free_block *b = a->free; b; link = &b->next, b = b->next) {
        if (b->len < want)
            continue;
        *off = b->off;
        *got = want;
        /* First fit reuses the lowest free blocks, where retained pages are: count them used. */
        a->retained -= a->retained < want ? a->retained : want;
        if (b->len == want) {
            *link = b->next;
            free(b);
        } else {
            b->off += want;
            b->len -= want;
        }
        return 0;
    }
    return MS_E_TOO_LARGE;
}

static void punch(const ms__alloc *a, uint64_t off, uint64_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    uint64_t p = page > 0 ? (uint64_t)page : 4096;
    uint64_t begin = (off + p - 1) / p * p;
    uint64_t end = (off + len) / p * p;
    if (a->fd < 0 || end <= begin)
        return;
    /* Best effort: on failure the pages just stay in use until the arena is closed. */
    (void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)begin,
                    (off_t)(end - begin));
}

void ms__alloc_put(ms__alloc *a, uint64_t off, uint64_t len)
{
    if (len == 0)
        return;
    if (len >= PUNCH_MIN && a->retained + len > RETAIN_MAX)
        punch(a, off, len);
    else
        a->retained += len;
    ms__free_block *prev = NULL, *next = a->free;
    while (next && next->off < off) {
        prev = next;
        next = next->next;
    }
    bool join_prev = prev && prev->off + prev->len == off;
    bool join_next = next && off + len == next->off;
    if (join_prev && join_next) {
        prev->len += len + next->len;
        prev->next = next->next;
        free(next);
    } else if (join_prev) {
        prev->len += len;
    } else if (join_next) {
        next->off = off;
        next->len += len;
    } else {
        ms__free_block *b = malloc(sizeof *b);
        if (b == NULL)
            return; /* out of memory: this range is lost until the arena is closed */
        b->off = off;
        b->len = len;
        b->next = next;
        if (prev)
            prev->next = b;
        else
            a->free = b;
    }
}

uint64_t ms__alloc_largest(const ms__alloc *a)
{
    uint64_t best = 0;
    for (const ms__free_block *b = a->free; b; b = b->next)
        if (b->len > best)
            best = b->len;
    return best;
}

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
    t->next = model->tensors;
    if (t->next)
        t->next->prev = t;
    model->tensors = t;
    *out = t;
    return 0;
}

void ms__tensor_free_locked(ms_tensor *t)
{
    ms_model *m = t->model;
    if (t->prev)
        t->prev->next = t->next;
    else
        m->tensors = t->next;
    if (t->next)
        t->next->prev = t->prev;
    ms__alloc_put(&m->alloc, t->off, t->size);
    free(t);
}

void ms__tensor_shrink_locked(ms_tensor *t, uint64_t keep)
{
    uint64_t k = round_up(keep);
    if (k == 0 || k >= t->size)
        return;
    ms__alloc_put(&t->model->alloc, t->off + k, t->size - k);
    t->size = k;
}

/* Checks dtype, rank and shape; *nbytes is the tensor's size. */
static int check_shape(ms_model *model, int dtype, int rank, const int64_t *shape, size_t *nbytes)
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
    int r = check_shape(model, dtype, rank, shape, &nbytes);
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
    int r = check_shape(model, dtype, rank, shape, &need);
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
