/*
 * Several named tensors per request (ms_infer_n): the input manifest written in the arena (the
 * tensors themselves go by reference), one exchange with MS__REQ_MULTI, the answer's manifest
 * copied out, decoded and checked against the room it lies in; ms_outputs_* read it, ms_text_*
 * make and read lists of strings. The layout is manifest.h's.
 */
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "infer.h"
#include "internal.h"
#include "tensor.h"
#include "../common/manifest.h"

/* First room for an answer: address space only, until written. */
#define MULTI_ROOM_MIN (1u << 20)

static int name_ok(const char *name)
{
    size_t n = name != NULL ? strnlen(name, MS_NAME_MAX) : 0;
    if (n == 0 || n >= MS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

static int check_inputs(ms_model *model, const ms_named *in, int n, int form)
{
    if (in == NULL || n < 1 || n > MS_MAX_TENSORS)
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "ms_infer_n: expected 1 to %d named inputs, got %d%s", MS_MAX_TENSORS,
                            n, in == NULL ? " (NULL)" : "");
    if (form < MS_CALL_ARGS || form > MS_CALL_DICT)
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "ms_infer_n: expected form MS_CALL_ARGS, MS_CALL_KWARGS or "
                            "MS_CALL_DICT, got %d",
                            form);
    for (int i = 0; i < n; i++) {
        if (!name_ok(in[i].name))
            return ms__lib_fail(model->client, MS_E_INVAL,
                                "ms_infer_n: input %d: expected a name of 1 to %d characters of "
                                "[A-Za-z0-9_.:-]",
                                i, MS_NAME_MAX - 1);
        for (int k = 0; k < i; k++)
            if (strcmp(in[k].name, in[i].name) == 0)
                return ms__lib_fail(model->client, MS_E_INVAL,
                                    "ms_infer_n: input %d: the name \"%s\" is input %d's too", i,
                                    in[i].name, k);
        if (in[i].tensor == NULL || in[i].tensor->model != model)
            return ms__lib_fail(model->client, MS_E_INVAL,
                                "ms_infer_n: input \"%s\": expected a tensor of model \"%s\", "
                                "got %s",
                                in[i].name, model->tag,
                                in[i].tensor == NULL ? "NULL" : "one of another model handle");
    }
    return 0;
}

/* The manifest of the inputs, in a new uint8 tensor (model lock held); *in_bytes: theirs. */
static int write_manifest(ms_model *model, const ms_named *in, int n, int form, uint32_t own,
                          ms_tensor **mf, uint64_t *in_bytes)
{
    ms__manifest m;
    memset(&m, 0, sizeof m);
    m.magic = MS__MF_MAGIC;
    m.count = (uint32_t)n;
    m.form = (uint32_t)form;
    *in_bytes = 0;
    for (int i = 0; i < n; i++) {
        const ms_tensor *t = in[i].tensor;
        ms__mf_entry *e = &m.e[i];
        if (t->arena != 0 && model->links[t->arena - 1] != t->src_lease)
            return ms__lib_fail(model->client, MS_E_INVAL,
                                "ms_infer_n: input \"%s\" is a view of another model's tensor, "
                                "and that model was released: its bytes are gone",
                                in[i].name);
        memcpy(e->name, in[i].name, strlen(in[i].name));
        e->dtype = (uint32_t)(t->text ? t->text : t->dtype);
        e->rank = (uint32_t)(t->text ? 1 : t->rank);
        for (int d = 0; d < (int)e->rank; d++)
            e->shape[d] = t->text ? (int64_t)t->items : t->shape[d];
        e->arena = (uint32_t)t->arena;
        e->flags = (own >> i) & 1u ? MS__MF_OWN : 0;
        e->off = t->off;
        e->len = t->nbytes;
        *in_bytes += t->nbytes;
    }
    int r = ms__tensor_new_locked(model, ms__mf_bytes(m.count), mf);
    if (r < 0)
        return r;
    (*mf)->dtype = MS_UINT8;
    (*mf)->rank = 1;
    (*mf)->shape[0] = (int64_t)ms__mf_bytes(m.count);
    ms__manifest_encode(&m, ms_tensor_data(*mf));
    return 0;
}

/* Each output inside the answer's bytes [out->off + manifest, out->off + len); lists sound. */
static int check_outputs(ms_model *model, const ms_tensor *out, uint64_t len, ms__manifest *m)
{
    char err[256];
    uint64_t lo = out->off + ms__mf_bytes(m->count), hi = out->off + len;
    for (uint32_t i = 0; i < m->count; i++) {
        const ms__mf_entry *e = &m->e[i];
        if (e->arena != 0 || e->off < lo || e->off > hi || e->len > hi - e->off)
            return ms__lib_fail(model->client, MS_E_PROTOCOL,
                                "the worker of \"%s\" answered output \"%s\" outside its answer",
                                model->tag, e->name);
        if (ms__mf_is_text(e->dtype) && ms__text_check((char *)model->arena_base + e->off, e->len,
                                                       (uint64_t)e->shape[0], err, sizeof err) < 0)
            return ms__lib_fail(model->client, MS_E_PROTOCOL,
                                "the worker of \"%s\" answered output \"%s\": %s", model->tag,
                                e->name, err);
    }
    return 0;
}

