/*
 * The worker's client table: attach (map the client's arena, give it a hint bit) and detach, as
 * the daemon's control messages say (and link, unlink: links.c), and "open" (a restarted worker's
 * door opens after its attaches, ring.h). A client is attached once per lease; at most
 * MS__WORKER_CLIENTS_MAX at once.
 *
 * A swap (docs/ARCHITECTURE.md, "A swap, step by step") adds two: "drain" to the old worker of
 * an instance (it takes nothing more, tells the daemon where it stopped in each ring, and ends
 * its loop) and "takeover" to the new one (it moves onto the instance's door, whose gen it then
 * serves, and its attaches carry the "head" where the old worker stopped).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve.h"
#include "../common/arena.h"
#include "../common/log.h"
#include "../common/util.h"

static ms__client *find(ms__server *s, int64_t lease, size_t *at)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->clients[i]->lease == lease) {
            if (at)
                *at = i;
            return s->clients[i];
        }
    return NULL;
}

void ms__clients_compact_active(ms__server *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nactive; i++)
        if (s->active[i]->active)
            s->active[k++] = s->active[i];
    s->nactive = k;
}

void ms__client_drop_at(ms__server *s, size_t i, const char *why)
{
    ms__client *c = s->clients[i];
    s->clients[i] = s->clients[--s->n];
    if (c->active) {
        c->active = false;
        ms__clients_compact_active(s);
    }
    if (s->last_served == c)
        s->last_served = NULL;
    s->by_hint[c->hint] = NULL;
    for (unsigned k = 1; k <= MS__ARENA_LINKS; k++)
        ms__client_unlink(s, c, k);
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
static void take_hint(ms__server *s, ms__client *c)
{
    for (unsigned h = 0; h < MS__DOOR_HINTS; h++)
        if (s->by_hint[h] == NULL) {
            c->hint = h;
            break;
        }
    s->by_hint[c->hint] = c;
    atomic_store(&c->rg->hint, c->hint + 1);
}

/* Where a client's ring starts for this worker. A fresh arena's at 0 (entries published before
 * the attach are ours); resume: at its tail; a swap (head given): where the old worker of this
 * door stopped (drain, below). */
static uint32_t first_entry(ms__ring *rg, bool resume, const json_t *head)
{
    if (json_is_integer(head) && json_integer_value(head) >= 0 &&
        json_integer_value(head) <= UINT32_MAX)
        return (uint32_t)json_integer_value(head);
    return resume ? atomic_load_explicit(&rg->tail, memory_order_acquire) : 0;
}

/* resume: the lease was served by a worker of this door that died; its ring goes on from where
 * its tail stands (what was published before was the dead worker's). */
static void attach(ms__server *s, int64_t lease, int64_t ring, int arena_fd, bool resume,
                   const json_t *head)
{
    char err[MS__ERRLEN];
    void *base = NULL;
    uint64_t cap = 0;

    if (s->n >= MS__WORKER_CLIENTS_MAX) {
        ms__log_error_limited(
            "model \"%s\": refusing client with lease %lld: %d clients attached already", s->w->tag,
            (long long)lease, MS__WORKER_CLIENTS_MAX);
        goto fail;
    }
    if (ring < 0 || ring >= (int64_t)MS__RINGS_MAX) {
        ms__log_error_limited("model \"%s\": refusing lease %lld: ring %lld, expected 0 to %u",
                              s->w->tag, (long long)lease, (long long)ring, MS__RINGS_MAX - 1);
        goto fail;
    }
    if (find(s, lease, NULL) != NULL) {
        ms__log_error_limited("model \"%s\": refusing a second attach of lease %lld", s->w->tag,
                              (long long)lease);
        goto fail;
    }
    int r = ms__arena_map(arena_fd, &base, &cap, err, sizeof err);
    if (r < 0) {
        ms__log_error_limited("model \"%s\": cannot map the arena of lease %lld: %s", s->w->tag,
                              (long long)lease, err);
        goto fail;
    }
    ms__client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ms__log_error_limited("model \"%s\": out of memory attaching lease %lld", s->w->tag,
                              (long long)lease);
        goto fail;
    }
    c->lease = lease;
    c->ring = (unsigned)ring;
    c->arena_fd = arena_fd;
    for (unsigned k = 0; k < MS__ARENA_LINKS; k++)
        c->link_fd[k] = -1;
    c->base = base;
    c->capacity = cap;
    c->rg = ms__ring_of(base, c->ring);
    c->head = first_entry(c->rg, resume, head);
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

/* "takeover": this worker, loaded beside the old version on a door of its own, moves onto the
 * instance's door (fds: its page 0 read-write and its bell page, which this takes) and serves the
 * slots stamped with its gen. Only before any attach: its clients come after, with the heads
 * where the old worker stopped. */
static void takeover(ms__server *s, const int *fds)
{
    char err[MS__ERRLEN];
    ms__door *d = NULL;
    if (s->n > 0) {
        ms__log_error("model \"%s\": refusing a takeover with %zu client(s) attached", s->w->tag,
                      s->n);
    } else if (ms__door_map(fds[0], fds[1], true, &d, err, sizeof err) < 0) {
        ms__log_error("model \"%s\": cannot map the door to take over: %s", s->w->tag, err);
    } else {
        /* The door it loaded on stays mapped (two pages): a signal handler may ring it. */
        s->w->door = d;
        s->gen = atomic_load(&d->gen);
        ms__log_info("model \"%s\": took over its instance's door (gen %u)", s->w->tag, s->gen);
    }
    close(fds[0]);
    close(fds[1]);
}

