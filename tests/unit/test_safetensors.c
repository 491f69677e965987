/* The safetensors parser and writer: files from the writer, and hand-made broken headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/safetensors.h"
#include "../../src/common/util.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/ms_test_st_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Frames json as a safetensors header (no padding) followed by datalen zero bytes. */
static uint8_t *frame(const char *json, size_t datalen, size_t *len)
{
    size_t n = strlen(json);
    uint8_t *buf = calloc(1, 8 + n + datalen);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, n);
    *len = 8 + n + datalen;
    return buf;
}

/* Parses json framed with datalen bytes of data; returns the code and leaves the message. */
static int parse_json(const char *json, size_t datalen, ms__st_file *f, char *err)
{
    size_t len;
    uint8_t *buf = frame(json, datalen, &len);
    err[0] = '\0';
    int rc = ms__st_parse(buf, len, len, f, err, MS__ERRLEN);
    free(buf);
    return rc;
}

static void expect_error(const char *json, size_t datalen, int code, const char *needle)
{
    ms__st_file f;
    char err[MS__ERRLEN];
    int rc = parse_json(json, datalen, &f, err);
    if (rc != code || !strstr(err, needle))
        print_error("header %s: got %d \"%s\", expected %d with \"%s\"\n", json, rc, err, code,
                    needle);
    assert_int_equal(rc, code);
    assert_non_null(strstr(err, needle));
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void test_write_then_parse(void **state)
{
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1.5f, 0.25f, 1e30f}, c = 42;
    ms__st_out_tensor t[4] = {
        {.name = "layer.0.weight", .rank = 2, .shape = {2, 3}, .data = a},
        {.name = "layer.0.bias", .rank = 1, .shape = {3}, .data = b},
        {.name = "scalar", .rank = 0, .data = &c},
        {.name = "empty", .rank = 2, .shape = {0, 5}, .data = NULL},
    };
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
    assert_int_equal(ms__st_write_f32(path, t, 4, err, sizeof err), 0);

    size_t len;
    uint8_t *buf = read_all(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | buf[i];
    assert_int_equal(n % 8, 0);
    assert_int_equal(len, 8 + n + (6 + 3 + 1) * 4);
    assert_int_equal(buf[8], '{');
    assert_int_equal(buf[8 + n - 1] == ' ' || buf[8 + n - 1] == '}', 1);

    ms__st_file f;
    assert_int_equal(ms__st_parse(buf, len, len, &f, err, sizeof err), 0);
    assert_int_equal(f.ntensors, 4);
    assert_int_equal(f.data_start, 8 + n);
    assert_int_equal(f.data_len, 40);
    /* Order kept, offsets consecutive. */
    assert_string_equal(f.tensors[0].name, "layer.0.weight");
    assert_string_equal(f.tensors[3].name, "empty");
    const ms__st_tensor *w = ms__st_find(&f, "layer.0.weight");
    const ms__st_tensor *bias = ms__st_find(&f, "layer.0.bias");
    const ms__st_tensor *s = ms__st_find(&f, "scalar");
    const ms__st_tensor *e = ms__st_find(&f, "empty");
    assert_non_null(w);
    assert_non_null(bias);
    assert_non_null(s);
    assert_non_null(e);
    assert_null(ms__st_find(&f, "nothing"));
    assert_int_equal(w->dtype, MS_FLOAT32);
    assert_int_equal(w->rank, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(w->begin, 0);
    assert_int_equal(w->end, 24);
    assert_int_equal(bias->begin, 24);
    assert_int_equal(bias->end, 36);
    assert_int_equal(s->rank, 0);
    assert_int_equal(s->end - s->begin, 4);
    assert_int_equal(e->shape[0], 0);
    assert_int_equal(e->end, e->begin);
    assert_memory_equal(buf + f.data_start + w->begin, a, sizeof a);
    assert_memory_equal(buf + f.data_start + bias->begin, b, sizeof b);
    assert_memory_equal(buf + f.data_start + s->begin, &c, sizeof c);
    ms__st_free(&f);
    ms__st_free(&f); /* harmless twice: zeroed */

    /* Only the header is needed to parse. */
    assert_int_equal(ms__st_parse(buf, 8 + n, len, &f, err, sizeof err), 0);
    assert_int_equal(f.ntensors, 4);
    ms__st_free(&f);
    /* Less than the header: the caller must read more. */
    assert_int_equal(ms__st_parse(buf, 8 + n - 1, len, &f, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__st_parse(buf, 4, len, &f, err, sizeof err), MS_E_INVAL);
    /* The file cut short: data ranges beyond it. */
    assert_int_equal(ms__st_parse(buf, len - 4, len - 4, &f, err, sizeof err), MS_E_WEIGHTS);
    assert_non_null(strstr(err, "\"scalar\""));
    free(buf);
}

static void test_writer_errors(void **state)
{
    (void)state;
    float a[2] = {1, 2};
    char err[MS__ERRLEN], path[128];
    ms__st_out_tensor dup[2] = {
        {.name = "x", .rank = 1, .shape = {2}, .data = a},
        {.name = "x", .rank = 1, .shape = {2}, .data = a},
    };
    snprintf(path, sizeof path, "%s/dup.safetensors", tmpdir);
    assert_int_equal(ms__st_write_f32(path, dup, 2, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "\"x\""));
    ms__st_out_tensor neg = {.name = "y", .rank = 1, .shape = {-2}, .data = a};
    assert_int_equal(ms__st_write_f32(path, &neg, 1, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__st_write_f32("/nonexistent-dir/x.safetensors", dup, 1, err, sizeof err),
                     MS_E_IO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.safetensors"));
}

static void test_framing(void **state)
{
    (void)state;
    ms__st_file f;
    char err[MS__ERRLEN];
    uint8_t small[5] = {1, 2, 3, 4, 5};
    assert_int_equal(ms__st_parse(small, 5, 5, &f, err, sizeof err), MS_E_WEIGHTS);
    assert_non_null(strstr(err, "at least 8"));

    /* "safetens" read as a length: far beyond the file. */
    uint8_t text[1024];
    memset(text, 'x', sizeof text);
    memcpy(text, "safetensors?", 12);
    assert_int_equal(ms__st_parse(text, sizeof text, sizeof text, &f, err, sizeof err),
                     MS_E_WEIGHTS);
    assert_non_null(strstr(err, "is larger than the file (1024 bytes)"));

    /* A header length within a (huge) file but over the limit. */
    uint8_t big[8] = {0, 0, 0, 0x10, 0, 0, 0, 0}; /* 256 MiB */
    assert_int_equal(ms__st_parse(big, 8, (uint64_t)1 << 40, &f, err, sizeof err), MS_E_WEIGHTS);
    assert_non_null(strstr(err, "limit"));
}

static void test_bad_headers(void **state)
{
    (void)state;
    expect_error("{not json", 0, MS_E_WEIGHTS, "not JSON");
    expect_error("", 0, MS_E_WEIGHTS, "not JSON");
    expect_error("[1, 2]", 0, MS_E_WEIGHTS, "JSON object");
    expect_error("{\"a\": 3}", 0, MS_E_WEIGHTS, "\"a\"");
    expect_error("{\"a\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                 MS_E_WEIGHTS, "unknown dtype \"F33\"");
    expect_error("{\"a\": {\"dtype\": 7, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                 MS_E_WEIGHTS, "dtype");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, MS_E_WEIGHTS,
                 "shape");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
                 MS_E_WEIGHTS, "shape[0]");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
                 MS_E_WEIGHTS, "shape[0]");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                 "\"data_offsets\": [0, 4]}}",
                 4, MS_E_WEIGHTS, "rank 9");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
                 MS_E_WEIGHTS, "data_offsets");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
                 MS_E_WEIGHTS, "data_offsets");
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", 4,
                 MS_E_WEIGHTS, "end before");
    /* Offsets out of range: the data section has 4 bytes. */
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4,
                 MS_E_WEIGHTS, "beyond the data section (4 bytes");
    /* Length mismatch: 2 floats need 8 bytes. */
    expect_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8,
                 MS_E_WEIGHTS, "hold 4 bytes, expected 8 (F32 [2])");
    expect_error("{\"a\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8,
                 MS_E_WEIGHTS, "expected 6");
    /* Shape whose byte count overflows. */
    expect_error("{\"a\": {\"dtype\": \"F64\", \"shape\": [4294967296, 4294967296], "
                 "\"data_offsets\": [0, 8]}}",
                 8, MS_E_WEIGHTS, "too large");
    /* Duplicate names. */
    expect_error("{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, "
                 "\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}",
                 1, MS_E_WEIGHTS, "not JSON");
    /* __metadata__ must be an object of strings. */
    expect_error("{\"__metadata__\": [1]}", 0, MS_E_WEIGHTS, "__metadata__");
    expect_error("{\"__metadata__\": {\"format\": 1}}", 0, MS_E_WEIGHTS, "\"format\"");
}

