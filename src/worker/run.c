/*
 * Running a batch: one backend run on the requests' inputs concatenated along the first
 * dimension (staged in the worker's memory), its output split back into each client's arena. A
 * single request runs in place, unstaged. Backends that describe their output only by running
 * (run_dynamic) and method calls (call) copy the backend's answer to the request's room.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "../common/util.h"
#include "modelshare.h"

/* Copies an output the backend owns (described by o, its bytes at src) to t's room; object: it is
 * a pickled answer (MS__RESP_OBJECT). */
static void deliver_as(ms__job *j, ms__taken *t, const ms__tensor_view *o, const void *src,
                       bool object)
{
    if (o->nbytes > t->req.out_cap) {
        ms__complete_too_large(j->s, t->c, t->slot, &t->req, o->nbytes);
        return;
    }
    if (o->nbytes > 0)
        memcpy(t->out.data, src, o->nbytes);
    t->out.dtype = o->dtype;
    t->out.rank = o->rank;
    memcpy(t->out.shape, o->shape, sizeof t->out.shape);
    t->out.nbytes = o->nbytes;
    t->object = object;
    ms__complete_ok(j->s, t);
}

static void deliver(ms__job *j, ms__taken *t, const ms__tensor_view *o, const void *src)
{
    deliver_as(j, t, o, src, false);
}

/* A method call: bytes in, bytes out. */
static void run_call(ms__job *j, ms__taken *t)
{
    char err[MS__ERRLEN];
    const void *res = NULL;
    size_t len = 0;
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->call(j->w->state, t->in.data, t->in.nbytes, &res, &len, err, sizeof err);
    MS__STAT_RUN(j, 1, t0);
    if (r < 0) {
        ms__complete_error(j->s, t->c, t->slot, t->req.id, r, err);
        return;
    }
    ms__tensor_view o;
    memset(&o, 0, sizeof o);
    o.dtype = MS_UINT8;
    o.rank = 1;
    o.shape[0] = (int64_t)len;
    o.nbytes = len;
    deliver(j, t, &o, res);
}

/* One request through a backend that describes its output by running. */
static void run_dynamic_alone(ms__job *j, ms__taken *t)
{
    char err[MS__ERRLEN];
    ms__tensor_view o, in = t->in;
    memset(&o, 0, sizeof o);
    /* An object answer only from a model that is not batchable: a batchable one answers one
     * array whether or not its request was merged with others. */
    in.flags =
        t->req.flags & (j->w->batchable ? MS__REQ_OWN_INPUT : MS__REQ_OBJECT | MS__REQ_OWN_INPUT);
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->run_dynamic(j->w->state, &in, &o, err, sizeof err);
    MS__STAT_RUN(j, t->rows, t0);
    bool object =
        r == MS__RESP_OBJECT && (in.flags & MS__REQ_OBJECT) && o.dtype == MS_UINT8 && o.rank == 1;
    if (object)
        r = 0;
    if (r > 0) {
        r = MS_E_BACKEND;
        snprintf(err, sizeof err, "the backend answered an object the request did not ask for");
    }
    if (r == 0 && !ms__output_sound(&o)) {
        r = MS_E_BACKEND;
        snprintf(err, sizeof err, "the backend described an invalid output");
    }
    if (r < 0) {
        ms__complete_error(j->s, t->c, t->slot, t->req.id, r, err);
        return;
    }
    MS__STAT_ADD(j, rows, (uint64_t)t->rows);
    deliver_as(j, t, &o, o.data, object);
}

/* Runs one request in place: its input and output both in its client's arena. */
static void run_alone(ms__job *j, ms__taken *t)
{
    char err[MS__ERRLEN];
    if (ms__is_call(t)) {
        run_call(j, t);
        return;
    }
    if (ms__pieces_needed(j, t)) {
        ms__pieces_run(j, t);
        return;
    }
    if (j->w->backend->run_dynamic != NULL) {
        run_dynamic_alone(j, t);
        return;
    }
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->run(j->w->state, &t->in, &t->out, err, sizeof err);
    MS__STAT_RUN(j, t->rows, t0);
    if (r < 0) {
        ms__complete_error(j->s, t->c, t->slot, t->req.id, r, err);
        return;
    }
    MS__STAT_ADD(j, rows, (uint64_t)t->rows);
    ms__complete_ok(j->s, t);
}

/* Concatenates the batch's inputs into the staging buffer, then zero rows up to in->shape[0]
 * (the batch padded to an allowed size: batch_sizes). */
static int stage_inputs(ms__job *j, const ms__tensor_view *in)
{
    if (ms__stage_grow(&j->stage_in, &j->stage_in_cap, in->nbytes) < 0)
        return MS_E_NOMEM;
    size_t off = 0;
    for (size_t i = 0; i < j->nbatch; i++) {
        memcpy((char *)j->stage_in + off, j->batch[i].in.data, j->batch[i].in.nbytes);
        off += j->batch[i].in.nbytes;
    }
    memset((char *)j->stage_in + off, 0, in->nbytes - off);
    return 0;
}

/* A batch through a backend that describes its output by running: one run on the concatenated
 * inputs; when the output has one row per input row, each request gets its rows. Otherwise (an
 * output of another shape, or an error, which may be one request's fault) each request runs
 * alone and gets its own answer. */
