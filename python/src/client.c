/*
 * Client: one connection to the daemon (ms_client). Every call that talks to the daemon runs
 * without the GIL. Not for use across fork(): a child connects again (the Python layer does).
 */
#include "core.h"

#include <string.h>
#include <unistd.h>

#include "../../src/lib/ctor.h"

/* Raises the exception for a failed call on c; msg was copied right after the call. */
static PyObject *fail(PyObject *self, int code, const char *msg)
{
    return ms_py_raise(ms_py_state_of(self), code, msg);
}

static int check_process(ms_py_client *self)
{
    if (self->pid == getpid())
        return 0;
    ms_py_raise(ms_py_state_of((PyObject *)self), MS_E_INVAL,
                "this client was connected in another process (before fork()): connect again");
    return -1;
}

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"socket", NULL};
    PyObject *socket = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Client", kw, &socket))
        return NULL;
    PyObject *path = NULL;
    if (socket != Py_None && !PyUnicode_FSConverter(socket, &path))
        return NULL;

    ms_py_client *self = (ms_py_client *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_XDECREF(path);
        return NULL;
    }
    const char *p = path ? PyBytes_AS_STRING(path) : NULL;
    char msg[MS_PY_MSGLEN];
    ms_client *c = NULL;
    int r;
    MS_PY_CALL_NOGIL(r, NULL, msg, ms_connect(p, &c));
    Py_XDECREF(path);
    if (r < 0) {
        fail((PyObject *)self, r, msg);
        Py_DECREF(self);
        return NULL;
    }
    self->client = c;
    self->pid = getpid();
    return (PyObject *)self;
}

static void client_dealloc(ms_py_client *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    ms_client *c = self->client;
    self->client = NULL;
    /* In a forked child the connection is the parent's: leave it alone. */
    if (c != NULL && self->pid == getpid()) {
        PyThreadState *ts = PyEval_SaveThread();
        ms_disconnect(c);
        PyEval_RestoreThread(ts);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Converts an optional str spec argument; *out is NULL for None. */
static int spec_arg(PyObject *spec, PyObject **out)
{
    *out = NULL;
    if (spec == Py_None)
        return 0;
    if (!PyUnicode_Check(spec)) {
        PyErr_Format(PyExc_TypeError, "spec: expected a JSON str or None, got %.100s",
                     Py_TYPE(spec)->tp_name);
        return -1;
    }
    *out = PyUnicode_AsUTF8String(spec);
    return *out ? 0 : -1;
}

/* ms__acquire_ctor with the wait options pw (GIL released). */
static int acquire_waiting(ms_client *c, const char *tag, const char *spec, int ctor_fd,
                           ms_py_wait *pw, ms_model **m)
{
    const ms__wait *outer = ms__wait_set(&pw->w);
    int r = ms__acquire_ctor(c, tag, spec, ctor_fd, m);
    ms__wait_set(outer);
    return r;
}

static PyObject *client_acquire(ms_py_client *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"tag", "spec", "constructor_fd", "timeout", NULL};
    PyObject *tag, *spec = Py_None, *spec_bytes, *timeout = Py_None;
    const char *tag_s;
    int ctor_fd = -1;
    ms_py_wait pw;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|O$iO:acquire", kw, &tag, &spec, &ctor_fd,
                                     &timeout))
        return NULL;
    if (check_process(self) < 0 || ms_py_wait_init(&pw, timeout, Py_None) < 0 ||
        spec_arg(spec, &spec_bytes) < 0)
        return NULL;
    tag_s = PyUnicode_AsUTF8(tag);
    if (tag_s == NULL) {
        Py_XDECREF(spec_bytes);
        return NULL;
    }
    const char *spec_s = spec_bytes ? PyBytes_AS_STRING(spec_bytes) : NULL;
    char msg[MS_PY_MSGLEN];
    ms_model *m = NULL;
    int r;
    MS_PY_CALL_NOGIL(r, self->client, msg,
                     acquire_waiting(self->client, tag_s, spec_s, ctor_fd, &pw, &m));
    Py_XDECREF(spec_bytes);
    if (r < 0) /* ended by Ctrl-C: its KeyboardInterrupt */
        return pw.ended && PyErr_Occurred() ? NULL : fail((PyObject *)self, r, msg);

    ms_py_state *st = ms_py_state_of((PyObject *)self);
    ms_py_model *obj = (ms_py_model *)st->model_type->tp_alloc(st->model_type, 0);
    if (obj == NULL) {
        PyThreadState *ts = PyEval_SaveThread();
        ms_release(m);
        PyEval_RestoreThread(ts);
        return NULL;
    }
    obj->model = m;
    obj->client = (ms_py_client *)Py_NewRef(self);
    obj->tag = Py_NewRef(tag);
    obj->pid = self->pid;
    return (PyObject *)obj;
}

