/*
 * The dense backend: an MLP read from a safetensors file and run with cblas_sgemm.
 *
 * Layers are the tensors "<prefix>N.weight" [out, in] with optional "<prefix>N.bias" [out], one
 * prefix for the whole file, ordered by the integer N (gaps allowed: nn.Sequential numbers its
 * activations too). ReLU between layers, none after the last; output "softmax" adds a softmax.
 * Weights are copied (F16 and BF16 converted) into anonymous memory of the process's own, and
 * the file is unmapped again.
 */
#include "dense.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../common/safetensors.h"
#include "../../common/stats.h"
#include "../../common/util.h"

/* Most rows one call may carry. */
#define DENSE_BATCH_MAX (1 << 20)
/* Rows run per pass of the layers: at least max_batch, at least this many. Larger inputs run in
 * passes, so the work buffers stay bounded whatever a client sends. */
#define DENSE_CHUNK_MIN 1024
/* Alignment of every weight matrix and work buffer. */
#define DENSE_ALIGN 64

typedef struct dense_layer {
    int in, out;
    int dtype;      /* of the weight in the file */
    const float *w; /* [out, in], row-major */
    const float *b; /* [out] or NULL */
} dense_layer;

typedef struct dense_state {
    dense_layer *layers;
    size_t nlayers;
    void *block; /* mmap'd anonymous memory holding every weight */
    size_t block_len;
    int output;
    size_t width;      /* widest hidden activation (outputs of every layer but the last) */
    size_t chunk_rows; /* rows per pass */
    float *work[2];    /* ping-pong buffers of work_rows * width floats */
    size_t work_rows;
} dense_state;

/* ---- weights file ------------------------------------------------------------------------- */

enum { KIND_WEIGHT = 0, KIND_BIAS = 1 };

typedef struct layer_ref {
    long index;
    int kind;
    const ms__st_tensor *t;
} layer_ref;

/* Splits "model.3.weight" into the prefix length (6: "model."), 3 and KIND_WEIGHT. False when the
 * name is not of that form (index of 1 to 9 digits, no leading zero, after the start or a dot). */
static bool split_name(const char *name, size_t *prefix_len, long *index, int *kind)
{
    size_t len = strlen(name), stem;
    if (len > 7 && strcmp(name + len - 7, ".weight") == 0) {
        stem = len - 7;
        *kind = KIND_WEIGHT;
    } else if (len > 5 && strcmp(name + len - 5, ".bias") == 0) {
        stem = len - 5;
        *kind = KIND_BIAS;
    } else {
        return false;
    }
    size_t start = stem;
    while (start > 0 && name[start - 1] >= '0' && name[start - 1] <= '9')
        start--;
    size_t digits = stem - start;
    if (digits == 0 || digits > 9 || (digits > 1 && name[start] == '0') ||
        (start > 0 && name[start - 1] != '.'))
        return false;
    long v = 0;
    for (size_t i = start; i < stem; i++)
        v = v * 10 + (name[i] - '0');
    *prefix_len = start;
    *index = v;
    return true;
}

static int cmp_ref(const void *a, const void *b)
{
    const layer_ref *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->kind - y->kind;
}

static bool dtype_ok(int dtype)
{
    return dtype == MS_FLOAT32 || dtype == MS_FLOAT16 || dtype == MS_BFLOAT16;
}

/* Names each of the file's tensors in refs[i] (layer index and kind) and sorts refs by them.
 * Checks names and dtypes, and that all share one prefix (*prefix, *plen bytes long). */
static int sort_refs(const char *path, const ms__st_file *f, layer_ref *refs, const char **prefix,
                     size_t *plen, char *err, size_t errlen)
{
    *prefix = NULL;
    *plen = 0;
    for (size_t i = 0; i < f->ntensors; i++) {
        const ms__st_tensor *t = &f->tensors[i];
        size_t tp;
        if (!split_name(t->name, &tp, &refs[i].index, &refs[i].kind))
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "weights file \"%s\": unexpected tensor \"%s\" (expected only layer "
                            "tensors named \"<prefix>N.weight\" and \"<prefix>N.bias\", like "
                            "\"0.weight\" or \"model.0.bias\")",
                            path, t->name);
        if (!*prefix) {
            *prefix = t->name;
            *plen = tp;
        } else if (tp != *plen || memcmp(*prefix, t->name, *plen) != 0) {
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "weights file \"%s\": tensor \"%s\" does not share the prefix "
                            "\"%.*s\" of \"%s\" (expected one prefix for all layers)",
                            path, t->name, (int)*plen, *prefix, *prefix);
        }
        refs[i].t = t;
        if (!dtype_ok(t->dtype))
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "weights file \"%s\": tensor \"%s\": expected dtype F32, F16 or BF16, "
                            "got %s",
                            path, t->name, ms_dtype_name(t->dtype));
    }
    if (!*prefix)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "weights file \"%s\": no tensors (expected layers named like "
                        "\"0.weight\", \"0.bias\", \"1.weight\", ...)",
                        path);
    qsort(refs, f->ntensors, sizeof *refs, cmp_ref);
    return 0;
}

