/* Model handles: acquire, release, signature (model.h). Requests on them are infer.c. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "alloc.h"
#include "call.h"
#include "ctor.h"
#include "errors.h"
#include "link.h"
#include "tensor.h"
#include "wait.h"
#include "../common/arena.h"

int ms__lib_spec_prepare(const char *spec_json, json_t **out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *spec = json_loads(spec_json, JSON_REJECT_DUPLICATES, &jerr);
    if (spec == NULL)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "spec: expected a JSON object, got invalid JSON (%s at line %d, column %d)",
                        jerr.text, jerr.line, jerr.column);
    if (!json_is_object(spec)) {
        json_decref(spec);
        return ms__fail(err, errlen, MS_E_SPEC, "spec: expected a JSON object, got %.100s",
                        spec_json);
    }
    /* The daemon runs elsewhere: weights paths are made absolute here, against our cwd. */
    const char *w = json_string_value(json_object_get(spec, "weights"));
    if (w != NULL && w[0] != '\0') {
        char *abs = realpath(w, NULL);
        if (abs == NULL && w[0] != '/') {
            char cwd[PATH_MAX];
            if (getcwd(cwd, sizeof cwd) == NULL) {
                json_decref(spec);
                return ms__fail(err, errlen, MS_E_SPEC,
                                "spec field \"weights\": cannot resolve \"%s\" against the "
                                "working directory: %s",
                                w, strerror(errno));
            }
            size_t n = strlen(cwd) + 1 + strlen(w) + 1;
            abs = malloc(n);
            if (abs)
                snprintf(abs, n, "%s/%s", cwd, w);
        }
        if (abs != NULL) {
            int r = json_object_set_new(spec, "weights", json_string(abs));
            free(abs);
            if (r != 0) {
                json_decref(spec);
                return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for the spec");
            }
        }
    }
    *out = spec;
    return 0;
}

/* What ms_acquire holds before the model handle does: the arena, the request, the daemon's reply
 * and the doors it passed. All owned; acquiring_end frees what is still here. */
typedef struct acquiring {
    int arena_fd;
    void *base;
    uint64_t cap;
    json_t *req, *reply;
    int doors[MS__FDS_MAX];
    int ndoors;
} acquiring;

static void acquiring_end(acquiring *a)
{
    for (int i = 0; i < a->ndoors; i++)
        close(a->doors[i]);
    json_decref(a->reply);
    json_decref(a->req);
    ms__arena_unmap(a->base, a->cap);
    if (a->arena_fd >= 0)
        close(a->arena_fd);
}

/* Makes the arena and asks the daemon for a lease of tag on it (spec_json: NULL, or the spec the
 * model must have; ctor_fd: the constructor's memfd sent beside the arena, -1 for none). On
 * success a->reply holds the lease and a->doors the workers' doors. */
static int ask_lease(ms_client *client, const char *tag, const char *spec_json, int ctor_fd,
                     acquiring *a)
{
    char err[MS__ERRLEN];
    json_t *spec = NULL;
    if (spec_json != NULL) {
        int r = ms__lib_spec_prepare(spec_json, &spec, err, sizeof err);
        if (r < 0)
            return ms__lib_fail_msg(client, r, err);
    } else {
        spec = json_null();
    }
    int r = ms__arena_create(a->cap, &a->arena_fd, &a->base, err, sizeof err);
    if (r < 0) {
        json_decref(spec);
        return ms__lib_fail(client, r, "cannot make the shared memory arena: %s", err);
    }
    /* fds: the arena, then the constructor's memfd when there is one (proto.h). */
    int fds[2] = {a->arena_fd, ctor_fd};
    int nfds = ctor_fd >= 0 ? 2 : 1;
    a->req =
        json_pack("{s:s, s:s, s:o, s:i}", "op", "acquire", "tag", tag, "spec", spec, "nfds", nfds);
    /* The thread's deadline (wait.h; ms_acquire_timeout): the daemon answers MS_E_TIMEOUT by
     * then, and the connection stays in step. */
    int64_t timeout_ns = ms__wait_timeout(0);
    if (a->req != NULL && timeout_ns > 0)
        json_object_set_new(a->req, "timeout_ms", json_integer((timeout_ns + 999999) / 1000000));
    if (a->req == NULL)
        return ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
    return ms__lib_call(client, a->req, fds, nfds, &a->reply, a->doors, &a->ndoors, MS__FDS_MAX);
}

