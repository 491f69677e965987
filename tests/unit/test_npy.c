/* .npy files: round trips through the writer and reader, hand-made headers good and broken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/npy.h"
#include "../../src/common/util.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/ms_test_npy_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A version-1.0 (or major.0) file image: prefix, dict text, datalen zero bytes. */
static uint8_t *image(int major, const char *dict, size_t datalen, size_t *len)
{
    size_t n = strlen(dict), pre = major == 1 ? 10 : 12;
    uint8_t *buf = calloc(1, pre + n + datalen);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + pre, dict, n);
    *len = pre + n + datalen;
    return buf;
}

static int parse_dict(const char *dict, ms__npy_header *h, char *err)
{
    size_t len;
    uint8_t *buf = image(1, dict, 0, &len);
    err[0] = '\0';
    int rc = ms__npy_parse(buf, len, h, err, MS__ERRLEN);
    free(buf);
    return rc;
}

static void expect_error(const char *dict, int code, const char *needle)
{
    ms__npy_header h;
    char err[MS__ERRLEN];
    int rc = parse_dict(dict, &h, err);
    if (rc != code || !strstr(err, needle))
        print_error("dict %s: got %d \"%s\", expected %d with \"%s\"\n", dict, rc, err, code,
                    needle);
    assert_int_equal(rc, code);
    assert_non_null(strstr(err, needle));
}

static void round_trip(int dtype, int rank, const int64_t *shape, const void *data, size_t nbytes)
{
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/rt.npy", tmpdir);
    assert_int_equal(ms__npy_write(path, dtype, rank, shape, data, err, sizeof err), 0);
    ms__npy_header h;
    void *back = NULL;
    assert_int_equal(ms__npy_read(path, &h, &back, err, sizeof err), 0);
    assert_int_equal(h.dtype, dtype);
    assert_int_equal(h.rank, rank);
    for (int i = 0; i < rank; i++)
        assert_int_equal(h.shape[i], shape[i]);
    assert_int_equal(h.nbytes, nbytes);
    assert_int_equal(h.data_offset % 64, 0);
    if (nbytes)
        assert_memory_equal(back, data, nbytes);
    free(back);
}

static void test_round_trip(void **state)
{
    (void)state;
    float f[12];
    for (int i = 0; i < 12; i++)
        f[i] = (float)i * 0.5f - 2.0f;
    int64_t s2[2] = {3, 4};
    round_trip(MS_FLOAT32, 2, s2, f, sizeof f);
    int64_t l[5] = {-1, 0, 1, INT64_MAX, INT64_MIN};
    int64_t s1[1] = {5};
    round_trip(MS_INT64, 1, s1, l, sizeof l);
    uint8_t u = 200;
    round_trip(MS_UINT8, 0, NULL, &u, 1);
    int64_t s0[3] = {2, 0, 7};
    round_trip(MS_FLOAT64, 3, s0, NULL, 0);
    int16_t i16[4] = {1, -2, 3, -4};
    int64_t s4[4] = {1, 1, 2, 2};
    round_trip(MS_INT16, 4, s4, i16, sizeof i16);
    uint8_t bools[2] = {1, 0};
    int64_t sb[1] = {2};
    round_trip(MS_BOOL, 1, sb, bools, 2);
    uint16_t half[2] = {0x3c00, 0xc000};
    round_trip(MS_FLOAT16, 1, sb, half, sizeof half);
}

static void test_written_header_text(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    snprintf(path, sizeof path, "%s/h.npy", tmpdir);
    int64_t shape[1] = {5};
    float data[5] = {0};
    assert_int_equal(ms__npy_write(path, MS_FLOAT32, 1, shape, data, err, sizeof err), 0);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char buf[128];
    assert_int_equal(fread(buf, 1, 128, fp), 128);
    fclose(fp);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
    assert_int_equal((uint8_t)buf[8] | (uint8_t)buf[9] << 8, 118);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }";
    assert_memory_equal(buf + 10, want, strlen(want));
    assert_int_equal(buf[127], '\n');

    assert_int_equal(ms__npy_write(path, MS_BFLOAT16, 1, shape, data, err, sizeof err), MS_E_DTYPE);
    assert_int_equal(
        ms__npy_write("/nonexistent-dir/x.npy", MS_FLOAT32, 1, shape, data, err, sizeof err),
        MS_E_IO);
}

static void test_good_headers(void **state)
{
    (void)state;
    ms__npy_header h;
    char err[MS__ERRLEN];
    assert_int_equal(
        parse_dict("{'shape': (8, 1024), 'fortran_order': False, 'descr': '<f4'}", &h, err), 0);
    assert_int_equal(h.dtype, MS_FLOAT32);
    assert_int_equal(h.rank, 2);
    assert_int_equal(h.shape[0], 8);
    assert_int_equal(h.shape[1], 1024);
    assert_int_equal(h.nbytes, 8 * 1024 * 4);
    assert_int_equal(h.data_offset, 10 + strlen("{'shape': (8, 1024), 'fortran_order': False, "
                                                "'descr': '<f4'}"));
    assert_int_equal(
        parse_dict("{\"descr\":\"=f8\",\"fortran_order\":False,\"shape\":(5,)}   \n", &h, err), 0);
    assert_int_equal(h.dtype, MS_FLOAT64);
    assert_int_equal(h.rank, 1);
    assert_int_equal(h.shape[0], 5);
    assert_int_equal(parse_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (), }", &h, err),
                     0);
    assert_int_equal(h.dtype, MS_UINT8);
    assert_int_equal(h.rank, 0);
    assert_int_equal(h.nbytes, 1);
    assert_int_equal(
        parse_dict("{'descr': '|b1', 'fortran_order': False, 'shape': (3L, 2L), }", &h, err), 0);
    assert_int_equal(h.dtype, MS_BOOL);
    assert_int_equal(h.nbytes, 6);
    assert_int_equal(
        parse_dict("{'descr': '<i2', 'fortran_order': False, 'shape': (0, 4)}", &h, err), 0);
    assert_int_equal(h.nbytes, 0);
    const char *more[] = {"<f2", "<i4", "<i8", "|i1", ">i1", "<u1"};
    int dts[] = {MS_FLOAT16, MS_INT32, MS_INT64, MS_INT8, MS_INT8, MS_UINT8};
    for (size_t i = 0; i < 6; i++) {
        char dict[128];
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (2,), }",
                 more[i]);
        assert_int_equal(parse_dict(dict, &h, err), 0);
        assert_int_equal(h.dtype, dts[i]);
    }
    /* Versions 2.0 and 3.0 have a 4-byte header length. */
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
    for (int major = 2; major <= 3; major++) {
        size_t len;
        uint8_t *buf = image(major, dict, 24, &len);
        assert_int_equal(ms__npy_parse(buf, len, &h, err, sizeof err), 0);
        assert_int_equal(h.data_offset, 12 + strlen(dict));
        assert_int_equal(h.nbytes, 24);
        free(buf);
    }
}

