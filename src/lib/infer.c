/*
 * Requests on a model handle: ms_infer (run the model on a tensor) and ms_call (a method call of
 * a python model). Each makes room for the output in the arena, then one exchange through a ring
 * slot (exchange.c) and the response checked and taken.
 */
#include <stdint.h>
#include <string.h>

#include "errors.h"
#include "exchange.h"
#include "infer.h"
#include "internal.h"
#include "tensor.h"

/* First room for a method call's answer: address space only, until written. */
#define MS__CALL_ROOM_MIN (1u << 20)

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

/* Checks the arguments of fn (ms_infer, ms_call): an input of this model, and for a method call
 * the pickled call (a uint8 tensor of rank 1). */
static int check_args(ms_model *model, const char *fn, uint32_t flags, const ms_tensor *input,
                      ms_tensor **output)
{
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
    return 0;
}

/* The request record for input, its output to go in out (room bytes). */
static void fill_req(ms__req *req, uint32_t flags, const ms_tensor *input, const ms_tensor *out,
                     uint64_t room)
{
    memset(req, 0, sizeof *req);
    req->magic = MS__REQ_MAGIC;
    req->flags = flags;
    req->dtype = (uint32_t)input->dtype;
    req->rank = (uint32_t)input->rank;
    for (int i = 0; i < input->rank; i++)
        req->shape[i] = input->shape[i];
    req->in_arena = (uint32_t)input->arena;
    req->in_link = (uint64_t)input->src_lease;
    req->in_off = input->off;
    req->in_len = input->nbytes;
    req->out_off = out->off;
    req->out_cap = room;
}

/* Makes *room bytes of output room (*out), publishes the request, waits for its response (model
 * lock held; released while waiting). When the worker answers that the room is too small, once
 * more with the room it asks for (*room). On MS_E_TIMEOUT *out is NULL: the worker may still
 * write into it, and it is freed once the worker is done; input and the others it names stay
 * held as long (exchange.h). */
int ms__round_trip(ms_model *model, uint32_t flags, const ms_tensor *input,
                   const ms_tensor *const *named, int nnamed, uint64_t *room, ms_tensor **out,
                   ms__resp *resp)
{
    const ms_tensor *held[MS__HELD_MAX] = {input};
    int nheld = 1;
    for (int i = 0; i < nnamed && nheld < MS__HELD_MAX; i++)
        held[nheld++] = named[i];
    for (int attempt = 0;; attempt++) {
        int r = ms__tensor_new_locked(model, *room, out);
        if (r < 0)
            return r;
        ms__req req;
        fill_req(&req, flags, input, *out, *room);
        ms__ticket tk;
        r = ms__submit(model, &req, &tk);
        if (r < 0)
            return r;
        pthread_mutex_unlock(&model->lock);
        r = ms__await(model, &tk, *out, held, nheld, resp); /* returns with the lock held */
        if (r < 0 && ms__orphaned(model, &tk))
            *out = NULL;
        if (r < 0)
            return r;
        if (resp->status == MS_E_TOO_LARGE && resp->out_len > *room && attempt == 0) {
            ms__tensor_free_locked(*out);
            *out = NULL;
            *room = resp->out_len;
            continue;
        }
        return 0;
    }
}

/* The response's status, then out described as the response says, its room shrunk to fit, and
 * what the next request will need learnt (model lock held). */
static int take_response(ms_model *model, uint32_t flags, const ms_tensor *input, uint64_t room,
                         ms_tensor *out, ms__resp *resp)
{
    bool object = resp->status == MS__RESP_OBJECT && (flags & MS__REQ_OBJECT);
    if (object)
        resp->status = 0;
    if (resp->status > 0)
        return ms__lib_fail(model->client, MS_E_PROTOCOL,
                            "the worker of \"%s\" answered an unknown status %d", model->tag,
                            resp->status);
    if (resp->status != 0) {
        resp->msg[sizeof resp->msg - 1] = '\0';
        return ms__lib_fail_msg(model->client, resp->status,
                                resp->msg[0] ? resp->msg : ms_strerror(resp->status));
    }
    int r = check_resp(model, resp, room);
    if (r < 0)
        return r;
    out->dtype = (int)resp->dtype;
    out->rank = (int)resp->rank;
    for (int i = 0; i < out->rank; i++)
        out->shape[i] = resp->shape[i];
    out->nbytes = (size_t)resp->out_len;
    ms__tensor_shrink_locked(out, resp->out_len);
    if (flags == MS__REQ_CALL) {
        model->call_room = resp->out_len;
    } else if (object) {
        resp->status = MS__RESP_OBJECT; /* told to the caller; nothing learnt from its size */
    } else if (ms_dtype_size(model->sig_out.dtype) == 0) {
        uint64_t rows = input->rank >= 1 && input->shape[0] > 0 ? (uint64_t)input->shape[0] : 1;
        model->out_per_row = (resp->out_len + rows - 1) / rows;
    }
    return 0;
}

