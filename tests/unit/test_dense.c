/* The dense backend: models written with the safetensors writer (and by hand, for F16/BF16),
 * compared with a naive triple loop; load errors; input checks that leave the model usable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/backends/backend.h"
#include "../../src/backends/dense/dense.h"
#include "../../src/common/safetensors.h"
#include "../../src/common/util.h"

static char tmpdir[64];
static const ms__backend_ops *dense;

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/ms_test_dense_XXXXXX");
    dense = ms__backend_find("dense");
    return mkdtemp(tmpdir) && dense ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static uint32_t rng = 12345;
static float rnd(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rnd();
}

static ms__spec make_spec(char *path, int output)
{
    ms__spec s;
    memset(&s, 0, sizeof s);
    strcpy(s.backend, "dense");
    strcpy(s.device, "cpu");
    s.weights = path;
    s.output = output;
    s.max_batch = 64;
    s.instances = 1;
    s.batchable = true;
    return s;
}

/* A test MLP: dims[0] inputs, nl layers, bias on the layers whose bit is set in bias_mask. */
typedef struct mlp {
    int nl;
    int dims[8];
    float *w[7], *b[7];
} mlp;

static void mlp_make(mlp *m, int nl, const int *dims, unsigned bias_mask)
{
    m->nl = nl;
    memcpy(m->dims, dims, (size_t)(nl + 1) * sizeof(int));
    for (int i = 0; i < nl; i++) {
        m->w[i] = malloc(sizeof(float) * (size_t)dims[i] * (size_t)dims[i + 1]);
        fill(m->w[i], (size_t)dims[i] * (size_t)dims[i + 1]);
        m->b[i] = NULL;
        if (bias_mask & (1u << i)) {
            m->b[i] = malloc(sizeof(float) * (size_t)dims[i + 1]);
            fill(m->b[i], (size_t)dims[i + 1]);
        }
    }
}

static void mlp_free(mlp *m)
{
    for (int i = 0; i < m->nl; i++) {
        free(m->w[i]);
        free(m->b[i]);
    }
}

/* Writes m with names prefix + index(i) + ".weight"/".bias". */
static void mlp_write(const mlp *m, const char *path, const char *prefix, int stride)
{
    ms__st_out_tensor t[16];
    char names[16][64];
    size_t n = 0;
    /* Last layer first: the file's order must not matter. */
    for (int i = m->nl - 1; i >= 0; i--) {
        snprintf(names[n], 64, "%s%d.weight", prefix, i * stride);
        t[n] = (ms__st_out_tensor){
            .name = names[n], .rank = 2, .shape = {m->dims[i + 1], m->dims[i]}, .data = m->w[i]};
        n++;
        if (m->b[i]) {
            snprintf(names[n], 64, "%s%d.bias", prefix, i * stride);
            t[n] = (ms__st_out_tensor){
                .name = names[n], .rank = 1, .shape = {m->dims[i + 1]}, .data = m->b[i]};
            n++;
        }
    }
    char err[MS__ERRLEN];
    assert_int_equal(ms__st_write_f32(path, t, n, err, sizeof err), 0);
}

/* The reference: a naive triple loop in double. */
static void naive(const mlp *m, const float *x, int rows, int softmax, double *y)
{
    int maxw = 0;
    for (int i = 0; i <= m->nl; i++)
        if (m->dims[i] > maxw)
            maxw = m->dims[i];
    double *a = malloc(sizeof(double) * (size_t)maxw), *b = malloc(sizeof(double) * (size_t)maxw);
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < m->dims[0]; j++)
            a[j] = x[(size_t)r * (size_t)m->dims[0] + (size_t)j];
        for (int l = 0; l < m->nl; l++) {
            int in = m->dims[l], out = m->dims[l + 1];
            for (int o = 0; o < out; o++) {
                double s = m->b[l] ? m->b[l][o] : 0.0;
                for (int k = 0; k < in; k++)
                    s += (double)m->w[l][(size_t)o * (size_t)in + (size_t)k] * a[k];
                b[o] = (l + 1 < m->nl && s < 0) ? 0 : s;
            }
            double *t = a;
            a = b;
            b = t;
        }
        int out = m->dims[m->nl];
        if (softmax) {
            double mx = a[0], sum = 0;
            for (int o = 1; o < out; o++)
                mx = a[o] > mx ? a[o] : mx;
            for (int o = 0; o < out; o++)
                sum += (a[o] = exp(a[o] - mx));
            for (int o = 0; o < out; o++)
                a[o] /= sum;
        }
        memcpy(y + (size_t)r * (size_t)out, a, sizeof(double) * (size_t)out);
    }
    free(a);
    free(b);
}

