/* Who may connect (access.h) and socket activation's environment (activation.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/daemon/access.h"
#include "../../src/daemon/activation.h"
#include "modelshare.h"

static void test_activation_is_for_the_named_process_only(void **state)
{
    (void)state;
    char err[256];
    int n = -1;
    assert_int_equal(ms__activation_parse(NULL, NULL, 42, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ms__activation_parse("42", NULL, 42, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    /* Meant for the process that started us (it forked us without clearing them). */
    assert_int_equal(ms__activation_parse("41", "1", 42, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ms__activation_parse("42", "1", 42, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ms__activation_parse("42", "3", 42, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
}

static void test_activation_numbers_that_do_not_parse(void **state)
{
    (void)state;
    char err[256];
    int n;
    const char *bad_pid[] = {"", "x", "42x", "-1", "99999999999"};
    for (size_t i = 0; i < sizeof bad_pid / sizeof *bad_pid; i++) {
        assert_int_equal(ms__activation_parse(bad_pid[i], "1", 42, &n, err, sizeof err),
                         MS_E_INVAL);
        assert_non_null(strstr(err, "$LISTEN_PID: expected a number"));
    }
    const char *bad_fds[] = {"", "one", "-2", "100000"};
    for (size_t i = 0; i < sizeof bad_fds / sizeof *bad_fds; i++) {
        assert_int_equal(ms__activation_parse("42", bad_fds[i], 42, &n, err, sizeof err),
                         MS_E_INVAL);
        assert_non_null(strstr(err, "$LISTEN_FDS: expected a number"));
    }
}

static void test_group_by_number_and_name(void **state)
{
    (void)state;
    char err[256];
    gid_t g = 7;
    assert_int_equal(ms__access_parse_group("0", &g, err, sizeof err), 0);
    assert_int_equal(g, 0);
    assert_int_equal(ms__access_parse_group("1234", &g, err, sizeof err), 0);
    assert_int_equal(g, 1234);
    assert_int_equal(ms__access_parse_group("root", &g, err, sizeof err), 0);
    assert_int_equal(g, 0);
    assert_int_equal(ms__access_parse_group("", &g, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__access_parse_group("no-such-group-here", &g, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "expected a group name known to this system or a gid"));
    assert_int_equal(ms__access_parse_group("99999999999", &g, err, sizeof err), MS_E_INVAL);
}

/* The peer of a socketpair is this process: the kernel's credentials are ours. */
static void test_access_follows_the_kernel_credentials(void **state)
{
    (void)state;
    char err[256];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct ucred cred;
    ms__access same = {.uid = geteuid()};
    assert_int_equal(ms__access_check(&same, sv[0], &cred, err, sizeof err), 0);
    assert_int_equal(cred.pid, getpid());
    ms__access other = {.uid = geteuid() + 1};
    assert_int_equal(ms__access_check(&other, sv[0], &cred, err, sizeof err), MS_E_PERMISSION);
    assert_non_null(strstr(err, "refuses a client of uid"));
    /* Another user's daemon with our primary group admits us... */
    ms__access group = {.uid = geteuid() + 1, .has_group = true, .gid = getegid()};
    assert_int_equal(ms__access_check(&group, sv[0], &cred, err, sizeof err), 0);
    /* ...and one with a group we are not in does not. */
    gid_t mine[256];
    int n = getgroups(256, mine);
    gid_t outside = 54321;
    for (int i = 0; i < n; i++)
        if (mine[i] == outside)
            outside++;
    ms__access stranger = {.uid = geteuid() + 1, .has_group = true, .gid = outside};
    assert_int_equal(ms__access_check(&stranger, sv[0], &cred, err, sizeof err), MS_E_PERMISSION);
    assert_non_null(strstr(err, "outside that group"));
    ms__access bad = {.uid = geteuid()};
    assert_int_equal(ms__access_check(&bad, -1, &cred, err, sizeof err), MS_E_IO);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_activation_is_for_the_named_process_only),
        cmocka_unit_test(test_activation_numbers_that_do_not_parse),
        cmocka_unit_test(test_group_by_number_and_name),
        cmocka_unit_test(test_access_follows_the_kernel_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