/* Walks the sorted refs (nrefs) into layers: each weight, with the bias that follows it, lands in
 * w[n] / b[n] (*nlayers entries). Checks their shapes. */
static int pair_layers(const char *path, const layer_ref *refs, size_t nrefs, const char *prefix,
                       size_t plen, const ms__st_tensor **w, const ms__st_tensor **b,
                       size_t *nlayers, char *err, size_t errlen)
{
    size_t n = 0;
    char got[160];
    for (size_t i = 0; i < nrefs; i++) {
        const ms__st_tensor *t = refs[i].t;
        ms__shape_str(t->rank, t->shape, got, sizeof got);
        if (refs[i].kind == KIND_WEIGHT) {
            if (t->rank != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > INT_MAX ||
                t->shape[1] > INT_MAX)
                return ms__fail(err, errlen, MS_E_WEIGHTS,
                                "weights file \"%s\": tensor \"%s\": expected a matrix [out, in] "
                                "of positive dimensions up to %d, got %s",
                                path, t->name, INT_MAX, got);
            w[n] = t;
            b[n] = NULL;
            n++;
            continue;
        }
        /* A bias sorts right after its layer's weight. */
        if (n == 0 || refs[i - 1].kind != KIND_WEIGHT || refs[i - 1].index != refs[i].index)
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "weights file \"%s\": tensor \"%s\" has no matching \"%.*s%ld.weight\"",
                            path, t->name, (int)plen, prefix, refs[i].index);
        const ms__st_tensor *wt = w[n - 1];
        if (t->rank != 1 || t->shape[0] != wt->shape[0])
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "weights file \"%s\": tensor \"%s\": expected shape [%" PRId64
                            "] to match \"%s\", got %s",
                            path, t->name, wt->shape[0], wt->name, got);
        b[n - 1] = t;
    }
    *nlayers = n;
    return 0;
}

/* Sorts the file's tensors into layers: refs (f->ntensors entries, sorted) is filled, and each
 * layer's weight and bias land in w[i] / b[i] (*nlayers entries). Checks names, dtypes, shapes
 * and that the shapes chain. */
static int plan_layers(const char *path, const ms__st_file *f, layer_ref *refs,
                       const ms__st_tensor **w, const ms__st_tensor **b, size_t *nlayers, char *err,
                       size_t errlen)
{
    const char *prefix;
    size_t plen, n = 0;
    int rc = sort_refs(path, f, refs, &prefix, &plen, err, errlen);
    if (rc < 0)
        return rc;
    rc = pair_layers(path, refs, f->ntensors, prefix, plen, w, b, &n, err, errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 1; i < n; i++)
        if (w[i]->shape[1] != w[i - 1]->shape[0])
            return ms__fail(err, errlen, MS_E_WEIGHTS,
                            "weights file \"%s\": shapes do not chain: \"%s\" has %" PRId64
                            " outputs but the next layer \"%s\" expects %" PRId64 " inputs",
                            path, w[i - 1]->name, w[i - 1]->shape[0], w[i]->name, w[i]->shape[1]);
    *nlayers = n;
    return 0;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0 && man == 0) {
        bits = sign;
    } else if (exp == 0) { /* subnormal: normalise */
        uint32_t e = 0;
        while (!(man & 0x400u)) {
            man <<= 1;
            e++;
        }
        bits = sign | ((113u - e) << 23) | ((man & 0x3ffu) << 13);
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static void copy_as_f32(float *dst, const uint8_t *src, size_t numel, int dtype)
{
    if (dtype == MS_FLOAT32) {
        memcpy(dst, src, numel * sizeof(float));
        return;
    }
    for (size_t i = 0; i < numel; i++) {
        uint16_t v = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        if (dtype == MS_FLOAT16) {
            dst[i] = f16_to_f32(v);
        } else {
            uint32_t bits = (uint32_t)v << 16;
            memcpy(&dst[i], &bits, sizeof bits);
        }
    }
}

/* Floats of a tensor rounded up so the next one starts 64-byte aligned. */
static size_t aligned_floats(size_t numel)
{
    size_t per = DENSE_ALIGN / sizeof(float);
    return (numel + per - 1) / per * per;
}

static int open_weights(const char *path, int *fd_out, uint64_t *size, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "weights file \"%s\": %s (expected a readable safetensors file)", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "weights file \"%s\": expected a regular file (a safetensors file)", path);
    }
    *fd_out = fd;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* ---- the backend -------------------------------------------------------------------------- */

