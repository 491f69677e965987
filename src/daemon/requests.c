/* The client protocol's requests (proto.h): hello, acquire, release, load, unload, swap, link,
 * status; and a connection's events, which read them. See protocol.h. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/ctorfd.h"
#include "../common/fdlimit.h"
#include "../common/log.h"
#include "../common/spec.h"
#include "modelshare.h"
#include "conn.h"
#include "owner.h"

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* The request's "tag": a valid tag, or an error reply (returns NULL). */
static const char *request_tag(ms__conn *k, json_t *id, const json_t *msg, const char *op)
{
    char err[MS__ERRLEN];
    const json_t *t = json_object_get(msg, "tag");
    if (!json_is_string(t)) {
        snprintf(err, sizeof err, "%s: expected a string \"tag\", got %s", op, ms__json_kind(t));
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return NULL;
    }
    const char *tag = json_string_value(t);
    if (!ms__tag_valid(tag)) {
        snprintf(err, sizeof err,
                 "%s: expected a tag of 1 to %d characters of [A-Za-z0-9._:/@+-], got \"%.160s\"",
                 op, MS__TAG_MAX, tag);
        ms__conn_error(k, id, MS_E_INVAL, err);
        return NULL;
    }
    return tag;
}

/* Parses the request's "spec": 1 with *spec filled (free it), 0 when null/absent (if allowed),
 * or a negative code after an error reply. */
static int request_spec(ms__conn *k, json_t *id, const json_t *msg, bool null_ok, ms__spec *spec)
{
    char err[MS__ERRLEN], full[MS__ERRLEN + 64];
    const json_t *j = json_object_get(msg, "spec");
    if ((j == NULL || json_is_null(j)) && null_ok)
        return 0;
    if (!json_is_object(j)) {
        snprintf(full, sizeof full, "expected \"spec\" to be a JSON object%s, got %s",
                 null_ok ? " or null" : "", ms__json_kind(j));
        ms__conn_error(k, id, MS_E_SPEC, full);
        return MS_E_SPEC;
    }
    int rc = ms__spec_from_json(j, spec, err, sizeof err);
    if (rc != 0) {
        ms__conn_error(k, id, rc, err);
        return rc;
    }
    return 1;
}

/* The constructor memfd of an acquire or load (proto.h): the descriptor after the first `at` ones
 * the op takes, present exactly when the spec says python.constructor_size (has_spec: spec was
 * given). Returns 0 with *ctor the index of it in fds, -1 when none; or a negative code after an
 * error reply that says what was expected. */
static int request_ctor(ms__conn *k, json_t *id, const char *op, const ms__spec *spec,
                        bool has_spec, const int *fds, int nfds, int at, int *ctor)
{
    char err[MS__ERRLEN], full[MS__ERRLEN + 64];
    uint64_t size = has_spec ? spec->python_ctor_size : 0;
    *ctor = -1;
    if (nfds > at + 1) {
        snprintf(full, sizeof full,
                 "%s: expected at most %d descriptor(s) (%sthe constructor memfd), got %d", op,
                 at + 1, at > 0 ? "the arena memfd, then " : "", nfds);
        ms__conn_error(k, id, MS_E_PROTOCOL, full);
        return MS_E_PROTOCOL;
    }
    if (nfds == at + 1 && size == 0) {
        snprintf(full, sizeof full,
                 "%s: got a constructor memfd, but the spec has no python.constructor_size "
                 "(expected no memfd with an inline constructor or no spec)",
                 op);
        ms__conn_error(k, id, MS_E_SPEC, full);
        return MS_E_SPEC;
    }
    if (nfds < at + 1 && size > 0) {
        snprintf(full, sizeof full,
                 "%s: the spec's constructor is in a memfd (python.constructor_size %llu), "
                 "expected that memfd with the request, got none",
                 op, (unsigned long long)size);
        ms__conn_error(k, id, MS_E_SPEC, full);
        return MS_E_SPEC;
    }
    if (size == 0)
        return 0;
    int rc = ms__ctorfd_check(fds[at], size, err, sizeof err);
    if (rc != 0) {
        snprintf(full, sizeof full, "%s: %s", op, err);
        ms__conn_error(k, id, rc, full);
        return rc;
    }
    *ctor = at;
    return 0;
}

/* ---- permission checks (group mode, owner.h) ---- */

