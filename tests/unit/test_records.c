/* Data-plane records (records.h): a good request and response, and every rejection of the
 * decoders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/common/records.h"
#include "../../src/common/util.h"

#define CAP (16ull << 20)

/* float32 [8, 1024] where tensors start, output room 32 KiB right after it. */
static ms__req good_req(void)
{
    ms__req r;
    memset(&r, 0, sizeof r);
    r.magic = MS__REQ_MAGIC;
    r.dtype = MS_FLOAT32;
    r.rank = 2;
    r.id = 77;
    r.shape[0] = 8;
    r.shape[1] = 1024;
    r.in_off = MS__ARENA_DATA;
    r.in_len = 8 * 1024 * 4;
    r.out_off = r.in_off + r.in_len;
    r.out_cap = 32768;
    return r;
}

/* The input in a linked arena: its own bounds, and no overlap with the output across arenas. */
static void test_req_linked(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    uint64_t linked[MS__ARENA_LINKS] = {0};
    linked[1] = MS__ARENA_MIN; /* arena 2: 8 MiB, smaller than the own 16 MiB */
    ms__req r = good_req(), out;
    r.in_arena = 2;
    r.in_link = 5;
    r.out_off = r.in_off; /* the same offsets, in another arena: fine */
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, linked, &out, err, sizeof err), 0);
    assert_int_equal(out.in_arena, 2);
    /* Inside the own arena but past the linked one's end. */
    r.in_off = MS__ARENA_MIN - 64;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, linked, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    assert_non_null(strstr(err, "expected a range inside the arena's tensor space"));
    r = good_req();
    r.in_arena = 1; /* not linked */
    r.in_link = 5;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, linked, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    assert_non_null(strstr(err, "input arena 1: expected an arena linked"));
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, NULL, &out, err, sizeof err), MS_E_PROTOCOL);
    r.in_arena = MS__ARENA_LINKS + 1;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, linked, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    r = good_req();
    r.in_link = 5; /* a link named with the own arena */
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, linked, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    r = good_req();
    r.reserved = 1;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, linked, &out, err, sizeof err),
                     MS_E_PROTOCOL);
}

static ms__resp good_resp(void)
{
    ms__resp r;
    memset(&r, 0, sizeof r);
    r.magic = MS__RESP_MAGIC;
    r.status = 0;
    r.dtype = MS_FLOAT32;
    r.rank = 2;
    r.id = 77;
    r.shape[0] = 8;
    r.shape[1] = 10;
    r.out_len = 8 * 10 * 4;
    return r;
}

static void test_req_good(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__req r = good_req(), out;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, NULL, &out, err, sizeof err), 0);
    assert_memory_equal(&r, &out, sizeof r);

    /* Rank 0 (a scalar), input at the very end of the arena, empty output room. */
    r = good_req();
    r.rank = 0;
    r.shape[0] = r.shape[1] = 0;
    r.in_len = 4;
    r.in_off = CAP - 4;
    r.out_off = MS__ARENA_DATA;
    r.out_cap = 0;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, NULL, &out, err, sizeof err), 0);

    /* Zero rows: empty input anywhere in range. */
    r = good_req();
    r.shape[0] = 0;
    r.in_len = 0;
    r.in_off = r.out_off; /* empty ranges do not overlap */
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, NULL, &out, err, sizeof err), 0);

    /* Unaligned buffer: the decoder copies. */
    uint8_t raw[sizeof(ms__req) + 1];
    r = good_req();
    memcpy(raw + 1, &r, sizeof r);
    assert_int_equal(ms__req_decode(raw + 1, sizeof r, CAP, NULL, &out, err, sizeof err), 0);
}

static void expect_req(ms__req r, uint64_t cap, int code, const char *needle)
{
    char err[MS__ERRLEN] = "";
    ms__req out;
    memset(&out, 0x5a, sizeof out);
    ms__req untouched = out;
    int rc = ms__req_decode(&r, sizeof r, cap, NULL, &out, err, sizeof err);
    if (rc != code)
        fail_msg("expected %s (\"%s\"), got %s: %s", ms_errname(code), needle, ms_errname(rc), err);
    if (strstr(err, needle) == NULL)
        fail_msg("expected \"%s\" in the message, got \"%s\"", needle, err);
    assert_memory_equal(&out, &untouched, sizeof out);
}

