/*
 * Model: one lease (ms_model). infer() copies its input once into the model's shared memory (none
 * when the input already lies in shared memory: an array from empty(), an output of this model or
 * of another model of the process (a pipeline, B(A(x)): A's memory is linked to B's workers),
 * passed by ms_tensor_view) and returns the output as a Tensor that numpy views in place. The GIL
 * is released around the copy and the call.
 */
#include "core.h"

#include "../../src/common/records.h"
#include "../../src/lib/infer.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

void ms_py_model_maybe_end(ms_py_model *m)
{
    if (!m->closed || m->users > 0 || m->model == NULL)
        return;
    ms_model *model = m->model;
    m->model = NULL;
    if (m->pid != getpid())
        return; /* a forked child: the lease is the parent's */
    PyThreadState *ts = PyEval_SaveThread();
    /* Errors are the daemon's to clean up: a lost connection releases its leases itself. */
    (void)ms_release(model);
    PyEval_RestoreThread(ts);
}

int ms_py_model_usable(ms_py_model *self)
{
    ms_py_state *st = ms_py_state_of((PyObject *)self);
    char msg[256];
    if (self->closed || self->model == NULL) {
        snprintf(msg, sizeof msg, "model \"%s\" was released: acquire it again",
                 PyUnicode_AsUTF8(self->tag));
        ms_py_raise(st, MS_E_INVAL, msg);
        return -1;
    }
    if (self->pid != getpid()) {
        snprintf(msg, sizeof msg,
                 "model \"%s\" was acquired in process %ld and cannot be used in process %ld "
                 "(after fork()): acquire it again",
                 PyUnicode_AsUTF8(self->tag), (long)self->pid, (long)getpid());
        ms_py_raise(st, MS_E_INVAL, msg);
        return -1;
    }
    return 0;
}

/* Copies a strided buffer into C order at dst. */
char *ms_py_copy_strided(char *dst, const char *src, int dim, const Py_buffer *v)
{
    if (dim == v->ndim) {
        memcpy(dst, src, (size_t)v->itemsize);
        return dst + v->itemsize;
    }
    if (dim == v->ndim - 1 && v->strides[dim] == v->itemsize) {
        size_t n = (size_t)(v->shape[dim] * v->itemsize);
        memcpy(dst, src, n);
        return dst + n;
    }
    for (Py_ssize_t i = 0; i < v->shape[dim]; i++)
        dst = ms_py_copy_strided(dst, src + i * v->strides[dim], dim + 1, v);
    return dst;
}

/* infer()'s arguments. */
typedef struct infer_args {
    PyObject *x, *timeout, *cancel; /* borrowed */
    int dtype, objects;
} infer_args;

/* The common forms of infer()'s arguments, read directly: input[, dtype[, objects]] with dtype
 * an int and objects a bool, timeout= and cancel= by keyword. false for any other form. */
static bool infer_args_fast(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                            infer_args *a)
{
    if (nargs < 1 || nargs > 3)
        return false;
    a->x = args[0];
    if (nargs >= 2) {
        int overflow;
        long v = PyLong_CheckExact(args[1]) ? PyLong_AsLongAndOverflow(args[1], &overflow) : 0;
        if (!PyLong_CheckExact(args[1]) || overflow != 0 || v < INT_MIN || v > INT_MAX)
            return false;
        a->dtype = (int)v;
    }
    if (nargs == 3 && args[2] != Py_True && args[2] != Py_False)
        return false;
    a->objects = nargs == 3 && args[2] == Py_True;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "timeout") == 0)
            a->timeout = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(k, "cancel") == 0)
            a->cancel = args[nargs + i];
        else
            return false;
    }
    return true;
}

/* infer()'s arguments, any form: the common ones directly, the others (and every mistake, with
 * its message) through PyArg_ParseTupleAndKeywords. Returns 0, or -1 with an exception set. */