/* Whether k may use m (acquire, load): false after an MS_E_PERMISSION reply. */
static bool may_use(ms__proto *p, ms__conn *k, json_t *id, const ms__model *m, const char *op)
{
    char err[MS__ERRLEN], who[96];
    if (ms__owner_may_use(&p->access, &m->owner, &m->spec, k->client->uid))
        return true;
    ms__owner_name(&m->owner, who, sizeof who);
    snprintf(err, sizeof err,
             "model \"%s\" belongs to %s and is not shared_with \"group\": refused the %s of "
             "uid %lu (its owner may load it with shared_with \"group\", or use another tag)",
             m->tag, who, op, (unsigned long)k->client->uid);
    ms__log_info("%s", err);
    ms__conn_error(k, id, MS_E_PERMISSION, err);
    return false;
}

/* Whether k may change m (unload, swap, a new spec): false after an MS_E_PERMISSION reply. */
static bool may_manage(ms__proto *p, ms__conn *k, json_t *id, const ms__model *m, const char *what)
{
    char err[MS__ERRLEN];
    if (ms__owner_manages(&p->access, &m->owner, k->client->uid))
        return true;
    ms__owner_refuse(&m->owner, m->tag, what, err, sizeof err);
    ms__log_info("refused uid %lu (pid %ld): %s", (unsigned long)k->client->uid, (long)k->pid, err);
    ms__conn_error(k, id, MS_E_PERMISSION, err);
    return false;
}

/* Whether k may give m (failed) another spec: false after an MS_E_PERMISSION reply. */
static bool may_respec(ms__proto *p, ms__conn *k, json_t *id, const ms__model *m,
                       const ms__spec *spec)
{
    char err[MS__ERRLEN];
    if (!may_manage(p, k, id, m, "load another spec into"))
        return false;
    int rc = ms__owner_spec_allowed(&p->access, &m->owner, spec, err, sizeof err);
    if (rc == 0)
        return true;
    ms__conn_error(k, id, rc, err);
    return false;
}

/* k's peer as the owner of a new model, if the daemon may load spec for it: true with *owner, or
 * false after an error reply. */
static bool new_owner(ms__proto *p, ms__conn *k, json_t *id, const ms__spec *spec, ms__owner *owner)
{
    char err[MS__ERRLEN];
    int rc = ms__owner_of_peer(k->fd, owner, err, sizeof err);
    if (rc == 0)
        rc = ms__owner_spec_allowed(&p->access, owner, spec, err, sizeof err);
    if (rc == 0)
        return true;
    ms__log_info("refused a load for uid %lu (pid %ld): %s", (unsigned long)k->client->uid,
                 (long)k->pid, err);
    ms__conn_error(k, id, rc, err);
    return false;
}

static void do_hello(ms__conn *k, json_t *id, const json_t *msg)
{
    char err[MS__ERRLEN];
    const json_t *v = json_object_get(msg, "version");
    if (!json_is_integer(v)) {
        snprintf(err, sizeof err,
                 "hello: expected an integer \"version\" (this daemon speaks %d), "
                 "got %s",
                 MS_PROTOCOL_VERSION, ms__json_kind(v));
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return;
    }
    if (json_integer_value(v) != MS_PROTOCOL_VERSION) {
        snprintf(err, sizeof err,
                 "protocol version mismatch: the client speaks version %lld, this modelshared "
                 "(pid %ld) speaks version %d",
                 (long long)json_integer_value(v), (long)getpid(), MS_PROTOCOL_VERSION);
        ms__log_warn_limited("client pid %ld refused: %s", (long)k->pid, err);
        ms__conn_error(k, id, MS_E_VERSION, err);
        ms__conn_kill(k, "version mismatch");
        return;
    }
    k->hello = true;
    json_t *r = ms__reply_ok(id);
    if (r != NULL) {
        json_object_set_new(r, "version", json_integer(MS_PROTOCOL_VERSION));
        json_object_set_new(r, "daemon_pid", json_integer(getpid()));
    }
    ms__conn_send(k, r, NULL, 0);
}

/* A new model of spec for k (its owner: k's peer), its load started; *ctor_fd taken. NULL after
 * an error reply. */
static ms__model *new_model(ms__proto *p, ms__conn *k, json_t *id, const char *tag,
                            const ms__spec *spec, int *ctor_fd)
{
    char err[MS__ERRLEN];
    ms__owner owner;
    ms__model *m;
    if (!new_owner(p, k, id, spec, &owner))
        return NULL;
    ms__life_make_room(p->models, tag);
    int rc = ms__registry_add(&p->models->reg, tag, spec, &m, err, sizeof err);
    if (rc != 0) {
        ms__log_warn_limited("refused to load \"%s\" for pid %ld: %s", tag, (long)k->pid, err);
        ms__conn_error(k, id, rc, err);
        return NULL;
    }
    m->owner = owner;
    ms__model_ctor_set(m, *ctor_fd);
    *ctor_fd = -1;
    ms__start_load(p->models, m);
    return m;
}

