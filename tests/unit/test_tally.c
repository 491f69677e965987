/* Per-tag counters that outlive a model (tally.h): found again by tag, and when full a new tag
 * replaces the least recently touched one without a model, never one with a model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/daemon/tally.h"

static bool loaded_even(void *ctx, const char *tag)
{
    (void)ctx;
    return atoi(tag + 1) % 2 == 0; /* "t0", "t2", ... have a model */
}

static bool all_loaded(void *ctx, const char *tag)
{
    (void)ctx;
    (void)tag;
    return true;
}

static void test_found_again(void **state)
{
    (void)state;
    ms__tally *t = calloc(1, sizeof *t);
    assert_non_null(t);
    ms__tally_get(t, "a", NULL, NULL)->loads++;
    ms__tally_get(t, "b", NULL, NULL)->evictions++;
    ms__tally_get(t, "a", NULL, NULL)->loads++;
    assert_int_equal(t->n, 2);
    assert_int_equal(ms__tally_get(t, "a", NULL, NULL)->loads, 2);
    assert_int_equal(ms__tally_get(t, "b", NULL, NULL)->evictions, 1);
    free(t);
}

static void test_full(void **state)
{
    (void)state;
    ms__tally *t = calloc(1, sizeof *t);
    assert_non_null(t);
    char tag[32];
    for (int i = 0; i < MS__TALLY_MAX; i++) {
        snprintf(tag, sizeof tag, "t%d", i);
        ms__tally_get(t, tag, loaded_even, NULL)->loads = (uint64_t)i + 1;
    }
    ms__tally_get(t, "t1", loaded_even, NULL); /* t1 touched again: t3 is now the oldest free */
    ms__tally_entry *e = ms__tally_get(t, "new", loaded_even, NULL);
    assert_non_null(e);
    assert_string_equal(e->tag, "new");
    assert_int_equal(e->loads, 0);
    assert_int_equal(t->n, MS__TALLY_MAX);
    bool t0 = false, t1 = false, t3 = false;
    for (int i = 0; i < t->n; i++) {
        t0 |= strcmp(t->e[i].tag, "t0") == 0;
        t1 |= strcmp(t->e[i].tag, "t1") == 0;
        t3 |= strcmp(t->e[i].tag, "t3") == 0;
    }
    assert_true(t0 && t1 && !t3);
    assert_null(ms__tally_get(t, "another", all_loaded, NULL));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found_again),
        cmocka_unit_test(test_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