static void dense_unload(void *state)
{
    dense_state *s = state;
    if (!s)
        return;
    if (s->block)
        munmap(s->block, s->block_len);
    free(s->work[0]);
    free(s->work[1]);
    free(s->layers);
    free(s);
}

static int check_spec(const ms__spec *spec, char *err, size_t errlen)
{
    if (strcmp(spec->device, "cpu") != 0)
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "the dense backend runs on \"cpu\" in this build; got \"%s\"",
                        spec->device);
    if (!spec->weights || !spec->weights[0])
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the dense backend needs \"weights\": the path of a safetensors file");
    return 0;
}

/* The bytes of the file a layer (weight w, bias b or NULL) reads: the load's progress. */
static uint64_t pair_bytes(const ms__st_tensor *w, const ms__st_tensor *b)
{
    return (w->end - w->begin) + (b != NULL ? b->end - b->begin : 0);
}

static uint64_t layer_bytes(size_t n, const ms__st_tensor **w, const ms__st_tensor **b)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += pair_bytes(w[i], b[i]);
    return total;
}

/* Copies the planned layers out of the mapped file into s->block. */
static int copy_layers(const char *path, dense_state *s, const uint8_t *data,
                       const ms__st_tensor **w, const ms__st_tensor **b, char *err, size_t errlen)
{
    size_t total = 0;
    for (size_t i = 0; i < s->nlayers; i++) {
        size_t wn = (size_t)w[i]->shape[0] * (size_t)w[i]->shape[1];
        size_t bn = b[i] ? (size_t)b[i]->shape[0] : 0;
        if (ms__add_overflow(total, aligned_floats(wn), &total) ||
            ms__add_overflow(total, aligned_floats(bn), &total))
            return ms__fail(err, errlen, MS_E_WEIGHTS, "weights file \"%s\": too large", path);
    }
    if (ms__mul_overflow(total ? total : 1, sizeof(float), &s->block_len))
        return ms__fail(err, errlen, MS_E_WEIGHTS, "weights file \"%s\": too large", path);
    void *block =
        mmap(NULL, s->block_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED)
        return ms__fail(err, errlen, MS_E_NOMEM,
                        "cannot allocate %zu bytes for the weights of \"%s\": %s", s->block_len,
                        path, strerror(errno));
    s->block = block;
    float *p = block;
    size_t width = 0;
    uint64_t done = 0, want = layer_bytes(s->nlayers, w, b);
    ms__progress_phase(MS__PHASE_READING);
    ms__progress_bytes(0, want);
    for (size_t i = 0; i < s->nlayers; i++) {
        dense_layer *l = &s->layers[i];
        l->out = (int)w[i]->shape[0];
        l->in = (int)w[i]->shape[1];
        l->dtype = w[i]->dtype;
        size_t wn = (size_t)l->out * (size_t)l->in;
        copy_as_f32(p, data + w[i]->begin, wn, w[i]->dtype);
        l->w = p;
        p += aligned_floats(wn);
        if (b[i]) {
            copy_as_f32(p, data + b[i]->begin, (size_t)l->out, b[i]->dtype);
            l->b = p;
            p += aligned_floats((size_t)l->out);
        }
        if (i + 1 < s->nlayers && (size_t)l->out > width)
            width = (size_t)l->out;
        done += pair_bytes(w[i], b[i]);
        ms__progress_bytes(done, want);
    }
    s->width = width;
    return 0;
}

/* Maps the open weights file (fd, size bytes) at *map (*map_len bytes; MAP_FAILED until then)
 * and parses its header into *f. The caller unmaps and frees, also on failure. */
