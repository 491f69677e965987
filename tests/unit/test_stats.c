/* The worker's stats page (stats.h): histogram buckets, errors by code, adding pages up, and the
 * load's progress. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/common/stats.h"
#include "modelshare.h"

static void test_bounds(void **state)
{
    (void)state;
    assert_int_equal(ms__hist_rows_bound(0), 1);
    assert_int_equal(ms__hist_rows_bound(MS__HIST_ROWS_BUCKETS - 2), 1024);
    assert_int_equal(ms__hist_ns_bound(0), 10000);                                /* 10 us */
    assert_int_equal(ms__hist_ns_bound(1), 25000);                                /* 25 us */
    assert_int_equal(ms__hist_ns_bound(2), 50000);                                /* 50 us */
    assert_int_equal(ms__hist_ns_bound(3), 100000);                               /* 100 us */
    assert_int_equal(ms__hist_ns_bound(MS__HIST_NS_BUCKETS - 2), 10000000000ull); /* 10 s */
    for (int i = 1; i < MS__HIST_NS_BUCKETS - 1; i++)
        assert_true(ms__hist_ns_bound(i) > ms__hist_ns_bound(i - 1));
}

static void test_observations(void **state)
{
    (void)state;
    int fd;
    ms__stats *s;
    assert_int_equal(ms__stats_create(&fd, &s), 0);
    ms__stats_batch(s, 1, 10000);             /* rows <= 1, run <= 10 us */
    ms__stats_batch(s, 3, 10001);             /* rows <= 4, run <= 25 us */
    ms__stats_batch(s, 5000, 99000000000ull); /* both past the last bound: +Inf */
    ms__stats_queued(s, 0);
    ms__stats_queued(s, 1000000); /* 1 ms */
    ms__stats_error(s, MS_E_SHAPE);
    ms__stats_error(s, MS_E_SHAPE);
    ms__stats_error(s, -1000);         /* outside the table: slot 0 */
    ms__stats_error(NULL, MS_E_SHAPE); /* no page: nothing */
    assert_int_equal(s->batch_rows.bucket[0], 1);
    assert_int_equal(s->batch_rows.bucket[2], 1);
    assert_int_equal(s->batch_rows.bucket[MS__HIST_ROWS_BUCKETS - 1], 1);
    assert_int_equal(s->batch_rows.sum, 5004);
    assert_int_equal(s->run_ns.bucket[0], 1);
    assert_int_equal(s->run_ns.bucket[1], 1);
    assert_int_equal(s->run_ns.bucket[MS__HIST_NS_BUCKETS - 1], 1);
    assert_int_equal(s->queue_ns.bucket[0], 1);
    assert_int_equal(s->queue_ns.bucket[6], 1); /* (500 us, 1 ms] */
    assert_int_equal(s->errors, 3);
    assert_int_equal(s->errors_by_code[-MS_E_SHAPE], 2);
    assert_int_equal(s->errors_by_code[0], 1);

    ms__stats_sum a, b;
    memset(&a, 0, sizeof a);
    ms__stats_add(&a, s);
    ms__stats_add(&a, NULL);
    assert_int_equal(a.rows_sum, 5004);
    assert_int_equal(a.errors_by_code[-MS_E_SHAPE], 2);
    b = a;
    ms__stats_sum_add(&a, &b);
    assert_int_equal(a.rows_sum, 10008);
    assert_int_equal(a.run_bucket[MS__HIST_NS_BUCKETS - 1], 2);
    assert_int_equal(a.errors, 6);

    /* A mapped copy of the page sees the same counters. */
    ms__stats *t;
    assert_int_equal(ms__stats_map(fd, &t), 0);
    assert_int_equal(t->errors, 3);
    ms__stats_unmap(t);
    ms__stats_unmap(s);
    close(fd);
}

static void test_progress(void **state)
{
    (void)state;
    int fd;
    ms__stats *s;
    assert_int_equal(ms__stats_create(&fd, &s), 0);
    assert_int_equal(s->phase, MS__PHASE_STARTING);
    ms__progress_phase(MS__PHASE_READING); /* not attached: goes nowhere */
    assert_int_equal(s->phase, MS__PHASE_STARTING);
    ms__progress_attach(s);
    ms__progress_phase(MS__PHASE_READING);
    ms__progress_bytes(10, 100);
    assert_int_equal(s->phase, MS__PHASE_READING);
    assert_int_equal(s->load_bytes, 10);
    assert_int_equal(s->load_total_bytes, 100);
    ms__progress_attach(NULL);
    ms__progress_bytes(20, 100);
    assert_int_equal(s->load_bytes, 10);
    assert_string_equal(ms__phase_name(MS__PHASE_READING), "reading weights");
    assert_string_equal(ms__phase_name(MS__PHASE_CONSTRUCTING), "constructing");
    assert_string_equal(ms__phase_name(99), "unknown");
    ms__stats_unmap(s);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_observations),
        cmocka_unit_test(test_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
