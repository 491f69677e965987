/* Placement of instances on devices (src/daemon/placement.c) over fake device tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "modelshare.h"
#include "../../src/common/util.h"
#include "../../src/daemon/placement.h"

#define GIB (1ull << 30)
#define MIB (1ull << 20)

static void test_one_device_most_free(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__place_dev d[] = {
        {"cuda:0", 8 * GIB, 6 * GIB}, {"cuda:1", 8 * GIB, 1 * GIB}, {"cuda:2", 4 * GIB, 0}};
    int out[3] = {-1, -1, -1};
    assert_int_equal(ms__place(d, 3, 1 * GIB, 3, false, out, err, sizeof err), 0);
    /* all three on cuda:1 (7 GiB free), none split off */
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 1);
}

static void test_one_device_needs_room_for_all(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    /* cuda:0 has the most free, but not room for 2 x 3 GiB: cuda:1 holds them. */
    ms__place_dev d[] = {{"cuda:0", 16 * GIB, 11 * GIB}, {"cuda:1", 8 * GIB, 1 * GIB}};
    d[0].used = 10 * GIB + 512 * MIB; /* 5.5 GiB free */
    d[1].used = 1 * GIB;              /* 7 GiB free */
    int out[2];
    assert_int_equal(ms__place(d, 2, 3 * GIB, 2, false, out, err, sizeof err), 0);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 1);
    d[1].used = 3 * GIB; /* 5 GiB: neither holds 6 GiB */
    assert_int_equal(ms__place(d, 2, 3 * GIB, 2, false, out, err, sizeof err), MS_E_NO_MEMORY);
    assert_non_null(strstr(err, "no device has room for the model's 6.0 GiB"));
    assert_non_null(strstr(err, "cuda:0 5.5 GiB free of 16.0 GiB, cuda:1 5.0 GiB free of 8.0 GiB"));
}

static void test_spread_round_robin_on_ties(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__place_dev d[] = {{"cuda:0", 4 * GIB, 0}, {"cuda:1", 4 * GIB, 0}};
    int out[4];
    assert_int_equal(ms__place(d, 2, 1 * GIB, 4, true, out, err, sizeof err), 0);
    assert_int_equal(out[0], 0); /* tie: the first listed */
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 0);
    assert_int_equal(out[3], 1);
}

static void test_spread_follows_free_bytes(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    /* Round-robin, the freer first in each round: cuda:1 (6 GiB free) before cuda:0 (3). */
    ms__place_dev d[] = {{"cuda:0", 8 * GIB, 5 * GIB},
                         {"cuda:1", 8 * GIB, 2 * GIB},
                         {"cuda:2", 8 * GIB, 7 * GIB + 512 * MIB}};
    int out[5];
    int expect[5] = {1, 0, 1, 0, 1};
    assert_int_equal(ms__place(d, 2, 1 * GIB, 5, true, out, err, sizeof err), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(out[i], expect[i]);
    /* A device without room for one is skipped: cuda:2 (0.5 GiB free) never gets one. */
    assert_int_equal(ms__place(d, 3, 1 * GIB, 5, true, out, err, sizeof err), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(out[i], expect[i]);
    /* Once cuda:0 is full, cuda:1 takes the rest. */
    d[0].used = 7 * GIB;
    assert_int_equal(ms__place(d, 2, 1 * GIB, 3, true, out, err, sizeof err), 0);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 1);
}

static void test_spread_nothing_fits(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__place_dev d[] = {{"cuda:0", 2 * GIB, 0}, {"cuda:1", 2 * GIB, 1 * GIB}};
    int out[3] = {7, 7, 7};
    /* 1.5 GiB each: the first on cuda:0, the second has no room anywhere. */
    assert_int_equal(ms__place(d, 2, 3 * GIB / 2, 3, true, out, err, sizeof err), MS_E_NO_MEMORY);
    assert_non_null(strstr(err, "no device has room for instance 1 (1.5 GiB)"));
    assert_non_null(strstr(err, "cuda:0 512.0 MiB free of 2.0 GiB"));
    assert_int_equal(out[0], 7); /* untouched on failure */
}

static void test_explicit_list_and_unlimited(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    /* A budget of 0 is not enforced: freer than any other, still spread in turn with itself. */
    ms__place_dev d[] = {{"cpu", 0, 100 * GIB}, {"cuda:3", 1 * GIB, 0}};
    int out[2];
    assert_int_equal(ms__place(d, 2, 2 * GIB, 2, true, out, err, sizeof err), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 0); /* cuda:3 cannot hold 2 GiB */
    ms__place_dev one[] = {{"cuda:3", 1 * GIB, 0}};
    assert_int_equal(ms__place(one, 1, 1 * GIB, 1, true, out, err, sizeof err), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(ms__place(one, 1, 1 * GIB + 1, 1, true, out, err, sizeof err), MS_E_NO_MEMORY);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__place_dev d[] = {{"cuda:0", 1 * GIB, 0}};
    int out[1];
    assert_int_equal(ms__place(d, 0, 1, 1, true, out, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__place(d, 1, 1, 0, true, out, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__place(d, 1, 1, 65, true, out, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__place(NULL, 1, 1, 1, true, out, err, sizeof err), MS_E_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_device_most_free),
        cmocka_unit_test(test_one_device_needs_room_for_all),
        cmocka_unit_test(test_spread_round_robin_on_ties),
        cmocka_unit_test(test_spread_follows_free_bytes),
        cmocka_unit_test(test_spread_nothing_fits),
        cmocka_unit_test(test_explicit_list_and_unlimited),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
