/* The arena allocator (src/lib/alloc.h): first fit, alignment, coalescing, the largest block,
 * requests too large, shrinking, and pages handed back to the kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/lib/alloc.h"

#define START 4096u
#define END (START + (1u << 20)) /* 1 MiB of room */
#define A MS__ARENA_ALIGN

/* How many free blocks a has, each checked sorted and apart from the next. */
static int blocks(const ms__alloc *a)
{
    int n = 0;
    for (const ms__free_block *b = a->free; b != NULL; b = b->next, n++) {
        assert_true(b->len > 0);
        if (b->next != NULL)
            assert_true(b->off + b->len < b->next->off);
    }
    return n;
}

/* Nothing is free: no block, and not one byte fits. */
static void assert_full(ms__alloc *a)
{
    uint64_t off, got;
    assert_int_equal(blocks(a), 0);
    assert_int_equal(ms__alloc_largest(a), 0);
    assert_int_equal(ms__alloc_get(a, 1, &off, &got), MS_E_TOO_LARGE);
}

static uint64_t get(ms__alloc *a, uint64_t size)
{
    uint64_t off = 0, got = 0;
    assert_int_equal(ms__alloc_get(a, size, &off, &got), 0);
    assert_int_equal(off % A, 0);
    assert_true(got >= size && got % A == 0);
    return off;
}

static void test_init_one_block(void **state)
{
    (void)state;
    ms__alloc a;
    assert_int_equal(ms__alloc_init(&a, -1, START, END), 0);
    assert_int_equal(blocks(&a), 1);
    assert_int_equal(ms__alloc_largest(&a), END - START);
    ms__alloc_destroy(&a);
    assert_null(a.free);
    ms__alloc_destroy(&a); /* twice: harmless */
}

static void test_empty_arena(void **state)
{
    (void)state;
    ms__alloc a;
    assert_int_equal(ms__alloc_init(&a, -1, START, START), 0);
    assert_full(&a);
    ms__alloc_destroy(&a);
}

static void test_first_fit_and_alignment(void **state)
{
    (void)state;
    ms__alloc a;
    uint64_t off, got;
    assert_int_equal(ms__alloc_init(&a, -1, START, END), 0);
    assert_int_equal(ms__alloc_get(&a, 0, &off, &got), 0); /* zero bytes: one unit */
    assert_int_equal(off, START);
    assert_int_equal(got, A);
    assert_int_equal(ms__alloc_get(&a, 1, &off, &got), 0);
    assert_int_equal(off, START + A);
    assert_int_equal(got, A);
    assert_int_equal(ms__alloc_get(&a, A + 1, &off, &got), 0);
    assert_int_equal(off, START + 2 * A);
    assert_int_equal(got, 2 * A);
    assert_int_equal(ms__alloc_largest(&a), END - START - 4 * A);
    ms__alloc_destroy(&a);
}

static void test_too_large(void **state)
{
    (void)state;
    ms__alloc a;
    uint64_t off = 7, got = 7;
    assert_int_equal(ms__alloc_init(&a, -1, START, END), 0);
    assert_int_equal(ms__alloc_get(&a, END - START + 1, &off, &got), MS_E_TOO_LARGE);
    assert_int_equal(ms__alloc_get(&a, UINT64_MAX, &off, &got), MS_E_TOO_LARGE); /* rounds over */
    assert_int_equal(ms__alloc_get(&a, UINT64_MAX - A, &off, &got), MS_E_TOO_LARGE);
    assert_int_equal(off, 7); /* outputs untouched on failure */
    assert_int_equal(got, 7);
    /* The whole room fits exactly, and then nothing does. */
    assert_int_equal(get(&a, END - START), START);
    assert_full(&a);
    ms__alloc_destroy(&a);
}

static void test_fragmented_too_large(void **state)
{
    (void)state;
    ms__alloc a;
    uint64_t off, got;
    assert_int_equal(ms__alloc_init(&a, -1, START, START + 8 * A), 0);
    uint64_t o[8];
    for (int i = 0; i < 8; i++)
        o[i] = get(&a, A);
    for (int i = 0; i < 8; i += 2)
        ms__alloc_put(&a, o[i], A);
    /* Four units free, none two wide. */
    assert_int_equal(blocks(&a), 4);
    assert_int_equal(ms__alloc_largest(&a), A);
    assert_int_equal(ms__alloc_get(&a, 2 * A, &off, &got), MS_E_TOO_LARGE);
    ms__alloc_destroy(&a);
}

