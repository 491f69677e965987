/* The --metrics address parser (hostport.h): loopback unless another address is named, and a
 * specific message for each way the text can be wrong. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/common/hostport.h"
#include "../../src/common/util.h"
#include "modelshare.h"

static void test_accepted(void **state)
{
    (void)state;
    static const struct {
        const char *text, *as;
        bool loopback;
    } t[] = {
        {"9464", "127.0.0.1:9464", true},
        {"localhost:80", "127.0.0.1:80", true},
        {"127.0.0.1:9464", "127.0.0.1:9464", true},
        {"127.1.2.3:1", "127.1.2.3:1", true},
        {"0.0.0.0:9464", "0.0.0.0:9464", false},
        {"10.0.0.5:65535", "10.0.0.5:65535", false},
        {"[::1]:9464", "[::1]:9464", true},
        {"[::]:9464", "[::]:9464", false},
        {"[::ffff:127.0.0.1]:9", "[::ffff:127.0.0.1]:9", true},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char err[MS__ERRLEN] = "", buf[80];
        ms__hostport hp;
        assert_int_equal(ms__hostport_parse(t[i].text, &hp, err, sizeof err), 0);
        ms__hostport_str(&hp, buf, sizeof buf);
        assert_string_equal(buf, t[i].as);
        assert_int_equal(ms__hostport_loopback(&hp), t[i].loopback);
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text, *says;
    } t[] = {
        {"", "got nothing"},
        {":9464", "no host"},
        {"0", "port from 1 to 65535"},
        {"65536", "port from 1 to 65535"},
        {"127.0.0.1:", "port from 1 to 65535"},
        {"127.0.0.1:+80", "port from 1 to 65535"},
        {"127.0.0.1:80x", "port from 1 to 65535"},
        {"127.0.0.1:0080000", "port from 1 to 65535"},
        {"host.example:80", "expected an IPv4 address"},
        {"256.0.0.1:80", "expected an IPv4 address"},
        {"::1:80", "IPv6 address goes in brackets"},
        {"[::1:80", "no closing bracket"},
        {"[::1]80", "no :PORT after the bracket"},
        {"[127.0.0.1]:80", "expected an IPv6 address in the brackets"},
        {"[::1]:80:81", "port from 1 to 65535"},
        {"1111111111111111111111111111111111111111111111111111111111111111111", "at most 64"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char err[MS__ERRLEN] = "";
        ms__hostport hp;
        memset(&hp, 0x5a, sizeof hp);
        assert_int_equal(ms__hostport_parse(t[i].text, &hp, err, sizeof err), MS_E_INVAL);
        if (strstr(err, t[i].says) == NULL)
            fail_msg("\"%s\": expected a message with \"%s\", got \"%s\"", t[i].text, t[i].says,
                     err);
        /* Written only on success. */
        assert_int_equal(((unsigned char *)&hp)[0], 0x5a);
    }
    char err[MS__ERRLEN] = "";
    ms__hostport hp;
    assert_int_equal(ms__hostport_parse(NULL, &hp, err, sizeof err), MS_E_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
