/*
 * Linked arenas: the arena of another lease of the same client, mapped beside a client's own so
 * that its requests may take their input there (a pipeline: one model's output is the next one's
 * input, with no copy). The daemon sends "link" (lease, arena index k, the other arena's fd) and
 * "unlink" (lease, k) on the control socket, which the loop reads only between batches: a request
 * taken from the ring never points into an arena unmapped under it. The input's place in a
 * linked arena is checked as in the own one (records.c: ms__req_decode with link_cap).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "../common/arena.h"
#include "../common/log.h"
#include "../common/util.h"

void ms__client_unlink(server *s, client *c, unsigned k)
{
    if (k < 1 || k > MS__ARENA_LINKS || c->link_base[k - 1] == NULL)
        return;
    void *base = c->link_base[k - 1];
    uint64_t cap = c->link_cap[k - 1];
    if (s->w->backend->arena != NULL)
        s->w->backend->arena(s->w->state, base, cap, false);
    ms__arena_unmap(base, cap);
    close(c->link_fd[k - 1]);
    c->link_base[k - 1] = NULL;
    c->link_cap[k - 1] = 0;
    c->link_fd[k - 1] = -1;
}

/* Maps fd (taken) as c's linked arena k, in place of the one there. */
static void link_one(server *s, client *c, unsigned k, int fd)
{
    char err[MS__ERRLEN];
    void *base = NULL;
    uint64_t cap = 0;
    if (ms__arena_map(fd, &base, &cap, err, sizeof err) < 0) {
        ms__log_error("model \"%s\": cannot map arena %u linked to lease %lld: %s", s->w->tag, k,
                      (long long)c->lease, err);
        close(fd);
        return;
    }
    ms__client_unlink(s, c, k);
    c->link_fd[k - 1] = fd;
    c->link_base[k - 1] = base;
    c->link_cap[k - 1] = cap;
    if (s->w->backend->arena != NULL)
        s->w->backend->arena(s->w->state, base, cap, true);
    ms__log_debug("model \"%s\": lease %lld: arena %u linked (%llu bytes)", s->w->tag,
                  (long long)c->lease, k, (unsigned long long)cap);
}

void ms__links_msg(server *s, client *c, bool link, const json_t *msg, int *fds, int nfds)
{
    json_t *arena = json_object_get(msg, "arena");
    json_int_t k = json_is_integer(arena) ? json_integer_value(arena) : 0;
    bool ok = c != NULL && k >= 1 && k <= (json_int_t)MS__ARENA_LINKS && nfds == (link ? 1 : 0);
    if (!ok) {
        ms__log_warn("model \"%s\": ignoring %s (lease %s, arena %lld, %d fds)", s->w->tag,
                     link ? "link" : "unlink", c != NULL ? "attached" : "unknown", (long long)k,
                     nfds);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    if (link)
        link_one(s, c, (unsigned)k, fds[0]);
    else
        ms__client_unlink(s, c, (unsigned)k);
}
