/* Memory budgets: the --memory text, and the admission plan (LRU eviction, waiting). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/common/util.h"
#include "../../src/daemon/budget.h"
#include "modelshare.h"

#define MIB (1ull << 20)

static void test_budgets_parse(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__budgets b;
    ms__budgets_init(&b);
    assert_int_equal(ms__budgets_parse(&b, "host=16GiB,cuda:1=50%,cuda=1GB", err, sizeof err), 0);
    ms__budget_dev *host = ms__budgets_get(&b, "host");
    assert_true(host->configured);
    assert_int_equal(ms__budget_bytes(host), 16ull << 30);
    ms__budget_dev *c1 = ms__budgets_get(&b, "cuda:1");
    assert_true(c1->configured);
    assert_int_equal(ms__budget_bytes(c1), 0); /* 50% of a total not known yet */
    c1->total_bytes = 80ull << 30;
    assert_int_equal(ms__budget_bytes(c1), 40ull << 30);
    assert_int_equal(ms__budget_bytes(ms__budgets_get(&b, "cuda:0")), 1000000000ull);
    /* Defaults for devices not named: 90% of a GPU, 80% of the host. */
    ms__budget_dev *c2 = ms__budgets_get(&b, "cuda:2");
    assert_false(c2->configured);
    c2->total_bytes = 1000;
    assert_int_equal(ms__budget_bytes(c2), 900);
    ms__budgets_init(&b);
    ms__budget_dev *h = ms__budgets_get(&b, "host");
    h->total_bytes = 1000;
    assert_int_equal(ms__budget_bytes(h), 800);

    assert_string_equal(ms__budget_device("cpu"), "host");
    assert_string_equal(ms__budget_device("cuda:3"), "cuda:3");

    ms__budgets_init(&b);
    assert_int_equal(ms__budgets_parse(&b, "gpu=1GiB", err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "DEVICE host or cuda:N"));
    assert_non_null(strstr(err, "\"gpu=1GiB\""));
    ms__budgets_init(&b);
    assert_int_equal(ms__budgets_parse(&b, "host=lots", err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "host: expected a size"));
    ms__budgets_init(&b);
    assert_int_equal(ms__budgets_parse(&b, "host=1GiB,host=2GiB", err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "given twice"));
    ms__budgets_init(&b);
    assert_int_equal(ms__budgets_parse(&b, "cuda:64=1GiB", err, sizeof err), MS_E_INVAL);
    ms__budgets_init(&b);
    assert_int_equal(ms__budgets_parse(&b, "", err, sizeof err), MS_E_INVAL);
}

static ms__holder holder(uint64_t mib, int64_t last_used, bool idle, bool unloading)
{
    return (ms__holder){
        .bytes = mib * MIB, .last_used_ns = last_used, .idle = idle, .unloading = unloading};
}

static void test_plan_fits_and_never(void **state)
{
    (void)state;
    ms__holder h[2] = {holder(100, 1, false, false), holder(50, 2, true, false)};
    bool ev[2];
    uint64_t free_now;
    assert_int_equal(ms__admit_plan(300 * MIB, 150 * MIB, h, 2, ev, &free_now), MS__ADMIT_FITS);
    assert_int_equal(free_now, 150 * MIB);
    assert_false(ev[0] || ev[1]);
    assert_int_equal(ms__admit_plan(300 * MIB, 301 * MIB, h, 2, ev, NULL), MS__ADMIT_NEVER);
    /* An unknown budget (0) is not enforced. */
    assert_int_equal(ms__admit_plan(0, 1ull << 50, h, 2, ev, NULL), MS__ADMIT_FITS);
}