static PyObject *client_load(ms_py_client *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"tag", "spec", "constructor_fd", NULL};
    const char *tag, *spec;
    int ctor_fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ss|$i:load", kw, &tag, &spec, &ctor_fd))
        return NULL;
    if (check_process(self) < 0)
        return NULL;
    char msg[MS_PY_MSGLEN];
    int r;
    MS_PY_CALL_NOGIL(r, self->client, msg, ms__load_ctor(self->client, tag, spec, ctor_fd));
    if (r < 0)
        return fail((PyObject *)self, r, msg);
    Py_RETURN_NONE;
}

static PyObject *client_swap(ms_py_client *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"tag", "changes", "drain_first", "constructor_fd", NULL};
    const char *tag, *changes;
    int drain_first = 0, ctor_fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ss|p$i:swap", kw, &tag, &changes, &drain_first,
                                     &ctor_fd))
        return NULL;
    if (check_process(self) < 0)
        return NULL;
    char msg[MS_PY_MSGLEN];
    int r;
    MS_PY_CALL_NOGIL(
        r, self->client, msg,
        ms__swap_ctor(self->client, tag, changes, drain_first ? MS_SWAP_DRAIN_FIRST : 0, ctor_fd));
    if (r < 0)
        return fail((PyObject *)self, r, msg);
    Py_RETURN_NONE;
}

static PyObject *client_unload(ms_py_client *self, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"tag", "force", NULL};
    const char *tag;
    int force = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|p:unload", kw, &tag, &force))
        return NULL;
    if (check_process(self) < 0)
        return NULL;
    char msg[MS_PY_MSGLEN];
    int r;
    MS_PY_CALL_NOGIL(r, self->client, msg, ms_unload(self->client, tag, force));
    if (r < 0)
        return fail((PyObject *)self, r, msg);
    Py_RETURN_NONE;
}

static PyObject *client_status(ms_py_client *self, PyObject *unused)
{
    (void)unused;
    if (check_process(self) < 0)
        return NULL;
    char msg[MS_PY_MSGLEN];
    char *text = NULL;
    int r;
    MS_PY_CALL_NOGIL(r, self->client, msg, ms_status_json(self->client, &text));
    if (r < 0)
        return fail((PyObject *)self, r, msg);
    PyObject *s = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    free(text);
    return s;
}

static PyObject *client_pid(ms_py_client *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong((long)self->pid);
}

static PyMethodDef client_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))client_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(tag, spec=None, *, constructor_fd=-1) -> Model: a lease on the model, loading it "
     "first when needed. spec is a JSON str; None attaches to the model already loaded under "
     "tag. constructor_fd: the sealed memfd holding the pickle that the spec's "
     "python.constructor_size and constructor_sha256 describe (sent with the request; it stays "
     "the caller's), -1 for none."},
    {"load", (PyCFunction)(void (*)(void))client_load, METH_VARARGS | METH_KEYWORDS,
     "load(tag, spec, *, constructor_fd=-1): loads without a lease; the model stays for its "
     "keep_alive. constructor_fd as acquire()'s."},
    {"swap", (PyCFunction)(void (*)(void))client_swap, METH_VARARGS | METH_KEYWORDS,
     "swap(tag, changes, drain_first=False, *, constructor_fd=-1): moves the model to a new "
     "version while it serves (changes: a JSON str of the spec fields that change); returns "
     "once the new one serves. constructor_fd as acquire()'s, for the new version's."},
    {"unload", (PyCFunction)(void (*)(void))client_unload, METH_VARARGS | METH_KEYWORDS,
     "unload(tag, force=False): stops the model's worker now (Busy while leases exist unless "
     "force)."},
    {"status", (PyCFunction)client_status, METH_NOARGS,
     "status() -> str: the daemon's status as JSON (as `modelshare status --json`)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef client_getset[] = {
    {"pid", (getter)client_pid, NULL, "the process that connected", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot client_slots[] = {
    {Py_tp_doc, "Client(socket=None): a connection to the daemon, started when none runs. "
                "socket None: $MODELSHARE_SOCKET, else the default path."},
    {Py_tp_new, client_new},
    {Py_tp_dealloc, client_dealloc},
    {Py_tp_methods, client_methods},
    {Py_tp_getset, client_getset},
    {0, NULL},
};

PyType_Spec ms_py_client_spec = {
    .name = "modelshare._core.Client",
    .basicsize = sizeof(ms_py_client),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = client_slots,
};
