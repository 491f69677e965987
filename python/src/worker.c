/*
 * The python backend, and serve_worker(): `python -m modelshare.worker` runs the worker loop of
 * modelshare-worker (ms__worker_main) in this interpreter with this backend.
 *
 * The loop runs with the GIL released; each backend call takes it for the time of the call. The
 * Python side of each op is a function of modelshare.worker (_load, _run, _call): this file only
 * moves bytes and references. A spec that says thread_safe runs up to `threads` batches at once on
 * the worker's runner threads (src/worker/runners.c): each takes the GIL for its call, which the
 * model's own kernels (numpy, ONNX Runtime, PyTorch) release while they compute, so calls
 * overlap there. Each thread keeps the output of its own last call (the worker copies it out
 * after the call returns, without the GIL) and, for a runner thread, its interpreter state for
 * the thread's life (py_thread).
 */
#include "core.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../../src/common/records.h"
#include "../../src/common/util.h"
#include "../../src/worker/worker.h"

typedef struct py_state {
    PyObject *hooks; /* modelshare.worker */
    PyObject *model;
    PyObject *run;     /* hooks._run, looked up once */
    PyObject *release; /* "release", interned */
    /* The shape tuple of the last request (touched with the GIL held only): the next request
     * of the same shape, the common case, passes it again. */
    PyObject *shape;
    int rank;
    int64_t dims[MS_MAX_RANK];
} py_state;

/* What this thread's last run or call returned: its bytes back the output until the thread's
 * next call (backend.h). Touched with the GIL held only. */
typedef struct py_out {
    PyObject *last;
    Py_buffer view; /* of last */
    int have_view;
} py_out;
static _Thread_local py_out tl_out;

/* A runner thread's own interpreter state, kept from py_thread(start) to py_thread(end). */
static _Thread_local PyGILState_STATE tl_gil;
static _Thread_local PyThreadState *tl_saved;

/* The message of a hook that raised itself (a bug of ours or an interpreter error). */
static int hook_failed(int code, const char *what, char *err, size_t errlen)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *s = value != NULL ? PyObject_Str(value) : NULL;
    const char *text = s != NULL ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(err, errlen, "%s: %s: %s", what,
             type != NULL ? ((PyTypeObject *)type)->tp_name : "error",
             text != NULL ? text : "(no message)");
    PyErr_Clear();
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return code;
}

/* A hook's answer that is a str is the model's error, already formatted. */
static int str_error(PyObject *r, int code, char *err, size_t errlen)
{
    const char *text = PyUnicode_AsUTF8(r);
    snprintf(err, errlen, "%s", text != NULL ? text : "the model failed (message not readable)");
    PyErr_Clear();
    return code;
}

/* Drops this thread's last output (the GIL held). */
static void drop_last(void)
{
    if (tl_out.have_view)
        PyBuffer_Release(&tl_out.view);
    tl_out.have_view = 0;
    Py_CLEAR(tl_out.last);
}

static int py_load(const ms__spec *spec, void **state, char *err, size_t errlen)
{
    int rc = 0;
    PyGILState_STATE g = PyGILState_Ensure();
    py_state *st = PyMem_RawCalloc(1, sizeof *st);
    if (st == NULL) {
        rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory for the python backend");
        goto out;
    }
    st->hooks = PyImport_ImportModule("modelshare.worker");
    if (st->hooks == NULL) {
        rc = hook_failed(MS_E_LOAD_FAILED, "cannot import modelshare.worker", err, errlen);
        goto out;
    }
    json_t *j = ms__spec_to_json(spec);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (text == NULL) {
        rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory for the spec");
        goto out;
    }
    ms__progress_phase(MS__PHASE_CONSTRUCTING); /* status: the constructor runs */
    PyObject *r = PyObject_CallMethod(st->hooks, "_load", "s", text);
    free(text);
    if (r == NULL) {
        rc = hook_failed(MS_E_LOAD_FAILED, "modelshare.worker._load", err, errlen);
        goto out;
    }
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
        Py_DECREF(r);
        rc = ms__fail(err, errlen, MS_E_LOAD_FAILED, "modelshare.worker._load: bad answer");
        goto out;
    }
    if (PyTuple_GET_ITEM(r, 0) != Py_True) {
        rc = str_error(PyTuple_GET_ITEM(r, 1), MS_E_LOAD_FAILED, err, errlen);
        Py_DECREF(r);
        goto out;
    }
    st->model = Py_NewRef(PyTuple_GET_ITEM(r, 1));
    Py_DECREF(r);
    st->run = PyObject_GetAttrString(st->hooks, "_run");
    st->release = PyUnicode_InternFromString("release");
    if (st->run == NULL || st->release == NULL) {
        rc = hook_failed(MS_E_LOAD_FAILED, "modelshare.worker._run", err, errlen);
        Py_CLEAR(st->model);
        Py_CLEAR(st->run);
        Py_CLEAR(st->release);
        goto out;
    }
    *state = st;
    st = NULL;
