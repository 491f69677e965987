/*
 * Model.infer_n: several named tensors and lists of strings in one request (ms_infer_n). Each
 * array goes by reference when it lies in shared memory already, else is copied there once; a
 * list of str or bytes is written as a list (ms_text_from) straight from the objects' own bytes.
 * The answer stays in shared memory: one Tensor holds every output, which the package views
 * (numpy.frombuffer at each output's offset); lists come back as Python lists.
 */
#include "core.h"

#include "../../src/common/records.h"
#include "../../src/lib/infer.h"

#include <stdbool.h>
#include <string.h>

typedef struct staged {
    const char *name; /* the str's UTF-8, alive with the inputs list */
    int kind;         /* 0: an array; MS_TEXT_UTF8 / MS_TEXT_BYTES: a list */
    Py_buffer view;
    int have_view, dtype, contiguous;
    int64_t shape[MS_MAX_RANK];
    Py_ssize_t nitems;
    const char **items;
    size_t *lens;
    ms_tensor *t;
    bool copied;
} staged;

/* A list of str (all of them) or bytes (all of them) as pointers into the objects. */
static int stage_list(staged *s, PyObject *list, char *msg, size_t msglen)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    s->kind = n > 0 && PyBytes_Check(PyList_GET_ITEM(list, 0)) ? MS_TEXT_BYTES : MS_TEXT_UTF8;
    s->nitems = n;
    s->items = PyMem_Calloc((size_t)n + 1, sizeof *s->items);
    s->lens = PyMem_Calloc((size_t)n + 1, sizeof *s->lens);
    if (s->items == NULL || s->lens == NULL)
        return snprintf(msg, msglen, "out of memory"), MS_E_NOMEM;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        Py_ssize_t len = 0;
        if (s->kind == MS_TEXT_BYTES && PyBytes_Check(o)) {
            s->items[i] = PyBytes_AS_STRING(o);
            len = PyBytes_GET_SIZE(o);
        } else if (s->kind == MS_TEXT_UTF8 && PyUnicode_Check(o)) {
            s->items[i] = PyUnicode_AsUTF8AndSize(o, &len);
            if (s->items[i] == NULL)
                return PyErr_Clear(),
                       snprintf(msg, msglen,
                                "input \"%s\": item %zd is not "
                                "UTF-8",
                                s->name, i),
                       MS_E_INVAL;
        } else {
            return snprintf(msg, msglen,
                            "input \"%s\": expected a list of str or a list of bytes, item %zd "
                            "is %s",
                            s->name, i, Py_TYPE(o)->tp_name),
                   MS_E_INVAL;
        }
        s->lens[i] = (size_t)len;
    }
    return 0;
}

static int stage_array(staged *s, PyObject *obj, int dtype, char *msg, size_t msglen)
{
    if (PyObject_GetBuffer(obj, &s->view, PyBUF_RECORDS_RO) < 0) {
        PyErr_Clear();
        return snprintf(msg, msglen,
                        "input \"%s\": expected an array or a list of str or bytes, "
                        "got %s",
                        s->name, Py_TYPE(obj)->tp_name),
               MS_E_INVAL;
    }
    s->have_view = 1;
    s->dtype = dtype != 0 ? dtype : ms_py_dtype_of_format(s->view.format, s->view.itemsize);
    if (s->dtype == 0 || (size_t)s->view.itemsize != ms_dtype_size(s->dtype))
        return snprintf(msg, msglen,
                        "input \"%s\": an array of buffer format '%.20s' is not a "
                        "dtype the data plane carries",
                        s->name, s->view.format ? s->view.format : "B"),
               MS_E_DTYPE;
    if (s->view.ndim > MS_MAX_RANK)
        return snprintf(msg, msglen, "input \"%s\": expected at most %d dimensions", s->name,
                        MS_MAX_RANK),
               MS_E_SHAPE;
    for (int d = 0; d < s->view.ndim; d++)
        s->shape[d] = s->view.shape[d];
    s->contiguous = PyBuffer_IsContiguous(&s->view, 'C');
    return 0;
}

/* Reads inputs (a list of (name, object, dtype)) into s (GIL held). */
static int stage_all(PyObject *inputs, staged *s, Py_ssize_t n, char *msg, size_t msglen)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(inputs, i), *name, *obj;
        int dtype = 0;
        if (!PyTuple_Check(e) || !PyArg_ParseTuple(e, "UOi", &name, &obj, &dtype)) {
            PyErr_Clear();
            return snprintf(msg, msglen, "infer_n: expected (name, value, dtype) tuples"),
                   MS_E_INVAL;
        }
        s[i].name = PyUnicode_AsUTF8(name);
        if (s[i].name == NULL)
            return PyErr_Clear(), snprintf(msg, msglen, "infer_n: a name is not UTF-8"), MS_E_INVAL;
        int r = PyList_Check(obj) ? stage_list(&s[i], obj, msg, msglen)
                                  : stage_array(&s[i], obj, dtype, msg, msglen);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Each input as a tensor of m (GIL released): by reference where it can, else one copy. */
