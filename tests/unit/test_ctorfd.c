/* The daemon's check of a python constructor's memfd (common/ctorfd.h): sealed against write,
 * shrink and grow, of the size the spec says, within the limit; anything else is MS_E_SPEC with
 * a message that says what was expected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/ctorfd.h"
#include "../../src/common/util.h"

/* A memfd holding n bytes, with seals added (0: none). */
static int memfd_of(size_t n, int seals)
{
    int fd = memfd_create("test-ctor", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    char buf[256];
    memset(buf, 'p', sizeof buf);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof buf ? n - done : sizeof buf;
        assert_int_equal(write(fd, buf, k), (ssize_t)k);
        done += k;
    }
    if (seals != 0)
        assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
    return fd;
}

static void expect(int fd, uint64_t size, int code, const char *text)
{
    char err[MS__ERRLEN] = "";
    assert_int_equal(ms__ctorfd_check(fd, size, err, sizeof err), code);
    if (text != NULL && strstr(err, text) == NULL)
        fail_msg("expected \"%s\" in the message, got \"%s\"", text, err);
}

static void test_sealed_memfd_of_the_size(void **state)
{
    (void)state;
    int fd = memfd_of(1000, MS__CTOR_SEALS | F_SEAL_SEAL);
    expect(fd, 1000, 0, NULL);
    close(fd);
    fd = memfd_of(1000, MS__CTOR_SEALS); /* F_SEAL_SEAL is not needed */
    expect(fd, 1000, 0, NULL);
    close(fd);
}

static void test_refused(void **state)
{
    (void)state;
    int fd = memfd_of(1000, 0);
    expect(fd, 1000, MS_E_SPEC,
           "expected it sealed against write, shrink and grow (seals 0xe), "
           "got seals 0x0");
    close(fd);
    fd = memfd_of(1000, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL); /* writable */
    expect(fd, 1000, MS_E_SPEC, "got seals 0x7");
    close(fd);
    fd = memfd_of(1000, MS__CTOR_SEALS);
    expect(fd, 999, MS_E_SPEC, "expected 999 bytes (python.constructor_size), got 1000");
    expect(fd, 0, MS_E_SPEC, "expected 1 to 1073741824 bytes, got 0");
    expect(fd, MS__CTOR_MAX + 1, MS_E_SPEC, "expected 1 to 1073741824 bytes, got 1073741825");
    close(fd);
    fd = memfd_create("no-sealing", MFD_CLOEXEC); /* seals cannot be added: F_SEAL_SEAL */
    expect(fd, 1, MS_E_SPEC, "expected it sealed");
    close(fd);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    expect(p[0], 10, MS_E_SPEC, "expected a memfd (a regular file), got file mode");
    close(p[0]);
    close(p[1]);
    expect(-1, 10, MS_E_SPEC, "expected an open memfd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sealed_memfd_of_the_size),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