static void assert_close(const float *got, const double *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double tol = 1e-4 * fmax(1.0, fabs(want[i]));
        if (fabs(got[i] - want[i]) > tol)
            fail_msg("element %zu: got %.9g, expected %.9g", i, (double)got[i], want[i]);
    }
}

static ms__tensor_view view(int rows, int cols, float *data)
{
    ms__tensor_view v;
    memset(&v, 0, sizeof v);
    v.dtype = MS_FLOAT32;
    v.rank = 2;
    v.shape[0] = rows;
    v.shape[1] = cols;
    v.data = data;
    v.nbytes = (size_t)rows * (size_t)cols * sizeof(float);
    return v;
}

/* Runs rows random inputs through the loaded model and compares with naive(). */
static void check_against_naive(void *st, const mlp *m, int rows, int softmax)
{
    int in = m->dims[0], out = m->dims[m->nl];
    float *x = malloc(sizeof(float) * (size_t)(rows * in + 1));
    float *y = malloc(sizeof(float) * (size_t)(rows * out + 1));
    double *want = malloc(sizeof(double) * (size_t)(rows * out + 1));
    fill(x, (size_t)rows * (size_t)in);
    ms__tensor_view vin = view(rows, in, x), vout;
    char err[MS__ERRLEN];
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), 0);
    assert_int_equal(vout.dtype, MS_FLOAT32);
    assert_int_equal(vout.rank, 2);
    assert_int_equal(vout.shape[0], rows);
    assert_int_equal(vout.shape[1], out);
    assert_int_equal(vout.nbytes, (size_t)rows * (size_t)out * sizeof(float));
    vout.data = y;
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);
    naive(m, x, rows, softmax, want);
    assert_close(y, want, (size_t)rows * (size_t)out);
    free(x);
    free(y);
    free(want);
}

static void test_forward_matches_naive(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/mlp.safetensors", tmpdir);
    mlp m;
    int dims[4] = {7, 5, 4, 3};
    mlp_make(&m, 3, dims, 0x5); /* bias on layers 0 and 2 */
    mlp_write(&m, path, "model.", 1);
    ms__spec spec = make_spec(path, MS__OUTPUT_LINEAR);
    void *st = NULL;
    int rc = dense->load(&spec, &st, err, sizeof err);
    if (rc)
        fail_msg("load: %s", err);

    ms__sig in, out;
    dense->signature(st, &in, &out);
    assert_int_equal(in.dtype, MS_FLOAT32);
    assert_int_equal(in.rank, 2);
    assert_int_equal(in.shape[0], -1);
    assert_int_equal(in.shape[1], 7);
    assert_int_equal(out.shape[0], -1);
    assert_int_equal(out.shape[1], 3);

    check_against_naive(st, &m, 1, 0);
    check_against_naive(st, &m, 6, 0);
    check_against_naive(st, &m, 2500, 0); /* more rows than one pass */
    check_against_naive(st, &m, 3, 0);

    /* Batch 0: an empty output. */
    ms__tensor_view vin = view(0, 7, NULL), vout;
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), 0);
    assert_int_equal(vout.shape[0], 0);
    assert_int_equal(vout.nbytes, 0);
    vout.data = NULL;
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);

    /* estimate(): float32 weights plus two work buffers of max_batch rows of the widest layer. */
    uint64_t want = (uint64_t)(7 * 5 + 5 + 5 * 4 + 4 * 3 + 3 + 2 * 64 * 5) * 4;
    assert_int_equal(dense->estimate(&spec), want);
    assert_int_equal(ms__backend_estimate(&spec), want);
    /* On CUDA: the same float32 weights and buffers, plus the context's share. */
    strcpy(spec.device, "cuda:0");
    assert_int_equal(ms__backend_estimate(&spec), want + MS__CUDA_CONTEXT_BYTES);
    strcpy(spec.device, "cpu");
    dense->unload(st);
    dense->unload(NULL);
    mlp_free(&m);
}

