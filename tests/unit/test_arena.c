/* The checks of a client's arena (common/arena.c) that the daemon (ms__arena_map_header) and the
 * worker (ms__arena_map) make before they map it: a tmpfs memfd (not hugetlbfs), sealed against
 * shrink, grow and reseal, of an allowed size that its header repeats. Anything else is
 * MS_E_PROTOCOL with a message that says what was expected, and nothing stays mapped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/common/util.h"

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* A memfd of size bytes made with flags, seals added (0: none). -1 when the kernel refuses the
 * flags (MFD_HUGETLB without hugetlbfs). */
static int memfd_of(unsigned flags, uint64_t size, int seals)
{
    int fd = memfd_create("test-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING | flags);
    if (fd < 0)
        return -1;
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    if (seals != 0)
        assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
    return fd;
}

/* Both sides refuse fd with MS_E_PROTOCOL and a message holding text. */
static void refused(int fd, const char *text)
{
    char err[MS__ERRLEN] = "";
    void *base = NULL;
    uint64_t cap = 0;
    assert_int_equal(ms__arena_map(fd, &base, &cap, err, sizeof err), MS_E_PROTOCOL);
    if (strstr(err, text) == NULL)
        fail_msg("worker: expected \"%s\" in \"%s\"", text, err);
    ms__arena_header *h = NULL;
    err[0] = '\0';
    assert_int_equal(ms__arena_map_header(fd, &h, err, sizeof err), MS_E_PROTOCOL);
    if (strstr(err, text) == NULL)
        fail_msg("daemon: expected \"%s\" in \"%s\"", text, err);
}

static void test_a_good_arena_maps(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int fd;
    void *base, *mapped;
    uint64_t cap;
    assert_int_equal(ms__arena_create(MS__ARENA_MIN, &fd, &base, err, sizeof err), 0);
    assert_int_equal(ms__arena_map(fd, &mapped, &cap, err, sizeof err), 0);
    assert_int_equal(cap, MS__ARENA_MIN);
    /* Sealed: neither side can shrink it under the other. */
    assert_int_equal(ftruncate(fd, 4096), -1);
    ms__arena_unmap(mapped, cap);
    ms__arena_unmap(base, MS__ARENA_MIN);
    close(fd);
}

static void test_unsealed_and_unshrinkable_only(void **state)
{
    (void)state;
    int fd = memfd_of(0, MS__ARENA_MIN, 0);
    refused(fd, "expected the arena sealed against shrink, grow and reseal");
    close(fd);
    fd = memfd_of(0, MS__ARENA_MIN, F_SEAL_GROW | F_SEAL_SEAL);
    refused(fd, "got seals 0x5");
    close(fd);
}

static void test_wrong_size_and_header(void **state)
{
    (void)state;
    int fd = memfd_of(0, MS__ARENA_MIN - 4096, SEALS);
    refused(fd, "expected an arena of 8388608 to");
    close(fd);
    /* The right size, but no header written. */
    fd = memfd_of(0, MS__ARENA_MIN, SEALS);
    refused(fd, "expected arena magic");
    close(fd);
}

static void test_not_a_memfd(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    refused(p[0], "expected the arena to be a memfd (regular file)");
    close(p[0]);
    close(p[1]);
}

/* hugetlbfs: refused before anything maps it, so no huge page is needed for this check. */
static void test_hugetlb_refused(void **state)
{
    (void)state;
    int fd = memfd_of(MFD_HUGETLB, MS__ARENA_MIN, SEALS);
    if (fd < 0) {
        /* cmocka has skip(): the kernel has no hugetlbfs here. */
        printf("skipped: memfd_create(MFD_HUGETLB) refused: this kernel has no hugetlbfs\n");
        skip();
    }
    refused(fd, "hugetlbfs: MFD_HUGETLB arenas are refused");
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_good_arena_maps),
        cmocka_unit_test(test_unsealed_and_unshrinkable_only),
        cmocka_unit_test(test_wrong_size_and_header),
        cmocka_unit_test(test_not_a_memfd),
        cmocka_unit_test(test_hugetlb_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
