/*
 * The dense backend on CUDA: the same MLP as dense.c, its weights in device memory (cudaMalloc),
 * run with cuBLAS. float16 weights stay float16 on the device (cublasGemmEx, float32 compute and
 * output; the activations are rounded to float16 for those layers); float32 and bfloat16 weights
 * are float32. Inputs and outputs move by DMA straight from and to the client's shared-memory
 * arena when the range can be registered with the driver (pins.h: cudaHostRegister, cached per
 * range, dropped before the arena is unmapped); else, and for the worker's own batch buffers,
 * they are staged through pinned host memory. $MODELSHARE_CUDA_REGISTER=0 always stages. The
 * weights file is read by the CPU backend (same checks, same messages), uploaded, and the host
 * copy is freed.
 *
 * Built into libmodelshare-cuda.so, which the worker opens with dlopen (cuda_loader.c).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend.h"
#include "../dense/dense.h"
#include "../pins.h"
#include "../../common/env.h"
#include "kernels.h"
#include "modelshare.h"
#include "../../common/util.h"

#define CUDA_BATCH_MAX (1 << 20) /* rows in one call, as on the CPU */
#define CUDA_CHUNK_MIN 1024      /* rows per pass at least (more with a larger max_batch) */
#define CUDA_CC_MIN 75           /* compute capability this build has machine code for */

typedef struct cuda_layer {
    int in, out;
    bool half; /* weights are float16 */
    void *w;   /* device, [out, in] row-major */
    float *b;  /* device, [out] or NULL */
} cuda_layer;

typedef struct cuda_state {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cuda_layer *layers;
    size_t nlayers;
    int output;
    size_t in_width, out_width, width; /* width: widest hidden activation */
    bool any_half;
    size_t chunk_rows;
    /* Grown on demand up to chunk_rows rows. */
    size_t rows_cap;
    float *d_in, *d_out, *d_work[2];
    void *d_half;        /* float16 copy of a layer's input */
    float *h_in, *h_out; /* pinned staging */
    ms__pins *pins;      /* arena ranges registered for DMA; NULL: always stage */
} cuda_state;

/* The card's index as the daemon names it: a worker pinned to card N (CUDA_VISIBLE_DEVICES=N,
 * one number) sees it as its device 0, but its messages say cuda:N. */
static int card_index(int device)
{
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (device != 0 || v == NULL || v[0] == '\0' || strlen(v) > 2)
        return device;
    for (const char *c = v; *c; c++)
        if (*c < '0' || *c > '9')
            return device;
    return atoi(v);
}

static int cuda_err(char *err, size_t errlen, cudaError_t e, const char *what, int device)
{
    int code = e == cudaErrorMemoryAllocation ? MS_E_NO_MEMORY : MS_E_DEVICE;
    return ms__fail(err, errlen, code, "cuda:%d: %s: %s (%s)", card_index(device), what,
                    cudaGetErrorString(e), cudaGetErrorName(e));
}

static int blas_err(char *err, size_t errlen, cublasStatus_t st, const char *what, int device)
{
    int code = st == CUBLAS_STATUS_ALLOC_FAILED ? MS_E_NO_MEMORY : MS_E_BACKEND;
    return ms__fail(err, errlen, code, "cuda:%d: %s: cuBLAS status %d", card_index(device), what,
                    (int)st);
}

/* "cuda:N" -> N, after checking that the device exists and can run this build. */
static int open_device(const char *spec_name, int *index, char *err, size_t errlen)
{
    int want = (int)strtol(spec_name + 5, NULL, 10);
    char name[16];
    snprintf(name, sizeof name, "cuda:%d", card_index(want));
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "%s does not exist: no CUDA device on this machine", name);
    if (e == cudaErrorInsufficientDriver)
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "%s: the NVIDIA driver is older than this CUDA runtime (%d.%d) needs", name,
                        CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    if (e != cudaSuccess)
        return cuda_err(err, errlen, e, "cudaGetDeviceCount", want);
    if (want >= n)
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "%s does not exist: %d device%s (cuda:0 to cuda:%d)", name, n,
                        n == 1 ? "" : "s", n - 1);
    struct cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, want);
    if (e != cudaSuccess)
        return cuda_err(err, errlen, e, "cudaGetDeviceProperties", want);
    if (p.major * 10 + p.minor < CUDA_CC_MIN)
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "%s (%s) has compute capability %d.%d; this build of the CUDA backend "
                        "needs %d.%d or newer",
                        name, p.name, p.major, p.minor, CUDA_CC_MIN / 10, CUDA_CC_MIN % 10);
    e = cudaSetDevice(want);
    if (e != cudaSuccess)
        return cuda_err(err, errlen, e, "cudaSetDevice", want);
    *index = want;
    return 0;
}

