/* Model handles: acquire, release, signature, infer. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "../common/arena.h"

/* First room for a method call's answer: address space only, until written. */
#define MS__CALL_ROOM_MIN (1u << 20)

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

MS_EXPORT int ms_acquire(ms_client *client, const char *tag, const char *spec_json, ms_model **out)
{
    char err[MS__ERRLEN];
    json_t *spec = NULL, *req = NULL, *reply = NULL;
    int arena_fd = -1, doors[MS__FDS_MAX], ndoors = 0;
    void *base = NULL;
    uint64_t cap = ms__arena_capacity_from_env();
    ms_model *m = NULL;
    int r;

    if (client == NULL)
        return MS_E_INVAL;
    ms__lib_clear(client);
    if (out == NULL)
        return ms__lib_fail(client, MS_E_INVAL, "ms_acquire: out is NULL");
    if (ms__lib_check_tag(client, tag) != 0)
        return MS_E_INVAL;
    if (spec_json != NULL) {
        r = ms__lib_spec_prepare(spec_json, &spec, err, sizeof err);
        if (r < 0)
            return ms__lib_fail_msg(client, r, err);
    } else {
        spec = json_null();
    }
    r = ms__arena_create(cap, &arena_fd, &base, err, sizeof err);
    if (r < 0) {
        json_decref(spec);
        return ms__lib_fail(client, r, "cannot make the shared memory arena: %s", err);
    }
    req = json_pack("{s:s, s:s, s:o, s:i}", "op", "acquire", "tag", tag, "spec", spec, "nfds", 1);
    if (req == NULL) {
        r = ms__lib_fail(client, MS_E_NOMEM, "out of memory building a request");
        goto fail;
    }
    r = ms__lib_call(client, req, &arena_fd, 1, &reply, doors, &ndoors, MS__FDS_MAX);
    if (r < 0)
        goto fail;
    json_t *lease = json_object_get(reply, "lease");
    if (!json_is_integer(lease) || ndoors < 1 || ndoors > (int)MS__RINGS_MAX) {
        r = ms__lib_fail(client, MS_E_PROTOCOL,
                         "acquire reply: expected an integer \"lease\" and 1 to %u descriptors "
                         "(one door per instance), got %s and %d",
                         MS__RINGS_MAX, json_is_integer(lease) ? "a lease" : "no lease", ndoors);
        goto fail_lease;
    }
    m = calloc(1, sizeof *m);
    if (m == NULL || (m->inst = calloc((size_t)ndoors, sizeof *m->inst)) == NULL) {
        r = ms__lib_fail(client, MS_E_NOMEM, "out of memory for a model handle");
        goto fail_lease;
    }
    for (int i = 0; i < ndoors; i++) {
        r = ms__door_map(doors[i], &m->inst[i].door, err, sizeof err);
        if (r < 0) {
            r = ms__lib_fail(client, MS_E_PROTOCOL, "acquire reply: door %d: %s", i, err);
            goto fail_lease;
        }
        m->inst[i].ring = ms__ring_of(base, (unsigned)i);
        m->ninst = i + 1;
    }
    m->lease = json_integer_value(lease);
    r = ms__sig_from_json(json_object_get(reply, "signature"), &m->sig_in, &m->sig_out, err,
                          sizeof err);
    if (r < 0) {
        r = ms__lib_fail(client, MS_E_PROTOCOL, "acquire reply: bad signature: %s", err);
        goto fail_lease;
    }
    m->client = client;
    snprintf(m->tag, sizeof m->tag, "%s", tag);
    m->arena_fd = arena_fd;
    m->arena_base = base;
    m->arena_capacity = cap;
    if (ms__alloc_init(&m->alloc, arena_fd, MS__ARENA_DATA, cap) < 0) {
        r = ms__lib_fail(client, MS_E_NOMEM, "out of memory for the arena's allocator");
        goto fail_lease;
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->slot_free, NULL);
    for (int i = 0; i < ndoors; i++)
        close(doors[i]);
    pthread_mutex_lock(&client->models_lock);
    m->next = client->models;
    if (m->next)
        m->next->prev = m;
    client->models = m;
    pthread_mutex_unlock(&client->models_lock);
    json_decref(req);
    json_decref(reply);
    *out = m;
    return 0;

fail_lease:
    /* The daemon granted a lease we cannot use: give it back (best effort). */
    if (json_is_integer(json_object_get(reply, "lease"))) {
        json_t *rel = json_pack("{s:s, s:I}", "op", "release", "lease",
                                (json_int_t)json_integer_value(json_object_get(reply, "lease")));
        json_t *rr = NULL;
        char keep[MS__ERRLEN];
        snprintf(keep, sizeof keep, "%s", ms_errmsg(client));
        if (rel && ms__lib_call(client, rel, NULL, 0, &rr, NULL, NULL, 0) == 0)
            json_decref(rr);
        json_decref(rel);
        ms__lib_fail_msg(client, r, keep);
    }
fail:
    if (m) {
        ms__alloc_destroy(&m->alloc);
        for (int i = 0; i < m->ninst; i++)
            ms__door_unmap(m->inst[i].door);
        free(m->inst);
    }
    free(m);
    for (int i = 0; i < ndoors; i++)
        close(doors[i]);
    json_decref(reply);
    json_decref(req);
    ms__arena_unmap(base, cap);
    close(arena_fd);
    return r;
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

    pthread_mutex_lock(&m->lock);
    while (m->tensors) {
        ms_tensor *t = m->tensors;
        m->tensors = t->next;
        free(t);
    }
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
    return r;
}