static void test_bad_headers(void **state)
{
    (void)state;
    expect_error("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", MS_E_DTYPE,
                 "expected a little-endian dtype like '<f8', got '>f8'");
    expect_error("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", MS_E_DTYPE, "'<u4'");
    expect_error("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", MS_E_DTYPE, "'<c8'");
    expect_error("{'descr': 'f4', 'fortran_order': False, 'shape': (2,), }", MS_E_DTYPE, "'f4'");
    expect_error("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", MS_E_DTYPE,
                 "structured");
    expect_error("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", MS_E_INVAL,
                 "C order");
    expect_error("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", MS_E_INVAL,
                 "True or False");
    expect_error("{'descr': '<f4', 'fortran_order': False}", MS_E_INVAL, "no 'shape'");
    expect_error("{'descr': '<f4', 'shape': (1,)}", MS_E_INVAL, "no 'fortran_order'");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", MS_E_INVAL,
                 "'x'");
    expect_error("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
                 MS_E_INVAL, "repeated");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", MS_E_INVAL,
                 "dimension");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", MS_E_INVAL,
                 "tuple");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", MS_E_INVAL,
                 "',' or ')'");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
                 MS_E_SHAPE, "rank");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                 MS_E_SHAPE, "digits");
    expect_error("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
                 MS_E_SHAPE, "too large");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", MS_E_INVAL,
                 "only spaces");
    expect_error("{'descr': '<f4' 'fortran_order': False}", MS_E_INVAL, "',' or '}'");
    expect_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", MS_E_INVAL, "','");
    expect_error("'descr'", MS_E_INVAL, "'{'");
    expect_error("{'descr: '<f4'}", MS_E_INVAL, "':'");
    expect_error("", MS_E_INVAL, "'{'");

    ms__npy_header h;
    char err[MS__ERRLEN];
    uint8_t junk[16] = "PK\x03\x04 not npy";
    assert_int_equal(ms__npy_parse(junk, sizeof junk, &h, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "magic"));
    assert_int_equal(ms__npy_parse(junk, 3, &h, err, sizeof err), MS_E_INVAL);
    size_t len;
    uint8_t *buf = image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 0, &len);
    buf[6] = 4;
    assert_int_equal(ms__npy_parse(buf, len, &h, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "version 4.0"));
    buf[6] = 1;
    assert_int_equal(ms__npy_parse(buf, len - 1, &h, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "truncated"));
    buf[9] = 0xff; /* header length 65280 + ... over what is there */
    assert_int_equal(ms__npy_parse(buf, len, &h, err, sizeof err), MS_E_INVAL);
    free(buf);
    buf = image(2, "{}", 0, &len);
    buf[11] = 0x10; /* 256 MiB header */
    assert_int_equal(ms__npy_parse(buf, len, &h, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "limit"));
    free(buf);
}

static void test_read_errors(void **state)
{
    (void)state;
    char path[128], err[MS__ERRLEN];
    ms__npy_header h;
    void *data = NULL;
    snprintf(path, sizeof path, "%s/missing.npy", tmpdir);
    assert_int_equal(ms__npy_read(path, &h, &data, err, sizeof err), MS_E_IO);
    assert_non_null(strstr(err, "missing.npy"));
    assert_int_equal(ms__npy_read(tmpdir, &h, &data, err, sizeof err), MS_E_IO);

    /* Data cut short. */
    snprintf(path, sizeof path, "%s/short.npy", tmpdir);
    size_t len;
    uint8_t *buf =
        image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", 12, &len);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    free(buf);
    assert_int_equal(ms__npy_read(path, &h, &data, err, sizeof err), MS_E_IO);
    assert_non_null(strstr(err, "truncated"));
    assert_null(data);

    /* A header error keeps its code and names the file. */
    snprintf(path, sizeof path, "%s/big.npy", tmpdir);
    buf = image(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }\n", 16, &len);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    free(buf);
    assert_int_equal(ms__npy_read(path, &h, &data, err, sizeof err), MS_E_DTYPE);
    assert_non_null(strstr(err, "big.npy"));

    /* Header cut short. */
    snprintf(path, sizeof path, "%s/tiny.npy", tmpdir);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    fwrite("\x93NUMPY\x01\x00\x40\x00{'de", 1, 14, fp);
    fclose(fp);
    assert_int_equal(ms__npy_read(path, &h, &data, err, sizeof err), MS_E_IO);
    assert_non_null(strstr(err, "truncated"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_written_header_text),
        cmocka_unit_test(test_good_headers), cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_read_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