static void test_softmax(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/sm.safetensors", tmpdir);
    mlp m;
    int dims[3] = {16, 32, 10};
    mlp_make(&m, 2, dims, 0x3);
    for (int i = 0; i < 10; i++) /* large logits: a naive softmax would overflow */
        m.b[1][i] = 100.0f * (float)i;
    mlp_write(&m, path, "", 1);
    ms__spec spec = make_spec(path, MS__OUTPUT_SOFTMAX);
    void *st = NULL;
    assert_int_equal(dense->load(&spec, &st, err, sizeof err), 0);
    check_against_naive(st, &m, 5, 1);

    float x[4 * 16], y[4 * 10];
    fill(x, 4 * 16);
    ms__tensor_view vin = view(4, 16, x), vout = view(4, 10, y);
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);
    for (int r = 0; r < 4; r++) {
        double sum = 0;
        for (int j = 0; j < 10; j++) {
            assert_false(isnan(y[r * 10 + j]));
            assert_true(y[r * 10 + j] >= 0.0f);
            sum += y[r * 10 + j];
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    dense->unload(st);
    mlp_free(&m);
}

/* Writes a safetensors file by hand: header JSON, padded, then data. */
static void write_raw(const char *path, const char *json, const void *data, size_t datalen)
{
    size_t n = strlen(json), padded = (n + 7) & ~(size_t)7;
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(json, 1, n, fp);
    for (size_t i = n; i < padded; i++)
        fputc(' ', fp);
    if (datalen)
        fwrite(data, 1, datalen, fp);
    assert_int_equal(fclose(fp), 0);
}

static void test_half_weights(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/half.safetensors", tmpdir);
    /* Layer 0: F16 [2, 3] = [[1, -2, 0.5], [2^-24 (subnormal), 0, -0.25]], BF16 bias [1.5, -3].
     * Layer 1: BF16 [1, 2] = [[1, 2]], no bias. Unaligned offsets on purpose (4 bytes of bias). */
    uint16_t data[6 + 2 + 2] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x0000,
                                0xb400, 0x3fc0, 0xc040, 0x3f80, 0x4000};
    write_raw(path,
              "{\"__metadata__\": {\"format\": \"pt\"},"
              "\"0.weight\": {\"dtype\": \"F16\", \"shape\": [2, 3], \"data_offsets\": [0, 12]},"
              "\"0.bias\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [12, 16]},"
              "\"1.weight\": {\"dtype\": \"BF16\", \"shape\": [1, 2], \"data_offsets\": [16, 20]}}",
              data, sizeof data);
    ms__spec spec = make_spec(path, MS__OUTPUT_LINEAR);
    void *st = NULL;
    int rc = dense->load(&spec, &st, err, sizeof err);
    if (rc)
        fail_msg("load: %s", err);
    float x[2 * 3] = {1, 1, 1, 16777216.0f, 0, 0}, y[2];
    ms__tensor_view vin = view(2, 3, x), vout = view(2, 1, y);
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);
    /* Row 0: h = relu([1-2+0.5+1.5, 0+0-0.25-3]) = [1, 0]; y = 1*1 + 2*0 = 1.
     * Row 1: h = relu([2^24+1.5, 2^-24*2^24 - 3]) = [16777217.5 -> float, 0]; y = h0. */
    assert_true(fabsf(y[0] - 1.0f) < 1e-6f);
    assert_true(fabsf(y[1] - (16777216.0f + 1.5f)) <= 2.0f);
    float x2[3] = {0, 2.0f * 16777216.0f, 0};
    vin = view(1, 3, x2);
    vout = view(1, 1, y);
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);
    /* h = relu([-2*2^25 + 1.5, 0 - 3]) = [0, 0] -> 0; checks the sign of -2 and ReLU. */
    assert_true(fabsf(y[0]) < 1e-6f);
    float x3[3] = {16777216.0f, 0, 0};
    vin = view(1, 3, x3);
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);
    /* h = [2^24 + 1.5, 2^-24 * 2^24 - 3 = -2 -> 0]: subnormal F16 decoded exactly. */
    assert_true(fabsf(y[0] - (16777216.0f + 1.5f)) <= 2.0f);
    dense->unload(st);

    /* The subnormal on its own: weight 2^-24 times 2^24 plus bias 3 gives 4. */
    uint16_t d2[2] = {0x0001, 0x4200};
    write_raw(path,
              "{\"0.weight\": {\"dtype\": \"F16\", \"shape\": [1, 1], \"data_offsets\": [0, 2]},"
              "\"0.bias\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [2, 4]}}",
              d2, sizeof d2);
    assert_int_equal(dense->load(&spec, &st, err, sizeof err), 0);
    float one = 16777216.0f, out1;
    vin = view(1, 1, &one);
    vout = view(1, 1, &out1);
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), 0);
    assert_true(out1 == 4.0f);
    dense->unload(st);
}