/* One request (flags 0: run the model; MS__REQ_CALL: a method call; the bits of ms__infer_flags)
 * and its answer (*resp), for fn. */
static int request_resp(ms_model *model, const char *fn, uint32_t flags, const ms_tensor *input,
                        ms_tensor **output, ms__resp *respp)
{
    ms__resp resp;
    ms_tensor *out = NULL;
    resp.status = 0;

    if (model == NULL)
        return MS_E_INVAL;
    ms__lib_clear(model->client);
    int r = check_args(model, fn, flags, input, output);
    if (r < 0)
        return r;
    pthread_mutex_lock(&model->lock);
    if (input->arena != 0 && model->links[input->arena - 1] != input->src_lease) {
        pthread_mutex_unlock(&model->lock);
        return ms__lib_fail(model->client, MS_E_INVAL,
                            "%s: the input is a view of another model's tensor, and that model "
                            "was released: its bytes are gone",
                            fn);
    }
    uint64_t room;
    if (flags == MS__REQ_CALL) {
        room = model->call_room > MS__CALL_ROOM_MIN ? model->call_room : MS__CALL_ROOM_MIN;
    } else {
        room = output_room(model, input);
        /* An object answer's size is not known from the signature: room enough that a small one
         * never asks again (which would run the model twice). Address space until written. */
        uint64_t least = model->arena_capacity / 8 < MS__CALL_ROOM_MIN ? model->arena_capacity / 8
                                                                       : MS__CALL_ROOM_MIN;
        if ((flags & MS__REQ_OBJECT) && room < least)
            room = least;
    }
    r = ms__round_trip(model, flags, input, NULL, 0, &room, &out, &resp);
    if (r == 0)
        r = take_response(model, flags, input, room, out, &resp);
    if (r == 0) {
        *output = out;
        out = NULL;
    }
    if (out)
        ms__tensor_free_locked(out);
    pthread_mutex_unlock(&model->lock);
    *respp = resp;
    return r;
}

static int request(ms_model *model, const char *fn, uint32_t flags, const ms_tensor *input,
                   ms_tensor **output)
{
    ms__resp resp;
    return request_resp(model, fn, flags, input, output, &resp);
}

MS_EXPORT int ms_infer(ms_model *model, const ms_tensor *input, ms_tensor **output)
{
    return request(model, "ms_infer", 0, input, output);
}

MS_EXPORT int ms_call(ms_model *model, const ms_tensor *input, ms_tensor **output)
{
    return request(model, "ms_call", MS__REQ_CALL, input, output);
}

int ms__infer_flags(ms_model *model, const ms_tensor *input, uint32_t flags, ms_tensor **output,
                    bool *object)
{
    if (model == NULL || object == NULL)
        return MS_E_INVAL;
    if ((flags & ~(uint32_t)(MS__REQ_OBJECT | MS__REQ_OWN_INPUT)) != 0)
        return ms__lib_fail(
            model->client, MS_E_INVAL,
            "ms__infer_flags: expected flags of MS__REQ_OBJECT | MS__REQ_OWN_INPUT, "
            "got 0x%x",
            flags);
    ms__resp resp;
    memset(&resp, 0, sizeof resp);
    int r = request_resp(model, "ms_infer", flags, input, output, &resp);
    *object = r == 0 && resp.status == MS__RESP_OBJECT;
    return r;
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
