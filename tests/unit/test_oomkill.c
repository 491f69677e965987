/* The OOM killer's count of a memory cgroup (oomkill.h): parsed from cgroup v2's memory.events
 * and v1's memory.oom_control, and found for this process when its cgroup has one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/common/oomkill.h"

static void test_the_count_is_read_from_either_format(void **state)
{
    (void)state;
    assert_int_equal(ms__oom_kills_parse("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"
                                         "oom_group_kill 0\n"),
                     2);
    assert_int_equal(ms__oom_kills_parse("oom_kill_disable 0\nunder_oom 0\noom_kill 17\n"), 17);
    assert_int_equal(ms__oom_kills_parse("oom_kill_disable 0\nunder_oom 0\n"), -1);
    assert_int_equal(ms__oom_kills_parse("oom_kill x\n"), -1);
    assert_int_equal(ms__oom_kills_parse(""), -1);
    assert_int_equal(ms__oom_kills("/nonexistent/memory.events"), -1);
}

static void test_this_process_file_when_there_is_one(void **state)
{
    (void)state;
    char path[512];
    if (ms__oom_file(getpid(), path, sizeof path) != 0)
        skip(); /* no memory controller here */
    assert_true(ms__oom_kills(path) >= 0);
    assert_int_equal(ms__oom_file(999999999, path, sizeof path), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_count_is_read_from_either_format),
        cmocka_unit_test(test_this_process_file_when_there_is_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