/* acquire and load share this: find or create the model, start its load when needed. *ctor_fd:
 * the spec's constructor memfd, checked (-1: none); taken (set to -1) when the model gets this
 * spec, left to the caller when it has the spec already. Returns the model to wait for or use,
 * or NULL after an error reply. */
static ms__model *model_for(ms__proto *p, ms__conn *k, json_t *id, const char *op, const char *tag,
                            ms__spec *spec, bool has_spec, int *ctor_fd)
{
    char err[MS__ERRLEN];
    ms__model *m = ms__registry_find(&p->models->reg, tag);
    if (m == NULL) {
        if (!has_spec) {
            snprintf(err, sizeof err,
                     "no model with tag \"%s\" is loaded (%s it with a spec to load it)", tag, op);
            ms__conn_error(k, id, MS_E_UNKNOWN_TAG, err);
            return NULL;
        }
        return new_model(p, k, id, tag, spec, ctor_fd);
    }
    if (!may_use(p, k, id, m, op))
        return NULL;
    if (!has_spec) {
        /* A failed model (its worker died, or its load failed) is loaded again with the spec it
         * had: the caller learns of a load that fails again from that load's own error. */
        if (m->state == MS__MODEL_FAILED) {
            ms__log_info("%s of failed \"%s\" by pid %ld: loading it again", op, tag, (long)k->pid);
            ms__start_load(p->models, m);
        }
        return m;
    }
    if (m->state == MS__MODEL_FAILED) {
        /* A failed model holds nothing: the next spec is loaded, whatever it is (with its
         * constructor memfd, if it came with one: the failed load's may be what failed). */
        if (!ms__spec_equal(&m->spec, spec) || *ctor_fd >= 0) {
            if (!may_respec(p, k, id, m, spec))
                return NULL;
            int rc = ms__model_spec_replace(m, spec, err, sizeof err);
            if (rc != 0) {
                ms__conn_error(k, id, rc, err);
                return NULL;
            }
            ms__model_ctor_set(m, *ctor_fd);
            *ctor_fd = -1;
        }
        ms__start_load(p->models, m);
        return m;
    }
    int rc = ms__model_spec_check(m, spec, err, sizeof err);
    if (rc != 0) {
        ms__log_info("refused %s of \"%s\" for pid %ld: spec conflict", op, tag, (long)k->pid);
        ms__conn_error(k, id, rc, err);
        return NULL;
    }
    return m;
}

/* The acquire's optional "timeout_ms" (0: none) into *ms; -1 (answered) when it is bad. */
static int request_timeout(ms__conn *k, json_t *id, const json_t *msg, int64_t *ms)
{
    const json_t *t = json_object_get(msg, "timeout_ms");
    *ms = 0;
    if (t == NULL || json_is_null(t))
        return 0;
    if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > 86400000) {
        ms__conn_error(k, id, MS_E_PROTOCOL,
                       "acquire: \"timeout_ms\": expected null or an integer from 0 to 86400000");
        return -1;
    }
    *ms = json_integer_value(t);
    return 0;
}

/* k waits for m to be ready, at most timeout_ms when not 0. */
static void acquire_waits(ms__proto *p, ms__conn *k, json_t *id, ms__model *m, int fd,
                          ms__arena_header *hdr, bool with_spec, int64_t timeout_ms)
{
    ms__pend *q = ms__conn_set_pending(p, k, MS__OP_ACQUIRE, id, m, fd, hdr, with_spec);
    if (q != NULL && timeout_ms > 0)
        q->deadline_ns = ms__registry_now(&p->models->reg) + timeout_ms * 1000000;
}

/* A lease keeps its arena open here, and a load opens a worker's: an acquire is refused (false,
 * answered) while too few descriptors are left for that, so that every other client keeps what
 * it has. */
static bool acquire_room(ms__conn *k, json_t *id)
{
    char err[MS__ERRLEN];
    if (ms__fd_room(MS__DAEMON_FD_RESERVE / 2, "acquire", "modelshared", err, sizeof err) == 0)
        return true;
    ms__log_warn_limited("refused an acquire of pid %ld: %s", (long)k->pid, err);
    ms__conn_error(k, id, MS_E_LIMIT, err);
    return false;
}

/* An acquire's descriptors, tag and timeout, and room for its lease: its tag, or NULL
 * (answered). */
