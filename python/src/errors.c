/*
 * The exception types, made from the library's one error table (MS_ERRNO_MAP): modelshare.Error
 * and one subclass per MS_E_* code, each with class attributes `code` ("MS_E_SPEC_CONFLICT") and
 * `number` (-8). Python names: the code's words in CamelCase (SpecConflict, WorkerLost), "Error"
 * appended to single words (ShapeError), except for the few renamed below.
 */
#include "core.h"

#include <ctype.h>
#include <string.h>

static const struct {
    const char *name;
    const char *py;
} renames[] = {
    {"INVAL", "InvalidArgument"}, {"NOMEM", "OutOfMemory"},  {"TIMEOUT", "Timeout"},
    {"UNLOADED", "Unloaded"},     {"BUSY", "Busy"},          {"PERMISSION", "PermissionDenied"},
    {"IO", "SystemCallFailed"},   {"LIMIT", "LimitReached"},
};

/* Codes whose exceptions are also one of Python's own: callers may catch either. */
static PyObject *builtin_base(const char *name)
{
    if (strcmp(name, "TIMEOUT") == 0)
        return PyExc_TimeoutError;
    if (strcmp(name, "INVAL") == 0 || strcmp(name, "DTYPE") == 0 || strcmp(name, "SHAPE") == 0 ||
        strcmp(name, "SPEC") == 0 || strcmp(name, "TOO_LARGE") == 0)
        return PyExc_ValueError;
    return NULL;
}

static void python_name(const char *name, char *out, size_t outlen)
{
    for (size_t i = 0; i < sizeof renames / sizeof renames[0]; i++) {
        if (strcmp(renames[i].name, name) == 0) {
            snprintf(out, outlen, "%s", renames[i].py);
            return;
        }
    }
    size_t n = 0;
    int upper = 1, words = 1;
    for (const char *p = name; *p && n + 1 < outlen; p++) {
        if (*p == '_') {
            upper = 1;
            words++;
            continue;
        }
        out[n++] = (char)(upper ? toupper((unsigned char)*p) : tolower((unsigned char)*p));
        upper = 0;
    }
    out[n] = '\0';
    if (words == 1)
        snprintf(out + n, outlen - n, "Error");
}

static int add_error(PyObject *module, ms_py_state *st, const char *name, int code,
                     const char *text)
{
    char pyname[64], qualified[96], full[80];
    python_name(name, pyname, sizeof pyname);
    snprintf(qualified, sizeof qualified, "modelshare.%s", pyname);
    snprintf(full, sizeof full, "MS_E_%s", name);

    PyObject *dict = Py_BuildValue("{s:s, s:i}", "code", full, "number", code);
    PyObject *extra = builtin_base(name);
    PyObject *bases = extra ? PyTuple_Pack(2, st->error, extra) : PyTuple_Pack(1, st->error);
    PyObject *type = NULL;
    if (dict && bases)
        type = PyErr_NewExceptionWithDoc(qualified, text, bases, dict);
    Py_XDECREF(dict);
    Py_XDECREF(bases);
    if (type == NULL)
        return -1;
    PyObject *key = PyLong_FromLong(code);
    int r = key ? PyDict_SetItem(st->by_code, key, type) : -1;
    Py_XDECREF(key);
    if (r == 0)
        r = PyModule_AddObjectRef(module, pyname, type);
    Py_DECREF(type);
    return r;
}

int ms_py_errors_init(PyObject *module, ms_py_state *st)
{
    PyObject *dict = Py_BuildValue("{s:O, s:O}", "code", Py_None, "number", Py_None);
    if (dict == NULL)
        return -1;
    st->error = PyErr_NewExceptionWithDoc(
        "modelshare.Error",
        "Base of every modelshare error. `code` is the MS_E_* name, `number` its value, and the "
        "message says what was expected and what came.",
        NULL, dict);
    Py_DECREF(dict);
    if (st->error == NULL || PyModule_AddObjectRef(module, "Error", st->error) < 0)
        return -1;
    st->by_code = PyDict_New();
    if (st->by_code == NULL)
        return -1;
#define MS_PY_ADD(name, code, text)                                                                \
    if (add_error(module, st, #name, code, text) < 0)                                              \
        return -1;
    MS_ERRNO_MAP(MS_PY_ADD)
#undef MS_PY_ADD
    /* A read-only view: the state's dict is the one ms_py_raise() looks in. */
    PyObject *view = PyDictProxy_New(st->by_code);
    if (view == NULL)
        return -1;
    int r = PyModule_AddObjectRef(module, "error_types", view);
    Py_DECREF(view);
    return r;
}

PyObject *ms_py_raise(ms_py_state *st, int code, const char *msg)
{
    PyObject *key = PyLong_FromLong(code);
    if (key == NULL)
        return NULL;
    PyObject *type = PyDict_GetItemWithError(st->by_code, key);
    Py_DECREF(key);
    if (type == NULL && PyErr_Occurred())
        return NULL;
    if (type == NULL)
        type = st->error;
    if (msg == NULL || msg[0] == '\0')
        msg = ms_strerror(code);
    /* Messages may quote paths that are not UTF-8: never fail on them. */
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
    if (text == NULL)
        return NULL;
    PyErr_SetObject(type, text);
    Py_DECREF(text);
    return NULL;
}