out:
    if (st != NULL) {
        Py_XDECREF(st->hooks);
        PyMem_RawFree(st);
    }
    PyGILState_Release(g);
    return rc;
}

static void py_signature(void *state, ms__sig *in, ms__sig *out)
{
    (void)state;
    memset(in, 0, sizeof *in);
    memset(out, 0, sizeof *out);
}

/* modelshare.worker._signature(model): the model's named inputs and outputs as JSON text, or
 * None. NULL when it does not say them (or the hook failed: the model serves without them). */
static json_t *py_signature_named(void *state)
{
    py_state *st = state;
    json_t *j = NULL;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallMethod(st->hooks, "_signature", "O", st->model);
    const char *text = r != NULL && PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : NULL;
    if (text != NULL)
        j = json_loads(text, 0, NULL);
    PyErr_Clear();
    Py_XDECREF(r);
    PyGILState_Release(g);
    return j;
}

static int py_output_for(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                         size_t errlen)
{
    (void)state;
    (void)in;
    (void)out;
    return ms__fail(err, errlen, MS_E_BACKEND, "the python backend sizes outputs by running");
}

static int py_run(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                  size_t errlen)
{
    (void)state;
    (void)in;
    (void)out;
    return ms__fail(err, errlen, MS_E_BACKEND, "the python backend runs through run_dynamic");
}

/* The request's shape as a tuple (a new reference): the last one's again when it is the same. */
static PyObject *shape_of(py_state *st, const ms__tensor_view *in)
{
    if (st->shape != NULL && st->rank == in->rank &&
        memcmp(st->dims, in->shape, sizeof *in->shape * (size_t)in->rank) == 0)
        return Py_NewRef(st->shape);
    PyObject *shape = PyTuple_New(in->rank);
    for (int i = 0; shape != NULL && i < in->rank; i++) {
        PyObject *d = PyLong_FromLongLong(in->shape[i]);
        if (d == NULL)
            Py_CLEAR(shape);
        else
            PyTuple_SET_ITEM(shape, i, d);
    }
    if (shape != NULL && in->rank <= MS_MAX_RANK) {
        Py_XSETREF(st->shape, Py_NewRef(shape));
        st->rank = in->rank;
        memcpy(st->dims, in->shape, sizeof *in->shape * (size_t)in->rank);
    }
    return shape;
}

/* _run's answer for one array: (array, ms_dtype, shape), read without a format when it has
 * exactly these types. Returns 1, or 0 with an exception set. */
static int run_answer(PyObject *r, PyObject **arr, int *dtype, PyObject **oshape)
{
    if (PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 3 &&
        PyLong_CheckExact(PyTuple_GET_ITEM(r, 1)) && PyTuple_CheckExact(PyTuple_GET_ITEM(r, 2))) {
        long v = PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
        if (v >= INT_MIN && v <= INT_MAX && !(v == -1 && PyErr_Occurred())) {
            *arr = PyTuple_GET_ITEM(r, 0);
            *dtype = (int)v;
            *oshape = PyTuple_GET_ITEM(r, 2);
            return 1;
        }
        PyErr_Clear();
    }
    return PyArg_ParseTuple(r, "OiO!", arr, dtype, &PyTuple_Type, oshape);
}