static const char *acquire_args(ms__conn *k, json_t *id, const json_t *msg, int nfds,
                                int64_t *timeout_ms)
{
    if (nfds < 1) {
        char full[MS__ERRLEN];
        snprintf(full, sizeof full,
                 "acquire: expected 1 descriptor (the arena memfd, \"nfds\":1), or 2 with a "
                 "constructor memfd, got %d",
                 nfds);
        ms__conn_error(k, id, MS_E_PROTOCOL, full);
        return NULL;
    }
    const char *tag = request_tag(k, id, msg, "acquire");
    if (tag == NULL || request_timeout(k, id, msg, timeout_ms) < 0 || !acquire_room(k, id))
        return NULL;
    return tag;
}

static void do_acquire(ms__proto *p, ms__conn *k, json_t *id, const json_t *msg, int *fds, int nfds)
{
    char err[MS__ERRLEN], full[MS__ERRLEN + 64];
    ms__spec spec;
    int ctor = -1;
    int64_t timeout_ms;
    const char *tag = acquire_args(k, id, msg, nfds, &timeout_ms);
    if (tag == NULL)
        return;
    int has = request_spec(k, id, msg, true, &spec);
    if (has < 0)
        return;
    ms__arena_header *hdr = NULL;
    int rc = request_ctor(k, id, "acquire", &spec, has == 1, fds, nfds, 1, &ctor);
    if (rc != 0)
        goto out;
    rc = ms__arena_map_header(fds[0], &hdr, err, sizeof err);
    if (rc != 0) {
        snprintf(full, sizeof full, "acquire: the arena descriptor is not usable: %s", err);
        ms__conn_error(k, id, MS_E_PROTOCOL, full);
        goto out;
    }
    ms__log_info("acquire of \"%s\" by pid %ld%s", tag, (long)k->pid, has ? "" : " (no spec)");
    int none = -1;
    ms__model *m =
        model_for(p, k, id, "acquire", tag, &spec, has == 1, ctor >= 0 ? &fds[ctor] : &none);
    if (m == NULL) {
        ms__arena_unmap(hdr, MS__ARENA_HEADER);
        goto out;
    }
    int fd = fds[0];
    fds[0] = -1;
    switch (m->state) {
    case MS__MODEL_READY:
        ms__conn_grant(p, k, id, m, fd, hdr);
        break;
    case MS__MODEL_LOADING:
    case MS__MODEL_WAITING:
    case MS__MODEL_UNLOADING:
        acquire_waits(p, k, id, m, fd, hdr, has == 1, timeout_ms);
        break;
    default: /* failed at once */
        ms__arena_unmap(hdr, MS__ARENA_HEADER);
        close(fd);
        ms__conn_error(k, id, m->error_code, m->error);
        break;
    }
out:
    if (has == 1)
        ms__spec_free(&spec);
}

static void do_load(ms__proto *p, ms__conn *k, json_t *id, const json_t *msg, int *fds, int nfds)
{
    ms__spec spec;
    int ctor = -1, none = -1;
    const char *tag = request_tag(k, id, msg, "load");
    if (tag == NULL)
        return;
    if (request_spec(k, id, msg, false, &spec) < 0)
        return;
    if (request_ctor(k, id, "load", &spec, true, fds, nfds, 0, &ctor) != 0) {
        ms__spec_free(&spec);
        return;
    }
    ms__log_info("load of \"%s\" by pid %ld", tag, (long)k->pid);
    ms__model *m = model_for(p, k, id, "load", tag, &spec, true, ctor >= 0 ? &fds[ctor] : &none);
    ms__spec_free(&spec);
    if (m == NULL)
        return;
    switch (m->state) {
    case MS__MODEL_READY:
        ms__model_touch(&p->models->reg, m);
        ms__conn_send(k, ms__reply_ok(id), NULL, 0);
        break;
    case MS__MODEL_LOADING:
    case MS__MODEL_WAITING:
    case MS__MODEL_UNLOADING:
        ms__conn_set_pending(p, k, MS__OP_LOAD, id, m, -1, NULL, true);
        break;
    default:
        ms__conn_error(k, id, m->error_code, m->error);
        break;
    }
}

/* The pids of m's lessees as k may see them: in group mode, a member that is not root or the
 * service sees no other member's pids (docs/SECURITY.md), only how many. */
static void lease_pids_for(const ms__proto *p, const ms__conn *k, const ms__model *m, char *buf,
                           size_t len)
{
    if (ms__owner_admin(&p->access, k->client->uid))
        ms__model_lease_pids(m, buf, len);
    else
        snprintf(buf, len, "not shown to group members");
}