static void run_dynamic_batch(ms__job *j, ms__tensor_view *in)
{
    char err[MS__ERRLEN];
    if (j->batch_rows == 0 || stage_inputs(j, in) < 0) {
        for (size_t i = 0; i < j->nbatch; i++)
            run_dynamic_alone(j, &j->batch[i]);
        return;
    }
    in->data = j->stage_in;
    ms__tensor_view o;
    memset(&o, 0, sizeof o);
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->run_dynamic(j->w->state, in, &o, err, sizeof err);
    MS__STAT_RUN(j, j->batch_rows, t0);
    if (r != 0 || !ms__output_sound(&o) || o.rank < 1 || o.shape[0] != in->shape[0]) {
        for (size_t i = 0; i < j->nbatch; i++)
            run_dynamic_alone(j, &j->batch[i]);
        return;
    }
    MS__STAT_ADD(j, rows, (uint64_t)j->batch_rows);
    size_t row_bytes = o.nbytes / (size_t)in->shape[0], off = 0; /* padding rows: not read */
    for (size_t i = 0; i < j->nbatch; i++) {
        ms__taken *t = &j->batch[i];
        ms__tensor_view ot = o;
        ot.shape[0] = t->rows;
        ot.nbytes = row_bytes * (size_t)t->rows;
        deliver(j, t, &ot, (char *)o.data + off);
        off += ot.nbytes;
    }
}

/* Whether the backend's output for the whole batch (out) follows its input (in, padding rows
 * included) row for row, each request's rows of it shaped as that request's own output. */
static bool rowwise(const ms__job *j, const ms__tensor_view *in, const ms__tensor_view *out)
{
    if (out->rank < 1 || out->shape[0] != in->shape[0])
        return false;
    for (size_t i = 0; i < j->nbatch; i++) {
        const ms__tensor_view *o = &j->batch[i].out;
        if (o->dtype != out->dtype || o->rank != out->rank || o->shape[0] != j->batch[i].rows)
            return false;
        for (int d = 1; d < out->rank; d++)
            if (o->shape[d] != out->shape[d])
                return false;
    }
    return true;
}

/* One run of the concatenated inputs (in, staged) into the staging buffer (out), then each
 * request's rows copied to its client's arena. */
static void run_staged(ms__job *j, ms__tensor_view *in, ms__tensor_view *out)
{
    char err[MS__ERRLEN];
    if (stage_inputs(j, in) < 0 ||
        ms__stage_grow(&j->stage_out, &j->stage_out_cap, out->nbytes) < 0) {
        ms__complete_batch_error(j, MS_E_NOMEM, "the worker is out of memory for a batch");
        return;
    }
    in->data = j->stage_in;
    out->data = j->stage_out;
    int64_t t0 = ms__now_ns();
    int r = j->w->backend->run(j->w->state, in, out, err, sizeof err);
    MS__STAT_RUN(j, j->batch_rows, t0);
    if (r < 0) {
        ms__complete_batch_error(j, r, err);
        return;
    }
    MS__STAT_ADD(j, rows, (uint64_t)j->batch_rows);
    size_t off = 0;
    for (size_t i = 0; i < j->nbatch; i++) {
        ms__taken *t = &j->batch[i];
        memcpy(t->out.data, (char *)j->stage_out + off, t->out.nbytes);
        off += t->out.nbytes;
        ms__complete_ok(j->s, t);
    }
}

/* Runs the batch as one backend call: inputs concatenated along the first dimension into the
 * staging buffer, outputs split back into each client's arena. Falls back to one call per
 * request when the model's output does not follow its input row for row. */
static void batch_run(ms__job *j)
{
    char err[MS__ERRLEN];
    if (ms__is_multi(&j->batch[0])) {
        ms__multi_run(j);
        return;
    }
    if (j->nbatch == 1) {
        run_alone(j, &j->batch[0]);
        return;
    }
    const ms__backend_ops *be = j->w->backend;
    ms__tensor_view in = j->batch[0].in, out;
    in.shape[0] = ms__padded_rows(j->w, j->batch_rows);
    in.nbytes = j->batch_rows > 0 ? j->batch_bytes / (size_t)j->batch_rows * (size_t)in.shape[0]
                                  : j->batch_bytes;
    memset(&out, 0, sizeof out);
    if (be->run_dynamic != NULL) {
        run_dynamic_batch(j, &in);
        return;
    }
    int r = be->output_for(j->w->state, &in, &out, err, sizeof err);
    if (r < 0 || !rowwise(j, &in, &out)) {
        for (size_t i = 0; i < j->nbatch; i++)
            run_alone(j, &j->batch[i]);
        return;
    }
    run_staged(j, &in, &out);
}

void ms__batch_run(ms__job *j)
{
    /* Seen by the daemon's watchdog while it runs (stats.h). */
    ms__stats_running(j->w->stats, j->run, ms__now_ns());
    batch_run(j);
    ms__stats_running(j->w->stats, j->run, 0);
}

int ms__job_init(ms__job *j, ms__server *s)
{
    memset(j, 0, sizeof *j);
    j->s = s;
    j->w = s->w;
    j->batch = calloc(MS__BATCH_REQS_MAX, sizeof *j->batch);
    return j->batch != NULL ? 0 : MS_E_NOMEM;
}

void ms__job_free(ms__job *j)
{
    free(j->batch);
    free(j->stage_in);
    free(j->stage_out);
    memset(j, 0, sizeof *j);
}