static int place_all(ms_model *m, staged *s, Py_ssize_t n, unsigned long long *copied)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        staged *x = &s[i];
        int r;
        if (x->kind != 0) {
            r = ms_text_from(m, x->kind, (size_t)x->nitems, x->items, x->lens, &x->t);
        } else {
            const Py_buffer *v = &x->view;
            x->copied = !x->contiguous ||
                        ms_tensor_view(m, x->dtype, v->ndim, x->shape, v->buf, &x->t) != 0;
            r = x->copied ? ms_tensor_alloc(m, x->dtype, v->ndim, x->shape, &x->t) : 0;
            if (r == 0 && x->copied && x->contiguous)
                memcpy(ms_tensor_data(x->t), v->buf, (size_t)v->len);
            else if (r == 0 && x->copied)
                ms_py_copy_strided(ms_tensor_data(x->t), v->buf, 0, v);
            if (r == 0 && x->copied)
                *copied += (unsigned long long)v->len;
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* One output's description for the package. */
static PyObject *describe_output(const ms_output *o, const ms_tensor *all)
{
    if (o->dtype == MS_TEXT_UTF8 || o->dtype == MS_TEXT_BYTES) {
        PyObject *list = PyList_New((Py_ssize_t)o->shape[0]);
        for (Py_ssize_t i = 0; list != NULL && i < (Py_ssize_t)o->shape[0]; i++) {
            const char *b;
            size_t len;
            ms_text_item(o, (size_t)i, &b, &len);
            PyObject *item = o->dtype == MS_TEXT_UTF8
                                 ? PyUnicode_DecodeUTF8(b, (Py_ssize_t)len, "strict")
                                 : PyBytes_FromStringAndSize(b, (Py_ssize_t)len);
            if (item == NULL)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, i, item);
        }
        PyObject *r = list != NULL ? Py_BuildValue("(sO)", o->name, list) : NULL;
        Py_XDECREF(list);
        return r;
    }
    PyObject *shape = PyTuple_New(o->rank);
    for (int d = 0; shape != NULL && d < o->rank; d++)
        PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(o->shape[d]));
    Py_ssize_t off = (const char *)o->data - (const char *)ms_tensor_data(all);
    PyObject *r = shape != NULL ? Py_BuildValue("(siOnn)", o->name, o->dtype, shape, off,
                                                (Py_ssize_t)o->nbytes)
                                : NULL;
    Py_XDECREF(shape);
    return r;
}

/* (form, outputs, Tensor) for the answer out, which the Tensor takes over. */
static PyObject *answer(ms_py_state *st, ms_py_model *self, ms_tensor *out)
{
    int form = 0;
    int n = ms_outputs_count(out, &form);
    PyObject *list = PyList_New(n > 0 ? n : 0);
    for (int i = 0; list != NULL && i < n; i++) {
        ms_output o;
        PyObject *d = ms_outputs_get(out, i, &o) == 0 ? describe_output(&o, out) : NULL;
        if (d == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, d);
    }
    PyObject *t = ms_py_tensor_wrap(st, self, out); /* frees out on failure */
    PyObject *r = list != NULL && t != NULL ? Py_BuildValue("(iOO)", form, list, t) : NULL;
    Py_XDECREF(list);
    Py_XDECREF(t);
    return r;
}

static void unstage(staged *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i].have_view)
            PyBuffer_Release(&s[i].view);
        PyMem_Free(s[i].items);
        PyMem_Free(s[i].lens);
    }
    PyMem_Free(s);
}

PyObject *ms_py_model_infer_n(ms_py_model *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"inputs", "form", "objects", "timeout", "cancel", NULL};
    PyObject *inputs, *timeout = Py_None, *cancel = Py_None;
    int form = 0, objects = 0;
    ms_py_wait pw;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!i|p$OO:infer_n", kw, &PyList_Type, &inputs,
                                     &form, &objects, &timeout, &cancel) ||
        ms_py_model_usable(self) < 0 || ms_py_wait_init(&pw, timeout, cancel) < 0)
        return NULL;
    ms_py_state *st = ms_py_state_of((PyObject *)self);
    char msg[MS_PY_MSGLEN];
    Py_ssize_t n = PyList_GET_SIZE(inputs);
    if (n < 1 || n > MS_MAX_TENSORS)
        return ms_py_raise(st, MS_E_INVAL, "infer_n: expected 1 to 16 inputs");
    staged *s = PyMem_Calloc((size_t)n, sizeof *s);
    if (s == NULL)
        return PyErr_NoMemory();
    int r = stage_all(inputs, s, n, msg, sizeof msg);
    if (r < 0) {
        unstage(s, n);
        return ms_py_raise(st, r, msg);
    }
    ms_named named[MS_MAX_TENSORS];
    uint32_t own = 0;
    ms_tensor *out = NULL;
    unsigned long long copied = 0;
    self->users++;
    PyThreadState *ts = PyEval_SaveThread();
    const ms__wait *outer = ms__wait_set(&pw.w);
    r = place_all(self->model, s, n, &copied);
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
        named[i] = (ms_named){.name = s[i].name, .tensor = s[i].t};
        own |= s[i].copied || s[i].kind != 0 ? 1u << i : 0u; /* made for this call */
    }
    if (r == 0)
        r = ms__infer_n_flags(self->model, named, (int)n, form, objects ? MS__REQ_OBJECT : 0, own,
                              &out);
    if (r < 0)
        snprintf(msg, sizeof msg, "%s", ms_errmsg(self->client->client));
    for (Py_ssize_t i = 0; i < n; i++)
        ms_tensor_free(s[i].t);
    ms__wait_set(outer);
    PyEval_RestoreThread(ts);
    unstage(s, n);
    PyObject *result;
    if (r < 0) {
        /* Ended by Ctrl-C: its KeyboardInterrupt, not a Timeout. */
        result = pw.ended && PyErr_Occurred() ? NULL : ms_py_raise(st, r, msg);
    } else {
        self->copied_bytes += copied;
        result = answer(st, self, out);
    }
    self->users--;
    ms_py_model_maybe_end(self);
    return result;
}
