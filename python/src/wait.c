/*
 * A blocked call's wait options (src/lib/wait.h) as Python sees them: its own timeout, Ctrl-C
 * (the main thread's signal handlers run while it waits, so KeyboardInterrupt ends it at once),
 * and a cancel event (asyncio's cancellation of ainfer sets it). The library asks every 100 ms
 * at most; each time the GIL is taken for that moment only.
 */
#include "core.h"

static int cancelled(void *arg)
{
    ms_py_wait *pw = arg;
    PyGILState_STATE g = PyGILState_Ensure();
    int stop = PyErr_CheckSignals() < 0;
    if (!stop && pw->cancel != NULL) {
        PyObject *r = PyObject_CallMethod(pw->cancel, "is_set", NULL);
        stop = r == NULL || PyObject_IsTrue(r) != 0;
        Py_XDECREF(r);
    }
    if (stop)
        pw->ended = 1;
    PyGILState_Release(g);
    return stop;
}

int ms_py_wait_init(ms_py_wait *pw, PyObject *timeout, PyObject *cancel)
{
    double s = 0.0;
    if (timeout != NULL && timeout != Py_None) {
        s = PyFloat_AsDouble(timeout);
        if (s == -1.0 && PyErr_Occurred())
            return -1;
        if (!(s > 0.0 && s <= 31536000.0)) {
            PyErr_Format(PyExc_ValueError,
                         "timeout: expected None or seconds in (0, 31536000], got %R", timeout);
            return -1;
        }
    }
    pw->w.timeout_ns = (int64_t)(s * 1e9);
    pw->w.cancelled = cancelled;
    pw->w.arg = pw;
    pw->cancel = cancel == Py_None ? NULL : cancel;
    pw->ended = 0;
    return 0;
}