static int py_run_dynamic(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                          size_t errlen)
{
    py_state *st = state;
    int rc = 0;
    PyGILState_STATE g = PyGILState_Ensure();
    drop_last();
    PyObject *shape = shape_of(st, in);
    /* The request's own copy (MS__REQ_OWN_INPUT) may be written by the model; anything else is
     * read-only to it. */
    PyObject *mv =
        PyMemoryView_FromMemory(in->data, (Py_ssize_t)in->nbytes,
                                (in->flags & MS__REQ_OWN_INPUT) ? PyBUF_WRITE : PyBUF_READ);
    PyObject *dtype_code = PyLong_FromLong(in->dtype);
    PyObject *objects = PyLong_FromLong((in->flags & MS__REQ_OBJECT) != 0);
    PyObject *r = NULL;
    if (shape == NULL || mv == NULL || dtype_code == NULL || objects == NULL) {
        Py_XDECREF(dtype_code);
        Py_XDECREF(objects);
        rc = hook_failed(MS_E_NOMEM, "python backend", err, errlen);
        goto out;
    }
    /* _run(model, view, dtype, shape, objects) */
    PyObject *argv[] = {st->model, mv, dtype_code, shape, objects};
    r = PyObject_Vectorcall(st->run, argv, 5, NULL);
    Py_DECREF(dtype_code);
    Py_DECREF(objects);
    /* The input's memory is the client's: nothing may read it after this call. */
    PyObject *rel = PyObject_CallMethodNoArgs(mv, st->release);
    if (rel == NULL)
        PyErr_Clear();
    Py_XDECREF(rel);
    if (r == NULL) {
        rc = hook_failed(MS_E_BACKEND, "modelshare.worker._run", err, errlen);
        goto out;
    }
    if (PyUnicode_Check(r)) {
        rc = str_error(r, MS_E_BACKEND, err, errlen);
        goto out;
    }
    if (PyBytes_Check(r) && (in->flags & MS__REQ_OBJECT)) { /* the pickled answer */
        tl_out.last = Py_NewRef(r);
        memset(out, 0, sizeof *out);
        out->dtype = MS_UINT8;
        out->rank = 1;
        out->shape[0] = PyBytes_GET_SIZE(r);
        out->data = PyBytes_AS_STRING(r);
        out->nbytes = (size_t)PyBytes_GET_SIZE(r);
        rc = MS__RESP_OBJECT;
        goto out;
    }
    PyObject *arr, *oshape;
    int dtype;
    if (!run_answer(r, &arr, &dtype, &oshape) || PyTuple_GET_SIZE(oshape) > MS_MAX_RANK) {
        rc = hook_failed(MS_E_BACKEND, "modelshare.worker._run: bad answer", err, errlen);
        goto out;
    }
    tl_out.last = Py_NewRef(arr);
    if (PyObject_GetBuffer(tl_out.last, &tl_out.view, PyBUF_C_CONTIGUOUS) < 0) {
        rc = hook_failed(MS_E_BACKEND, "the model's output", err, errlen);
        goto out;
    }
    tl_out.have_view = 1;
    memset(out, 0, sizeof *out);
    out->dtype = dtype;
    out->rank = (int)PyTuple_GET_SIZE(oshape);
    for (int i = 0; i < out->rank; i++)
        out->shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(oshape, i));
    out->data = tl_out.view.buf;
    out->nbytes = (size_t)tl_out.view.len;
    if (PyErr_Occurred())
        rc = hook_failed(MS_E_BACKEND, "the model's output shape", err, errlen);
out:
    Py_XDECREF(r);
    Py_XDECREF(mv);
    Py_XDECREF(shape);
    PyGILState_Release(g);
    return rc;
}

/* One tensor of a request of several, for _run_multi: (name, dtype, shape, read-only memoryview
 * of its bytes in the client's arena). */
static PyObject *multi_entry(const ms__mf_entry *e, void *data)
{
    PyObject *shape = PyTuple_New(e->rank);
    if (shape == NULL)
        return NULL;
    for (uint32_t d = 0; d < e->rank; d++)
        PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(e->shape[d]));
    /* The request's own copy may be written by the model; the caller's memory is read-only. */
    PyObject *mv = PyMemoryView_FromMemory(data, (Py_ssize_t)e->len,
                                           (e->flags & MS__MF_OWN) ? PyBUF_WRITE : PyBUF_READ);
    PyObject *r = mv != NULL ? Py_BuildValue("(sIOO)", e->name, e->dtype, shape, mv) : NULL;
    Py_XDECREF(mv);
    Py_DECREF(shape);
    return r;
}