MS_EXPORT int ms_release(ms_model *model)
{
    if (model == NULL)
        return 0;
    ms_client *c = model->client;
    ms__lib_clear(c);
    pthread_mutex_lock(&c->models_lock);
    if (model->prev)
        model->prev->next = model->next;
    else
        c->models = model->next;
    if (model->next)
        model->next->prev = model->prev;
    pthread_mutex_unlock(&c->models_lock);
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

/* Room for the output: from the signature when it fixes every dimension but the batch (which
 * follows the input's first dimension), else the input's size. */
static uint64_t output_room(const ms_model *m, const ms_tensor *in)
{
    const ms__sig *s = &m->sig_out;
    size_t esize = ms_dtype_size(s->dtype);
    if (esize == 0 || s->rank < 0 || s->rank > MS_MAX_RANK) {
        /* Unknown until the model runs: as many bytes per row as the last output had. */
        uint64_t rows = in->rank >= 1 && in->shape[0] > 0 ? (uint64_t)in->shape[0] : 1, n;
        if (m->out_per_row > 0 && !__builtin_mul_overflow(m->out_per_row, rows, &n) &&
            n > in->nbytes && n <= m->arena_capacity / 4)
            return n;
        return in->nbytes;
    }
    size_t n = esize;
    for (int i = 0; i < s->rank; i++) {
        int64_t d = s->shape[i];
        if (d < 0 && i == 0 && in->rank >= 1)
            d = in->shape[0];
        if (d < 0 || __builtin_mul_overflow(n, (size_t)d, &n))
            return in->nbytes;
    }
    return n;
}

/* Checks that a successful response describes out_len bytes within room. */
static int check_resp(ms_model *m, const ms__resp *resp, uint64_t room)
{
    size_t esize = ms_dtype_size((int)resp->dtype);
    size_t numel, n;
    if (esize == 0 || resp->rank > MS_MAX_RANK ||
        !ms__shape_numel((int)resp->rank, resp->shape, &numel) ||
        __builtin_mul_overflow(numel, esize, &n) || n != resp->out_len || resp->out_len > room)
        return ms__lib_fail(m->client, MS_E_PROTOCOL,
                            "the worker of \"%s\" answered an output of %llu bytes (dtype %u, "
                            "rank %u) that does not agree with its shape or the room of %llu bytes",
                            m->tag, (unsigned long long)resp->out_len, resp->dtype, resp->rank,
                            (unsigned long long)room);
    return 0;
}

/* One request (flags 0: run the model; MS__REQ_CALL: a method call) and its answer. */
static int exchange(ms_model *model, const char *fn, uint32_t flags, const ms_tensor *input,
                    ms_tensor **output)
{
    ms__resp resp;
    ms_tensor *out = NULL;
    int r;

    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (input == NULL || output == NULL)
        return ms__lib_fail(model->client, MS_E_INVAL, "%s: %s is NULL", fn,
                            input ? "output" : "input");
    if (input->model != model)
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "%s: expected an input tensor of model \"%s\", got one of "
                            "another model handle (\"%s\")",
                            fn, model->tag, input->model->tag);
    if (flags == MS__REQ_CALL && (input->dtype != MS_UINT8 || input->rank != 1))
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "%s: expected a uint8 tensor of rank 1 (the pickled call), got %s of "
                            "rank %d",
                            fn, ms_dtype_name(input->dtype), input->rank);
    pthread_mutex_lock(&model->lock);
    uint64_t room;
    if (flags == MS__REQ_CALL)
        room = model->call_room > MS__CALL_ROOM_MIN ? model->call_room : MS__CALL_ROOM_MIN;
    else
        room = output_room(model, input);
    for (int attempt = 0;; attempt++) {
        r = ms__tensor_new_locked(model, room, &out);
        if (r < 0)
            goto out;
        ms__req req;
        memset(&req, 0, sizeof req);
        req.magic = MS__REQ_MAGIC;
        req.flags = flags;
        req.dtype = (uint32_t)input->dtype;
        req.rank = (uint32_t)input->rank;
        for (int i = 0; i < input->rank; i++)
            req.shape[i] = input->shape[i];
        req.in_off = input->off;
        req.in_len = input->nbytes;
        req.out_off = out->off;
        req.out_cap = room;
        ms__ticket tk;
        r = ms__submit(model, &req, &tk);
        if (r < 0)
            goto out;
        pthread_mutex_unlock(&model->lock);
        r = ms__await(model, &tk, out, &resp); /* returns with the lock held */
        if (r == MS_E_TIMEOUT)
            out = NULL; /* the worker may still write into it: freed once it is done */
        if (r < 0)
            goto out;
        if (resp.status == MS_E_TOO_LARGE && resp.out_len > room && attempt == 0) {
            ms__tensor_free_locked(out);
            out = NULL;
            room = resp.out_len;
            continue;
        }
        break;
    }
    if (resp.status > 0) {
        r = ms__lib_fail(model->client, MS_E_PROTOCOL,
                         "the worker of \"%s\" answered an unknown status %d", model->tag,
                         resp.status);
        goto out;
    }
    if (resp.status != 0) {
        resp.msg[sizeof resp.msg - 1] = '\0';
        r = ms__lib_fail_msg(model->client, resp.status,
                             resp.msg[0] ? resp.msg : ms_strerror(resp.status));
        goto out;
    }
    r = check_resp(model, &resp, room);
    if (r < 0)
        goto out;
    out->dtype = (int)resp.dtype;
    out->rank = (int)resp.rank;
    for (int i = 0; i < out->rank; i++)
        out->shape[i] = resp.shape[i];
    out->nbytes = (size_t)resp.out_len;
    ms__tensor_shrink_locked(out, resp.out_len);
    if (flags == MS__REQ_CALL) {
        model->call_room = resp.out_len;
    } else if (ms_dtype_size(model->sig_out.dtype) == 0) {
        uint64_t rows = input->rank >= 1 && input->shape[0] > 0 ? (uint64_t)input->shape[0] : 1;
        model->out_per_row = (resp.out_len + rows - 1) / rows;
    }
    *output = out;
    out = NULL;
out:
    if (out)
        ms__tensor_free_locked(out);
    pthread_mutex_unlock(&model->lock);
    return r;
}

MS_EXPORT int ms_infer(ms_model *model, const ms_tensor *input, ms_tensor **output)
{
    return exchange(model, "ms_infer", 0, input, output);
}

MS_EXPORT int ms_call(ms_model *model, const ms_tensor *input, ms_tensor **output)
{
    return exchange(model, "ms_call", MS__REQ_CALL, input, output);
}

MS_EXPORT int ms_set_timeout(ms_model *model, uint64_t timeout_us)
{
    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (timeout_us > (uint64_t)INT64_MAX / 1000)
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "ms_set_timeout: expected at most %lld microseconds, got %llu",
                            (long long)(INT64_MAX / 1000), (unsigned long long)timeout_us);
    pthread_mutex_lock(&model->lock);
    model->timeout_ns = (int64_t)timeout_us * 1000;
    pthread_mutex_unlock(&model->lock);
    return 0;
}