static void test_coalescing(void **state)
{
    (void)state;
    ms__alloc a;
    assert_int_equal(ms__alloc_init(&a, -1, START, START + 5 * A), 0);
    uint64_t o[5];
    for (int i = 0; i < 5; i++)
        o[i] = get(&a, A);
    assert_int_equal(blocks(&a), 0);
    ms__alloc_put(&a, o[1], A); /* alone */
    ms__alloc_put(&a, o[3], A); /* alone */
    assert_int_equal(blocks(&a), 2);
    assert_int_equal(ms__alloc_largest(&a), A);
    ms__alloc_put(&a, o[2], A); /* joins both neighbours */
    assert_int_equal(blocks(&a), 1);
    assert_int_equal(ms__alloc_largest(&a), 3 * A);
    ms__alloc_put(&a, o[0], A); /* joins the next one */
    assert_int_equal(blocks(&a), 1);
    assert_int_equal(a.free->off, START);
    ms__alloc_put(&a, o[4], A); /* joins the previous one */
    assert_int_equal(blocks(&a), 1);
    assert_int_equal(ms__alloc_largest(&a), 5 * A);
    assert_int_equal(get(&a, 5 * A), START); /* all of it in one piece again */
    ms__alloc_destroy(&a);
}

static void test_first_fit_takes_lowest(void **state)
{
    (void)state;
    ms__alloc a;
    assert_int_equal(ms__alloc_init(&a, -1, START, END), 0);
    uint64_t o[4];
    for (int i = 0; i < 4; i++)
        o[i] = get(&a, 2 * A);
    ms__alloc_put(&a, o[2], 2 * A); /* freed out of order: the list stays sorted */
    ms__alloc_put(&a, o[0], 2 * A);
    assert_int_equal(blocks(&a), 3);
    assert_int_equal(get(&a, A), o[0]);
    assert_int_equal(get(&a, A), o[0] + A);
    assert_int_equal(get(&a, 2 * A), o[2]);
    assert_int_equal(get(&a, 3 * A), o[3] + 2 * A); /* the tail */
    ms__alloc_put(&a, o[1], 0);                     /* zero bytes: nothing */
    assert_int_equal(blocks(&a), 1);
    ms__alloc_put(&a, o[1], 2 * A);
    assert_int_equal(blocks(&a), 2);
    ms__alloc_destroy(&a);
}

static void test_shrink(void **state)
{
    (void)state;
    ms__alloc a;
    assert_int_equal(ms__alloc_init(&a, -1, START, START + 8 * A), 0);
    uint64_t size = 0, off = 0;
    assert_int_equal(ms__alloc_get(&a, 8 * A, &off, &size), 0);
    ms__alloc_shrink(&a, off, &size, 3 * A + 1); /* keeps 4 units */
    assert_int_equal(size, 4 * A);
    assert_int_equal(ms__alloc_largest(&a), 4 * A);
    assert_int_equal(a.free->off, off + 4 * A);
    ms__alloc_shrink(&a, off, &size, 4 * A); /* nothing beyond: unchanged */
    assert_int_equal(size, 4 * A);
    ms__alloc_shrink(&a, off, &size, 0); /* at least one unit stays */
    assert_int_equal(size, A);
    assert_int_equal(blocks(&a), 1);
    assert_int_equal(ms__alloc_largest(&a), 7 * A);
    ms__alloc_put(&a, off, size);
    assert_int_equal(ms__alloc_largest(&a), 8 * A);
    ms__alloc_destroy(&a);
}

/* Bytes of the memfd resident in memory. */
static uint64_t resident(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

static void test_retain_then_punch(void **state)
{
    (void)state;
    const uint64_t big = 32ull << 20, cap = START + 4 * big;
    int fd = memfd_create("test-alloc", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)cap), 0);
    char *base = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(base != MAP_FAILED);
    ms__alloc a;
    assert_int_equal(ms__alloc_init(&a, fd, START, cap), 0);
    uint64_t o[3];
    for (int i = 0; i < 3; i++) {
        o[i] = get(&a, big);
        memset(base + o[i], 1, big);
    }
    uint64_t all = resident(fd);
    assert_true(all >= 3 * big);
    /* Two blocks of 32 MiB stay resident (64 MiB retained): reused without page faults. */
    ms__alloc_put(&a, o[0], big);
    ms__alloc_put(&a, o[1], big);
    assert_int_equal(a.retained, 2 * big);
    assert_int_equal(resident(fd), all);
    /* The third would retain more than MS__ALLOC_RETAIN_MAX: its pages go back. */
    ms__alloc_put(&a, o[2], big);
    assert_int_equal(a.retained, 2 * big);
    assert_true(resident(fd) <= all - big);
    /* Reusing the lowest blocks counts their pages as used again. */
    get(&a, big);
    assert_int_equal(a.retained, big);
    ms__alloc_destroy(&a);
    munmap(base, cap);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_one_block),          cmocka_unit_test(test_empty_arena),
        cmocka_unit_test(test_first_fit_and_alignment), cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_fragmented_too_large),    cmocka_unit_test(test_coalescing),
        cmocka_unit_test(test_first_fit_takes_lowest),  cmocka_unit_test(test_shrink),
        cmocka_unit_test(test_retain_then_punch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
