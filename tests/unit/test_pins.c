/* The cache of host ranges registered for DMA (pins.h), with a fake driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "../../src/backends/pins.h"

/* What the fake driver was asked, and whether it refuses. */
typedef struct driver {
    int regs, unregs, refuse;
    uintptr_t lo[256];
    size_t len[256];
    int live; /* registered now */
} driver;

static int fake_reg(void *ctx, void *base, size_t len)
{
    driver *d = ctx;
    if (d->refuse)
        return 1;
    for (int i = 0; i < d->regs; i++) /* the real driver refuses overlaps: so must we never ask */
        if (d->len[i] != 0 && (uintptr_t)base < d->lo[i] + d->len[i] &&
            d->lo[i] < (uintptr_t)base + len)
            fail_msg("registered twice: %p", base);
    d->lo[d->regs] = (uintptr_t)base;
    d->len[d->regs++] = len;
    d->live++;
    return 0;
}

static void fake_unreg(void *ctx, void *base)
{
    driver *d = ctx;
    for (int i = 0; i < d->regs; i++)
        if (d->lo[i] == (uintptr_t)base && d->len[i] != 0) {
            d->len[i] = 0;
            d->unregs++;
            d->live--;
            return;
        }
    fail_msg("unregistered what was not registered: %p", base);
}

#define ARENA (64u << 20)

static char *map_arena(void)
{
    void *p = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void test_a_range_is_registered_once_and_reused(void **state)
{
    (void)state;
    driver d = {0};
    ms__pins *p = ms__pins_new(&(ms__pin_ops){fake_reg, fake_unreg, &d});
    char *a = map_arena();
    ms__pins_arena_mapped(p, a, ARENA);
    assert_true(ms__pins_usable(p, a + 4096, 1 << 20));
    assert_true(ms__pins_usable(p, a + 4096, 1 << 20));
    assert_true(ms__pins_usable(p, a + 8192, 512 << 10)); /* inside the same grain */
    assert_int_equal(d.regs, 1);
    assert_int_equal(d.lo[0] % MS__PINS_GRAIN, 0);
    ms__pins_stats st;
    ms__pins_get_stats(p, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.registrations, 1);
    assert_int_equal(st.ranges, 1);
    ms__pins_free(p);
    assert_int_equal(d.live, 0);
    munmap(a, ARENA);
}

static void test_small_unknown_and_huge_ranges_are_staged(void **state)
{
    (void)state;
    driver d = {0};
    ms__pins *p = ms__pins_new(&(ms__pin_ops){fake_reg, fake_unreg, &d});
    char *a = map_arena();
    static char outside[1 << 20];
    ms__pins_arena_mapped(p, a, ARENA);
    assert_false(ms__pins_usable(p, a, MS__PINS_MIN_BYTES - 1));
    assert_false(ms__pins_usable(p, outside, sizeof outside)); /* not in an arena */
    assert_false(ms__pins_usable(p, a + ARENA - 4096, 8192));  /* runs past the arena */
    assert_int_equal(d.regs, 0);
    ms__pins_stats st;
    ms__pins_get_stats(p, &st);
    assert_int_equal(st.fallbacks, 3);
    ms__pins_free(p);
    munmap(a, ARENA);
}

static void test_least_recently_used_goes_first_within_the_limits(void **state)
{
    (void)state;
    driver d = {0};
    ms__pins *p = ms__pins_new(&(ms__pin_ops){fake_reg, fake_unreg, &d});
    size_t len = (MS__PINS_RANGES_MAX + 4) * (size_t)MS__PINS_GRAIN;
    char *a = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    assert_true(a != MAP_FAILED);
    ms__pins_arena_mapped(p, a, len);
    /* Grain i of the arena, whole grains only. */
    char *g0 = (char *)(((uintptr_t)a + MS__PINS_GRAIN - 1) & ~(uintptr_t)(MS__PINS_GRAIN - 1));
#define GRAIN(i) (g0 + (size_t)(i)*MS__PINS_GRAIN)
    for (int i = 0; i < MS__PINS_RANGES_MAX; i++)
        assert_true(ms__pins_usable(p, GRAIN(i), MS__PINS_MIN_BYTES));
    assert_true(ms__pins_usable(p, GRAIN(0), MS__PINS_MIN_BYTES)); /* grain 1 is now the oldest */
    assert_true(ms__pins_usable(p, GRAIN(MS__PINS_RANGES_MAX), MS__PINS_MIN_BYTES));
    ms__pins_stats st;
    ms__pins_get_stats(p, &st);
    assert_int_equal(st.ranges, MS__PINS_RANGES_MAX);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.registrations, MS__PINS_RANGES_MAX + 1);
    assert_true(ms__pins_usable(p, GRAIN(0), MS__PINS_MIN_BYTES)); /* kept */
    ms__pins_get_stats(p, &st);
    assert_int_equal(st.registrations, MS__PINS_RANGES_MAX + 1);
    assert_true(ms__pins_usable(p, GRAIN(1), MS__PINS_MIN_BYTES)); /* was evicted */
    ms__pins_get_stats(p, &st);
    assert_int_equal(st.registrations, MS__PINS_RANGES_MAX + 2);
    assert_int_equal(d.live, (int)st.ranges);
#undef GRAIN
    ms__pins_free(p);
    assert_int_equal(d.live, 0);
    munmap(a, len);
}

static void test_unmapping_an_arena_unregisters_its_ranges_first(void **state)
{
    (void)state;
    driver d = {0};
    ms__pins *p = ms__pins_new(&(ms__pin_ops){fake_reg, fake_unreg, &d});
    char *a = map_arena(), *b = map_arena();
    ms__pins_arena_mapped(p, a, ARENA);
    ms__pins_arena_mapped(p, b, ARENA);
    assert_true(ms__pins_usable(p, a, 1 << 20));
    assert_true(ms__pins_usable(p, a + (8 << 20), 1 << 20));
    assert_true(ms__pins_usable(p, b, 1 << 20));
    ms__pins_arena_unmapping(p, a, ARENA);
    assert_int_equal(d.live, 1);
    assert_false(ms__pins_usable(p, a, 1 << 20)); /* no longer known */
    assert_true(ms__pins_usable(p, b, 1 << 20));
    ms__pins_free(p);
    assert_int_equal(d.live, 0);
    munmap(a, ARENA);
    munmap(b, ARENA);
}

static void test_a_driver_that_refuses_is_given_up_on(void **state)
{
    (void)state;
    driver d = {.refuse = 1};
    ms__pins *p = ms__pins_new(&(ms__pin_ops){fake_reg, fake_unreg, &d});
    char *a = map_arena();
    ms__pins_arena_mapped(p, a, ARENA);
    for (int i = 0; i < 10; i++)
        assert_false(ms__pins_usable(p, a, 1 << 20));
    ms__pins_stats st;
    ms__pins_get_stats(p, &st);
    assert_true(st.disabled);
    assert_int_equal(st.fallbacks, 10);
    assert_int_equal(st.registrations, 0);
    ms__pins_free(p);
    munmap(a, ARENA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_range_is_registered_once_and_reused),
        cmocka_unit_test(test_small_unknown_and_huge_ranges_are_staged),
        cmocka_unit_test(test_least_recently_used_goes_first_within_the_limits),
        cmocka_unit_test(test_unmapping_an_arena_unregisters_its_ranges_first),
        cmocka_unit_test(test_a_driver_that_refuses_is_given_up_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
