/*
 * Linked arenas: the arena of another lease of the same client, mapped beside a client's own so
 * that its requests may take their input there (a pipeline: one model's output is the next one's
 * input, with no copy). The daemon sends "link" (lease, arena index k, the other arena's fd) and
 * "unlink" (lease, k) on the control socket, which the loop reads only between batches, and
 * an unlink waits for the client's requests that runner threads hold: a request taken from the
 * ring never points into an arena unmapped under it. The input's place in a
 * linked arena is checked as in the own one (records.c: ms__req_decode with link_cap).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "../common/arena.h"
#include "../common/errors.h"
#include "../common/log.h"
#include "../common/util.h"

void ms__client_unlink(ms__server *s, ms__client *c, unsigned k)
{
    if (k < 1 || k > MS__ARENA_LINKS || c->link_base[k - 1] == NULL)
        return;
    ms__runners_unpin(s, c); /* a runner may be reading an input there (runners.c) */
    void *base = c->link_base[k - 1];
    uint64_t cap = c->link_cap[k - 1];
    if (s->w->backend->arena != NULL)
        s->w->backend->arena(s->w->state, base, cap, false);
    ms__arena_unmap(base, cap);
    close(c->link_fd[k - 1]);
    c->link_base[k - 1] = NULL;
    c->link_cap[k - 1] = 0;
    c->link_from[k - 1] = 0;
    c->link_fd[k - 1] = -1;
}

/* Maps fd (taken), lease from's arena, as c's linked arena k, in place of the one there. */
static void link_one(ms__server *s, ms__client *c, unsigned k, int64_t from, int fd)
{
    char err[MS__ERRLEN];
    void *base = NULL;
    uint64_t cap = 0;
    if (ms__arena_map(fd, &base, &cap, err, sizeof err) < 0) {
        ms__log_error_limited("model \"%s\": cannot map arena %u linked to lease %lld: %s",
                              s->w->tag, k, (long long)c->lease, err);
        close(fd);
        return;
    }
    ms__client_unlink(s, c, k);
    c->link_fd[k - 1] = fd;
    c->link_base[k - 1] = base;
    c->link_cap[k - 1] = cap;
    c->link_from[k - 1] = from;
    if (s->w->backend->arena != NULL)
        s->w->backend->arena(s->w->state, base, cap, true);
    ms__log_debug("model \"%s\": lease %lld: arena %u linked (%llu bytes)", s->w->tag,
                  (long long)c->lease, k, (unsigned long long)cap);
}

bool ms__links_await(ms__server *s, ms__client *c, const ms__slot *sl)
{
    /* A look at one field in shared memory: only a hint, the decoder checks the copy. */
    uint32_t k = ((const volatile ms__req *)&sl->req)->in_arena;
    uint64_t from = ((const volatile ms__req *)&sl->req)->in_link;
    if (k == 0 || k > MS__ARENA_LINKS)
        return false; /* a wait for a tensor of several (ms__links_wait_once) stays */
    if (c->link_cap[k - 1] != 0 && (uint64_t)c->link_from[k - 1] == from) {
        c->link_wait = 0;
        return false;
    }
    return ms__links_wait_once(s, c);
}

bool ms__links_wait_once(ms__server *s, ms__client *c)
{
    if (c->link_wait != c->head + 1) {
        c->link_wait = c->head + 1;
        c->link_polls = s->ctrl_polls;
    } else if (s->ctrl_polls != c->link_polls) {
        c->link_wait = 0;
        return false;
    }
    s->ctrl_due = true;
    return true;
}

int ms__links_check(const ms__client *c, const ms__req *req, char *err, size_t errlen)
{
    unsigned k = req->in_arena; /* decoded: 0, or a linked arena that is mapped */
    if (k == 0 || (uint64_t)c->link_from[k - 1] == req->in_link)
        return 0;
    return ms__fail(err, errlen, MS_E_PROTOCOL,
                    "input arena %u: expected the arena of lease %llu, it is lease %lld's", k,
                    (unsigned long long)req->in_link, (long long)c->link_from[k - 1]);
}

void ms__links_msg(ms__server *s, ms__client *c, bool link, const json_t *msg, int *fds, int nfds)
{
    json_t *arena = json_object_get(msg, "arena");
    json_t *from = json_object_get(msg, "from");
    json_int_t k = json_is_integer(arena) ? json_integer_value(arena) : 0;
    bool ok = c != NULL && k >= 1 && k <= (json_int_t)MS__ARENA_LINKS && nfds == (link ? 1 : 0) &&
              (!link || (json_is_integer(from) && json_integer_value(from) > 0));
    if (c == NULL && !link && nfds == 0) {
        /* A worker still loading (a restart, a swap's new one) hears of leases it has not got. */
        ms__log_debug("model \"%s\": unlink of a lease not attached here", s->w->tag);
        return;
    }
    if (!ok) {
        ms__log_warn_limited("model \"%s\": ignoring %s (lease %s, arena %lld, %d fds)", s->w->tag,
                             link ? "link" : "unlink", c != NULL ? "attached" : "unknown",
                             (long long)k, nfds);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    if (link) {
        link_one(s, c, (unsigned)k, json_integer_value(from), fds[0]);
        ms__client_activate(s, c);
        s->relook = true;
    } else
        ms__client_unlink(s, c, (unsigned)k);
}
