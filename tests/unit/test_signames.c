/* A model's named inputs and outputs in its signature (signames.h): a good list, a missing one,
 * and every rejection with its message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/signames.h"
#include "../../src/common/util.h"

static int parse(const char *text, const char *which, ms__sig_entry *e, int *n, char *err)
{
    json_t *j = json_loads(text, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    int rc = ms__sig_list_from_json(j, which, e, n, err, 256);
    json_decref(j);
    return rc;
}

static void test_good_list(void **state)
{
    (void)state;
    ms__sig_entry e[MS__MF_MAX];
    char err[256];
    int n = 0;
    assert_int_equal(parse("{\"inputs\":[{\"name\":\"input_ids\",\"dtype\":\"int64\","
                           "\"shape\":[-1,-1]},{\"name\":\"texts\",\"dtype\":\"str\","
                           "\"shape\":[-1]},{\"name\":\"x\",\"dtype\":null,\"shape\":null}]}",
                           "inputs", e, &n, err),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(e[0].name, "input_ids");
    assert_int_equal(e[0].sig.dtype, MS_INT64);
    assert_int_equal(e[0].sig.rank, 2);
    assert_true(e[0].shape_known && e[0].sig.shape[0] == -1 && e[0].sig.shape[1] == -1);
    assert_int_equal(e[1].sig.dtype, MS_TEXT_UTF8);
    assert_int_equal(e[1].sig.rank, 1);
    assert_int_equal(e[2].sig.dtype, 0);
    assert_false(e[2].shape_known);
    /* Not said: -1, not an error (a model that does not name its tensors). */
    assert_int_equal(parse("{\"input\":null}", "outputs", e, &n, err), 0);
    assert_int_equal(n, -1);
    assert_int_equal(parse("{\"outputs\":null}", "outputs", e, &n, err), 0);
    assert_int_equal(n, -1);
    assert_int_equal(parse("{\"outputs\":[]}", "outputs", e, &n, err), 0);
    assert_int_equal(n, 0);
}

static void test_rejections(void **state)
{
    (void)state;
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"{\"inputs\":3}", "a list of at most 16"},
        {"{\"inputs\":[1]}", "inputs[0]: expected an object"},
        {"{\"inputs\":[{\"dtype\":\"int64\"}]}", "expected \"name\" to be 1 to 31"},
        {"{\"inputs\":[{\"name\":\"\"}]}", "expected \"name\""},
        {"{\"inputs\":[{\"name\":\"a b\"}]}", "expected \"name\""},
        {"{\"inputs\":[{\"name\":\"abcdefghijabcdefghijabcdefghij12\"}]}", "expected \"name\""},
        {"{\"inputs\":[{\"name\":\"a\\u0000b\"}]}", "expected \"name\""},
        {"{\"inputs\":[{\"name\":\"a\"},{\"name\":\"a\"}]}", "\"a\" comes twice"},
        {"{\"inputs\":[{\"name\":\"a\",\"dtype\":\"float33\"}]}", "inputs[0]: expected a dtype"},
        {"{\"inputs\":[{\"name\":\"a\",\"shape\":[-2]}]}", "integer >= -1"},
        {"{\"inputs\":[{\"name\":\"a\",\"dtype\":\"str\",\"shape\":7}]}", "at most 8 dimensions"},
    };
    ms__sig_entry e[MS__MF_MAX];
    char err[256];
    int n = 5;
    for (size_t i = 0; i < MS__ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        assert_int_equal(parse(bad[i].text, "inputs", e, &n, err), MS_E_PROTOCOL);
        if (strstr(err, bad[i].says) == NULL)
            fail_msg("%s: got \"%s\", expected it to say \"%s\"", bad[i].text, err, bad[i].says);
        assert_int_equal(n, -1);
    }
    char many[2048] = "{\"inputs\":[";
    for (int i = 0; i <= MS__MF_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s{\"name\":\"t%d\"}",
                 i ? "," : "", i);
    strcat(many, "]}");
    assert_int_equal(parse(many, "inputs", e, &n, err), MS_E_PROTOCOL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_list),
        cmocka_unit_test(test_rejections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