static void free_buffers(cuda_state *s)
{
    cudaFree(s->d_in);
    cudaFree(s->d_out);
    cudaFree(s->d_work[0]);
    cudaFree(s->d_work[1]);
    cudaFree(s->d_half);
    cudaFreeHost(s->h_in);
    cudaFreeHost(s->h_out);
    s->d_in = s->d_out = s->d_work[0] = s->d_work[1] = NULL;
    s->d_half = NULL;
    s->h_in = s->h_out = NULL;
    s->rows_cap = 0;
}

static void cuda_unload(void *state)
{
    cuda_state *s = state;
    if (s == NULL)
        return;
    cudaSetDevice(s->device);
    if (s->stream != NULL)
        cudaStreamSynchronize(s->stream);
    ms__pins_free(s->pins);
    free_buffers(s);
    for (size_t i = 0; s->layers != NULL && i < s->nlayers; i++) {
        cudaFree(s->layers[i].w);
        cudaFree(s->layers[i].b);
    }
    free(s->layers);
    if (s->blas != NULL)
        cublasDestroy(s->blas);
    if (s->stream != NULL)
        cudaStreamDestroy(s->stream);
    free(s);
}

/* Copies the CPU model's layers to the device; float16 weights are converted back on the device
 * (exact: they were float16 in the file). */
static int upload(cuda_state *s, void *host, char *err, size_t errlen)
{
    ms__dense_layer_view v;
    size_t n = 0, tmp_floats = 0;
    while (ms__dense_layer(host, n, &v) == 0) {
        size_t numel = (size_t)v.in * (size_t)v.out;
        if (v.dtype == MS_FLOAT16 && numel > tmp_floats)
            tmp_floats = numel;
        n++;
    }
    s->layers = calloc(n, sizeof *s->layers);
    if (s->layers == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for %zu layers", n);
    s->nlayers = n;
    float *tmp = NULL;
    cudaError_t e = cudaSuccess;
    if (tmp_floats > 0 &&
        (e = cudaMalloc((void **)&tmp, tmp_floats * sizeof(float))) != cudaSuccess)
        return cuda_err(err, errlen, e, "cudaMalloc of the float16 conversion buffer", s->device);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ms__dense_layer(host, i, &v);
        cuda_layer *l = &s->layers[i];
        size_t numel = (size_t)v.in * (size_t)v.out;
        l->in = v.in;
        l->out = v.out;
        l->half = v.dtype == MS_FLOAT16;
        s->any_half = s->any_half || l->half;
        e = cudaMalloc(&l->w, numel * (l->half ? 2 : sizeof(float)));
        if (e != cudaSuccess) {
            rc = cuda_err(err, errlen, e, "cudaMalloc of the weights", s->device);
            break;
        }
        if (l->half) {
            e = cudaMemcpy(tmp, v.w, numel * sizeof(float), cudaMemcpyHostToDevice);
            if (e == cudaSuccess)
                e = (cudaError_t)ms__cuda_to_half(l->w, tmp, numel, s->stream);
            if (e == cudaSuccess)
                e = cudaStreamSynchronize(s->stream);
        } else {
            e = cudaMemcpy(l->w, v.w, numel * sizeof(float), cudaMemcpyHostToDevice);
        }
        if (e == cudaSuccess && v.b != NULL) {
            e = cudaMalloc((void **)&l->b, (size_t)v.out * sizeof(float));
            if (e == cudaSuccess)
                e = cudaMemcpy(l->b, v.b, (size_t)v.out * sizeof(float), cudaMemcpyHostToDevice);
        }
        if (e != cudaSuccess)
            rc = cuda_err(err, errlen, e, "uploading the weights", s->device);
        if (i + 1 < n && (size_t)v.out > s->width)
            s->width = (size_t)v.out;
    }
    cudaFree(tmp);
    return rc;
}

