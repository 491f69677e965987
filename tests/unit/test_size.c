/* Sizes (size.h) and environment variables (env.h): one meaning of "4GB" everywhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/common/env.h"
#include "../../src/common/size.h"
#include "../../src/common/util.h"
#include "modelshare.h"

#define MIB (1ull << 20)

static void test_size_units(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } t[] = {
        {"16GiB", 16ull << 30},
        {"1500000000", 1500000000ull},
        {"2GB", 2000000000ull},
        {"4GB", 4000000000ull},
        {"4GiB", 4ull << 30},
        {"4G", 4000000000ull},
        {"512mib", 512 * MIB},
        {"1.5GiB", 3ull << 29},
        {"7B", 7},
        {"3K", 3000},
        {"3kb", 3000},
        {"3KiB", 3072},
        {"2M", 2000000},
        {"1T", 1000000000000ull},
        {"1TiB", 1ull << 40},
        {" 16 GiB ", 16ull << 30},
        {"64MB", 64000000},
    };
    char err[MS__ERRLEN];
    for (size_t i = 0; i < MS__ARRAY_LEN(t); i++) {
        uint64_t b = 1;
        double p = 1;
        assert_int_equal(ms__size_parse(t[i].text, &b, &p, err, sizeof err), 0);
        assert_int_equal(b, t[i].bytes);
        assert_true(p == 0);
        b = 1;
        assert_int_equal(ms__size_parse(t[i].text, &b, NULL, err, sizeof err), 0);
        assert_int_equal(b, t[i].bytes);
    }
}

static void test_size_percent(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    uint64_t b = 1;
    double p = 0;
    assert_int_equal(ms__size_parse("90%", &b, &p, err, sizeof err), 0);
    assert_true(p == 90.0);
    assert_int_equal(b, 0);
    assert_int_equal(ms__size_parse("150%", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "at most 100"));
    assert_int_equal(ms__size_parse("0%", &b, &p, err, sizeof err), MS_E_INVAL);
    /* Without a place for a percentage, none is accepted. */
    b = 5;
    assert_int_equal(ms__size_parse("90%", &b, NULL, err, sizeof err), MS_E_INVAL);
    assert_int_equal(b, 5);
    assert_null(strstr(err, "percentage"));
}

static void test_size_errors(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    uint64_t b = 5;
    double p = 5;
    assert_int_equal(ms__size_parse("12 parsecs", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "got \"12 parsecs\""));
    assert_non_null(strstr(err, "KiB"));
    assert_int_equal(ms__size_parse("-1", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse("0", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse("", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse(NULL, &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse("lots", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse("5Q", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse("1GiBB", &b, &p, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__size_parse("20000000TiB", &b, &p, err, sizeof err), MS_E_TOO_LARGE);
    assert_non_null(strstr(err, "16 EiB"));
    assert_int_equal(ms__size_parse("99999999999999999999999", &b, &p, err, sizeof err),
                     MS_E_TOO_LARGE);
    /* Outputs untouched on failure. */
    assert_int_equal(b, 5);
    assert_true(p == 5);
}

static void test_env_str(void **state)
{
    (void)state;
    unsetenv("MS_TEST_VAR");
    assert_string_equal(ms__env_str("MS_TEST_VAR", "dflt"), "dflt");
    assert_null(ms__env_str("MS_TEST_VAR", NULL));
    setenv("MS_TEST_VAR", "", 1);
    assert_string_equal(ms__env_str("MS_TEST_VAR", "dflt"), "dflt");
    setenv("MS_TEST_VAR", "x", 1);
    assert_string_equal(ms__env_str("MS_TEST_VAR", "dflt"), "x");
    unsetenv("MS_TEST_VAR");
}

static void test_env_number(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    double v = -1;
    unsetenv("MS_TEST_NUM");
    assert_int_equal(ms__env_number("MS_TEST_NUM", 50, 0, 100, &v, err, sizeof err), 0);
    assert_true(v == 50);
    setenv("MS_TEST_NUM", "75", 1);
    assert_int_equal(ms__env_number("MS_TEST_NUM", 50, 0, 100, &v, err, sizeof err), 0);
    assert_true(v == 75);
    setenv("MS_TEST_NUM", " 2.5 ", 1);
    assert_int_equal(ms__env_number("MS_TEST_NUM", 50, 0, 100, &v, err, sizeof err), 0);
    assert_true(v == 2.5);
    static const char *const bad[] = {"101", "-1", "abc", "5x", "nan", "inf", " "};
    for (size_t i = 0; i < MS__ARRAY_LEN(bad); i++) {
        setenv("MS_TEST_NUM", bad[i], 1);
        v = -1;
        assert_int_equal(ms__env_number("MS_TEST_NUM", 50, 0, 100, &v, err, sizeof err),
                         MS_E_INVAL);
        assert_true(v == 50);
        assert_non_null(strstr(err, "MS_TEST_NUM: expected a number from 0 to 100"));
    }
    unsetenv("MS_TEST_NUM");
}

static void test_env_size(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    uint64_t v = 0;
    unsetenv("MS_TEST_SIZE");
    assert_int_equal(ms__env_size("MS_TEST_SIZE", 42, &v, err, sizeof err), 0);
    assert_int_equal(v, 42);
    setenv("MS_TEST_SIZE", "4GB", 1);
    assert_int_equal(ms__env_size("MS_TEST_SIZE", 42, &v, err, sizeof err), 0);
    assert_int_equal(v, 4000000000ull);
    setenv("MS_TEST_SIZE", "50%", 1);
    assert_int_equal(ms__env_size("MS_TEST_SIZE", 42, &v, err, sizeof err), MS_E_INVAL);
    assert_int_equal(v, 42);
    assert_non_null(strstr(err, "MS_TEST_SIZE: expected a size"));
    setenv("MS_TEST_SIZE", "1000000000TiB", 1);
    assert_int_equal(ms__env_size("MS_TEST_SIZE", 42, &v, err, sizeof err), MS_E_TOO_LARGE);
    assert_int_equal(v, 42);
    unsetenv("MS_TEST_SIZE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_units),  cmocka_unit_test(test_size_percent),
        cmocka_unit_test(test_size_errors), cmocka_unit_test(test_env_str),
        cmocka_unit_test(test_env_number),  cmocka_unit_test(test_env_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