static void do_unload(ms__proto *p, ms__conn *k, json_t *id, const json_t *msg)
{
    char err[MS__ERRLEN], pids[512];
    const char *tag = request_tag(k, id, msg, "unload");
    if (tag == NULL)
        return;
    const json_t *f = json_object_get(msg, "force");
    if (f != NULL && !json_is_boolean(f)) {
        snprintf(err, sizeof err, "unload: expected \"force\" to be true or false, got %s",
                 ms__json_kind(f));
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return;
    }
    bool force = json_is_true(f);
    ms__model *m = ms__registry_find(&p->models->reg, tag);
    if (m == NULL) {
        snprintf(err, sizeof err, "no model with tag \"%s\"", tag);
        ms__conn_error(k, id, MS_E_UNKNOWN_TAG, err);
        return;
    }
    if (!may_manage(p, k, id, m, "unload"))
        return;
    if (m->state == MS__MODEL_UNLOADING) {
        ms__conn_set_pending(p, k, MS__OP_UNLOAD, id, m, -1, NULL, false);
        return;
    }
    if (m->leases > 0 && !force) {
        lease_pids_for(p, k, m, pids, sizeof pids);
        snprintf(err, sizeof err,
                 "model \"%s\" has %d lease%s (client pids %s); unload --force to take them away",
                 tag, m->leases, m->leases == 1 ? "" : "s", pids);
        ms__log_info("refused to unload \"%s\" for pid %ld: %d lease(s)", tag, (long)k->pid,
                     m->leases);
        ms__conn_error(k, id, MS_E_BUSY, err);
        return;
    }
    if (m->leases > 0) {
        ms__model_lease_pids(m, pids, sizeof pids);
        ms__log_info("model \"%s\": force-unload by pid %ld takes %d lease(s) away (client pids "
                     "%s)",
                     tag, (long)k->pid, m->leases, pids);
        ms__model_revoke_leases(&p->models->reg, m);
    } else {
        ms__log_info("model \"%s\": unload by pid %ld", tag, (long)k->pid);
    }
    if (m->state == MS__MODEL_LOADING || m->state == MS__MODEL_WAITING) {
        /* Those waiting for this load will not get it. */
        snprintf(err, sizeof err, "model \"%s\" was unloaded while it was loading", tag);
        ms__waiters_fail(p, m, MS_E_UNLOADED, err);
    }
    ms__conn_set_pending(p, k, MS__OP_UNLOAD, id, m, -1, NULL, false);
    ms__begin_unload(p->models, m); /* answers k once the workers are gone (at once when none) */
}

static void do_release(ms__proto *p, ms__conn *k, json_t *id, const json_t *msg)
{
    char err[MS__ERRLEN];
    const json_t *v = json_object_get(msg, "lease");
    if (!json_is_integer(v)) {
        snprintf(err, sizeof err, "release: expected an integer \"lease\", got %s",
                 ms__json_kind(v));
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return;
    }
    json_int_t lid = json_integer_value(v);
    ms__lease *l = lid > 0 ? ms__client_lease(k->client, (uint64_t)lid) : NULL;
    if (l == NULL) {
        snprintf(err, sizeof err,
                 "release: expected a lease held by this connection, got lease %lld (this "
                 "connection holds %d)",
                 (long long)lid, k->client->nleases);
        ms__conn_error(k, id, MS_E_INVAL, err);
        return;
    }
    ms__model *m = l->model;
    if (m != NULL)
        ms__log_info("model \"%s\": release of lease %lld by pid %ld (%d lease(s) left)", m->tag,
                     (long long)lid, (long)k->pid, m->leases - 1);
    else
        ms__log_info("release of dead lease %lld by pid %ld", (long long)lid, (long)k->pid);
    ms__workers_detach(l);
    ms__lease_release(&p->models->reg, l);
    ms__conn_send(k, ms__reply_ok(id), NULL, 0);
}

/* The lease named by msg's integer field, held by k's client; NULL when not (answered). */
static ms__lease *lease_arg(ms__conn *k, json_t *id, const json_t *msg, const char *op,
                            const char *field)
{
    char err[MS__ERRLEN];
    const json_t *v = json_object_get(msg, field);
    if (!json_is_integer(v)) {
        snprintf(err, sizeof err, "%s: expected an integer \"%s\", got %s", op, field,
                 ms__json_kind(v));
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return NULL;
    }
    json_int_t lid = json_integer_value(v);
    ms__lease *l = lid > 0 ? ms__client_lease(k->client, (uint64_t)lid) : NULL;
    if (l == NULL) {
        snprintf(err, sizeof err,
                 "%s: expected a lease held by this connection in \"%s\", got lease %lld", op,
                 field, (long long)lid);
        ms__conn_error(k, id, MS_E_INVAL, err);
    }
    return l;
}