static int infer_args_parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                            infer_args *a)
{
    static char *kw[] = {"input", "dtype", "objects", "timeout", "cancel", NULL};
    *a = (infer_args){.timeout = Py_None, .cancel = Py_None};
    if (infer_args_fast(args, nargs, kwnames, a))
        return 0;
    *a = (infer_args){.timeout = Py_None, .cancel = Py_None};
    PyObject *tuple = PyTuple_New(nargs), *dict = kwnames != NULL ? PyDict_New() : NULL;
    int ok = tuple != NULL && (kwnames == NULL || dict != NULL);
    for (Py_ssize_t i = 0; ok && i < nargs; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    for (Py_ssize_t i = 0; ok && kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++)
        ok = PyDict_SetItem(dict, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) == 0;
    /* The objects parsed are borrowed from args, which the caller holds for the call. */
    ok = ok && PyArg_ParseTupleAndKeywords(tuple, dict, "O|ip$OO:infer", kw, &a->x, &a->dtype,
                                           &a->objects, &a->timeout, &a->cancel);
    Py_XDECREF(tuple);
    Py_XDECREF(dict);
    return ok ? 0 : -1;
}

static PyObject *model_infer(ms_py_model *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    infer_args a;
    ms_py_wait pw;
    if (infer_args_parse(args, nargs, kwnames, &a) < 0)
        return NULL;
    PyObject *x = a.x, *timeout = a.timeout, *cancel = a.cancel;
    int dtype = a.dtype, objects = a.objects;
    if (ms_py_model_usable(self) < 0 || ms_py_wait_init(&pw, timeout, cancel) < 0)
        return NULL;
    ms_py_state *st = ms_py_state_of((PyObject *)self);
    char msg[MS_PY_MSGLEN];
    Py_buffer view;
    if (PyObject_GetBuffer(x, &view, PyBUF_RECORDS_RO) < 0)
        return NULL;

    int d = dtype != 0 ? dtype : ms_py_dtype_of_format(view.format, view.itemsize);
    if (d == 0 || (size_t)view.itemsize != ms_dtype_size(d)) {
        if (dtype != 0)
            snprintf(msg, sizeof msg, "input dtype %s has %zu-byte elements, the buffer %zd-byte",
                     ms_dtype_name(dtype), ms_dtype_size(dtype), view.itemsize);
        else
            snprintf(msg, sizeof msg,
                     "input: expected a buffer of float32, float16, bfloat16, float64, int8, "
                     "uint8, int16, int32, int64 or bool, got buffer format '%.20s' with "
                     "%zd-byte elements",
                     view.format ? view.format : "B", view.itemsize);
        PyBuffer_Release(&view);
        return ms_py_raise(st, MS_E_DTYPE, msg);
    }
    if (view.ndim > MS_MAX_RANK) {
        snprintf(msg, sizeof msg, "input: expected at most %d dimensions, got %d", MS_MAX_RANK,
                 view.ndim);
        PyBuffer_Release(&view);
        return ms_py_raise(st, MS_E_SHAPE, msg);
    }
    int64_t shape[MS_MAX_RANK];
    for (int i = 0; i < view.ndim; i++)
        shape[i] = view.shape[i];
    int contiguous = PyBuffer_IsContiguous(&view, 'C');

    ms_model *m = self->model;
    ms_client *c = self->client->client;
    ms_tensor *in = NULL, *out = NULL;
    int r;
    bool object = false;
    self->users++; /* the lease outlives this call, whatever another thread does */
    PyThreadState *ts = PyEval_SaveThread();
    const ms__wait *outer = ms__wait_set(&pw.w);
    /* Already in shared memory (this model's or another's of this client): by reference. Else
     * one copy. An input of another model is held by the buffer view (its Tensor keeps that
     * model's lease) until the call returns. */
    bool copied = !contiguous || !ms__in_arenas(m, view.buf) ||
                  ms_tensor_view(m, d, view.ndim, shape, view.buf, &in) != 0;
    r = copied ? ms_tensor_alloc(m, d, view.ndim, shape, &in) : 0;
    if (r == 0) {
        if (copied && contiguous)
            memcpy(ms_tensor_data(in), view.buf, (size_t)view.len);
        else if (copied)
            ms_py_copy_strided(ms_tensor_data(in), view.buf, 0, &view);
        /* A copy made for this call is the model's to write (an object that modifies its input
         * gets its own copy); an input passed by reference stays read-only there. */
        uint32_t flags = (objects ? MS__REQ_OBJECT : 0u) | (copied ? MS__REQ_OWN_INPUT : 0u);
        r = flags != 0 ? ms__infer_flags(m, in, flags, &out, &object) : ms_infer(m, in, &out);
    }
    if (r < 0)
        snprintf(msg, sizeof msg, "%s", ms_errmsg(c));
    ms_tensor_free(in);
    ms__wait_set(outer);
    PyEval_RestoreThread(ts);
    PyBuffer_Release(&view);

    if (copied && r == 0)
        self->copied_bytes += (unsigned long long)view.len;
    PyObject *result;
    if (r < 0) {
        /* Ended by Ctrl-C: its KeyboardInterrupt, not a Timeout. */
        result = pw.ended && PyErr_Occurred() ? NULL : ms_py_raise(st, r, msg);
    } else if (object) { /* a pickled answer: its bytes, for the package to unpickle */
        result = PyBytes_FromStringAndSize(ms_tensor_data(out), (Py_ssize_t)ms_tensor_nbytes(out));
        ms_tensor_free(out);
    } else {
        result = ms_py_tensor_wrap(st, self, out);
    }
    self->users--;
    ms_py_model_maybe_end(self);
    return result;
}

/* empty(shape, dtype) -> Tensor: uninitialised room in the model's shared memory, to fill in
 * place and pass to infer() with no copy. */
static PyObject *model_empty(ms_py_model *self, PyObject *args)
{
    PyObject *dims;
    int dtype;
    if (!PyArg_ParseTuple(args, "O!i:empty", &PyTuple_Type, &dims, &dtype))
        return NULL;
    if (ms_py_model_usable(self) < 0)
        return NULL;
    ms_py_state *st = ms_py_state_of((PyObject *)self);
    Py_ssize_t rank = PyTuple_GET_SIZE(dims);
    int64_t shape[MS_MAX_RANK];
    if (rank > MS_MAX_RANK)
        return ms_py_raise(st, MS_E_INVAL, "empty: expected at most 8 dimensions");
    for (Py_ssize_t i = 0; i < rank; i++) {
        shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(dims, i));
        if (shape[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    ms_tensor *t = NULL;
    int r = ms_tensor_alloc(self->model, dtype, (int)rank, shape, &t);
    if (r < 0)
        return ms_py_raise(st, r, ms_errmsg(self->client->client));
    return ms_py_tensor_wrap(st, self, t);
}

static PyObject *model_copied_bytes(ms_py_model *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->copied_bytes);
}

static PyObject *model_call(ms_py_model *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"payload", "timeout", "cancel", NULL};
    PyObject *arg, *timeout = Py_None, *cancel = Py_None;
    ms_py_wait pw;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OO:call", kw, &arg, &timeout, &cancel))
        return NULL;
    if (ms_py_model_usable(self) < 0 || ms_py_wait_init(&pw, timeout, cancel) < 0)
        return NULL;
    ms_py_state *st = ms_py_state_of((PyObject *)self);
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    char msg[MS_PY_MSGLEN];
    ms_model *m = self->model;
    ms_client *c = self->client->client;
    ms_tensor *in = NULL, *out = NULL;
    int64_t shape[1] = {view.len};
    PyObject *result = NULL;
    self->users++;
    PyThreadState *ts = PyEval_SaveThread();
    const ms__wait *outer = ms__wait_set(&pw.w);
    int r = ms_tensor_from(m, MS_UINT8, 1, shape, view.buf, (size_t)view.len, &in);
    if (r == 0)
        r = ms_call(m, in, &out);
    if (r < 0)
        snprintf(msg, sizeof msg, "%s", ms_errmsg(c));
    ms_tensor_free(in);
    ms__wait_set(outer);
    PyEval_RestoreThread(ts);
    PyBuffer_Release(&view);
    if (r < 0) {
        if (!(pw.ended && PyErr_Occurred()))
            ms_py_raise(st, r, msg);
    } else {
        result = PyBytes_FromStringAndSize(ms_tensor_data(out), (Py_ssize_t)ms_tensor_nbytes(out));
        ts = PyEval_SaveThread();
        ms_tensor_free(out);
        PyEval_RestoreThread(ts);
    }
    self->users--;
    ms_py_model_maybe_end(self);
    return result;
}

static PyObject *model_release(ms_py_model *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    ms_py_model_maybe_end(self);
    Py_RETURN_NONE;
}

static PyObject *shape_tuple(int rank, const int64_t *shape)
{
    PyObject *t = PyTuple_New(rank);
    if (t == NULL)
        return NULL;
    for (int i = 0; i < rank; i++) {
        PyObject *v = shape[i] < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(shape[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *model_signature(ms_py_model *self, PyObject *unused)
{
    (void)unused;
    if (ms_py_model_usable(self) < 0)
        return NULL;
    int in_dtype = 0, in_rank = 0, out_dtype = 0, out_rank = 0;
    int64_t in_shape[MS_MAX_RANK], out_shape[MS_MAX_RANK];
    int r = ms_model_signature(self->model, &in_dtype, &in_rank, in_shape, &out_dtype, &out_rank,
                               out_shape);
    if (r < 0)
        return ms_py_raise(ms_py_state_of((PyObject *)self), r, ms_errmsg(self->client->client));
    PyObject *in = shape_tuple(in_rank, in_shape);
    PyObject *out = shape_tuple(out_rank, out_shape);
    PyObject *result = NULL;
    if (in && out)
        result = Py_BuildValue("(iO)(iO)", in_dtype, in, out_dtype, out);
    Py_XDECREF(in);
    Py_XDECREF(out);
    return result;
}

/* One side's tensors as [(name or None, dtype code, shape tuple or None)]. */
static PyObject *side_list(ms_py_model *self, int n,
                           int (*get)(const ms_model *, int, ms_tensor_info *))
{
    PyObject *list = n >= 0 ? PyList_New(n) : NULL;
    for (int i = 0; list != NULL && i < n; i++) {
        ms_tensor_info t;
        int r = get(self->model, i, &t);
        if (r < 0) {
            Py_DECREF(list);
            return ms_py_raise(ms_py_state_of((PyObject *)self), r,
                               ms_errmsg(self->client->client));
        }
        PyObject *shape = t.rank >= 0 ? shape_tuple(t.rank, t.shape) : Py_NewRef(Py_None);
        PyObject *item = shape != NULL ? Py_BuildValue("(ziO)", t.name, t.dtype, shape) : NULL;
        Py_XDECREF(shape);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *model_tensors(ms_py_model *self, PyObject *unused)
{
    (void)unused;
    if (ms_py_model_usable(self) < 0)
        return NULL;
    PyObject *in = side_list(self, ms_model_inputs_count(self->model), ms_model_input);
    PyObject *out =
        in != NULL ? side_list(self, ms_model_outputs_count(self->model), ms_model_output) : NULL;
    PyObject *result = out != NULL ? PyTuple_Pack(2, in, out) : NULL;
    Py_XDECREF(in);
    Py_XDECREF(out);
    return result;
}

static void model_dealloc(ms_py_model *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    self->closed = 1;
    ms_py_model_maybe_end(self);
    Py_XDECREF(self->client);
    Py_XDECREF(self->tag);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *model_tag(ms_py_model *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->tag);
}

static PyObject *model_released(ms_py_model *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->closed);
}

static PyObject *model_held(ms_py_model *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->model != NULL);
}

static PyObject *model_client(ms_py_model *self, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)self->client);
}

static PyMethodDef model_methods[] = {
    {"infer", (PyCFunction)(void (*)(void))model_infer, METH_FASTCALL | METH_KEYWORDS,
     "infer(input, dtype=0, objects=False) -> Tensor | bytes. input: any object with the buffer "
     "protocol (C-contiguous or strided), copied once into shared memory unless it lies there "
     "already (from empty(), or an output of this model); dtype overrides the ms_dtype read from "
     "the buffer's format (e.g. BFLOAT16 for uint16 bits). The Tensor views the output in shared "
     "memory. objects=True (a python model): an answer that is not one array comes back as the "
     "bytes of its pickle. timeout=S: this call's deadline in seconds (None: the handle's, "
     "none by default), Timeout past it; cancel: an object with is_set() (a threading.Event) "
     "looked at while the call waits, Timeout once it is set. Ctrl-C ends the wait at once "
     "(KeyboardInterrupt); the lease stays usable."},
    {"infer_n", (PyCFunction)(void (*)(void))ms_py_model_infer_n, METH_VARARGS | METH_KEYWORDS,
     "infer_n(inputs, form, objects=False) -> (answer_form, outputs, Tensor): several named "
     "tensors (ms_infer_n). inputs: a list of (name, buffer or list of str/bytes, dtype "
     "override or 0); form: 0 model(*args), 1 model(**kwargs), 2 model(dict). outputs: "
     "(name, dtype, shape, offset, nbytes) into the Tensor's bytes, or (name, list) for a list "
     "of strings; answer_form 6 (objects=True only): output \"0\" is a pickled answer. timeout and "
     "cancel as for infer()."},
    {"empty", (PyCFunction)model_empty, METH_VARARGS,
     "empty(shape: tuple, dtype: int) -> Tensor: room in shared memory to fill, then infer() "
     "with no copy."},
    {"call", (PyCFunction)(void (*)(void))model_call, METH_VARARGS | METH_KEYWORDS,
     "call(payload: bytes-like, *, timeout=None, cancel=None) -> bytes: a method call (ms_call) "
     "on a python-backend model: the pickled (op, name, args, kwargs) in, the pickled answer "
     "out. timeout and cancel as for infer()."},
    {"release", (PyCFunction)model_release, METH_NOARGS,
     "release(): ends the lease once no call is in flight and no output Tensor is alive. "
     "Idempotent."},
    {"signature", (PyCFunction)model_signature, METH_NOARGS,
     "signature() -> ((in_dtype, in_shape), (out_dtype, out_shape)); None for a dimension that "
     "varies."},
    {"tensors", (PyCFunction)model_tensors, METH_NOARGS,
     "tensors() -> (inputs, outputs), each [(name or None, dtype code, shape or None)] as "
     "ms_model_input / ms_model_output say them; None for a dimension that varies."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"tag", (getter)model_tag, NULL, "the model's tag", NULL},
    {"released", (getter)model_released, NULL, "release() was called", NULL},
    {"held", (getter)model_held, NULL, "the lease is still held (outputs may keep it)", NULL},
    {"client", (getter)model_client, NULL, "the Client this lease belongs to", NULL},
    {"copied_bytes", (getter)model_copied_bytes, NULL,
     "input bytes infer() copied into shared memory so far (inputs already there are not)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot model_slots[] = {
    {Py_tp_doc, "A lease on a model, from Client.acquire()."},
    {Py_tp_dealloc, model_dealloc},
    {Py_tp_methods, model_methods},
    {Py_tp_getset, model_getset},
    {0, NULL},
};

PyType_Spec ms_py_model_spec = {
    .name = "modelshare._core.Model",
    .basicsize = sizeof(ms_py_model),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = model_slots,
};