/* "drain": a swap moves this instance to a new worker. Nothing is taken between two batches, so
 * every request taken is answered: what is left in the rings is the new worker's, from each
 * client's head on. Tells the daemon those heads ("drained") and ends the loop (s->drained). */
static void drain(ms__server *s)
{
    char err[MS__ERRLEN];
    /* Runner threads may still hold requests taken before: answered first. */
    ms__runners_quiesce(s);
    json_t *heads = json_array();
    for (size_t i = 0; heads != NULL && i < s->n; i++)
        json_array_append_new(heads, json_pack("[I, I]", (json_int_t)s->clients[i]->lease,
                                               (json_int_t)s->clients[i]->head));
    json_t *msg = heads != NULL ? json_pack("{s:s, s:o}", "op", "drained", "heads", heads) : NULL;
    if (msg == NULL || ms__msg_send(s->w->ctrl_fd, msg, NULL, 0, 5000, err, sizeof err) < 0)
        ms__log_error("model \"%s\": cannot tell the daemon where it stopped: %s", s->w->tag,
                      msg != NULL ? err : "out of memory");
    json_decref(msg);
    /* Nobody sleeps on the door now: clients need not wake it until the new worker is on it. */
    atomic_store(&s->w->door->sleeping, 0);
    s->drained = true;
    ms__log_info("model \"%s\": drained for a swap (%zu client(s)); stopping", s->w->tag, s->n);
}

static void control_msg(ms__server *s, json_t *msg, int *fds, int nfds)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    json_t *lease = json_object_get(msg, "lease");
    json_t *ring = json_object_get(msg, "ring");
    if (op && strcmp(op, "attach") == 0 && json_is_integer(lease) && json_is_integer(ring) &&
        nfds == 1) {
        attach(s, json_integer_value(lease), json_integer_value(ring), fds[0],
               json_is_true(json_object_get(msg, "resume")), json_object_get(msg, "head"));
        return;
    }
    if (op && (strcmp(op, "link") == 0 || strcmp(op, "unlink") == 0) && json_is_integer(lease)) {
        ms__links_msg(s, find(s, json_integer_value(lease), NULL), op[0] == 'l', msg, fds, nfds);
        return;
    }
    if (op && strcmp(op, "takeover") == 0 && nfds == 2) {
        takeover(s, fds);
        return;
    }
    if (op && strcmp(op, "drain") == 0 && nfds == 0) {
        drain(s);
        return;
    }
    if (op && strcmp(op, "open") == 0 && nfds == 0) {
        /* After the attaches: the in-flight count was the dead worker's (unless a swap's old
         * worker drained: then what clients sent meanwhile is still to serve); down == 0
         * (release) lets clients send again, after every head read above. */
        if (!json_is_true(json_object_get(msg, "keep_inflight")))
            atomic_store(&s->w->door->inflight, 0);
        atomic_store_explicit(&s->w->door->down, 0, memory_order_release);
        ms__log_info("model \"%s\": door open again (%zu client(s) attached)", s->w->tag, s->n);
        return;
    }
    if (op && strcmp(op, "detach") == 0 && json_is_integer(lease)) {
        size_t at;
        ms__client *c = find(s, json_integer_value(lease), &at);
        if (c != NULL) {
            /* Not while a runner writes into its arena. */
            ms__runners_unpin(s, c);
            ms__client_drop_at(s, at, "detached");
        } else {
            ms__log_debug("model \"%s\": detach of unknown lease %lld", s->w->tag,
                          (long long)json_integer_value(lease));
        }
    } else {
        ms__log_warn_limited("model \"%s\": ignoring control message op \"%s\" (lease %s, %d fds)",
                             s->w->tag, op ? op : "(none)",
                             json_is_integer(lease) ? "set" : "missing", nfds);
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* Reads what the control socket has, without blocking. Returns 1 when the daemon is gone. */
int ms__control_poll(ms__server *s)
{
    char err[MS__ERRLEN];
    int r = ms__reader_fill(&s->rd, s->w->ctrl_fd, err, sizeof err);
    s->ctrl_polls++;
    if (s->ctrl_due) {
        /* Requests wait for links: after this read, each is taken or refused. */
        s->ctrl_due = false;
        s->relook = true;
        for (size_t i = 0; i < s->n; i++)
            if (s->clients[i]->link_wait != 0)
                ms__client_activate(s, s->clients[i]);
    }
    for (;;) {
        json_t *msg = NULL;
        int fds[MS__FDS_MAX];
        int nfds = 0;
        int q = ms__reader_next(&s->rd, &msg, fds, &nfds, err, sizeof err);
        if (q == MS_E_LIMIT && msg != NULL) {
            /* Its descriptors were lost (this worker at its RLIMIT_NOFILE): that one message
             * goes unserved (an attach: its client's calls time out); everyone else is served
             * on. The daemon keeps a reserve of the worker's descriptors (attach.c), so this is
             * the exception. */
            ms__log_error_limited("model \"%s\": ignoring a control message: %s", s->w->tag, err);
            json_decref(msg);
            continue;
        }
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
    return s->drained ? 1 : 0;
}