/* The answer's manifest (len bytes of out), decoded and of a form an answer may have: 0 with *mp
 * (caller frees), or the error, set on the client. */
static int decode_answer(ms_model *model, uint32_t flags, ms_tensor *out, uint64_t len,
                         ms__manifest **mp)
{
    char err[400];
    uint32_t count = 0;
    memcpy(&count, (char *)ms_tensor_data(out) + 4, 4);
    size_t mfb = count <= MS__MF_MAX ? ms__mf_bytes(count) : MS__MF_HEADER;
    uint64_t caps[1 + MS__ARENA_LINKS] = {model->arena_capacity};
    ms__manifest *m = malloc(sizeof *m);
    if (m == NULL)
        return ms__lib_fail(model->client, MS_E_NOMEM, "out of memory for an answer");
    int r = mfb > len ? ms__fail(err, sizeof err, MS_E_PROTOCOL, "a manifest past the answer")
                      : ms__manifest_decode(ms_tensor_data(out), mfb, caps, m, err, sizeof err);
    if (r == 0 && (m->form < MS__FORM_DICT || m->form == MS__FORM_KWARGS ||
                   (m->form == MS__FORM_OBJECT && !(flags & MS__REQ_OBJECT))))
        r = ms__fail(err, sizeof err, MS_E_PROTOCOL, "an answer of form %u", m->form);
    if (r < 0) {
        free(m);
        return ms__lib_fail(model->client, MS_E_PROTOCOL, "the worker of \"%s\" answered: %s",
                            model->tag, err);
    }
    *mp = m;
    return 0;
}

/* The answer (model lock held): status, size, manifest. On success out->answer is set. */
static int take_answer(ms_model *model, uint32_t flags, uint64_t room, ms_tensor *out,
                       ms__resp *resp)
{
    if (resp->status != 0) {
        resp->msg[sizeof resp->msg - 1] = '\0';
        return ms__lib_fail_msg(model->client, resp->status > 0 ? MS_E_PROTOCOL : resp->status,
                                resp->msg[0] ? resp->msg : "unexpected status");
    }
    uint64_t len = resp->out_len;
    if (resp->dtype != MS_UINT8 || resp->rank != 1 || len > room || len < MS__MF_HEADER)
        return ms__lib_fail(model->client, MS_E_PROTOCOL,
                            "the worker of \"%s\" answered %llu bytes (dtype %u rank %u) for "
                            "several tensors in a room of %llu",
                            model->tag, (unsigned long long)len, resp->dtype, resp->rank,
                            (unsigned long long)room);
    ms__manifest *m = NULL;
    int r = decode_answer(model, flags, out, len, &m);
    if (r < 0)
        return r;
    if ((r = check_outputs(model, out, len, m)) < 0) {
        free(m);
        return r;
    }
    out->answer = m;
    out->dtype = MS_UINT8;
    out->rank = 1;
    out->shape[0] = (int64_t)len;
    out->nbytes = (size_t)len;
    ms__tensor_shrink_locked(out, len);
    model->multi_room = len;
    return 0;
}

/* Room for the answer: what the last one took, twice the inputs, at least 1 MiB (address space
 * until written), within an eighth of the arena. */
static uint64_t answer_room(const ms_model *model, uint64_t in_bytes)
{
    uint64_t room = MULTI_ROOM_MIN, cap = model->arena_capacity / 8;
    if (in_bytes * 2 + MS__MF_BYTES_MAX + MS__MF_MAX * 64 > room)
        room = in_bytes * 2 + MS__MF_BYTES_MAX + MS__MF_MAX * 64;
    if (model->multi_room > room)
        room = model->multi_room;
    return room < cap ? room : cap;
}

int ms__infer_n_flags(ms_model *model, const ms_named *inputs, int n, int form, uint32_t flags,
                      uint32_t own, ms_tensor **outputs)
{
    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (outputs == NULL)
        return ms__lib_fail(model->client, MS_E_INVAL, "ms_infer_n: outputs is NULL");
    int r = check_inputs(model, inputs, n, form);
    if (r < 0)
        return r;
    ms_tensor *mf = NULL, *out = NULL;
    uint64_t in_bytes = 0;
    ms__resp resp;
    memset(&resp, 0, sizeof resp);
    pthread_mutex_lock(&model->lock);
    r = write_manifest(model, inputs, n, form, own, &mf, &in_bytes);
    uint64_t room = answer_room(model, in_bytes);
    const ms_tensor *named[MS_MAX_TENSORS];
    for (int i = 0; i < n; i++)
        named[i] = inputs[i].tensor;
    if (r == 0)
        r = ms__round_trip(model, MS__REQ_MULTI | (flags & MS__REQ_OBJECT), mf, named, n, &room,
                           &out, &resp);
    if (r == 0)
        r = take_answer(model, flags, room, out, &resp);
    if (r == 0) {
        *outputs = out;
        out = NULL;
    }
    if (out != NULL)
        ms__tensor_free_locked(out);
    if (mf != NULL)
        ms__tensor_free_locked(mf);
    pthread_mutex_unlock(&model->lock);
    return r;
}

