/*
 * Split and pad: a request with more rows than a backend run takes (max_batch, or the largest of
 * batch_sizes) runs as pieces of that many rows, one backend run each, written in order into the
 * request's output; with batch_sizes, each run is padded with zero rows up to the next allowed
 * size (for models compiled for fixed shapes), and the padding rows' outputs are never copied to
 * a caller. Only for models whose output follows their input row for row (batchable).
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "serve.h"
#include "../common/util.h"
#include "modelshare.h"

int64_t ms__padded_rows(const ms__worker *w, int64_t rows)
{
    for (int i = 0; i < w->nbatch_sizes; i++)
        if (w->batch_sizes[i] >= rows)
            return w->batch_sizes[i];
    return rows;
}

bool ms__pieces_needed(const ms__job *j, const ms__taken *t)
{
    const ms__worker *w = j->w;
    if (!w->batchable || ms__is_call(t) || ms__is_multi(t) || t->in.rank < 1 || t->rows == 0)
        return false;
    if (t->rows <= w->max_batch && ms__padded_rows(w, t->rows) == t->rows)
        return false;
    /* A backend that knows its output beforehand must have described one row per input row. */
    return w->backend->run_dynamic != NULL || (t->out.rank >= 1 && t->out.shape[0] == t->rows);
}

/* What the pieces' outputs share (a backend that describes its output by running): the first
 * piece sets it, the others must agree. */
typedef struct piece_out {
    bool known;
    ms__tensor_view first; /* dtype, rank and dims after the first */
    size_t row_bytes;
} piece_out;

/* Rows [r0, r0 + k) of t's input as a view, staged with zero rows up to `rows` when padded. */
static int piece_input(ms__job *j, const ms__taken *t, int64_t r0, int64_t k, int64_t rows,
                       ms__tensor_view *in)
{
    size_t row = t->in.nbytes / (size_t)t->rows;
    *in = t->in;
    in->data = (char *)t->in.data + (size_t)r0 * row;
    in->shape[0] = k;
    in->nbytes = (size_t)k * row;
    if (rows == k)
        return 0;
    if ((size_t)rows * row > MS__BATCH_BYTES_MAX ||
        ms__stage_grow(&j->stage_in, &j->stage_in_cap, (size_t)rows * row) < 0)
        return MS_E_NOMEM;
    memcpy(j->stage_in, in->data, in->nbytes);
    memset((char *)j->stage_in + in->nbytes, 0, (size_t)(rows - k) * row);
    in->data = j->stage_in;
    in->shape[0] = rows;
    in->nbytes = (size_t)rows * row;
    return 0;
}

/* One piece through a backend that knows its output: in place, or staged when padded. */
static int piece_static(ms__job *j, ms__taken *t, int64_t r0, int64_t k, const ms__tensor_view *in,
                        char *err, size_t errlen)
{
    size_t row = t->out.nbytes / (size_t)t->rows;
    ms__tensor_view out = t->out;
    char *dst = (char *)t->out.data + (size_t)r0 * row;
    out.shape[0] = in->shape[0];
    out.nbytes = (size_t)in->shape[0] * row;
    out.data = dst;
    if (in->shape[0] != k) {
        if (ms__stage_grow(&j->stage_out, &j->stage_out_cap, out.nbytes) < 0)
            return ms__fail(err, errlen, MS_E_NOMEM, "the worker is out of memory for a piece");
        out.data = j->stage_out;
    }
    int r = j->w->backend->run(j->w->state, in, &out, err, errlen);
    if (r == 0 && out.data != dst)
        memcpy(dst, out.data, (size_t)k * row);
    return r;
}

/* Whether a piece's output (o, for `rows` input rows) has one row per input row and agrees with
 * the pieces before it. */