/* One request for _run_multi: (entries, writable room, room's arena offset, objects), with every
 * memoryview also put in views (released after the call: the memory is the client's). */
static PyObject *multi_request(const ms__multi_req *q, PyObject *views)
{
    PyObject *entries = PyList_New(q->mf->count);
    PyObject *room = PyMemoryView_FromMemory(q->room, (Py_ssize_t)q->room_cap, PyBUF_WRITE);
    PyObject *r = NULL;
    if (entries == NULL || room == NULL || PyList_Append(views, room) < 0)
        goto out;
    for (uint32_t i = 0; i < q->mf->count; i++) {
        PyObject *e = multi_entry(&q->mf->e[i], q->data[i]);
        if (e == NULL || PyList_Append(views, PyTuple_GET_ITEM(e, 3)) < 0) {
            Py_XDECREF(e);
            goto out;
        }
        PyList_SET_ITEM(entries, i, e);
    }
    r = Py_BuildValue("(OOKi)", entries, room, (unsigned long long)q->room_off,
                      (q->flags & MS__REQ_OBJECT) != 0);
out:
    Py_XDECREF(entries);
    Py_XDECREF(room);
    return r;
}

/* Releases every view handed to Python: nothing may touch a client's memory after the call. */
static void release_views(PyObject *views)
{
    for (Py_ssize_t i = 0; views != NULL && i < PyList_GET_SIZE(views); i++) {
        PyObject *rel = PyObject_CallMethod(PyList_GET_ITEM(views, i), "release", NULL);
        if (rel == NULL)
            PyErr_Clear();
        Py_XDECREF(rel);
    }
}

/* _run_multi's answer: one (status, out_len) per request. */
static int multi_answer(PyObject *r, ms__multi_req *reqs, size_t n, char *err, size_t errlen)
{
    if (!PyList_Check(r) || (size_t)PyList_GET_SIZE(r) != n)
        return ms__fail(err, errlen, MS_E_BACKEND, "modelshare.worker._run_multi: bad answer");
    for (size_t i = 0; i < n; i++) {
        int status;
        PyObject *what;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(r, (Py_ssize_t)i), "iO", &status, &what))
            return hook_failed(MS_E_BACKEND, "modelshare.worker._run_multi: bad answer", err,
                               errlen);
        reqs[i].status = status;
        if (PyUnicode_Check(what)) { /* this request's own error */
            const char *text = PyUnicode_AsUTF8(what);
            snprintf(reqs[i].msg, sizeof reqs[i].msg, "%s", text ? text : "(no message)");
            PyErr_Clear();
            reqs[i].status = status < 0 && status != MS_E_TOO_LARGE ? status : MS_E_BACKEND;
            continue;
        }
        reqs[i].out_len = PyLong_AsUnsignedLongLong(what);
        if (PyErr_Occurred())
            return hook_failed(MS_E_BACKEND, "modelshare.worker._run_multi: bad length", err,
                               errlen);
    }
    return 0;
}

static int py_run_multi(void *state, ms__multi_req *reqs, size_t n, char *err, size_t errlen)
{
    py_state *st = state;
    int rc = 0;
    PyGILState_STATE g = PyGILState_Ensure();
    drop_last();
    PyObject *views = PyList_New(0), *list = PyList_New((Py_ssize_t)n), *r = NULL;
    if (views == NULL || list == NULL) {
        rc = hook_failed(MS_E_NOMEM, "python backend", err, errlen);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *q = multi_request(&reqs[i], views);
        if (q == NULL) {
            rc = hook_failed(MS_E_NOMEM, "python backend", err, errlen);
            goto out;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, q);
    }
    r = PyObject_CallMethod(st->hooks, "_run_multi", "OIO", st->model, reqs[0].mf->form, list);
    if (r == NULL)
        rc = hook_failed(MS_E_BACKEND, "modelshare.worker._run_multi", err, errlen);
    else if (PyUnicode_Check(r))
        rc = str_error(r, MS_E_BACKEND, err, errlen);
    else
        rc = multi_answer(r, reqs, n, err, errlen);
out:
    release_views(views);
    Py_XDECREF(r);
    Py_XDECREF(list);
    Py_XDECREF(views);
    PyGILState_Release(g);
    return rc;
}