MS_EXPORT int ms_infer_n(ms_model *model, const ms_named *inputs, int n, int form,
                         ms_tensor **outputs)
{
    return ms__infer_n_flags(model, inputs, n, form, 0, 0, outputs);
}

MS_EXPORT int ms_outputs_count(const ms_tensor *outputs, int *form)
{
    if (outputs == NULL || outputs->answer == NULL)
        return MS_E_INVAL;
    if (form != NULL)
        *form = (int)outputs->answer->form;
    return (int)outputs->answer->count;
}

MS_EXPORT int ms_outputs_get(const ms_tensor *outputs, int i, ms_output *out)
{
    if (outputs == NULL || outputs->answer == NULL || out == NULL || i < 0 ||
        (uint32_t)i >= outputs->answer->count)
        return MS_E_INVAL;
    const ms__mf_entry *e = &outputs->answer->e[i];
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->dtype = (int)e->dtype;
    out->rank = (int)e->rank;
    memcpy(out->shape, e->shape, sizeof out->shape);
    out->data = (const char *)outputs->model->arena_base + e->off;
    out->nbytes = (size_t)e->len;
    return 0;
}

/* The bytes of a list of n items: the count, the lengths, the items; each item checked. */
static int text_total(ms_model *model, size_t n, const char *const *items, const size_t *lens,
                      uint64_t *out)
{
    uint64_t total = 8 + 8 * (uint64_t)n;
    for (size_t i = 0; i < n; i++) {
        if ((items[i] == NULL && lens[i] > 0) || lens[i] > model->arena_capacity ||
            total + lens[i] > model->arena_capacity)
            return ms__lib_fail(model->client,
                                lens[i] > 0 && items[i] == NULL ? MS_E_INVAL : MS_E_TOO_LARGE,
                                "ms_text_from: item %zu: NULL, or larger than the arena", i);
        total += lens[i];
    }
    *out = total;
    return 0;
}

/* Writes the list's layout (manifest.h) at p. */
static void text_write(char *p, size_t n, const char *const *items, const size_t *lens)
{
    uint64_t count = n, at = 8 + 8 * (uint64_t)n;
    memcpy(p, &count, 8);
    for (size_t i = 0; i < n; i++) {
        uint64_t len = lens[i];
        memcpy(p + 8 + 8 * i, &len, 8);
        if (len > 0)
            memcpy(p + at, items[i], len);
        at += len;
    }
}

MS_EXPORT int ms_text_from(ms_model *model, int kind, size_t n, const char *const *items,
                           const size_t *lens, ms_tensor **out)
{
    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    if (out == NULL || (kind != MS_TEXT_UTF8 && kind != MS_TEXT_BYTES) || n > MS__TEXT_ITEMS_MAX ||
        (n > 0 && (items == NULL || lens == NULL)))
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "ms_text_from: expected MS_TEXT_UTF8 or MS_TEXT_BYTES, 0 to %u items "
                            "with their lengths, and out",
                            MS__TEXT_ITEMS_MAX);
    uint64_t total = 0;
    int r = text_total(model, n, items, lens, &total);
    if (r < 0)
        return r;
    pthread_mutex_lock(&model->lock);
    ms_tensor *t = NULL;
    r = ms__tensor_new_locked(model, total, &t);
    if (r == 0) {
        text_write(ms_tensor_data(t), n, items, lens);
        t->dtype = MS_UINT8;
        t->rank = 1;
        t->shape[0] = (int64_t)total;
        t->text = kind;
        t->items = n;
        *out = t;
    }
    pthread_mutex_unlock(&model->lock);
    return r;
}

MS_EXPORT int ms_text_item(const ms_output *list, size_t i, const char **bytes, size_t *len)
{
    if (list == NULL || bytes == NULL || len == NULL ||
        (list->dtype != MS_TEXT_UTF8 && list->dtype != MS_TEXT_BYTES) || list->shape[0] < 0 ||
        i >= (uint64_t)list->shape[0])
        return MS_E_INVAL;
    /* Checked when the answer came (ms__text_check): lengths fill the bytes exactly. */
    const char *p = list->data;
    uint64_t n = (uint64_t)list->shape[0], at = 8 + 8 * n, l = 0;
    for (size_t k = 0; k <= i; k++) {
        memcpy(&l, p + 8 + 8 * k, 8);
        if (k < i)
            at += l;
    }
    *bytes = p + at;
    *len = (size_t)l;
    return 0;
}
