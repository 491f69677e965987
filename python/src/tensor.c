/*
 * Tensor: an output ms_tensor in shared memory, exported with the buffer protocol so that
 * numpy.asarray() views it without a copy. The Tensor keeps its Model (and so the lease and the
 * arena the bytes live in) alive; it frees the tensor when the last view of it is gone.
 * bfloat16 has no buffer format: it is exported as uint16 ('H') bits.
 */
#include "core.h"

#include <string.h>
#include <unistd.h>

/* The buffer-protocol format of each dtype (bfloat16 as its uint16 bits); NULL: none. */
static const char *format_of(int dtype)
{
    static const char *const formats[] = {
        [MS_FLOAT32] = "f", [MS_FLOAT16] = "e", [MS_BFLOAT16] = "H", [MS_FLOAT64] = "d",
        [MS_INT8] = "b",    [MS_UINT8] = "B",   [MS_INT16] = "h",    [MS_INT32] = "i",
        [MS_INT64] = "q",   [MS_BOOL] = "?",
    };
    return dtype >= 0 && (size_t)dtype < sizeof formats / sizeof formats[0] ? formats[dtype] : NULL;
}

int ms_py_dtype_of_format(const char *format, Py_ssize_t itemsize)
{
    if (format == NULL)
        format = "B";
    /* Native or little-endian byte order (this is a little-endian-only project); '>' and '!'
     * only for single bytes, where order does not matter. */
    if (format[0] == '@' || format[0] == '=' || format[0] == '<')
        format++;
    else if ((format[0] == '>' || format[0] == '!') && itemsize == 1)
        format++;
    if (format[0] == '\0' || format[1] != '\0')
        return 0;
    switch (format[0]) {
    case 'f':
        return itemsize == 4 ? MS_FLOAT32 : 0;
    case 'd':
        return itemsize == 8 ? MS_FLOAT64 : 0;
    case 'e':
        return itemsize == 2 ? MS_FLOAT16 : 0;
    case 'b':
        return MS_INT8;
    case 'B':
        return MS_UINT8;
    case '?':
        return itemsize == 1 ? MS_BOOL : 0;
    case 'h':
    case 'i':
    case 'l':
    case 'q':
    case 'n':
        return itemsize == 2 ? MS_INT16 : itemsize == 4 ? MS_INT32 : itemsize == 8 ? MS_INT64 : 0;
    default:
        return 0;
    }
}

PyObject *ms_py_tensor_wrap(ms_py_state *st, ms_py_model *m, ms_tensor *t)
{
    int rank = ms_tensor_rank(t);
    int dtype = ms_tensor_dtype(t);
    if (format_of(dtype) == NULL || rank < 0 || rank > MS_MAX_RANK) {
        char msg[128];
        snprintf(msg, sizeof msg, "output: dtype %d and rank %d cannot be exported", dtype, rank);
        ms_tensor_free(t);
        return ms_py_raise(st, MS_E_PROTOCOL, msg);
    }
    ms_py_tensor *self = (ms_py_tensor *)st->tensor_type->tp_alloc(st->tensor_type, 0);
    if (self == NULL) {
        ms_tensor_free(t);
        return NULL;
    }
    self->tensor = t;
    self->model = (ms_py_model *)Py_NewRef((PyObject *)m);
    self->pid = m->pid;
    self->dtype = dtype;
    self->ndim = rank;
    self->itemsize = (Py_ssize_t)ms_dtype_size(dtype);
    const int64_t *shape = ms_tensor_shape(t);
    Py_ssize_t stride = self->itemsize;
    for (int i = rank - 1; i >= 0; i--) {
        self->shape[i] = (Py_ssize_t)shape[i];
        self->strides[i] = stride;
        stride *= (Py_ssize_t)shape[i];
    }
    m->users++;
    return (PyObject *)self;
}

static void tensor_dealloc(ms_py_tensor *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    ms_py_model *m = self->model;
    /* In a forked child the arena's allocator is the parent's: never free there. */
    if (self->tensor != NULL && m->model != NULL && self->pid == getpid())
        ms_tensor_free(self->tensor);
    self->tensor = NULL;
    m->users--;
    ms_py_model_maybe_end(m);
    Py_DECREF(m);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int tensor_getbuffer(ms_py_tensor *self, Py_buffer *view, int flags)
{
    if (self->tensor == NULL) {
        PyErr_SetString(PyExc_BufferError, "tensor was freed");
        return -1;
    }
    Py_ssize_t nbytes = (Py_ssize_t)ms_tensor_nbytes(self->tensor);
    view->buf = ms_tensor_data(self->tensor);
    view->obj = Py_NewRef((PyObject *)self);
    view->len = nbytes;
    view->readonly = 0;
    view->itemsize = self->itemsize;
    view->format = (flags & PyBUF_FORMAT) ? (char *)format_of(self->dtype) : NULL;
    view->ndim = self->ndim;
    view->shape = (flags & PyBUF_ND) == PyBUF_ND ? self->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? self->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    if (view->shape == NULL) {
        /* A flat run of bytes, as PyBuffer_FillInfo gives. */
        view->ndim = 1;
        view->itemsize = 1;
    }
    return 0;
}

static PyObject *tensor_dtype(ms_py_tensor *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->dtype);
}

static PyObject *tensor_shape(ms_py_tensor *self, void *closure)
{
    (void)closure;
    PyObject *t = PyTuple_New(self->ndim);
    for (int i = 0; t != NULL && i < self->ndim; i++) {
        PyObject *v = PyLong_FromSsize_t(self->shape[i]);
        if (v == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *tensor_nbytes(ms_py_tensor *self, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(ms_tensor_nbytes(self->tensor));
}

static PyGetSetDef tensor_getset[] = {
    {"dtype", (getter)tensor_dtype, NULL, "the ms_dtype (FLOAT32, ...)", NULL},
    {"shape", (getter)tensor_shape, NULL, "the shape, a tuple", NULL},
    {"nbytes", (getter)tensor_nbytes, NULL, "size in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot tensor_slots[] = {
    {Py_tp_doc, "An output tensor in shared memory; numpy.asarray(t) views it without a copy."},
    {Py_tp_dealloc, tensor_dealloc},
    {Py_tp_getset, tensor_getset},
    {Py_bf_getbuffer, tensor_getbuffer},
    {0, NULL},
};

PyType_Spec ms_py_tensor_spec = {
    .name = "modelshare._core.Tensor",
    .basicsize = sizeof(ms_py_tensor),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = tensor_slots,
};
