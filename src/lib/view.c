/* ms_tensor_view: a tensor for bytes already in shared memory, inside a live tensor of the model
 * itself or of another model of the same client. The latter's arena is linked to the model's
 * workers (link.c), so that one model's output is the next one's input with no copy. */
#include <stdlib.h>

#include "errors.h"
#include "infer.h"
#include "link.h"
#include "tensor.h"

/* Where a view's bytes lie: an arena (0: the model's own), its base here, its lease, the offset. */
typedef struct place {
    int arena;
    void *base;
    int64_t lease;
    uint64_t off;
} place;

/* Whether [data, data + n) lies in a live tensor of m (at an offset aligned to align): *off. */
static bool held_by(ms_model *m, const void *data, size_t n, size_t align, uint64_t *off)
{
    uintptr_t base = (uintptr_t)m->arena_base, at = (uintptr_t)data;
    if (at < base || at - base >= m->arena_capacity || at % align != 0)
        return false;
    *off = at - base;
    pthread_mutex_lock(&m->lock);
    bool inside = ms__tensor_holds_locked(m, *off, n);
    pthread_mutex_unlock(&m->lock);
    return inside;
}

/* Another model of model's client whose live tensor holds the bytes: *p (arena not yet known).
 * While it is in the client's list its arena stays mapped; only its lease and base are kept. */
static bool other_model(ms_model *model, const void *data, size_t n, size_t align, place *p)
{
    ms_client *c = model->client;
    bool found = false;
    pthread_mutex_lock(&c->models_lock);
    ms_model *m;
    LIST_FOREACH(m, &c->models, link)
    if (m != model && held_by(m, data, n, align, &p->off)) {
        p->base = m->arena_base;
        p->lease = m->lease;
        found = true;
        break;
    }
    pthread_mutex_unlock(&c->models_lock);
    return found;
}

/* Where the bytes lie, linked to the model's workers when they are another model's. Returns 0,
 * or an error (message recorded). */
static int find_place(ms_model *model, const void *data, size_t nbytes, size_t align, place *p)
{
    uintptr_t base = (uintptr_t)model->arena_base, at = (uintptr_t)data;
    bool own = at >= base && at - base < model->arena_capacity;
    if (own && held_by(model, data, nbytes, align, &p->off))
        return 0;
    if (!own && other_model(model, data, nbytes, align, p))
        return ms__link_get(model, p->lease, &p->arena);
    return ms__lib_fail(model->client, MS_E_INVAL,
                        "ms_tensor_view: expected %zu bytes inside a live tensor of model \"%s\" "
                        "or of another model of this client (aligned to %zu bytes), got %p",
                        nbytes, model->tag, align, data);
}

bool ms__in_arenas(ms_model *model, const void *data)
{
    uintptr_t at = (uintptr_t)data;
    ms_client *c = model->client;
    bool in = false;
    pthread_mutex_lock(&c->models_lock);
    ms_model *m;
    LIST_FOREACH(m, &c->models, link)
    if (at >= (uintptr_t)m->arena_base && at - (uintptr_t)m->arena_base < m->arena_capacity) {
        in = true;
        break;
    }
    pthread_mutex_unlock(&c->models_lock);
    return in;
}

MS_EXPORT int ms_tensor_view(ms_model *model, ms_dtype dtype, int rank, const int64_t *shape,
                             const void *data, ms_tensor **out)
{
    size_t nbytes;
    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (out == NULL)
        return ms__lib_fail(model->client, MS_E_INVAL, "ms_tensor_view: out is NULL");
    int r = ms__tensor_check_shape(model, dtype, rank, shape, &nbytes);
    if (r < 0)
        return r;
    place p = {0};
    r = find_place(model, data, nbytes, ms_dtype_size(dtype), &p);
    if (r < 0)
        return r;
    ms_tensor *t = calloc(1, sizeof *t);
    if (t == NULL)
        return ms__lib_fail(model->client, MS_E_NOMEM, "out of memory for a tensor handle");
    *t = (ms_tensor){.model = model,
                     .off = p.off,
                     .nbytes = nbytes,
                     .dtype = dtype,
                     .rank = rank,
                     .view = true,
                     .arena = p.arena,
                     .src_base = p.arena != 0 ? p.base : NULL,
                     .src_lease = p.arena != 0 ? p.lease : 0};
    for (int i = 0; i < rank; i++)
        t->shape[i] = shape[i];
    pthread_mutex_lock(&model->lock);
    LIST_INSERT_HEAD(&model->tensors, t, link);
    pthread_mutex_unlock(&model->lock);
    *out = t;
    return 0;
}