/* Gives back the lease in reply, granted but unusable (best effort), keeping the message of what
 * went wrong (code). */
static void give_back_lease(ms_client *client, const json_t *reply, int code)
{
    json_t *lease = json_object_get(reply, "lease");
    if (!json_is_integer(lease))
        return;
    json_t *rel =
        json_pack("{s:s, s:I}", "op", "release", "lease", (json_int_t)json_integer_value(lease));
    json_t *rr = NULL;
    char keep[MS__ERRLEN];
    snprintf(keep, sizeof keep, "%s", ms_errmsg(client));
    if (rel && ms__lib_call(client, rel, NULL, 0, &rr, NULL, NULL, 0) == 0)
        json_decref(rr);
    json_decref(rel);
    ms__lib_fail_msg(client, code, keep);
}

/* Frees a handle that model_new did not finish. */
static void model_free_partial(ms_model *m)
{
    if (m == NULL)
        return;
    ms__alloc_destroy(&m->alloc);
    for (int i = 0; i < m->ninst; i++)
        ms__door_unmap(m->inst[i].door);
    free(m->inst);
    free(m);
}

/* Maps the doors the daemon passed, one per instance (its page 0 read-only, then its bell page:
 * ring.h), each with its ring set in the arena. */
static int map_doors(ms_client *client, ms_model *m, const acquiring *a)
{
    char err[MS__ERRLEN];
    for (int i = 0; i < a->ndoors / 2; i++) {
        if (ms__door_map(a->doors[2 * i], a->doors[2 * i + 1], false, &m->inst[i].door, err,
                         sizeof err) < 0)
            return ms__lib_fail(client, MS_E_PROTOCOL, "acquire reply: door %d: %s", i, err);
        m->inst[i].ring = ms__ring_of(a->base, (unsigned)i);
        m->ninst = i + 1;
    }
    return 0;
}

/* The handle for the lease in a->reply: its doors, signature, arena (still a's) and allocator.
 * NULL with *rc on failure (message recorded). */
static ms_model *model_new(ms_client *client, const char *tag, const acquiring *a, int *rc)
{
    char err[MS__ERRLEN];
    json_t *lease = json_object_get(a->reply, "lease");
    if (!json_is_integer(lease) || a->ndoors < 2 || a->ndoors > 2 * (int)MS__RINGS_MAX ||
        a->ndoors % 2 != 0) {
        *rc = ms__lib_fail(client, MS_E_PROTOCOL,
                           "acquire reply: expected an integer \"lease\" and an even 2 to %u "
                           "descriptors (two per instance: its door and its bell page), got %s "
                           "and %d",
                           2 * MS__RINGS_MAX, json_is_integer(lease) ? "a lease" : "no lease",
                           a->ndoors);
        return NULL;
    }
    ms_model *m = calloc(1, sizeof *m);
    if (m == NULL || (m->inst = calloc((size_t)a->ndoors / 2, sizeof *m->inst)) == NULL) {
        *rc = ms__lib_fail(client, MS_E_NOMEM, "out of memory for a model handle");
        goto fail;
    }
    *rc = map_doors(client, m, a);
    if (*rc < 0)
        goto fail;
    m->lease = json_integer_value(lease);
    *rc = ms__sig_from_json(json_object_get(a->reply, "signature"), &m->sig_in, &m->sig_out, err,
                            sizeof err);
    const json_t *sig = json_object_get(a->reply, "signature");
    if (*rc == 0)
        *rc = ms__sig_list_from_json(sig, "inputs", m->sig_ins, &m->nsig_in, err, sizeof err);
    if (*rc == 0)
        *rc = ms__sig_list_from_json(sig, "outputs", m->sig_outs, &m->nsig_out, err, sizeof err);
    if (*rc < 0) {
        *rc = ms__lib_fail(client, MS_E_PROTOCOL, "acquire reply: bad signature: %s", err);
        goto fail;
    }
    m->client = client;
    snprintf(m->tag, sizeof m->tag, "%s", tag);
    m->arena_fd = a->arena_fd;
    m->arena_base = a->base;
    m->arena_capacity = a->cap;
    LIST_INIT(&m->tensors);
    if (ms__alloc_init(&m->alloc, a->arena_fd, MS__ARENA_DATA, a->cap) < 0) {
        *rc = ms__lib_fail(client, MS_E_NOMEM, "out of memory for the arena's allocator");
        goto fail;
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->slot_free, NULL);
    return m;
fail:
    model_free_partial(m);
    return NULL;
}

