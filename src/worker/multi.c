/*
 * Requests of several named tensors (MS__REQ_MULTI, manifest.h): the input manifest copied out of
 * the client's arena and decoded, which requests may share a batch (same names, dtypes and every
 * dimension but the first, the same first dimension across a request's tensors), and one backend
 * call (run_multi) for the batch, which writes each request's answer into its room.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "../common/errors.h"
#include "../common/util.h"
#include "modelshare.h"

/* The rows of a decoded manifest: every tensor's first dimension when they all agree. */
static void rows_of(ms__taken *t)
{
    const ms__manifest *m = &t->mf;
    t->rows = 1;
    t->rows_agree = false;
    if (m->count == 0)
        return;
    for (uint32_t i = 0; i < m->count; i++)
        if (m->e[i].rank < 1 || m->e[i].shape[0] != m->e[0].shape[0])
            return;
    t->rows = m->e[0].shape[0];
    t->rows_agree = true;
}

/* Whether a manifest that did not decode names a linked arena this worker has not mapped (yet). */
static bool names_unlinked(const unsigned char *buf, size_t len, const uint64_t *caps)
{
    uint32_t count;
    memcpy(&count, buf + 4, 4);
    for (uint32_t i = 0; i < count && i < MS__MF_MAX && ms__mf_bytes(i + 1) <= len; i++) {
        uint32_t arena;
        memcpy(&arena, buf + MS__MF_HEADER + i * MS__MF_ENTRY + offsetof(ms__mf_entry, arena), 4);
        if (arena >= 1 && arena <= MS__ARENA_LINKS && caps[arena] == 0)
            return true;
    }
    return false;
}

int ms__multi_intake(const ms__client *c, ms__taken *t, char *err, size_t errlen)
{
    unsigned char buf[MS__MF_BYTES_MAX];
    uint64_t caps[1 + MS__ARENA_LINKS];
    caps[0] = c->capacity;
    for (unsigned k = 0; k < MS__ARENA_LINKS; k++)
        caps[1 + k] = c->link_cap[k];
    /* in_len is 16..MS__MF_BYTES_MAX (ms__req_decode); copied before any byte is looked at. */
    memcpy(buf, t->in.data, t->in.nbytes);
    int r = ms__manifest_decode(buf, t->in.nbytes, caps, &t->mf, err, errlen);
    if (r < 0 && r == MS_E_PROTOCOL && names_unlinked(buf, t->in.nbytes, caps))
        return MS__MULTI_WAIT;
    if (r < 0)
        return r;
    if (t->mf.form > MS__FORM_DICT)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "a request's manifest: expected form 0 (arguments), 1 (keywords) or 2 (a "
                        "dict), got %u",
                        t->mf.form);
    rows_of(t);
    return 0;
}

bool ms__multi_joins(const ms__taken *f, const ms__taken *t, int pad_dim)
{
    if (!ms__is_multi(f) || !ms__is_multi(t) || !f->rows_agree || !t->rows_agree ||
        f->mf.form != t->mf.form || f->mf.count != t->mf.count)
        return false;
    for (uint32_t i = 0; i < f->mf.count; i++) {
        const ms__mf_entry *a = &f->mf.e[i], *b = &t->mf.e[i];
        if (strcmp(a->name, b->name) != 0 || a->dtype != b->dtype || a->rank != b->rank)
            return false;
        for (uint32_t d = 1; d < a->rank; d++)
            if (a->shape[d] != b->shape[d] && (int)d != pad_dim)
                return false;
    }
    return true;
}

/* What the backend sees of t: its tensors in the worker's mappings, its room. */
static void describe(const ms__job *j, ms__taken *t, ms__multi_req *q)
{
    memset(q, 0, sizeof *q);
    q->mf = &t->mf;
    for (uint32_t i = 0; i < t->mf.count; i++) {
        const ms__mf_entry *e = &t->mf.e[i];
        char *base = e->arena == 0 ? t->c->base : t->c->link_base[e->arena - 1];
        q->data[i] = base + e->off;
    }
    q->room = t->out.data;
    q->room_off = t->req.out_off;
    q->room_cap = t->req.out_cap;
    /* A pickled answer only for a request that runs alone on a model that is not batchable: a
     * batchable one answers tensors whether or not its request was merged. */
    q->flags = j->w->batchable ? 0 : (t->req.flags & MS__REQ_OBJECT);
    q->rows = t->rows;
}

/* Completes t as the backend said in q. */
static void finish(ms__job *j, ms__taken *t, const ms__multi_req *q)
{
    if (q->status == MS_E_TOO_LARGE) {
        ms__complete_too_large(j->s, t->c, t->slot, &t->req, (size_t)q->out_len);
        return;
    }
    if (q->status < 0 && memchr(q->msg, '\0', sizeof q->msg) != NULL && q->msg[0] != '\0') {
        ms__complete_error(j->s, t->c, t->slot, t->req.id,
                           ms__error_known(q->status) ? q->status : MS_E_BACKEND, q->msg);
        return;
    }
    if (q->status != 0 || q->out_len > q->room_cap || q->out_len < MS__MF_HEADER) {
        ms__complete_error(j->s, t->c, t->slot, t->req.id, MS_E_BACKEND,
                           "the backend answered a request of several tensors wrongly");
        return;
    }
    memset(&t->out, 0, sizeof t->out);
    t->out.dtype = MS_UINT8;
    t->out.rank = 1;
    t->out.shape[0] = (int64_t)q->out_len;
    t->out.nbytes = (size_t)q->out_len;
    t->out.data = q->room;
    t->object = false;
    ms__complete_ok(j->s, t);
}

void ms__multi_run(ms__job *j)
{
    char err[MS__ERRLEN];
    ms__multi_req *reqs = calloc(j->nbatch, sizeof *reqs);
    if (reqs == NULL) {
        ms__complete_batch_error(j, MS_E_NOMEM, "the worker is out of memory for a batch");
        return;
    }
    for (size_t i = 0; i < j->nbatch; i++)
        describe(j, &j->batch[i], &reqs[i]);
    err[0] = '\0';
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->run_multi(j->w->state, reqs, j->nbatch, err, sizeof err);
    MS__STAT_RUN(j, j->batch_rows, t0);
    if (r < 0) {
        ms__complete_batch_error(j, r, err);
    } else {
        MS__STAT_ADD(j, rows, (uint64_t)j->batch_rows);
        for (size_t i = 0; i < j->nbatch; i++)
            finish(j, &j->batch[i], &reqs[i]);
    }
    free(reqs);
}