static void test_good_headers(void **state)
{
    (void)state;
    ms__st_file f;
    char err[MS__ERRLEN];
    /* Empty, metadata only, padded with spaces. */
    assert_int_equal(parse_json("{}", 0, &f, err), 0);
    assert_int_equal(f.ntensors, 0);
    ms__st_free(&f);
    assert_int_equal(parse_json("{\"__metadata__\": {\"format\": \"pt\"}}      ", 0, &f, err), 0);
    assert_int_equal(f.ntensors, 0);
    ms__st_free(&f);
    /* Overlapping ranges are allowed by the format; dtypes modelshare does not know are kept. */
    assert_int_equal(
        parse_json("{\"__metadata__\": {}, "
                   "\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                   "\"b\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [0, 8]}, "
                   "\"c\": {\"dtype\": \"U16\", \"shape\": [2, 2], \"data_offsets\": [0, 8]}, "
                   "\"d\": {\"dtype\": \"F4\", \"shape\": [4], \"data_offsets\": [2, 4]}}",
                   8, &f, err),
        0);
    assert_int_equal(f.ntensors, 4);
    assert_int_equal(ms__st_find(&f, "a")->dtype, MS_FLOAT32);
    assert_int_equal(ms__st_find(&f, "b")->dtype, MS_INT64);
    assert_int_equal(ms__st_find(&f, "b")->rank, 0);
    assert_int_equal(ms__st_find(&f, "c")->dtype, 0);
    assert_int_equal(ms__st_find(&f, "d")->begin, 2);
    ms__st_free(&f);
    /* Unused bytes after the last tensor are tolerated. */
    assert_int_equal(
        parse_json("{\"a\": {\"dtype\": \"BOOL\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 64,
                   &f, err),
        0);
    assert_int_equal(f.data_len, 64);
    ms__st_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_then_parse), cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_framing),          cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_good_headers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