static int py_call(void *state, const void *in, size_t in_len, const void **out, size_t *out_len,
                   char *err, size_t errlen)
{
    py_state *st = state;
    int rc = 0;
    PyGILState_STATE g = PyGILState_Ensure();
    drop_last();
    PyObject *payload = PyBytes_FromStringAndSize(in, (Py_ssize_t)in_len);
    PyObject *r =
        payload != NULL ? PyObject_CallMethod(st->hooks, "_call", "OO", st->model, payload) : NULL;
    Py_XDECREF(payload);
    if (r == NULL || !PyBytes_Check(r)) {
        Py_XDECREF(r);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "expected bytes");
        rc = hook_failed(MS_E_BACKEND, "modelshare.worker._call", err, errlen);
        goto out;
    }
    tl_out.last = r;
    *out = PyBytes_AS_STRING(r);
    *out_len = (size_t)PyBytes_GET_SIZE(r);
out:
    PyGILState_Release(g);
    return rc;
}

static uint64_t py_estimate(const ms__spec *spec)
{
    (void)spec;
    return 0;
}

static void py_unload(void *state)
{
    py_state *st = state;
    if (st == NULL)
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    drop_last();
    Py_CLEAR(st->model);
    Py_CLEAR(st->shape);
    Py_CLEAR(st->run);
    Py_CLEAR(st->release);
    Py_CLEAR(st->hooks);
    PyMem_RawFree(st);
    PyGILState_Release(g);
}

/* A runner thread: its interpreter state made once (not at every call's PyGILState_Ensure), the
 * GIL released until a call takes it; at its end, its last output dropped and its state gone. */
static void py_thread(void *state, bool start)
{
    (void)state;
    if (start) {
        tl_gil = PyGILState_Ensure();
        tl_saved = PyEval_SaveThread();
        return;
    }
    PyEval_RestoreThread(tl_saved);
    drop_last();
    PyGILState_Release(tl_gil);
}

static const ms__backend_ops python_ops = {
    .name = "python",
    .load = py_load,
    .signature = py_signature,
    .signature_named = py_signature_named,
    .output_for = py_output_for,
    .run = py_run,
    .estimate = py_estimate,
    .unload = py_unload,
    .run_dynamic = py_run_dynamic,
    .call = py_call,
    .run_multi = py_run_multi,
    .concurrent = true, /* the GIL, and each thread's own output; the model's promise: the spec */
    .thread = py_thread,
};

static int open_python(const ms__spec *spec, const ms__backend_ops **out, char *err, size_t errlen)
{
    if (strcmp(spec->backend, "python") != 0)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "python -m modelshare.worker: expected a spec of backend \"python\", got "
                        "\"%s\"",
                        spec->backend);
    *out = &python_ops;
    return 0;
}

PyObject *ms_py_serve_worker(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyList_Check(arg) || PyList_GET_SIZE(arg) < 1 || PyList_GET_SIZE(arg) > 64) {
        PyErr_SetString(PyExc_TypeError, "serve_worker(argv): expected a list of 1 to 64 strings");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    char **argv = PyMem_RawCalloc((size_t)n + 1, sizeof *argv);
    if (argv == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *a = PyUnicode_AsUTF8(PyList_GET_ITEM(arg, i));
        if (a == NULL || (argv[i] = strdup(a)) == NULL) {
            for (Py_ssize_t k = 0; k < i; k++)
                free(argv[k]);
            PyMem_RawFree(argv);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return NULL;
        }
    }
    PyThreadState *ts = PyEval_SaveThread();
    int rc = ms__worker_main((int)n, argv, open_python);
    PyEval_RestoreThread(ts);
    for (Py_ssize_t i = 0; i < n; i++)
        free(argv[i]);
    PyMem_RawFree(argv);
    return PyLong_FromLong(rc);
}