/* The driver's side of the pin cache (pins.h). Mapped, portable: any context may DMA it. */
static int pin_register(void *ctx, void *base, size_t len)
{
    const cuda_state *s = ctx;
    cudaSetDevice(s->device);
    cudaError_t e = cudaHostRegister(base, len, cudaHostRegisterPortable);
    if (e != cudaSuccess)
        cudaGetLastError(); /* not sticky: clear it, the copy is staged instead */
    return e == cudaSuccess ? 0 : 1;
}

static void pin_unregister(void *ctx, void *base)
{
    const cuda_state *s = ctx;
    cudaSetDevice(s->device);
    if (cudaHostUnregister(base) != cudaSuccess)
        cudaGetLastError();
}

static void cuda_arena(void *state, void *base, size_t len, bool mapped)
{
    cuda_state *s = state;
    if (s->pins == NULL)
        return;
    if (mapped) {
        ms__pins_arena_mapped(s->pins, base, len);
        return;
    }
    /* No copy may still read or write it: runs end with the stream synchronized. */
    ms__pins_arena_unmapping(s->pins, base, len);
}

static int cuda_load(const ms__spec *spec, void **state, char *err, size_t errlen)
{
    if (strncmp(spec->device, "cuda:", 5) != 0)
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "the CUDA dense backend runs on \"cuda:N\"; got \"%s\"", spec->device);
    int device = 0;
    int rc = open_device(spec->device, &device, err, errlen);
    if (rc < 0)
        return rc;
    /* The CPU backend reads and checks the file; its host copy goes once uploaded. */
    ms__spec cpu = *spec;
    snprintf(cpu.device, sizeof cpu.device, "cpu");
    void *host = NULL;
    rc = ms__dense_ops.load(&cpu, &host, err, errlen);
    if (rc < 0)
        return rc;
    cuda_state *s = calloc(1, sizeof *s);
    if (s == NULL) {
        ms__dense_ops.unload(host);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory loading \"%s\"", spec->weights);
    }
    s->device = device;
    s->output = ms__dense_output(host);
    s->chunk_rows = spec->max_batch > CUDA_CHUNK_MIN ? (size_t)spec->max_batch : CUDA_CHUNK_MIN;
    cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        rc = cuda_err(err, errlen, e, "cudaStreamCreate", device);
        goto fail;
    }
    cublasStatus_t st = cublasCreate(&s->blas);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasSetStream(s->blas, s->stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        s->blas = NULL;
        rc = blas_err(err, errlen, st, "cublasCreate", device);
        goto fail;
    }
    rc = upload(s, host, err, errlen);
    if (rc < 0)
        goto fail;
    s->in_width = (size_t)s->layers[0].in;
    s->out_width = (size_t)s->layers[s->nlayers - 1].out;
    if (strcmp(ms__env_str("MODELSHARE_CUDA_REGISTER", "1"), "0") != 0)
        s->pins = ms__pins_new(&(ms__pin_ops){pin_register, pin_unregister, s});
    ms__dense_ops.unload(host);
    *state = s;
    return 0;
fail:
    ms__dense_ops.unload(host);
    cuda_unload(s);
    return rc;
}

static void cuda_signature(void *state, ms__sig *in, ms__sig *out)
{
    const cuda_state *s = state;
    ms__sig_rows(in, out, (int64_t)s->in_width, (int64_t)s->out_width);
}

static int cuda_output_for(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                           size_t errlen)
{
    const cuda_state *s = state;
    return ms__rows_output_for(in, (int64_t)s->in_width, (int64_t)s->out_width, CUDA_BATCH_MAX, out,
                               err, errlen);
}

static int grow(cuda_state *s, size_t rows, char *err, size_t errlen)
{
    if (rows <= s->rows_cap)
        return 0;
    free_buffers(s);
    size_t widest_in = s->in_width > s->width ? s->in_width : s->width;
    cudaError_t e = cudaMalloc((void **)&s->d_in, rows * s->in_width * sizeof(float));
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&s->d_out, rows * s->out_width * sizeof(float));
    for (int i = 0; i < 2 && e == cudaSuccess && s->width > 0; i++)
        e = cudaMalloc((void **)&s->d_work[i], rows * s->width * sizeof(float));
    if (e == cudaSuccess && s->any_half)
        e = cudaMalloc(&s->d_half, rows * widest_in * 2);
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&s->h_in, rows * s->in_width * sizeof(float));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&s->h_out, rows * s->out_width * sizeof(float));
    if (e != cudaSuccess) {
        free_buffers(s);
        return cuda_err(err, errlen, e, "allocating work buffers", s->device);
    }
    s->rows_cap = rows;
    return 0;
}