MS_EXPORT int ms_acquire(ms_client *client, const char *tag, const char *spec_json, ms_model **out)
{
    return ms__acquire_ctor(client, tag, spec_json, -1, out);
}

MS_EXPORT int ms_acquire_timeout(ms_client *client, const char *tag, const char *spec_json,
                                 uint64_t timeout_us, ms_model **out)
{
    if (client != NULL && timeout_us > 86400000000ull)
        return ms__lib_fail(client, MS_E_INVAL,
                            "ms_acquire_timeout: expected at most 86400000000 microseconds (a "
                            "day), got %llu",
                            (unsigned long long)timeout_us);
    ms__wait w = {.timeout_ns = (int64_t)timeout_us * 1000};
    const ms__wait *outer = ms__wait_set(timeout_us > 0 ? &w : NULL);
    int r = ms__acquire_ctor(client, tag, spec_json, -1, out);
    ms__wait_set(outer);
    return r;
}

int ms__acquire_ctor(ms_client *client, const char *tag, const char *spec_json, int ctor_fd,
                     ms_model **out)
{
    acquiring a = {.arena_fd = -1};
    a.cap = ms__arena_capacity_from_env();

    if (client == NULL)
        return MS_E_INVAL;
    ms__lib_clear(client);
    if (out == NULL)
        return ms__lib_fail(client, MS_E_INVAL, "ms_acquire: out is NULL");
    if (ms__lib_check_tag(client, tag) != 0)
        return MS_E_INVAL;
    int r = ask_lease(client, tag, spec_json, ctor_fd, &a);
    if (r == MS_E_LIMIT && a.reply != NULL) {
        /* Granted, but its doors did not come (RLIMIT_NOFILE): the daemon takes it back, so
         * that its lease count stays the client's. */
        give_back_lease(client, a.reply, r);
        acquiring_end(&a);
        return r;
    }
    if (r < 0) {
        acquiring_end(&a);
        return r;
    }
    ms_model *m = model_new(client, tag, &a, &r);
    if (m == NULL) {
        give_back_lease(client, a.reply, r);
        acquiring_end(&a);
        return r;
    }
    /* The arena is the handle's now. */
    a.arena_fd = -1;
    a.base = NULL;
    acquiring_end(&a);
    pthread_mutex_lock(&client->models_lock);
    LIST_INSERT_HEAD(&client->models, m, link);
    pthread_mutex_unlock(&client->models_lock);
    *out = m;
    return 0;
}

int ms__lib_model_end(ms_model *m)
{
    ms_client *c = m->client;
    int r = 0;

    json_t *req = json_pack("{s:s, s:I}", "op", "release", "lease", (json_int_t)m->lease);
    json_t *reply = NULL;
    if (req == NULL)
        r = ms__lib_fail(c, MS_E_DAEMON_LOST, "out of memory telling the daemon of the release");
    else
        r = ms__lib_call(c, req, NULL, 0, &reply, NULL, NULL, 0);
    json_decref(req);
    json_decref(reply);
    if (r < 0 && r != MS_E_DAEMON_LOST)
        r = ms__lib_fail(c, MS_E_DAEMON_LOST, "the daemon did not take the release of \"%s\": %s",
                         m->tag, ms_errmsg(c));
    ms__lib_model_drop(m);
    return r;
}

