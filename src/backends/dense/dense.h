/* The built-in "dense" backend: a multilayer perceptron whose weights come from a safetensors
 * file (layers "<prefix>N.weight" [out, in] and optional "<prefix>N.bias" [out], ReLU between
 * layers), run on the CPU with BLAS (dense.c, registered in backends.c) or on CUDA with cuBLAS
 * (../cuda/, a library loaded with dlopen). */
#ifndef MS_DENSE_H
#define MS_DENSE_H

#include "../backend.h"

extern const ms__backend_ops ms__dense_ops;

/* Layer i of a model loaded by ms__dense_ops (float32 in host memory; dtype is the weight's in the
 * file). The CUDA backend loads through the CPU one and uploads these. MS_E_INVAL past the end. */
typedef struct ms__dense_layer_view {
    int in, out;
    int dtype;
    const float *w; /* [out, in] */
    const float *b; /* [out] or NULL */
} ms__dense_layer_view;
int ms__dense_layer(void *state, size_t i, ms__dense_layer_view *out);
/* MS__OUTPUT_LINEAR or MS__OUTPUT_SOFTMAX. */
int ms__dense_output(void *state);

/* Device memory a CUDA worker's context and cuBLAS handle take before any weight: a figure for
 * the estimate only, replaced by NVML's measurement once the model is loaded. */
#define MS__CUDA_CONTEXT_BYTES (512ull << 20)

/* Bytes a dense model will hold once loaded on spec->device, from the weights file's header
 * alone: on "cpu" every weight as float32 plus two work buffers of max_batch rows of the widest
 * layer; on "cuda:N" float16 weights stay float16, plus the work buffers and
 * MS__CUDA_CONTEXT_BYTES. 0 when the file cannot be read (the load will say why). No BLAS, no
 * CUDA: the daemon links it. */
uint64_t ms__dense_estimate(const ms__spec *spec);

#endif
