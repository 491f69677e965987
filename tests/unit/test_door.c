/* A worker's door (common/ring.h, door.c): page 0, what the worker trusts, reaches clients only
 * read-only (no write, no writable mapping, no mprotect to writable); the bell page stays
 * writable to everyone; a mode of 0400 keeps another uid from opening page 0 again for writing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/ring.h"
#include "../../src/common/util.h"

static void test_client_mapping_is_read_only(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__door_fds f;
    ms__door *daemon = NULL, *client = NULL;
    assert_int_equal(ms__door_create(&f, err, sizeof err), 0);
    assert_int_equal(ms__door_map(f.rw, f.bell, true, &daemon, err, sizeof err), 0);
    assert_int_equal(ms__door_map(f.ro, f.bell, false, &client, err, sizeof err), 0);
    atomic_store(&daemon->gen, 7);
    assert_int_equal(atomic_load(&client->gen), 7);
    /* The bell page is shared and writable from both. */
    atomic_store(&client->inflight, 3);
    assert_int_equal(atomic_load(&daemon->inflight), 3);
    /* Page 0 through the client's descriptor: no write, no writable mapping, no mprotect. */
    uint32_t v = 1;
    assert_int_equal(pwrite(f.ro, &v, sizeof v, 0), -1);
    assert_int_equal(mmap(NULL, MS__DOOR_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f.ro, 0),
                     MAP_FAILED);
    assert_int_equal(errno, EACCES);
    assert_int_equal(mprotect(client, MS__DOOR_PAGE, PROT_READ | PROT_WRITE), -1);
    assert_int_equal(errno, EACCES);
    /* Trusting a read-only descriptor is refused with a message, not a crash. */
    ms__door *d = NULL;
    assert_int_equal(ms__door_map(f.ro, f.bell, true, &d, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "cannot map a door"));
    /* A write through the client's mapping faults (in a child). */
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
        atomic_store(&client->down, 1);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    assert_int_equal(atomic_load(&daemon->down), 0);
    /* Mode 0400: only its owner could open it again, and not for writing (root aside). */
    struct stat st;
    assert_int_equal(fstat(f.rw, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0400);
    ms__door_unmap(client);
    ms__door_unmap(daemon);
    ms__door_fds_close(&f);
    assert_int_equal(f.rw, -1);
}

static void test_map_checks_sizes_and_magic(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__door_fds f;
    ms__door *d = NULL;
    assert_int_equal(ms__door_create(&f, err, sizeof err), 0);
    int odd = memfd_create("test-door", MFD_CLOEXEC);
    assert_true(odd >= 0);
    assert_int_equal(ftruncate(odd, 8192), 0);
    assert_int_equal(ms__door_map(f.ro, odd, false, &d, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "expected a door's bell page as a memfd of 4096 bytes"));
    assert_int_equal(ftruncate(odd, 4096), 0);
    /* A page without the magic is not a door. */
    assert_int_equal(ms__door_map(odd, f.bell, false, &d, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "expected door magic"));
    close(odd);
    ms__door_fds_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_mapping_is_read_only),
        cmocka_unit_test(test_map_checks_sizes_and_magic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
