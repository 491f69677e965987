/* A model's owner and what it allows (owner.h). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/daemon/owner.h"
#include "modelshare.h"

static ms__spec spec_of(const char *text)
{
    char err[256];
    ms__spec s;
    assert_int_equal(ms__spec_parse(text, &s, err, sizeof err), 0);
    return s;
}

/* Who may use and change a model: anyone of a single-user daemon; in group mode its owner,
 * root and the service (the daemon's uid), and for use, anyone when it is shared. */
static void test_who_may_use_and_change(void **state)
{
    (void)state;
    ms__owner alice = {.uid = 1001, .gid = 1001};
    ms__spec own = spec_of("{\"backend\":\"identity\"}");
    ms__spec shared = spec_of("{\"backend\":\"identity\",\"shared_with\":\"group\"}");
    ms__access single = {.uid = 500};
    ms__access group = {.uid = 500, .has_group = true, .gid = 77};
    assert_true(ms__owner_manages(&single, &alice, 1002));
    assert_true(ms__owner_may_use(&single, &alice, &own, 1002));
    for (uid_t u = 0; u < 3; u++) {
        uid_t who = u == 0 ? 0 : u == 1 ? 500 : 1001; /* root, the service, the owner */
        assert_true(ms__owner_manages(&group, &alice, who));
        assert_true(ms__owner_may_use(&group, &alice, &own, who));
    }
    assert_false(ms__owner_manages(&group, &alice, 1002));
    assert_false(ms__owner_may_use(&group, &alice, &own, 1002));
    assert_true(ms__owner_may_use(&group, &alice, &shared, 1002));
    assert_false(ms__owner_manages(&group, &alice, 1002)); /* shared is not given away */
    char err[256];
    assert_int_equal(ms__owner_refuse(&alice, "m", "unload", err, sizeof err), MS_E_PERMISSION);
    assert_non_null(strstr(err, "model \"m\" belongs to uid 1001"));
    assert_non_null(strstr(err, "only its owner or root may unload it"));
    ms__spec_free(&own);
    ms__spec_free(&shared);
}

/* A group daemon that cannot act as a member refuses it files and python code, saying how to go
 * on; its own uid's specs, any single-user daemon's and those that name neither pass. */
static void test_specs_a_daemon_cannot_run_for_a_member(void **state)
{
    (void)state;
    if (geteuid() == 0)
        skip(); /* root acts as anyone */
    char err[512];
    ms__owner member = {.uid = geteuid() + 1}, self = {.uid = geteuid()};
    ms__access group = {.uid = geteuid(), .has_group = true, .gid = 77};
    ms__access single = {.uid = geteuid()};
    ms__spec dense = spec_of("{\"backend\":\"dense\",\"weights\":\"/etc/shadow\"}");
    ms__spec ident = spec_of("{\"backend\":\"identity\"}");
    assert_int_equal(ms__owner_spec_allowed(&group, &member, &dense, err, sizeof err),
                     MS_E_PERMISSION);
    assert_non_null(strstr(err, "refuses a weights file of group members"));
    assert_non_null(strstr(err, "run your own daemon"));
    assert_int_equal(ms__owner_spec_allowed(&group, &self, &dense, err, sizeof err), 0);
    assert_int_equal(ms__owner_spec_allowed(&single, &member, &dense, err, sizeof err), 0);
    assert_int_equal(ms__owner_spec_allowed(&group, &member, &ident, err, sizeof err), 0);
    assert_false(ms__owner_switches(&member));
    ms__spec_free(&dense);
    ms__spec_free(&ident);
}

/* The peer's uid, gid and groups come from the kernel; entering the rights of an owner the daemon
 * does not switch to changes nothing. */
static void test_owner_of_peer_and_rights(void **state)
{
    (void)state;
    char err[256];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ms__owner o;
    assert_int_equal(ms__owner_of_peer(sv[0], &o, err, sizeof err), 0);
    assert_int_equal(o.uid, geteuid());
    assert_int_equal(o.gid, getegid());
    assert_true(o.ngroups >= 0 && o.ngroups <= MS__OWNER_GROUPS_MAX);
    assert_int_equal(ms__owner_of_peer(-1, &o, err, sizeof err), MS_E_IO);
    close(sv[0]);
    close(sv[1]);
    ms__owner self = {.uid = geteuid(), .gid = getegid()};
    ms__owner_fs fs;
    assert_int_equal(ms__owner_enter(&self, &fs, err, sizeof err), 0);
    assert_false(fs.entered);
    assert_int_equal(setfsuid((uid_t)-1), (int)geteuid());
    ms__owner_leave(&fs);
    if (geteuid() == 0) {
        /* Root takes a member's file-system rights and gives them back. */
        char path[] = "/tmp/ms-owner-XXXXXX";
        int fd = mkstemp(path); /* mode 0600, root's */
        assert_true(fd >= 0);
        close(fd);
        ms__owner member = {.uid = 54321, .gid = 54321, .ngroups = 1, .groups = {54322}};
        assert_true(ms__owner_switches(&member));
        assert_int_equal(ms__owner_enter(&member, &fs, err, sizeof err), 0);
        assert_true(fs.entered);
        assert_int_equal(setfsuid((uid_t)-1), 54321);
        assert_int_equal(open(path, O_RDONLY | O_CLOEXEC), -1);
        assert_int_equal(errno, EACCES);
        ms__owner_leave(&fs);
        assert_int_equal(setfsuid((uid_t)-1), 0);
        assert_int_equal(setfsgid((gid_t)-1), (int)getegid());
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        close(fd);
        unlink(path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_who_may_use_and_change),
        cmocka_unit_test(test_specs_a_daemon_cannot_run_for_a_member),
        cmocka_unit_test(test_owner_of_peer_and_rights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