static int map_weights(const char *path, int fd, uint64_t size, void **map, size_t *map_len,
                       ms__st_file *f, char *err, size_t errlen)
{
    char msg[MS__ERRLEN];
    if (size < 8)
        return ms__fail(err, errlen, MS_E_WEIGHTS,
                        "weights file \"%s\": not a safetensors file (%" PRIu64
                        " bytes, expected at least 8)",
                        path, size);
    *map_len = (size_t)size;
    *map = mmap(NULL, *map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (*map == MAP_FAILED)
        return ms__fail(err, errlen, MS_E_WEIGHTS, "weights file \"%s\": cannot map it: %s", path,
                        strerror(errno));
    int rc = ms__st_parse(*map, *map_len, size, f, msg, sizeof msg);
    if (rc < 0)
        return ms__fail(err, errlen, rc == MS_E_NOMEM ? MS_E_NOMEM : MS_E_WEIGHTS,
                        "weights file \"%s\": %s", path, msg);
    return 0;
}

static int dense_load(const ms__spec *spec, void **state, char *err, size_t errlen)
{
    int rc = check_spec(spec, err, errlen);
    if (rc < 0)
        return rc;
    const char *path = spec->weights;
    int fd = -1;
    uint64_t size = 0;
    rc = open_weights(path, &fd, &size, err, errlen);
    if (rc < 0)
        return rc;

    void *map = MAP_FAILED;
    size_t map_len = 0;
    ms__st_file f;
    memset(&f, 0, sizeof f);
    layer_ref *refs = NULL;
    const ms__st_tensor **w = NULL, **b = NULL;
    dense_state *s = NULL;

    rc = map_weights(path, fd, size, &map, &map_len, &f, err, errlen);
    if (rc < 0)
        goto out;
    size_t cap = f.ntensors ? f.ntensors : 1;
    refs = calloc(cap, sizeof *refs);
    w = calloc(cap, sizeof *w);
    b = calloc(cap, sizeof *b);
    s = calloc(1, sizeof *s);
    if (!refs || !w || !b || !s) {
        rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory loading \"%s\"", path);
        goto out;
    }
    rc = plan_layers(path, &f, refs, w, b, &s->nlayers, err, errlen);
    if (rc < 0)
        goto out;
    s->layers = calloc(s->nlayers, sizeof *s->layers);
    if (!s->layers) {
        rc = ms__fail(err, errlen, MS_E_NOMEM, "out of memory loading \"%s\"", path);
        goto out;
    }
    rc = copy_layers(path, s, (const uint8_t *)map + f.data_start, w, b, err, errlen);
    if (rc < 0)
        goto out;
    s->output = spec->output;
    s->chunk_rows = spec->max_batch > DENSE_CHUNK_MIN ? (size_t)spec->max_batch : DENSE_CHUNK_MIN;
    *state = s;
    s = NULL;
out:
    dense_unload(s);
    free(refs);
    free(w);
    free(b);
    ms__st_free(&f);
    if (map != MAP_FAILED)
        munmap(map, map_len);
    close(fd);
    return rc;
}

static void dense_signature(void *state, ms__sig *in, ms__sig *out)
{
    const dense_state *s = state;
    ms__sig_rows(in, out, s->layers[0].in, s->layers[s->nlayers - 1].out);
}

static int dense_output_for(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                            size_t errlen)
{
    const dense_state *s = state;
    return ms__rows_output_for(in, s->layers[0].in, s->layers[s->nlayers - 1].out, DENSE_BATCH_MAX,
                               out, err, errlen);
}

static int grow_work(dense_state *s, size_t rows, char *err, size_t errlen)
{
    if (rows <= s->work_rows || s->width == 0)
        return 0;
    size_t bytes = rows * s->width * sizeof(float);
    for (int i = 0; i < 2; i++) {
        free(s->work[i]);
        s->work[i] = NULL;
    }
    s->work_rows = 0;
    for (int i = 0; i < 2; i++)
        if (posix_memalign((void **)&s->work[i], DENSE_ALIGN, bytes) != 0) {
            free(s->work[0]);
            s->work[0] = s->work[1] = NULL;
            return ms__fail(err, errlen, MS_E_NOMEM,
                            "cannot allocate 2 x %zu bytes of work buffers for %zu rows", bytes,
                            rows);
        }
    s->work_rows = rows;
    return 0;
}