static void test_prefix_forms(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    const char *prefixes[] = {"", "model.", "net.layers."};
    int dims[4] = {3, 4, 2, 5};
    for (int p = 0; p < 3; p++) {
        for (int stride = 1; stride <= 5; stride += 4) {
            /* stride 5: indices 0, 5, 10 — 10 sorts before 5 as text, not as a number. */
            snprintf(path, sizeof path, "%s/p%d_%d.safetensors", tmpdir, p, stride);
            mlp m;
            mlp_make(&m, 3, dims, 0x2);
            mlp_write(&m, path, prefixes[p], stride);
            ms__spec spec = make_spec(path, MS__OUTPUT_LINEAR);
            void *st = NULL;
            int rc = dense->load(&spec, &st, err, sizeof err);
            if (rc)
                fail_msg("prefix \"%s\" stride %d: %s", prefixes[p], stride, err);
            check_against_naive(st, &m, 4, 0);
            dense->unload(st);
            mlp_free(&m);
        }
    }
}

static void expect_load_error(const char *path, int code, const char *needle)
{
    char err[MS__ERRLEN] = "";
    char *p = strdup(path);
    ms__spec spec = make_spec(p, MS__OUTPUT_LINEAR);
    void *st = NULL;
    int rc = dense->load(&spec, &st, err, sizeof err);
    if (rc != code || !strstr(err, needle))
        fail_msg("%s: got %d \"%s\", expected %d with \"%s\"", path, rc, err, code, needle);
    assert_null(st);
    free(p);
}

static void write_tensors(const char *path, const char *const *names, const int64_t (*shapes)[2],
                          const int *ranks, size_t n)
{
    static float zeros[64];
    ms__st_out_tensor t[8];
    for (size_t i = 0; i < n; i++) {
        t[i] = (ms__st_out_tensor){.name = names[i], .rank = ranks[i], .data = zeros};
        t[i].shape[0] = shapes[i][0];
        t[i].shape[1] = shapes[i][1];
    }
    char err[MS__ERRLEN];
    assert_int_equal(ms__st_write_f32(path, t, n, err, sizeof err), 0);
}

