/* A worker's stderr in the daemon: whole lines written through, the last bytes kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/daemon/errtail.h"

/* What the write-through end of a pipe received so far. */
static size_t drain(int fd, char *buf, size_t cap)
{
    ssize_t n = read(fd, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

static void test_lines_go_through_whole(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK), 0); /* an empty pipe reads as nothing */
    ms__errtail t = {0};
    char got[256];
    ms__errtail_feed(&t, "first li", 8, p[1]);
    ms__errtail_feed(&t, "ne\nsecond", 9, p[1]);
    drain(p[0], got, sizeof got);
    assert_string_equal(got, "first line\n"); /* "second" waits for its end */
    ms__errtail_flush(&t, p[1]);
    drain(p[0], got, sizeof got);
    assert_string_equal(got, "second\n");
    char last[64];
    ms__errtail_last(&t, 60, last, sizeof last);
    assert_string_equal(last, "first line\nsecond");
    /* At most max bytes, cut at a line start. */
    ms__errtail_last(&t, 8, last, sizeof last);
    assert_string_equal(last, "second");
    close(p[0]);
    close(p[1]);
}

static void test_keeps_the_last_bytes(void **state)
{
    (void)state;
    ms__errtail t = {0};
    char line[64];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(line, sizeof line, "line %d\n", i);
        ms__errtail_feed(&t, line, (size_t)n, -1);
    }
    assert_true(t.len <= MS__ERRTAIL_BYTES);
    char last[64];
    ms__errtail_last(&t, 20, last, sizeof last);
    assert_string_equal(last, "line 498\nline 499");
    char empty[8];
    ms__errtail t2 = {0};
    ms__errtail_last(&t2, 100, empty, sizeof empty);
    assert_string_equal(empty, "");
}

static void test_a_long_line_without_end_goes_through(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK), 0); /* an empty pipe reads as nothing */
    ms__errtail t = {0};
    char big[5000];
    memset(big, 'x', sizeof big);
    ms__errtail_feed(&t, big, sizeof big, p[1]);
    char got[8192];
    size_t n = drain(p[0], got, sizeof got);
    assert_true(n >= sizeof big - MS__ERRTAIL_BYTES / 2 && n <= sizeof big);
    assert_true(t.pending <= MS__ERRTAIL_BYTES / 2);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_go_through_whole),
        cmocka_unit_test(test_keeps_the_last_bytes),
        cmocka_unit_test(test_a_long_line_without_end_goes_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
