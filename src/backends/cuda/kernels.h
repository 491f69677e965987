/* The element-wise steps of the dense MLP on CUDA that cuBLAS does not do (kernels.cu). Each is
 * queued on stream and returns the launch's cudaError_t as an int (0: queued). */
#ifndef MS_CUDA_KERNELS_H
#define MS_CUDA_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y [rows, cols] += bias [cols] (bias may be NULL), then max(y, 0) when relu. */
int ms__cuda_bias_act(float *y, const float *bias, size_t rows, int cols, int relu, void *stream);
/* dst[i] = (half)src[i] for n elements; dst is __half storage. */
int ms__cuda_to_half(void *dst, const float *src, size_t n, void *stream);
/* Softmax of each row of y [rows, cols], in place. */
int ms__cuda_softmax(float *y, size_t rows, int cols, void *stream);

#ifdef __cplusplus
}
#endif

#endif