/* Every layer over rows rows of d_in into d_out, queued on the stream. */
static int forward(cuda_state *s, size_t rows, char *err, size_t errlen)
{
    const float one = 1.0f, zero = 0.0f;
    const float *src = s->d_in;
    for (size_t i = 0; i < s->nlayers; i++) {
        const cuda_layer *l = &s->layers[i];
        bool last = i + 1 == s->nlayers;
        float *dst = last ? s->d_out : s->d_work[i & 1];
        cublasStatus_t st;
        /* Row-major y [rows, out] = x [rows, in] w^T, as column-major y^T = w x^T. */
        if (l->half) {
            int e = ms__cuda_to_half(s->d_half, src, rows * (size_t)l->in, s->stream);
            if (e != 0)
                return cuda_err(err, errlen, (cudaError_t)e, "float16 conversion", s->device);
            st = cublasGemmEx(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, l->out, (int)rows, l->in, &one,
                              l->w, CUDA_R_16F, l->in, s->d_half, CUDA_R_16F, l->in, &zero, dst,
                              CUDA_R_32F, l->out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        } else {
            st = cublasSgemm(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, l->out, (int)rows, l->in, &one,
                             l->w, l->in, src, l->in, &zero, dst, l->out);
        }
        if (st != CUBLAS_STATUS_SUCCESS)
            return blas_err(err, errlen, st, "gemm", s->device);
        int e = ms__cuda_bias_act(dst, l->b, rows, l->out, !last, s->stream);
        if (e != 0)
            return cuda_err(err, errlen, (cudaError_t)e, "bias and ReLU", s->device);
        src = dst;
    }
    if (s->output == MS__OUTPUT_SOFTMAX) {
        int e = ms__cuda_softmax(s->d_out, rows, (int)s->out_width, s->stream);
        if (e != 0)
            return cuda_err(err, errlen, (cudaError_t)e, "softmax", s->device);
    }
    return 0;
}

static int cuda_run(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                    size_t errlen)
{
    cuda_state *s = state;
    int rc = ms__rows_run_check(in, out, (int64_t)s->in_width, (int64_t)s->out_width,
                                CUDA_BATCH_MAX, err, errlen);
    if (rc < 0)
        return rc;
    size_t rows = (size_t)in->shape[0];
    if (rows == 0)
        return 0;
    size_t chunk = rows < s->chunk_rows ? rows : s->chunk_rows;
    cudaSetDevice(s->device);
    rc = grow(s, chunk, err, errlen);
    if (rc < 0)
        return rc;
    const float *x = in->data;
    float *y = out->data;
    for (size_t r = 0; r < rows; r += chunk) {
        size_t n = rows - r < chunk ? rows - r : chunk;
        size_t ib = n * s->in_width * sizeof(float), ob = n * s->out_width * sizeof(float);
        const float *src = x + r * s->in_width;
        float *dst = y + r * s->out_width;
        bool in_place = s->pins != NULL && ms__pins_usable(s->pins, src, ib);
        bool out_place = s->pins != NULL && ms__pins_usable(s->pins, dst, ob);
        if (!in_place)
            memcpy(s->h_in, src, ib);
        cudaError_t e = cudaMemcpyAsync(s->d_in, in_place ? src : s->h_in, ib,
                                        cudaMemcpyHostToDevice, s->stream);
        if (e != cudaSuccess)
            return cuda_err(err, errlen, e, "copying the input", s->device);
        rc = forward(s, n, err, errlen);
        if (rc < 0)
            return rc;
        e = cudaMemcpyAsync(out_place ? dst : s->h_out, s->d_out, ob, cudaMemcpyDeviceToHost,
                            s->stream);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(s->stream);
        if (e != cudaSuccess)
            return cuda_err(err, errlen, e, "running the model", s->device);
        if (!out_place)
            memcpy(dst, s->h_out, ob);
    }
    return 0;
}

__attribute__((visibility("default"))) const ms__backend_ops ms__cuda_dense_ops = {
    .name = "dense",
    .load = cuda_load,
    .signature = cuda_signature,
    .output_for = cuda_output_for,
    .run = cuda_run,
    .estimate = ms__dense_estimate,
    .unload = cuda_unload,
    .arena = cuda_arena,
};
