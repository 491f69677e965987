// The element-wise steps of the dense MLP on CUDA. See kernels.h.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels.h"

namespace {

constexpr int kThreads = 256;

__global__ void bias_act(float *y, const float *bias, size_t n, int cols, int relu)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i];
        if (bias != nullptr)
            v += bias[i % (size_t)cols];
        if (relu && v < 0.0f)
            v = 0.0f;
        y[i] = v;
    }
}

__global__ void to_half(__half *dst, const float *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

// One block per row: max, sum of exponentials, scale.
__global__ void softmax_rows(float *y, int cols)
{
    __shared__ float red[kThreads];
    float *row = y + (size_t)blockIdx.x * (size_t)cols;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        m = fmaxf(m, row[j]);
    red[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();
    float sum = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float e = expf(row[j] - m);
        row[j] = e;
        sum += e;
    }
    red[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    float inv = 1.0f / red[0];
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        row[j] *= inv;
}

unsigned blocks_for(size_t n)
{
    size_t b = (n + kThreads - 1) / kThreads;
    if (b < 1)
        b = 1;
    return b > 65535 ? 65535u : (unsigned)b;
}

} // namespace

extern "C" int ms__cuda_bias_act(float *y, const float *bias, size_t rows, int cols, int relu,
                                 void *stream)
{
    size_t n = rows * (size_t)cols;
    if (n == 0 || (bias == nullptr && !relu))
        return 0;
    bias_act<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(y, bias, n, cols, relu);
    return (int)cudaGetLastError();
}

extern "C" int ms__cuda_to_half(void *dst, const float *src, size_t n, void *stream)
{
    if (n == 0)
        return 0;
    to_half<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>((__half *)dst, src, n);
    return (int)cudaGetLastError();
}

extern "C" int ms__cuda_softmax(float *y, size_t rows, int cols, void *stream)
{
    for (size_t r = 0; r < rows; r += 65535) {
        size_t n = rows - r < 65535 ? rows - r : 65535;
        softmax_rows<<<(unsigned)n, kThreads, 0, (cudaStream_t)stream>>>(y + r * (size_t)cols,
                                                                         cols);
    }
    return (int)cudaGetLastError();
}