/* link: the workers of "lease" map the arena of "from" too (links.c): "arena" says where. */
static void do_link(ms__conn *k, json_t *id, const json_t *msg)
{
    char err[MS__ERRLEN];
    ms__lease *to = lease_arg(k, id, msg, "link", "lease");
    ms__lease *from = to != NULL ? lease_arg(k, id, msg, "link", "from") : NULL;
    if (from == NULL)
        return;
    int arena = 0;
    int rc = ms__links_add(to, from, &arena, err, sizeof err);
    if (rc != 0) {
        ms__conn_error(k, id, rc, err);
        return;
    }
    json_t *r = ms__reply_ok(id);
    if (r != NULL)
        json_object_set_new(r, "arena", json_integer(arena));
    ms__conn_send(k, r, NULL, 0);
}

/* Whether k may swap m with the fields of patch: its owner's (or root's), and, where the daemon
 * cannot act as the owner, to no weights file or python code. False after an MS_E_PERMISSION
 * reply. */
static bool may_swap(ms__proto *p, ms__conn *k, json_t *id, const ms__model *m, const json_t *patch)
{
    char err[MS__ERRLEN];
    if (!may_manage(p, k, id, m, "swap"))
        return false;
    static char given[] = "given";
    ms__spec names; /* only what ms__owner_spec_allowed looks at */
    memset(&names, 0, sizeof names);
    names.weights = json_object_get(patch, "weights") != NULL ? given : m->spec.weights;
    names.python = json_object_get(patch, "python") != NULL ? given : m->spec.python;
    int rc = ms__owner_spec_allowed(&p->access, &m->owner, &names, err, sizeof err);
    if (rc == 0)
        return true;
    ms__conn_error(k, id, rc, err);
    return false;
}

/* swap: the tag's model moves to a new version (swap.c); the answer comes when it has. fds: the
 * new constructor's memfd when its spec has one (checked by ms__swap_start, which takes it). */
static void do_swap(ms__proto *p, ms__conn *k, json_t *id, const json_t *msg, int *fds, int nfds)
{
    char err[MS__ERRLEN];
    int none = -1;
    const char *tag = request_tag(k, id, msg, "swap");
    if (tag == NULL)
        return;
    if (nfds > 1) {
        snprintf(err, sizeof err,
                 "swap: expected at most 1 descriptor (the constructor memfd), got %d", nfds);
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return;
    }
    const json_t *spec = json_object_get(msg, "spec");
    const json_t *df = json_object_get(msg, "drain_first");
    if (!json_is_object(spec) || (df != NULL && !json_is_boolean(df))) {
        snprintf(err, sizeof err,
                 "swap: expected \"spec\", an object of the fields to change, and "
                 "\"drain_first\" true or false, got %s and %s",
                 ms__json_kind(spec), df != NULL ? ms__json_kind(df) : "nothing");
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
        return;
    }
    ms__model *m = ms__registry_find(&p->models->reg, tag);
    if (m == NULL) {
        snprintf(err, sizeof err, "no model with tag \"%s\" is loaded: nothing to swap (load it)",
                 tag);
        ms__conn_error(k, id, MS_E_UNKNOWN_TAG, err);
        return;
    }
    if (!may_swap(p, k, id, m, spec))
        return;
    ms__log_info("swap of \"%s\" by pid %ld%s", tag, (long)k->pid,
                 json_is_true(df) ? " (drain first)" : "");
    /* Pending first: a swap that ends at once (nothing to drain) answers k. */
    ms__pend *q = ms__conn_set_pending(p, k, MS__OP_SWAP, id, m, -1, NULL, false);
    if (q == NULL)
        return;
    uint64_t seq = q->seq;
    int rc = ms__swap_start(p->models, m, spec, json_is_true(df), nfds == 1 ? &fds[0] : &none, err,
                            sizeof err);
    if (rc != 0) {
        ms__log_info("refused to swap \"%s\" for pid %ld: %s", tag, (long)k->pid, err);
        ms__conn_error(k, id, rc, err);
        q = ms__conn_pend_find(k, seq); /* still there unless the refusal settled it */
        if (q != NULL)
            ms__conn_resume(p, k, q);
    }
}

static void do_status(ms__proto *p, ms__conn *k, json_t *id)
{
    json_t *st = ms__status_json(p, k->client->uid);
    if (st == NULL) {
        ms__conn_error(k, id, MS_E_NOMEM, "modelshared is out of memory for the status");
        return;
    }
    json_t *r = ms__reply_ok(id);
    if (r != NULL)
        json_object_set_new(r, "status", st);
    else
        json_decref(st);
    ms__conn_send(k, r, NULL, 0);
}