static void test_load_errors(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    expect_load_error(path, MS_E_WEIGHTS, "missing.safetensors");
    expect_load_error(tmpdir, MS_E_WEIGHTS, "regular file");

    snprintf(path, sizeof path, "%s/text.safetensors", tmpdir);
    FILE *fp = fopen(path, "w");
    fputs("this is not a safetensors file at all, just some text\n", fp);
    fclose(fp);
    expect_load_error(path, MS_E_WEIGHTS, "larger than the file");
    fp = fopen(path, "w");
    fputs("abc", fp);
    fclose(fp);
    expect_load_error(path, MS_E_WEIGHTS, "text.safetensors\": not a safetensors file");
    write_raw(path, "{\"0.weight\": oops}", NULL, 0);
    expect_load_error(path, MS_E_WEIGHTS, "not JSON");
    write_raw(path, "{}", NULL, 0);
    expect_load_error(path, MS_E_WEIGHTS, "no tensors");

    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    {
        const char *names[] = {"0.weight", "1.weight"};
        const int64_t shapes[][2] = {{4, 3}, {2, 5}};
        const int ranks[] = {2, 2};
        write_tensors(path, names, shapes, ranks, 2);
        expect_load_error(path, MS_E_WEIGHTS,
                          "shapes do not chain: \"0.weight\" has 4 outputs but the next layer "
                          "\"1.weight\" expects 5 inputs");
    }
    {
        const char *names[] = {"0.weight", "0.bias", "foo"};
        const int64_t shapes[][2] = {{4, 3}, {4, 0}, {1, 0}};
        const int ranks[] = {2, 1, 1};
        write_tensors(path, names, shapes, ranks, 3);
        expect_load_error(path, MS_E_WEIGHTS, "unexpected tensor \"foo\"");
    }
    {
        const char *names[] = {"model.0.weight", "net.1.weight"};
        const int64_t shapes[][2] = {{4, 3}, {2, 4}};
        const int ranks[] = {2, 2};
        write_tensors(path, names, shapes, ranks, 2);
        expect_load_error(path, MS_E_WEIGHTS, "prefix");
    }
    {
        const char *names[] = {"0.weight", "1.bias"};
        const int64_t shapes[][2] = {{4, 3}, {4, 0}};
        const int ranks[] = {2, 1};
        write_tensors(path, names, shapes, ranks, 2);
        expect_load_error(path, MS_E_WEIGHTS, "\"1.bias\" has no matching \"1.weight\"");
    }
    {
        const char *names[] = {"0.weight", "0.bias"};
        const int64_t shapes[][2] = {{4, 3}, {3, 0}};
        const int ranks[] = {2, 1};
        write_tensors(path, names, shapes, ranks, 2);
        expect_load_error(path, MS_E_WEIGHTS, "expected shape [4] to match \"0.weight\", got [3]");
    }
    {
        const char *names[] = {"0.weight"};
        const int64_t shapes[][2] = {{12, 0}};
        const int ranks[] = {1};
        write_tensors(path, names, shapes, ranks, 1);
        expect_load_error(path, MS_E_WEIGHTS, "expected a matrix [out, in]");
    }
    {
        const char *names[] = {"00.weight"};
        const int64_t shapes[][2] = {{2, 2}};
        const int ranks[] = {2};
        write_tensors(path, names, shapes, ranks, 1);
        expect_load_error(path, MS_E_WEIGHTS, "unexpected tensor \"00.weight\"");
    }
    uint8_t d[16] = {0};
    write_raw(path,
              "{\"0.weight\": {\"dtype\": \"F64\", \"shape\": [1, 2], \"data_offsets\": [0, 16]}}",
              d, sizeof d);
    expect_load_error(path, MS_E_WEIGHTS, "expected dtype F32, F16 or BF16, got float64");

    /* Device and spec errors. */
    char err[MS__ERRLEN];
    ms__spec spec = make_spec(path, MS__OUTPUT_LINEAR);
    strcpy(spec.device, "cuda:0");
    void *st = NULL;
    assert_int_equal(dense->load(&spec, &st, err, sizeof err), MS_E_DEVICE);
    assert_string_equal(err, "the dense backend runs on \"cpu\" in this build; got \"cuda:0\"");
    assert_int_equal(dense->estimate(&spec), 0);
    spec = make_spec(NULL, MS__OUTPUT_LINEAR);
    assert_int_equal(dense->load(&spec, &st, err, sizeof err), MS_E_SPEC);
    assert_null(st);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/in.safetensors", tmpdir);
    mlp m;
    int dims[3] = {1024, 8, 1000};
    mlp_make(&m, 2, dims, 0x3);
    mlp_write(&m, path, "", 1);
    ms__spec spec = make_spec(path, MS__OUTPUT_LINEAR);
    void *st = NULL;
    assert_int_equal(dense->load(&spec, &st, err, sizeof err), 0);

    ms__tensor_view vin = view(3, 1024, NULL), vout;
    vin.dtype = MS_FLOAT64;
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), MS_E_DTYPE);
    assert_string_equal(err, "expected float32, got float64");
    vin = view(3, 1000, NULL);
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), MS_E_SHAPE);
    assert_string_equal(err, "expected [N, 1024] (float32), got [3, 1000]");
    vin.rank = 1;
    vin.shape[0] = 1024;
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), MS_E_SHAPE);
    vin.rank = 3;
    vin.shape[0] = 1;
    vin.shape[1] = 1024;
    vin.shape[2] = 1;
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), MS_E_SHAPE);
    vin = view(1, 1024, NULL);
    vin.shape[0] = -1;
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), MS_E_SHAPE);
    vin.shape[0] = (1 << 20) + 1;
    assert_int_equal(dense->output_for(st, &vin, &vout, err, sizeof err), MS_E_TOO_LARGE);
    /* run() checks too, and the room it is given. */
    float x[2 * 1024], y[2 * 1000];
    vin = view(2, 1024, x);
    vin.dtype = MS_INT32;
    vout = view(2, 1000, y);
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), MS_E_DTYPE);
    vin = view(2, 1024, x);
    vout.nbytes -= 4;
    assert_int_equal(dense->run(st, &vin, &vout, err, sizeof err), MS_E_INVAL);

    /* Still serving after all that. */
    check_against_naive(st, &m, 2, 0);
    dense->unload(st);
    mlp_free(&m);
    assert_null(ms__backend_find("nope"));
    assert_null(ms__backend_find(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_naive), cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_half_weights),          cmocka_unit_test(test_prefix_forms),
        cmocka_unit_test(test_load_errors),           cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