static void softmax_rows(float *y, size_t rows, size_t width)
{
    for (size_t r = 0; r < rows; r++, y += width) {
        float m = y[0];
        for (size_t j = 1; j < width; j++)
            if (y[j] > m)
                m = y[j];
        float sum = 0.0f;
        for (size_t j = 0; j < width; j++) {
            y[j] = expf(y[j] - m);
            sum += y[j];
        }
        float inv = 1.0f / sum;
        for (size_t j = 0; j < width; j++)
            y[j] *= inv;
    }
}

/* OpenBLAS threads for one layer: all of them for large products, one for small ones, where
 * waking the other threads costs more than it saves (and, in a worker, the CPU they would need
 * may be the one a client spins on). Set only when it changes: the setting is process-wide. */
#define SMALL_LAYER_MACS (1u << 20)
static void blas_threads_for(size_t macs)
{
    static int all = -1, now = -1;
    if (all < 0)
        all = openblas_get_num_threads();
    int want = macs < SMALL_LAYER_MACS ? 1 : all;
    if (want != now) {
        openblas_set_num_threads(want);
        now = want;
    }
}

/* One pass of every layer over rows rows: x [rows, in] -> y [rows, out]. */
static void forward(dense_state *s, const float *x, float *y, size_t rows)
{
    const float *src = x;
    for (size_t i = 0; i < s->nlayers; i++) {
        const dense_layer *l = &s->layers[i];
        blas_threads_for(rows * (size_t)l->in * (size_t)l->out);
        bool last = i + 1 == s->nlayers;
        float *dst = last ? y : s->work[i & 1];
        float beta = 0.0f;
        if (l->b) {
            for (size_t r = 0; r < rows; r++)
                memcpy(dst + r * (size_t)l->out, l->b, (size_t)l->out * sizeof(float));
            beta = 1.0f;
        }
        /* One row: a matrix-vector product, which skips gemm's packing of the whole weight
         * matrix on every call (5x faster for a 256x256 layer). */
        if (rows == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, l->out, l->in, 1.0f, l->w, l->in, src, 1, beta,
                        dst, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, l->out, l->in, 1.0f,
                        src, l->in, l->w, l->in, beta, dst, l->out);
        if (!last) {
            size_t n = rows * (size_t)l->out;
            for (size_t j = 0; j < n; j++)
                if (dst[j] < 0.0f)
                    dst[j] = 0.0f;
        }
        src = dst;
    }
    if (s->output == MS__OUTPUT_SOFTMAX)
        softmax_rows(y, rows, (size_t)s->layers[s->nlayers - 1].out);
}

static int dense_run(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                     size_t errlen)
{
    dense_state *s = state;
    size_t in_width = (size_t)s->layers[0].in, out_width = (size_t)s->layers[s->nlayers - 1].out;
    int rc = ms__rows_run_check(in, out, (int64_t)in_width, (int64_t)out_width, DENSE_BATCH_MAX,
                                err, errlen);
    if (rc < 0)
        return rc;
    size_t rows = (size_t)in->shape[0];
    size_t chunk = rows < s->chunk_rows ? rows : s->chunk_rows;
    rc = grow_work(s, chunk, err, errlen);
    if (rc < 0)
        return rc;
    const float *x = in->data;
    float *y = out->data;
    for (size_t r = 0; r < rows; r += chunk) {
        size_t n = rows - r < chunk ? rows - r : chunk;
        forward(s, x + r * in_width, y + r * out_width, n);
    }
    return 0;
}

/* The CPU backend estimates CPU loads only: "cuda:N" is served by the CUDA backend. */
static uint64_t dense_estimate(const ms__spec *spec)
{
    if (check_spec(spec, NULL, 0) < 0)
        return 0;
    return ms__dense_estimate(spec);
}

int ms__dense_layer(void *state, size_t i, ms__dense_layer_view *out)
{
    const dense_state *s = state;
    if (i >= s->nlayers)
        return MS_E_INVAL;
    const dense_layer *l = &s->layers[i];
    *out =
        (ms__dense_layer_view){.in = l->in, .out = l->out, .dtype = l->dtype, .w = l->w, .b = l->b};
    return 0;
}

int ms__dense_output(void *state)
{
    return ((const dense_state *)state)->output;
}

const ms__backend_ops ms__dense_ops = {
    .name = "dense",
    .load = dense_load,
    .signature = dense_signature,
    .output_for = dense_output_for,
    .run = dense_run,
    .estimate = dense_estimate,
    .unload = dense_unload,
};