static void handle(ms__proto *p, ms__conn *k, json_t *msg, int *fds, int nfds)
{
    char err[MS__ERRLEN];
    json_t *id = json_object_get(msg, "id");
    const json_t *opj = json_object_get(msg, "op");
    const char *op = json_string_value(opj);
    if (!json_is_integer(id)) {
        /* The reply could not be matched to its request (proto.h: "id" is an integer). */
        snprintf(err, sizeof err, "expected an integer \"id\" in the request, got %s",
                 ms__json_kind(id));
        ms__conn_error(k, NULL, MS_E_PROTOCOL, err);
    } else if (op == NULL) {
        snprintf(err, sizeof err,
                 "expected a string \"op\" (hello, acquire, release, load, unload, swap, link or "
                 "status), "
                 "got "
                 "%s",
                 ms__json_kind(opj));
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
    } else if (strcmp(op, "hello") == 0) {
        do_hello(k, id, msg);
    } else if (!k->hello) {
        snprintf(err, sizeof err, "expected \"hello\" as the first request, got \"%.64s\"", op);
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
    } else if (strcmp(op, "acquire") == 0) {
        do_acquire(p, k, id, msg, fds, nfds);
    } else if (strcmp(op, "release") == 0) {
        do_release(p, k, id, msg);
    } else if (strcmp(op, "load") == 0) {
        do_load(p, k, id, msg, fds, nfds);
    } else if (strcmp(op, "unload") == 0) {
        do_unload(p, k, id, msg);
    } else if (strcmp(op, "swap") == 0) {
        do_swap(p, k, id, msg, fds, nfds);
    } else if (strcmp(op, "link") == 0) {
        do_link(k, id, msg);
    } else if (strcmp(op, "status") == 0) {
        do_status(p, k, id);
    } else {
        snprintf(err, sizeof err,
                 "unknown op \"%.64s\": expected hello, acquire, release, load, unload, swap, link "
                 "or status",
                 op);
        ms__conn_error(k, id, MS_E_PROTOCOL, err);
    }
    close_fds(fds, nfds); /* those not taken */
}

/* Starts the clock on part of a frame left in k's buffer (stopped while k is at its bound of
 * pending requests: the rest is not read until one ends). */
static void partial_note(ms__proto *p, ms__conn *k)
{
    /* A client that closed its side has as long to take its last replies. */
    bool waits = k->rd.len > 0 || (k->rd.eof && k->wr.bytes > 0);
    if (k->dead || !ms__conn_has_room(k) || !waits)
        k->partial_ns = 0;
    else if (k->partial_ns == 0)
        k->partial_ns = ms__registry_now(&p->models->reg);
}

/* The client closed its side and has nothing left to say or to hear: every request it sent was
 * served and every reply written (a client may send its last requests and shut down its
 * sending side, then read the answers). */
static bool eof_done(const ms__conn *k)
{
    return k->rd.eof && !k->dead && !k->more && k->wr.bytes == 0;
}

/* Serves the next whole request buffered on k, if k may take one now (fewer than
 * MS__CONN_PENDING_MAX pending: past it, backpressure, the client waits). One a turn of the loop:
 * a client that sends many at once (a flood of status requests) waits its turn behind everyone
 * else's instead of holding the loop; k->more brings it back next turn
 * (ms__proto_serve_more). */
static void serve_requests(ms__proto *p, ms__conn *k)
{
    char err[MS__ERRLEN];
    k->more = false;
    if (!k->dead && ms__conn_has_room(k) && !p->models->stopping) {
        json_t *msg = NULL;
        int fds[MS__FDS_MAX];
        int nfds = 0;
        int rc = ms__reader_next(&k->rd, &msg, fds, &nfds, err, sizeof err);
        if (rc == MS_E_LIMIT && msg != NULL) {
            /* Its descriptors were lost (modelshared at its RLIMIT_NOFILE): this one request is
             * refused; the connection and its leases stay. */
            ms__log_warn_limited("refused a request of pid %ld: %s", (long)k->pid, err);
            ms__conn_error(k, json_object_get(msg, "id"), rc, err);
            json_decref(msg);
            k->more = !k->dead;
        } else if (rc != 0) {
            ms__log_info_limited("client pid %ld sent a malformed message: %s", (long)k->pid, err);
            ms__conn_error(k, NULL, rc, err);
            if (rc != MS_E_PROTOCOL) /* the framing itself is broken */
                ms__conn_kill(k, err);
            k->more = !k->dead;
        } else if (msg != NULL) {
            k->partial_ns = 0; /* a whole frame came */
            handle(p, k, msg, fds, nfds);
            json_decref(msg);
            k->more = !k->dead;
        }
    }
    partial_note(p, k);
}

