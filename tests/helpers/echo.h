/*
 * echo.h — one checked call of one row [1, 4] of `value` to a model that answers its input (the
 * identity backend, or a python y = x), for the helper clients that only need "it answered, and
 * right". Header-only: each helper is one program.
 */
#ifndef MS_TEST_ECHO_H
#define MS_TEST_ECHO_H

#include <modelshare.h>

/* 0 when y == x; the call's error; or MS_E_PROTOCOL for a wrong answer (never expected). */
static inline int echo_call(ms_model *m, float value)
{
    int64_t shape[2] = {1, 4};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        for (int i = 0; i < 4; i++)
            ((float *)ms_tensor_data(x))[i] = value;
        rc = ms_infer(m, x, &y);
    }
    if (rc == 0 && (ms_tensor_nbytes(y) != 16 || ((const float *)ms_tensor_data(y))[3] != value))
        rc = MS_E_PROTOCOL;
    ms_tensor_free(y);
    ms_tensor_free(x);
    return rc;
}

#endif