void ms__lib_model_drop(ms_model *m)
{
    pthread_mutex_lock(&m->lock);
    ms__tensor_free_all_locked(m);
    ms__alloc_destroy(&m->alloc);
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; i < m->ninst; i++)
        ms__door_unmap(m->inst[i].door);
    free(m->inst);
    ms__arena_unmap(m->arena_base, m->arena_capacity);
    if (m->arena_fd >= 0) /* -1 in a child of fork() */
        close(m->arena_fd);
    pthread_cond_destroy(&m->slot_free);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

MS_EXPORT int ms_release(ms_model *model)
{
    if (model == NULL)
        return 0;
    ms_client *c = model->client;
    ms__lib_clear(c);
    pthread_mutex_lock(&c->models_lock);
    LIST_REMOVE(model, link);
    pthread_mutex_unlock(&c->models_lock);
    ms__link_forget(model);
    return ms__lib_model_end(model);
}

static void sig_out_copy(const ms__sig *s, int *dtype, int *rank, int64_t *shape)
{
    if (dtype)
        *dtype = s->dtype;
    if (rank)
        *rank = s->rank;
    if (shape)
        for (int i = 0; i < MS_MAX_RANK; i++)
            shape[i] = i < s->rank ? s->shape[i] : -1;
}

MS_EXPORT int ms_model_signature(const ms_model *model, int *in_dtype, int *in_rank,
                                 int64_t *in_shape, int *out_dtype, int *out_rank,
                                 int64_t *out_shape)
{
    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    sig_out_copy(&model->sig_in, in_dtype, in_rank, in_shape);
    sig_out_copy(&model->sig_out, out_dtype, out_rank, out_shape);
    return 0;
}

/* The count of one side: its names, else the one tensor of a signature that knows its dtype. */
static int side_count(const ms__sig *one, int named)
{
    return named >= 0 ? named : one->dtype != 0 ? 1 : 0;
}

static int side_get(const ms_model *model, const ms__sig *one, const ms__sig_entry *e, int named,
                    int i, ms_tensor_info *out)
{
    if (model == NULL || out == NULL)
        return MS_E_INVAL;
    int n = side_count(one, named);
    if (i < 0 || i >= n)
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "expected a tensor index 0 to %d (the model says %d), got %d", n - 1, n,
                            i);
    ms__lib_clear(model->client);
    const ms__sig *s = named >= 0 ? &e[i].sig : one;
    ms_tensor_info info = {.name = named >= 0 ? e[i].name : NULL, .dtype = s->dtype};
    info.rank = named >= 0 && !e[i].shape_known ? -1 : s->rank;
    for (int k = 0; k < MS_MAX_RANK; k++)
        info.shape[k] = k < s->rank ? s->shape[k] : -1;
    *out = info;
    return 0;
}

MS_EXPORT int ms_model_inputs_count(const ms_model *model)
{
    return model == NULL ? MS_E_INVAL : side_count(&model->sig_in, model->nsig_in);
}

MS_EXPORT int ms_model_outputs_count(const ms_model *model)
{
    return model == NULL ? MS_E_INVAL : side_count(&model->sig_out, model->nsig_out);
}

MS_EXPORT int ms_model_input(const ms_model *model, int i, ms_tensor_info *out)
{
    return side_get(model, model != NULL ? &model->sig_in : NULL,
                    model != NULL ? model->sig_ins : NULL, model != NULL ? model->nsig_in : -1, i,
                    out);
}

MS_EXPORT int ms_model_output(const ms_model *model, int i, ms_tensor_info *out)
{
    return side_get(model, model != NULL ? &model->sig_out : NULL,
                    model != NULL ? model->sig_outs : NULL, model != NULL ? model->nsig_out : -1, i,
                    out);
}