static void test_plan_evicts_lru_only_as_needed(void **state)
{
    (void)state;
    /* 4 idle models of 60 MiB used at times 40, 10, 30, 20 and one leased: 300 used of 320. */
    ms__holder h[5] = {holder(60, 40, true, false), holder(60, 10, true, false),
                       holder(60, 30, true, false), holder(60, 20, true, false),
                       holder(60, 5, false, false)};
    bool ev[5];
    /* 100 MiB: 20 free, so two must go: the least recently used (times 10 and 20). */
    assert_int_equal(ms__admit_plan(320 * MIB, 100 * MIB, h, 5, ev, NULL), MS__ADMIT_EVICT);
    assert_false(ev[0]);
    assert_true(ev[1]);
    assert_false(ev[2]);
    assert_true(ev[3]);
    assert_false(ev[4]); /* leased, although least recently used of all */
    /* 30 MiB: one is enough. */
    assert_int_equal(ms__admit_plan(320 * MIB, 30 * MIB, h, 5, ev, NULL), MS__ADMIT_EVICT);
    assert_true(ev[1]);
    assert_false(ev[0] || ev[2] || ev[3] || ev[4]);
}

static void test_plan_waits(void **state)
{
    (void)state;
    bool ev[3];
    /* Evicting every idle model would not be enough: none is evicted, the load waits. */
    ms__holder h[3] = {holder(100, 1, true, false), holder(150, 2, false, false),
                       holder(40, 3, false, false)};
    assert_int_equal(ms__admit_plan(300 * MIB, 200 * MIB, h, 3, ev, NULL), MS__ADMIT_WAIT);
    assert_false(ev[0] || ev[1] || ev[2]);
    /* An unload in progress will return enough: wait for it, evict nothing more. */
    ms__holder u[3] = {holder(100, 1, true, false), holder(150, 2, false, true),
                       holder(40, 3, false, false)};
    assert_int_equal(ms__admit_plan(300 * MIB, 150 * MIB, u, 3, ev, NULL), MS__ADMIT_WAIT);
    assert_false(ev[0] || ev[1] || ev[2]);
    /* Unloading plus one eviction. */
    assert_int_equal(ms__admit_plan(300 * MIB, 250 * MIB, u, 3, ev, NULL), MS__ADMIT_EVICT);
    assert_true(ev[0]);
    assert_false(ev[1] || ev[2]);
}

/* Over budget once measured: idle holders go, least recently used first, until it is not; those
 * unloading already do not count; with too few idle ones, every idle one goes. */
static void test_over_budget_evicts_lru_until_within(void **state)
{
    (void)state;
    bool evict[5];
    ms__holder h[5] = {holder(100, 30, true, false), holder(100, 10, true, false),
                       holder(100, 20, true, false), holder(100, 5, false, false),
                       holder(100, 1, true, true)};
    /* 400 used (the unloading one aside) of 250: the two oldest idle ones (10, 20) go. */
    assert_int_equal(ms__over_plan(250 * MIB, h, 5, evict), 2);
    assert_true(evict[1] && evict[2]);
    assert_false(evict[0] || evict[3] || evict[4]);
    /* Within budget: nothing. No budget: nothing. */
    assert_int_equal(ms__over_plan(400 * MIB, h, 5, evict), 0);
    assert_int_equal(ms__over_plan(0, h, 5, evict), 0);
    /* Only the leased one would be left: every idle one goes, and that is all there is. */
    assert_int_equal(ms__over_plan(50 * MIB, h, 5, evict), 3);
    assert_false(evict[3]);
}

static void test_bytes_str(void **state)
{
    (void)state;
    char buf[32];
    ms__bytes_str(512, buf, sizeof buf);
    assert_string_equal(buf, "512 B");
    ms__bytes_str(3ull << 29, buf, sizeof buf);
    assert_string_equal(buf, "1.5 GiB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budgets_parse),
        cmocka_unit_test(test_plan_fits_and_never),
        cmocka_unit_test(test_plan_evicts_lru_only_as_needed),
        cmocka_unit_test(test_plan_waits),
        cmocka_unit_test(test_over_budget_evicts_lru_until_within),
        cmocka_unit_test(test_bytes_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
