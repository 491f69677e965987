/*
 * Links: the arena of one lease mapped by the workers of another lease of the same client, so
 * that the output of one model is the input of the next with no copy (a pipeline). The client
 * asks with "link" (proto.h); the link lives in the registry (ms__lease.links), so a restarted
 * worker and a swap's new worker get it again after their attaches; it is dropped ("unlink" to
 * the workers) before the linked lease goes. See models.h.
 *
 * Workers read control messages between batches only, and each maps the arena with its own
 * mapping: a link dropped while a request that reads it is running unmaps after that run.
 */
#include <string.h>

#include "../common/errors.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

/* Sends w "link" (from's arena as lease l's arena k) or "unlink" (from NULL). */
static int send_link(ms__wproc *w, const ms__lease *l, int k, const ms__lease *from, char *err,
                     size_t errlen)
{
    json_t *msg = json_pack("{s:s, s:I, s:i, s:i}", "op", from != NULL ? "link" : "unlink", "lease",
                            (json_int_t)l->id, "arena", k, "nfds", from != NULL ? 1 : 0);
    if (msg != NULL && from != NULL)
        json_object_set_new(msg, "from", json_integer((json_int_t)from->id));
    int rc = msg == NULL ? ms__fail(err, errlen, MS_E_NOMEM, "out of memory")
                         : ms__sup_send(w, msg, from != NULL ? &from->arena_fd : NULL,
                                        from != NULL ? 1 : 0, err, errlen);
    json_decref(msg);
    return rc;
}

/* Sends link k of l (from, or an unlink when from is NULL) to every live worker of l's model
 * that serves it: up instances' workers for a link, every worker for an unlink. A worker that
 * cannot take it is dying: its restart gets the links again. */
static void tell_workers(const ms__lease *l, int k, const ms__lease *from)
{
    char err[MS__ERRLEN];
    ms__model *m = l->model;
    if (m == NULL)
        return;
    for (int i = 0; i < m->nworkers; i++) {
        ms__wproc *w = m->workers[i];
        bool serves =
            from == NULL || (w->inst >= 0 && w->inst < m->ninst && m->inst[w->inst].w == w &&
                             m->inst[w->inst].state == MS__INST_UP);
        if (w->ctrl_fd >= 0 && serves && send_link(w, l, k, from, err, sizeof err) != 0)
            ms__log_warn_limited(
                "model \"%s\": cannot tell worker %ld of link %d of lease %llu: %s", m->tag,
                (long)w->pid, k, (unsigned long long)l->id, err);
    }
}

int ms__links_add(ms__lease *to, ms__lease *from, int *arena, char *err, size_t errlen)
{
    if (to == from || from->arena_fd < 0)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "link: expected two leases of this connection, each with its arena, got "
                        "lease %llu twice or one without an arena",
                        (unsigned long long)to->id);
    if (to->model == NULL)
        return ms__fail(err, errlen, MS_E_UNLOADED, "link: the model of lease %llu was unloaded",
                        (unsigned long long)to->id);
    int free_k = 0;
    for (int k = MS__ARENA_LINKS; k >= 1; k--) {
        if (to->links[k - 1] == from->id) {
            *arena = k;
            return 0;
        }
        if (to->links[k - 1] == 0)
            free_k = k;
    }
    if (free_k == 0)
        return ms__fail(err, errlen, MS_E_LIMIT,
                        "link: lease %llu (model \"%s\") has %d linked arenas already, the most "
                        "there may be; release a model whose outputs it read, or copy the input",
                        (unsigned long long)to->id, to->model->tag, MS__ARENA_LINKS);
    to->links[free_k - 1] = from->id;
    tell_workers(to, free_k, from);
    ms__log_debug("model \"%s\": lease %llu reads lease %llu's arena as arena %d", to->model->tag,
                  (unsigned long long)to->id, (unsigned long long)from->id, free_k);
    *arena = free_k;
    return 0;
}

void ms__links_drop(ms__lease *l)
{
    if (l->client == NULL)
        return;
    for (ms__lease *o = LIST_FIRST(&l->client->lease_list); o != NULL; o = LIST_NEXT(o, by_client))
        for (int k = 1; k <= MS__ARENA_LINKS; k++)
            if (o->links[k - 1] == l->id) {
                o->links[k - 1] = 0;
                tell_workers(o, k, NULL);
            }
}

int ms__links_send(ms__wproc *w, const ms__lease *l, char *err, size_t errlen)
{
    for (int k = 1; k <= MS__ARENA_LINKS; k++) {
        const ms__lease *from =
            l->links[k - 1] != 0 ? ms__client_lease(l->client, l->links[k - 1]) : NULL;
        if (from != NULL && from->arena_fd >= 0) {
            int rc = send_link(w, l, k, from, err, errlen);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}
