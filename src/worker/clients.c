/*
 * The worker's client table: attach (map the client's arena, give it a hint bit) and detach, as
 * the daemon's control messages say, and "open" (a restarted worker's door opens after its
 * attaches, ring.h). A client is attached once per lease; at most MS__WORKER_CLIENTS_MAX at once.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "../common/arena.h"
#include "../common/log.h"
#include "../common/util.h"

static client *find(server *s, int64_t lease, size_t *at)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->clients[i]->lease == lease) {
            if (at)
                *at = i;
            return s->clients[i];
        }
    return NULL;
}

void ms__clients_compact_active(server *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nactive; i++)
        if (s->active[i]->active)
            s->active[k++] = s->active[i];
    s->nactive = k;
}

void ms__client_drop_at(server *s, size_t i, const char *why)
{
    client *c = s->clients[i];
    s->clients[i] = s->clients[--s->n];
    if (c->active) {
        c->active = false;
        ms__clients_compact_active(s);
    }
    if (s->last_served == c)
        s->last_served = NULL;
    s->by_hint[c->hint] = NULL;
    if (s->w->backend->arena != NULL)
        s->w->backend->arena(s->w->state, c->base, c->capacity, false);
    ms__arena_unmap(c->base, c->capacity);
    close(c->arena_fd);
    ms__log_debug("model \"%s\": client with lease %lld dropped (%s)", s->w->tag,
                  (long long)c->lease, why);
    free(c);
}

/* c's hint bit, which it sets on the door when it publishes: a free one exists, as clients are
 * fewer than MS__DOOR_HINTS. */
static void take_hint(server *s, client *c)
{
    for (unsigned h = 0; h < MS__DOOR_HINTS; h++)
        if (s->by_hint[h] == NULL) {
            c->hint = h;
            break;
        }
    s->by_hint[c->hint] = c;
    atomic_store(&c->rg->hint, c->hint + 1);
}

/* resume: the lease was served by a worker of this door that died; its ring goes on from where
 * its tail stands (what was published before was the dead worker's). */
static void attach(server *s, int64_t lease, int64_t ring, int arena_fd, bool resume)
{
    char err[MS__ERRLEN];
    void *base = NULL;
    uint64_t cap = 0;

    if (s->n >= MS__WORKER_CLIENTS_MAX) {
        ms__log_error("model \"%s\": refusing client with lease %lld: %d clients attached already",
                      s->w->tag, (long long)lease, MS__WORKER_CLIENTS_MAX);
        goto fail;
    }
    if (ring < 0 || ring >= (int64_t)MS__RINGS_MAX) {
        ms__log_error("model \"%s\": refusing lease %lld: ring %lld, expected 0 to %u", s->w->tag,
                      (long long)lease, (long long)ring, MS__RINGS_MAX - 1);
        goto fail;
    }
    if (find(s, lease, NULL) != NULL) {
        ms__log_error("model \"%s\": refusing a second attach of lease %lld", s->w->tag,
                      (long long)lease);
        goto fail;
    }
    int r = ms__arena_map(arena_fd, &base, &cap, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": cannot map the arena of lease %lld: %s", s->w->tag,
                      (long long)lease, err);
        goto fail;
    }
    client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ms__log_error("model \"%s\": out of memory attaching lease %lld", s->w->tag,
                      (long long)lease);
        goto fail;
    }
    c->lease = lease;
    c->ring = (unsigned)ring;
    c->arena_fd = arena_fd;
    c->base = base;
    c->capacity = cap;
    c->rg = ms__ring_of(base, c->ring);
    /* A fresh arena's ring starts at 0 (entries published before this attach are ours). */
    c->head = resume ? atomic_load_explicit(&c->rg->tail, memory_order_acquire) : 0;
    take_hint(s, c);
    s->clients[s->n++] = c;
    if (s->w->backend->arena != NULL)
        s->w->backend->arena(s->w->state, base, cap, true);
    /* It may have published before we attached it (with scan_all): look at it now. */
    ms__client_activate(s, c);
    ms__log_debug("model \"%s\": attached lease %lld on ring %u (arena %llu bytes)", s->w->tag,
                  (long long)lease, c->ring, (unsigned long long)cap);
    return;
fail:
    if (base)
        ms__arena_unmap(base, cap);
    close(arena_fd);
}

static void control_msg(server *s, json_t *msg, int *fds, int nfds)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    json_t *lease = json_object_get(msg, "lease");
    json_t *ring = json_object_get(msg, "ring");
    if (op && strcmp(op, "attach") == 0 && json_is_integer(lease) && json_is_integer(ring) &&
        nfds == 1) {
        attach(s, json_integer_value(lease), json_integer_value(ring), fds[0],
               json_is_true(json_object_get(msg, "resume")));
        return;
    }
    if (op && strcmp(op, "open") == 0 && nfds == 0) {
        /* After the attaches: the in-flight count was the dead worker's; down == 0 (release)
         * lets clients send again, after every head read above. */
        atomic_store(&s->w->door->inflight, 0);
        atomic_store_explicit(&s->w->door->down, 0, memory_order_release);
        ms__log_info("model \"%s\": door open again (%zu client(s) attached)", s->w->tag, s->n);
        return;
    }
    if (op && strcmp(op, "detach") == 0 && json_is_integer(lease)) {
        size_t at;
        if (find(s, json_integer_value(lease), &at))
            ms__client_drop_at(s, at, "detached");
        else
            ms__log_debug("model \"%s\": detach of unknown lease %lld", s->w->tag,
                          (long long)json_integer_value(lease));
    } else {
        ms__log_warn("model \"%s\": ignoring control message op \"%s\" (lease %s, %d fds)",
                     s->w->tag, op ? op : "(none)", json_is_integer(lease) ? "set" : "missing",
                     nfds);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* Reads what the control socket has, without blocking. Returns 1 when the daemon is gone. */
int ms__control_poll(server *s)
{
    char err[MS__ERRLEN];
    int r = ms__reader_fill(&s->rd, s->w->ctrl_fd, err, sizeof err);
    for (;;) {
        json_t *msg = NULL;
        int fds[MS__FDS_MAX];
        int nfds = 0;
        int q = ms__reader_next(&s->rd, &msg, fds, &nfds, err, sizeof err);
        if (q < 0) {
            ms__log_error("model \"%s\": bad message from the daemon: %s", s->w->tag, err);
            return 1;
        }
        if (msg == NULL)
            break;
        control_msg(s, msg, fds, nfds);
        json_decref(msg);
    }
    if (r < 0) {
        ms__log_error("model \"%s\": control socket: %s", s->w->tag, err);
        return 1;
    }
    if (s->rd.eof) {
        ms__log_info("model \"%s\": the daemon closed the control socket; exiting", s->w->tag);
        return 1;
    }
    return 0;
}