void ms__conn_on_event(ms__proto *p, ms__conn *k, uint32_t events)
{
    char err[MS__ERRLEN];
    if (k->dead)
        return;
    if (events & EPOLLOUT)
        ms__conn_flush(k);
    if (k->dead)
        return;
    if (k->npend > 0 && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        ms__conn_kill(k, "hang-up while a request was pending");
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        int rc = ms__reader_fill(&k->rd, k->fd, err, sizeof err);
        if (rc != 0) {
            /* The framing is broken (or the socket is): say why, then close. */
            ms__log_info_limited("client pid %ld: %s; closing its connection", (long)k->pid, err);
            ms__conn_error(k, NULL, rc, err);
            ms__conn_kill(k, err);
            return;
        }
    }
    serve_requests(p, k);
    if (eof_done(k))
        ms__conn_kill(k, "end of stream");
    else if (k->rd.eof)
        ms__conn_rewatch(k); /* nothing more to read: only the replies to write */
}

/* k's pending acquire q past its "timeout_ms": MS_E_TIMEOUT, saying what its model was doing. */
static void acquire_expired(ms__proto *p, ms__conn *k, ms__pend *q)
{
    char err[MS__ERRLEN];
    const ms__model *m = q->model;
    snprintf(err, sizeof err,
             "acquire of \"%s\": the model was not ready within the acquire's timeout (it is %s); "
             "it goes on loading for the others that wait",
             m->tag, ms__model_state_name(m->state));
    ms__conn_error(k, q->id, MS_E_TIMEOUT, err);
    ms__conn_resume(p, k, q);
}

/* The pending acquires' deadlines: those past theirs fail; returns the next one. */
static int64_t acquire_deadlines(ms__proto *p, int64_t now)
{
    int64_t next = INT64_MAX;
    ms__client *c;
    LIST_FOREACH(c, &p->models->reg.clients, link)
    {
        ms__conn *k = c->user;
        ms__pend *q = TAILQ_FIRST(&k->pends), *after;
        for (; q != NULL && !k->dead; q = after) {
            after = TAILQ_NEXT(q, link);
            if (q->op != MS__OP_ACQUIRE || q->deadline_ns == 0)
                continue;
            if (now >= q->deadline_ns)
                acquire_expired(p, k, q);
            else if (q->deadline_ns < next)
                next = q->deadline_ns;
        }
    }
    return next;
}

int64_t ms__proto_timers(ms__proto *p, int64_t now)
{
    char err[MS__ERRLEN];
    int64_t next = acquire_deadlines(p, now);
    ms__client *c;
    LIST_FOREACH(c, &p->models->reg.clients, link)
    {
        ms__conn *k = c->user;
        if (k->dead || k->partial_ns == 0)
            continue;
        int64_t at = k->partial_ns + p->read_timeout_ns;
        if (now < at) {
            if (at < next)
                next = at;
            continue;
        }
        if (k->rd.len > 0)
            snprintf(err, sizeof err,
                     "expected the rest of a frame within %.3g s, got %zu byte(s) of it and no "
                     "more",
                     (double)p->read_timeout_ns / 1e9, k->rd.len);
        else
            snprintf(err, sizeof err,
                     "it closed its side and did not take its last %zu byte(s) of replies within "
                     "%.3g s",
                     k->wr.bytes, (double)p->read_timeout_ns / 1e9);
        ms__log_info("dropping the client of pid %ld: %s", (long)k->pid, err);
        ms__conn_error(k, NULL, MS_E_TIMEOUT, err);
        ms__conn_kill(k, err);
    }
    return next;
}

void ms__proto_sweep(ms__proto *p)
{
    bool again = true;
    while (again) {
        again = false;
        ms__client *c = LIST_FIRST(&p->models->reg.clients);
        for (ms__client *next; c != NULL; c = next) {
            next = LIST_NEXT(c, link);
            ms__conn *k = c->user;
            if (k->dead) {
                ms__conn_free(p, k);
                again = true;
                break; /* the list changed under us (leases released): start over */
            }
            if (k->resume) {
                k->resume = false;
                serve_requests(p, k);
                again = true;
                break;
            }
        }
    }
}

int ms__proto_serve_more(ms__proto *p)
{
    int left = 0;
    ms__client *c;
    LIST_FOREACH(c, &p->models->reg.clients, link)
    {
        ms__conn *k = c->user;
        if (!k->more)
            continue;
        serve_requests(p, k);
        if (eof_done(k))
            ms__conn_kill(k, "end of stream");
        left += k->more;
    }
    return left;
}

void ms__proto_close_all(ms__proto *p)
{
    ms__client *c;
    for (c = LIST_FIRST(&p->models->reg.clients); c != NULL; c = LIST_NEXT(c, link))
        ms__conn_kill(c->user, "daemon stopping");
    ms__proto_sweep(p);
}