static bool piece_agrees(piece_out *po, const ms__tensor_view *o, int64_t rows)
{
    if (!ms__output_sound(o) || o->rank < 1 || o->shape[0] != rows)
        return false;
    size_t row_bytes = o->nbytes / (size_t)rows;
    if (!po->known) {
        po->known = true;
        po->first = *o;
        po->row_bytes = row_bytes;
        return true;
    }
    if (o->dtype != po->first.dtype || o->rank != po->first.rank || row_bytes != po->row_bytes)
        return false;
    for (int d = 1; d < o->rank; d++)
        if (o->shape[d] != po->first.shape[d])
            return false;
    return true;
}

/* One piece through a backend that describes its output by running: its first k rows copied to
 * their place in t's room. */
static int piece_dynamic(ms__job *j, ms__taken *t, int64_t r0, int64_t k, const ms__tensor_view *in,
                         piece_out *po, char *err, size_t errlen)
{
    ms__tensor_view o;
    memset(&o, 0, sizeof o);
    int r = j->w->backend->run_dynamic(j->w->state, in, &o, err, errlen);
    if (r > 0) /* an object answer: never asked for by a piece */
        return ms__fail(err, errlen, MS_E_BACKEND,
                        "the model answered an object for a piece, expected an array");
    if (r < 0)
        return r;
    if (!piece_agrees(po, &o, in->shape[0]))
        return ms__fail(err, errlen, MS_E_BACKEND,
                        "the model's output for a piece of %lld rows does not have one row per "
                        "input row like the other pieces (a request of %lld rows is split in "
                        "pieces of max_batch rows)",
                        (long long)in->shape[0], (long long)t->rows);
    if (po->row_bytes * (size_t)t->rows > t->req.out_cap)
        return ms__fail(err, errlen, MS_E_TOO_LARGE,
                        "the output of %lld rows needs %zu bytes, the request's room has %llu",
                        (long long)t->rows, po->row_bytes * (size_t)t->rows,
                        (unsigned long long)t->req.out_cap);
    memcpy((char *)t->out.data + (size_t)r0 * po->row_bytes, o.data, (size_t)k * po->row_bytes);
    return 0;
}

/* Rows [r0, r0 + k) of t: staged and padded as needed, run, written to t's room. */
static int run_piece(ms__job *j, ms__taken *t, int64_t r0, int64_t k, piece_out *po, char *err,
                     size_t errlen)
{
    ms__tensor_view in;
    if (piece_input(j, t, r0, k, ms__padded_rows(j->w, k), &in) < 0)
        return ms__fail(err, errlen, MS_E_NOMEM,
                        "a piece of %lld rows padded to %lld does not fit the worker's staging "
                        "(%u bytes at most)",
                        (long long)k, (long long)ms__padded_rows(j->w, k), MS__BATCH_BYTES_MAX);
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->run_dynamic != NULL ? piece_dynamic(j, t, r0, k, &in, po, err, errlen)
                                               : piece_static(j, t, r0, k, &in, err, errlen);
    MS__STAT_RUN(j, k, t0);
    if (r == 0)
        MS__STAT_ADD(j, rows, (uint64_t)k);
    return r;
}

void ms__pieces_run(ms__job *j, ms__taken *t)
{
    char err[MS__ERRLEN];
    piece_out po = {.known = false};
    int64_t step = j->w->max_batch;
    for (int64_t r0 = 0; r0 < t->rows; r0 += step) {
        int64_t k = t->rows - r0 < step ? t->rows - r0 : step;
        int r = run_piece(j, t, r0, k, &po, err, sizeof err);
        if (r < 0) {
            ms__complete_error(j->s, t->c, t->slot, t->req.id, r, err);
            return;
        }
    }
    if (po.known) { /* described by running: the pieces' rows, the whole request's count */
        ms__tensor_view room = t->out;
        t->out = po.first;
        t->out.data = room.data;
        t->out.shape[0] = t->rows;
        t->out.nbytes = po.row_bytes * (size_t)t->rows;
    }
    ms__complete_ok(j->s, t);
}
