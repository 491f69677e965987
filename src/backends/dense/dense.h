/* The built-in "dense" backend: a multilayer perceptron whose weights come from a safetensors
 * file (layers "<prefix>N.weight" [out, in] and optional "<prefix>N.bias" [out], ReLU between
 * layers), run on the CPU with BLAS. Registered in backends.c. */
#ifndef MS_DENSE_H
#define MS_DENSE_H

#include "../backend.h"

extern const ms__backend_ops ms__dense_ops;

#endif
