/* Links (link.h): a model's workers map another model's arena, asked of the daemon once per pair
 * of leases and cached in the model (ms_model.links). */
#include "link.h"

#include "call.h"
#include "errors.h"

/* The cached index of src_lease's arena, 0 when not linked (model lock held). */
static int cached_locked(const ms_model *m, int64_t src_lease)
{
    for (int k = 1; k <= MS__ARENA_LINKS; k++)
        if (m->links[k - 1] == src_lease)
            return k;
    return 0;
}

/* Asks the daemon to link src_lease's arena to the model's workers: *arena. */
static int ask(ms_model *m, int64_t src_lease, int *arena)
{
    json_t *req = json_pack("{s:s, s:I, s:I}", "op", "link", "lease", (json_int_t)m->lease, "from",
                            (json_int_t)src_lease);
    if (req == NULL)
        return ms__lib_fail(m->client, MS_E_NOMEM, "out of memory for a link request");
    json_t *reply = NULL;
    int r = ms__lib_call(m->client, req, NULL, 0, &reply, NULL, NULL, 0);
    json_decref(req);
    if (r < 0)
        return r;
    json_t *k = json_object_get(reply, "arena");
    if (!json_is_integer(k) || json_integer_value(k) < 1 || json_integer_value(k) > MS__ARENA_LINKS)
        r = ms__lib_fail(m->client, MS_E_PROTOCOL,
                         "the daemon answered a link without an arena index from 1 to %d",
                         MS__ARENA_LINKS);
    else
        *arena = (int)json_integer_value(k);
    json_decref(reply);
    return r;
}

int ms__link_get(ms_model *model, int64_t src_lease, int *arena)
{
    pthread_mutex_lock(&model->lock);
    int k = cached_locked(model, src_lease);
    pthread_mutex_unlock(&model->lock);
    if (k == 0) {
        int r = ask(model, src_lease, &k);
        if (r < 0)
            return r;
        /* Cached only while the source is still this client's: released meanwhile (by another
         * thread), its link is gone at the daemon and k may already name another arena. The
         * lock order is ms__link_forget's. */
        ms_client *c = model->client;
        pthread_mutex_lock(&c->models_lock);
        bool live = false;
        ms_model *m;
        LIST_FOREACH(m, &c->models, link)
        live |= m->lease == src_lease;
        if (live) {
            pthread_mutex_lock(&model->lock);
            model->links[k - 1] = src_lease;
            pthread_mutex_unlock(&model->lock);
        }
        pthread_mutex_unlock(&c->models_lock);
        if (!live)
            return ms__lib_fail(c, MS_E_INVAL,
                                "ms_tensor_view: the model whose tensor holds the input was "
                                "released while it was being linked");
    }
    *arena = k;
    return 0;
}

void ms__link_forget(ms_model *gone)
{
    ms_client *c = gone->client;
    pthread_mutex_lock(&c->models_lock);
    ms_model *m;
    LIST_FOREACH(m, &c->models, link)
    {
        pthread_mutex_lock(&m->lock);
        for (int k = 1; k <= MS__ARENA_LINKS; k++)
            if (m->links[k - 1] == gone->lease)
                m->links[k - 1] = 0;
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&c->models_lock);
}
