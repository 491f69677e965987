/*
 * modelshare._core: the extension module over libmodelshare. Shared declarations.
 *
 * Objects and who keeps whom alive:
 *   Client  one ms_client (a connection to the daemon).
 *   Model   one ms_model (a lease); holds its Client.
 *   Tensor  one output ms_tensor in the model's shared memory, exported with the buffer
 *           protocol (numpy views it without a copy); holds its Model.
 * A Model's lease ends when release() was called and nothing uses it any more: no call in flight
 * and no Tensor alive (their memory is the lease's arena), or when the Model is freed.
 * Objects inherited across fork() belong to the parent: in a child they never call the library
 * (that would release the parent's leases or free the parent's tensors); they are just dropped.
 * No C globals: all state is in the module state or in the objects.
 */
#ifndef MS_PY_CORE_H
#define MS_PY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sys/types.h>

#include "modelshare.h"
#include "../../src/lib/wait.h"

/* Room for a message copied from ms_errmsg() before the GIL is taken back. */
#define MS_PY_MSGLEN 4096

/* r = call, run without the GIL; when it fails (r < 0), ms_errmsg(client)'s text is copied into
 * msg (a char array of MS_PY_MSGLEN) before the GIL is taken back, while it is still this
 * thread's last error. */
#define MS_PY_CALL_NOGIL(r, client, msg, call)                                                     \
    do {                                                                                           \
        PyThreadState *ms_py_ts_ = PyEval_SaveThread();                                            \
        (r) = (call);                                                                              \
        if ((r) < 0)                                                                               \
            snprintf((msg), sizeof(msg), "%s", ms_errmsg(client));                                 \
        PyEval_RestoreThread(ms_py_ts_);                                                           \
    } while (0)

typedef struct {
    PyObject *error;   /* modelshare.Error, base of all */
    PyObject *by_code; /* dict: int code -> exception type */
    PyTypeObject *client_type;
    PyTypeObject *model_type;
    PyTypeObject *tensor_type;
} ms_py_state;

typedef struct {
    PyObject_HEAD ms_client *client;
    pid_t pid; /* the process that connected */
} ms_py_client;

typedef struct {
    PyObject_HEAD ms_model *model; /* NULL once the lease has ended */
    ms_py_client *client;
    PyObject *tag;
    pid_t pid;
    Py_ssize_t users;                /* calls in flight and live Tensors */
    int closed;                      /* release() was called */
    unsigned long long copied_bytes; /* input bytes infer() copied into shared memory */
} ms_py_model;

typedef struct {
    PyObject_HEAD ms_tensor *tensor;
    ms_py_model *model;
    pid_t pid;
    int dtype;
    int ndim;
    Py_ssize_t itemsize;
    Py_ssize_t shape[MS_MAX_RANK];
    Py_ssize_t strides[MS_MAX_RANK];
} ms_py_tensor;

/* wait.c: a blocked call's wait options (src/lib/wait.h): its timeout (seconds, None: the
 * handle's), Ctrl-C, and cancel (an object with is_set(), or None; borrowed for the call). Set
 * with ms__wait_set() once the GIL is released, put back before it is taken again; ended says
 * the wait was ended by Ctrl-C or cancel (then an exception may be set: raise it). */
typedef struct {
    ms__wait w;
    PyObject *cancel;
    int ended;
} ms_py_wait;
int ms_py_wait_init(ms_py_wait *pw, PyObject *timeout, PyObject *cancel);

/* errors.c */
int ms_py_errors_init(PyObject *module, ms_py_state *st);
/* Sets the exception for code with msg (ms_strerror(code) when msg is empty); returns NULL. */
PyObject *ms_py_raise(ms_py_state *st, int code, const char *msg);

/* worker.c: serve_worker(argv) -> exit status: the worker loop with the python backend. */
PyObject *ms_py_serve_worker(PyObject *module, PyObject *arg);

/* client.c, model.c, tensor.c: type specs and helpers. */
extern PyType_Spec ms_py_client_spec;
extern PyType_Spec ms_py_model_spec;
extern PyType_Spec ms_py_tensor_spec;

static inline ms_py_state *ms_py_state_of(PyObject *self)
{
    return (ms_py_state *)PyType_GetModuleState(Py_TYPE(self));
}

/* Ends the model's lease now when release() was called and nothing uses it any more. */
void ms_py_model_maybe_end(ms_py_model *m);

/* 0 when the model can be called here (not released, not from before fork()), else -1 with the
 * exception set. (model.c) */
int ms_py_model_usable(ms_py_model *self);
/* Copies a strided buffer into C order at dst; returns the end. (model.c) */
char *ms_py_copy_strided(char *dst, const char *src, int dim, const Py_buffer *v);
/* Model.infer_n (multi.c). */
PyObject *ms_py_model_infer_n(ms_py_model *self, PyObject *args, PyObject *kwargs);

/* The ms_dtype of a buffer format and item size; 0 when none matches. */
int ms_py_dtype_of_format(const char *format, Py_ssize_t itemsize);
/* Wraps an output tensor of m; takes ownership of t (freed on failure). */
PyObject *ms_py_tensor_wrap(ms_py_state *st, ms_py_model *m, ms_tensor *t);

#endif