static void test_req_rejections(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__req r = good_req(), out;
    assert_int_equal(ms__req_decode(&r, sizeof r - 1, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    assert_non_null(strstr(err, "request record of"));
    assert_int_equal(ms__req_decode(&r, sizeof r + 1, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    assert_int_equal(ms__req_decode(NULL, sizeof r, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);

    r = good_req();
    r.magic = MS__RESP_MAGIC;
    expect_req(r, CAP, MS_E_PROTOCOL, "magic");
    r = good_req();
    r.flags = 8; /* bits 1, 2 and 4 are known (records.h) */
    expect_req(r, CAP, MS_E_PROTOCOL, "flags");
    r = good_req();
    r.flags = MS__REQ_CALL; /* a call's input is uint8 of rank 1 */
    expect_req(r, CAP, MS_E_PROTOCOL, "uint8 input of rank 1");
    r.dtype = MS_UINT8;
    r.rank = 1;
    r.shape[0] = 100;
    r.shape[1] = 0;
    r.in_len = 100;
    r.out_off = r.in_off + 128;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, NULL, &out, err, sizeof err), 0);
    assert_int_equal(out.flags, MS__REQ_CALL);
    r = good_req();
    r.dtype = 0;
    expect_req(r, CAP, MS_E_DTYPE, "dtype");
    r.dtype = 11;
    expect_req(r, CAP, MS_E_DTYPE, "got 11");
    r = good_req();
    r.rank = 9;
    expect_req(r, CAP, MS_E_SHAPE, "rank from 0 to 8");
    r.rank = 0xffffffffu;
    expect_req(r, CAP, MS_E_SHAPE, "rank");
    r = good_req();
    r.shape[1] = -1;
    expect_req(r, CAP, MS_E_SHAPE, "dimension 1 is -1");
    r = good_req();
    r.shape[2] = 5; /* beyond the rank */
    expect_req(r, CAP, MS_E_PROTOCOL, "unused dimension 2");
    r = good_req();
    r.shape[0] = INT64_MAX;
    r.shape[1] = INT64_MAX;
    expect_req(r, CAP, MS_E_TOO_LARGE, "overflows");
    r = good_req();
    r.rank = 1;
    r.shape[1] = 0;
    r.shape[0] = (int64_t)(SIZE_MAX / 2); /* numel fits, bytes do not */
    expect_req(r, CAP, MS_E_TOO_LARGE, "overflows");
    r = good_req();
    r.in_len -= 4;
    expect_req(r, CAP, MS_E_PROTOCOL, "expected an input of 32768 bytes for float32 [8, 1024]");

    /* Ranges. */
    r = good_req();
    r.in_off = 0; /* over the header */
    expect_req(r, CAP, MS_E_PROTOCOL, "inside the arena");
    r = good_req();
    r.in_off = MS__ARENA_DATA - 4; /* over the rings */
    expect_req(r, CAP, MS_E_PROTOCOL, "inside the arena");
    r = good_req();
    r.in_off = MS__ARENA_HEADER; /* in the first ring set */
    expect_req(r, CAP, MS_E_PROTOCOL, "inside the arena");
    r = good_req();
    r.in_off = CAP - 4; /* runs past the end */
    expect_req(r, CAP, MS_E_PROTOCOL, "inside the arena");
    r = good_req();
    r.in_off = UINT64_MAX - 8; /* off + len wraps */
    expect_req(r, CAP, MS_E_PROTOCOL, "inside the arena");
    r = good_req();
    r.out_off = UINT64_MAX - 100;
    expect_req(r, CAP, MS_E_PROTOCOL, "output room");
    r = good_req();
    r.out_cap = UINT64_MAX;
    expect_req(r, CAP, MS_E_TOO_LARGE, "output room");
    r = good_req();
    r.out_off = CAP - 100;
    expect_req(r, CAP, MS_E_PROTOCOL, "output room");
    r = good_req();
    r.rank = 1;
    r.shape[0] = (int64_t)(CAP / 4); /* a whole arena's worth of input */
    r.shape[1] = 0;
    r.in_len = CAP;
    expect_req(r, CAP, MS_E_TOO_LARGE, "room");

    /* Alignment to the dtype's size. */
    r = good_req();
    r.in_off += 2;
    r.out_off += 4;
    expect_req(r, CAP, MS_E_PROTOCOL, "aligned to 4");
    r = good_req();
    r.out_off += 1;
    expect_req(r, CAP, MS_E_PROTOCOL, "aligned to 4");

    /* Overlap. */
    r = good_req();
    r.out_off = r.in_off + r.in_len - 4;
    expect_req(r, CAP, MS_E_PROTOCOL, "overlap");
    r = good_req();
    r.out_off = r.in_off;
    expect_req(r, CAP, MS_E_PROTOCOL, "overlap");
    r = good_req();
    r.out_off = r.in_off - 8;
    r.in_off = r.out_off + 8;
    r.out_off = MS__ARENA_DATA;
    r.in_off = MS__ARENA_DATA + 16; /* input inside the output room */
    expect_req(r, CAP, MS_E_PROTOCOL, "overlap");

    /* Deadline, arena size. */
    r = good_req();
    r.deadline_ns = -1;
    expect_req(r, CAP, MS_E_PROTOCOL, "deadline");
    r = good_req();
    expect_req(r, 100, MS_E_PROTOCOL, "arena of");
    expect_req(r, MS__ARENA_MAX + 1, MS_E_PROTOCOL, "arena of");
}

static void test_resp(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__resp r = good_resp(), out;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), 0);
    assert_memory_equal(&r, &out, sizeof r);

    /* An error response: status, message; shape need not describe an output. */
    memset(&r, 0, sizeof r);
    r.magic = MS__RESP_MAGIC;
    r.status = MS_E_SHAPE;
    snprintf(r.msg, sizeof r.msg, "expected float32 [N, 1024], got float32 [8, 1000]");
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), 0);
    assert_string_equal(out.msg, r.msg);

    /* Room too small: status TOO_LARGE with the needed size. */
    r = good_resp();
    r.status = MS_E_TOO_LARGE;
    r.out_len = 1 << 20;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), 0);

    r = good_resp();
    assert_int_equal(ms__resp_decode(&r, sizeof r - 1, &out, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "response record"));
    r.magic = MS__REQ_MAGIC;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "magic"));
    r = good_resp();
    r.status = -999;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "status"));
    r.status = 3;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    /* An object answer: a pickle, uint8 of rank 1 and nothing else. */
    r = good_resp();
    r.status = MS__RESP_OBJECT;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "an object answer: expected a uint8 output of rank 1"));
    r.dtype = MS_UINT8;
    r.rank = 1;
    memset(r.shape, 0, sizeof r.shape);
    r.shape[0] = 20;
    r.out_len = 20;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), 0);
    assert_int_equal(out.status, MS__RESP_OBJECT);
    r.out_len = 21;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    r = good_resp();
    memset(r.msg, 'x', sizeof r.msg);
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "NUL-terminated"));
    r = good_resp();
    r.dtype = 42;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_DTYPE);
    r = good_resp();
    r.rank = 9;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_SHAPE);
    r = good_resp();
    r.shape[0] = -3;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_SHAPE);
    r = good_resp();
    r.shape[5] = 1;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    r = good_resp();
    r.out_len = 4;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "expected an output of 320 bytes"));
    r = good_resp();
    r.shape[0] = INT64_MAX;
    r.shape[1] = 3;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_TOO_LARGE);
    r = good_resp();
    r.status = MS_E_BACKEND;
    r.rank = 100;
    assert_int_equal(ms__resp_decode(&r, sizeof r, &out, err, sizeof err), MS_E_PROTOCOL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_good),
        cmocka_unit_test(test_req_rejections),
        cmocka_unit_test(test_req_linked),
        cmocka_unit_test(test_resp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
