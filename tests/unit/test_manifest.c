/* Manifests of several named tensors (manifest.h): a good one, every rejection of the decoder,
 * the list check, and the MS__REQ_MULTI record's own checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/common/manifest.h"
#include "../../src/common/records.h"
#include "../../src/common/util.h"

#define CAP (16ull << 20)

static const uint64_t caps[1 + MS__ARENA_LINKS] = {CAP, 0, MS__ARENA_MIN};

/* input_ids int64 [2, 8] and attention_mask int64 [2, 8] in the own arena, a list of 2 in
 * linked arena 2. */
static ms__manifest good(void)
{
    ms__manifest m;
    memset(&m, 0, sizeof m);
    m.magic = MS__MF_MAGIC;
    m.count = 3;
    m.form = MS__FORM_KWARGS;
    const char *names[] = {"input_ids", "attention_mask", "texts"};
    for (int i = 0; i < 3; i++) {
        ms__mf_entry *e = &m.e[i];
        memcpy(e->name, names[i], strlen(names[i]));
        e->dtype = MS_INT64;
        e->rank = 2;
        e->shape[0] = 2;
        e->shape[1] = 8;
        e->off = MS__ARENA_DATA + (uint64_t)i * 4096;
        e->len = 2 * 8 * 8;
    }
    m.e[2].dtype = MS_TEXT_UTF8;
    m.e[2].rank = 1;
    m.e[2].shape[1] = 0;
    m.e[2].arena = 2;
    m.e[2].len = 8 + 16 + 5;
    return m;
}

static int decode(const ms__manifest *m, size_t len, ms__manifest *out, char *err)
{
    unsigned char buf[MS__MF_BYTES_MAX + 64];
    ms__manifest c = *m;
    if (c.count > MS__MF_MAX)
        c.count = MS__MF_MAX; /* the entries there are; the header still says m->count */
    ms__manifest_encode(&c, buf);
    memcpy(buf + 4, &m->count, 4);
    return ms__manifest_decode(buf, len, caps, out, err, MS__ERRLEN);
}

static void test_good(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__manifest m = good(), out;
    assert_int_equal(decode(&m, ms__mf_bytes(3), &out, err), 0);
    assert_int_equal(out.count, 3);
    assert_string_equal(out.e[1].name, "attention_mask");
    assert_int_equal(out.e[2].arena, 2);
    /* Zero tensors is a manifest too (the worker refuses requests without rows elsewhere). */
    m.count = 0;
    assert_int_equal(decode(&m, ms__mf_bytes(0), &out, err), 0);
}

