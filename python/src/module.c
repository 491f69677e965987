/*
 * modelshare._core: multi-phase initialisation (PEP 489). Everything the module keeps lives in its
 * state: the exception types and the three object types.
 */
#include "core.h"

#include "../../src/common/spec.h"

static int traverse(PyObject *module, visitproc visit, void *arg)
{
    ms_py_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_VISIT(st->error);
    Py_VISIT(st->by_code);
    Py_VISIT(st->client_type);
    Py_VISIT(st->model_type);
    Py_VISIT(st->tensor_type);
    return 0;
}

static int clear(PyObject *module)
{
    ms_py_state *st = PyModule_GetState(module);
    if (st == NULL)
        return 0;
    Py_CLEAR(st->error);
    Py_CLEAR(st->by_code);
    Py_CLEAR(st->client_type);
    Py_CLEAR(st->model_type);
    Py_CLEAR(st->tensor_type);
    return 0;
}

static void free_module(void *module)
{
    clear((PyObject *)module);
}

static PyTypeObject *add_type(PyObject *module, PyType_Spec *spec)
{
    PyTypeObject *t = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (t == NULL)
        return NULL;
    if (PyModule_AddType(module, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

/* SPEC_FIELDS: the spec fields a caller gives as keyword arguments, from the C table (spec.h). */
static int add_spec_fields(PyObject *module)
{
#define KEYWORD(name, dflt, keyword) keyword ? #name : NULL,
    static const char *const fields[] = {MS__SPEC_FIELDS(KEYWORD)};
#undef KEYWORD
    PyObject *names = PyList_New(0);
    for (size_t i = 0; names != NULL && i < sizeof fields / sizeof fields[0]; i++) {
        PyObject *s = fields[i] != NULL ? PyUnicode_FromString(fields[i]) : NULL;
        if (fields[i] != NULL && (s == NULL || PyList_Append(names, s) < 0))
            Py_CLEAR(names);
        Py_XDECREF(s);
    }
    PyObject *t = names != NULL ? PyList_AsTuple(names) : NULL;
    Py_XDECREF(names);
    int rc = t != NULL ? PyModule_AddObjectRef(module, "SPEC_FIELDS", t) : -1;
    Py_XDECREF(t);
    return rc;
}

/* The dtype table's view for Python (MS_DTYPE_MAP): FLOAT32 ... BOOL, and DTYPES, a dict of the
 * names ("float32") to those values. */
static int add_dtypes(PyObject *module)
{
    static const struct {
        const char *constant, *name;
        int value;
    } dtypes[] = {
#define ROW(e, value, text, st, npy, size) {#e, text, value},
        MS_DTYPE_MAP(ROW)
#undef ROW
    };
    PyObject *names = PyDict_New();
    if (names == NULL)
        return -1;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        PyObject *v = PyLong_FromLong(dtypes[i].value);
        int rc = v != NULL ? PyDict_SetItemString(names, dtypes[i].name, v) : -1;
        Py_XDECREF(v);
        if (rc < 0 || PyModule_AddIntConstant(module, dtypes[i].constant, dtypes[i].value) < 0) {
            Py_DECREF(names);
            return -1;
        }
    }
    int rc = PyModule_AddObjectRef(module, "DTYPES", names);
    Py_DECREF(names);
    return rc;
}

static int exec_module(PyObject *module)
{
    ms_py_state *st = PyModule_GetState(module);
    if (ms_py_errors_init(module, st) < 0)
        return -1;
    st->client_type = add_type(module, &ms_py_client_spec);
    if (st->client_type == NULL)
        return -1;
    st->model_type = add_type(module, &ms_py_model_spec);
    if (st->model_type == NULL)
        return -1;
    st->tensor_type = add_type(module, &ms_py_tensor_spec);
    if (st->tensor_type == NULL)
        return -1;

    if (add_dtypes(module) < 0 || PyModule_AddIntConstant(module, "MAX_RANK", MS_MAX_RANK) < 0)
        return -1;
    if (add_spec_fields(module) < 0)
        return -1;
    unsigned v = ms_version();
    PyObject *version =
        PyUnicode_FromFormat("%u.%u.%u", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
    if (version == NULL || PyModule_AddObjectRef(module, "library_version", version) < 0) {
        Py_XDECREF(version);
        return -1;
    }
    Py_DECREF(version);
    return 0;
}

static PyObject *dtype_name(PyObject *module, PyObject *arg)
{
    (void)module;
    long d = PyLong_AsLong(arg);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(ms_dtype_name((int)d));
}

static PyObject *strerror_(PyObject *module, PyObject *arg)
{
    (void)module;
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(ms_strerror((int)c));
}

static PyMethodDef methods[] = {
    {"dtype_name", dtype_name, METH_O, "dtype_name(dtype) -> str: 'float32', ... ('unknown')."},
    {"serve_worker", ms_py_serve_worker, METH_O,
     "serve_worker(argv) -> int: runs a python-backend worker (started by modelshared as "
     "`python -m modelshare.worker`) until the daemon stops it; returns the exit status."},
    {"strerror", strerror_, METH_O, "strerror(number) -> str: the description of an MS_E_* code."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "modelshare._core",
    .m_doc = "The C extension of modelshare: Client, Model and Tensor over libmodelshare.",
    .m_size = sizeof(ms_py_state),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse,
    .m_clear = clear,
    .m_free = free_module,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&moduledef);
}