/* One field broken at a time: the error and a message that says what was expected. */
static void expect(ms__manifest m, size_t len, int code, const char *words)
{
    char err[MS__ERRLEN] = "";
    ms__manifest out;
    assert_int_equal(decode(&m, len, &out, err), code);
    if (strstr(err, words) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", words, err);
}

static void test_rejections(void **state)
{
    (void)state;
    size_t len = ms__mf_bytes(3);
    ms__manifest m = good();
    m.magic = 1;
    expect(m, len, MS_E_PROTOCOL, "magic");
    expect(good(), len - 1, MS_E_PROTOCOL, "bytes");
    expect(good(), 8, MS_E_PROTOCOL, "at least 16");
    m = good();
    m.count = 17;
    expect(m, ms__mf_bytes(16), MS_E_LIMIT, "at most 16");
    m = good();
    m.form = 7;
    expect(m, len, MS_E_PROTOCOL, "form");
    m = good();
    m.e[1].name[0] = '\0';
    expect(m, len, MS_E_PROTOCOL, "name of 1 to 31");
    m = good();
    memset(m.e[1].name, 'a', sizeof m.e[1].name); /* no NUL */
    expect(m, len, MS_E_PROTOCOL, "name of 1 to 31");
    m = good();
    m.e[1].name[0] = ' ';
    expect(m, len, MS_E_PROTOCOL, "[A-Za-z0-9_.:-]");
    m = good();
    memset(m.e[1].name, 0, sizeof m.e[1].name);
    memcpy(m.e[1].name, "input_ids", 9);
    expect(m, len, MS_E_PROTOCOL, "unique");
    m = good();
    m.e[1].name[20] = 'x'; /* a byte after the NUL */
    expect(m, len, MS_E_PROTOCOL, "NUL-padded");
    m = good();
    m.e[0].dtype = 11;
    expect(m, len, MS_E_DTYPE, "dtype");
    m = good();
    m.e[0].rank = 9;
    expect(m, len, MS_E_SHAPE, "rank");
    m = good();
    m.e[0].shape[0] = -1;
    expect(m, len, MS_E_SHAPE, "dims >= 0");
    m = good();
    m.e[0].shape[5] = 1;
    expect(m, len, MS_E_SHAPE, "0 past the rank");
    m = good();
    m.e[0].len = 1;
    expect(m, len, MS_E_PROTOCOL, "expected 128 bytes");
    m = good();
    m.e[0].shape[0] = INT64_MAX;
    expect(m, len, MS_E_TOO_LARGE, "overflows");
    m = good();
    m.e[0].off = 0;
    expect(m, len, MS_E_PROTOCOL, "tensor space");
    m = good();
    m.e[0].off = CAP - 8;
    expect(m, len, MS_E_PROTOCOL, "tensor space");
    m = good();
    m.e[0].off += 4;
    expect(m, len, MS_E_PROTOCOL, "aligned to 8");
    m = good();
    m.e[0].arena = 1; /* not linked */
    expect(m, len, MS_E_PROTOCOL, "arena");
    m = good();
    m.e[0].arena = 9;
    expect(m, len, MS_E_PROTOCOL, "arena");
    m = good();
    m.e[2].off = MS__ARENA_MIN - 8; /* inside the own arena, past the linked one */
    expect(m, len, MS_E_PROTOCOL, "tensor space");
    m = good();
    m.e[2].rank = 2;
    expect(m, len, MS_E_SHAPE, "a list: 1");
    m = good();
    m.e[2].len = 16; /* 2 items need 8 + 16 bytes at least */
    expect(m, len, MS_E_PROTOCOL, "at least 24 bytes");
    m = good();
    m.e[2].shape[0] = (int64_t)MS__TEXT_ITEMS_MAX + 1;
    expect(m, len, MS_E_LIMIT, "items");
    m = good();
    m.e[0].flags = 2;
    expect(m, len, MS_E_PROTOCOL, "flags 0 or 1");
}

static void test_text(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    /* 2 items: "abc" and "de". */
    unsigned char b[8 + 16 + 5];
    uint64_t v[3] = {2, 3, 2};
    memcpy(b, v, sizeof v);
    memcpy(b + 24, "abcde", 5);
    assert_int_equal(ms__text_check(b, sizeof b, 2, err, sizeof err), 0);
    assert_int_equal(ms__text_check(b, sizeof b, 3, err, sizeof err), MS_E_PROTOCOL);
    assert_int_equal(ms__text_check(b, sizeof b - 1, 2, err, sizeof err), MS_E_PROTOCOL);
    v[2] = 3; /* 6 bytes of items in 5 */
    memcpy(b, v, sizeof v);
    assert_int_equal(ms__text_check(b, sizeof b, 2, err, sizeof err), MS_E_PROTOCOL);
    v[1] = UINT64_MAX; /* a length that would wrap the sum */
    memcpy(b, v, sizeof v);
    assert_int_equal(ms__text_check(b, sizeof b, 2, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "runs past"));
    v[0] = 0;
    memcpy(b, v, 8);
    assert_int_equal(ms__text_check(b, 8, 0, err, sizeof err), 0);
}

/* The record of a request of several tensors: a uint8 manifest of rank 1, 16..2064 bytes. */
static void test_multi_record(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__req r, out;
    memset(&r, 0, sizeof r);
    r.magic = MS__REQ_MAGIC;
    r.flags = MS__REQ_MULTI | MS__REQ_OBJECT;
    r.dtype = MS_UINT8;
    r.rank = 1;
    r.shape[0] = (int64_t)ms__mf_bytes(2);
    r.in_len = ms__mf_bytes(2);
    r.in_off = MS__ARENA_DATA;
    r.out_off = MS__ARENA_DATA + 4096;
    r.out_cap = 1 << 20;
    assert_int_equal(ms__req_decode(&r, sizeof r, CAP, NULL, &out, err, sizeof err), 0);
    ms__req bad = r;
    bad.flags |= MS__REQ_CALL;
    assert_int_equal(ms__req_decode(&bad, sizeof bad, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    assert_non_null(strstr(err, "several tensors"));
    bad = r;
    bad.shape[0] = bad.in_len = ms__mf_bytes(17);
    assert_int_equal(ms__req_decode(&bad, sizeof bad, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    bad = r;
    bad.dtype = MS_FLOAT32;
    bad.shape[0] = (int64_t)ms__mf_bytes(2) / 4;
    assert_int_equal(ms__req_decode(&bad, sizeof bad, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);
    bad = r;
    bad.flags = 16; /* unknown */
    assert_int_equal(ms__req_decode(&bad, sizeof bad, CAP, NULL, &out, err, sizeof err),
                     MS_E_PROTOCOL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_multi_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
