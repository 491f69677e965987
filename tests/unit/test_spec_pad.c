/* The spec's "pad" field (spec_pad.c): parsed, kept through the canonical JSON, compared, and
 * refused with a message when malformed or without batchable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/spec.h"
#include "../../src/common/util.h"

#define GOOD                                                                                       \
    "{\"backend\":\"identity\",\"pad\":{\"dim\":1,\"multiple\":8,\"value\":{\"input_ids\":0,"      \
    "\"attention_mask\":0,\"pixels\":-1.5}}}"

static int parse(const char *text, ms__spec *s, char *err)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    int r = ms__spec_from_json(j, s, err, MS__ERRLEN);
    json_decref(j);
    return r;
}

static void test_round_trip(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b, none;
    assert_int_equal(parse(GOOD, &a, err), 0);
    assert_int_equal(a.pad.dim, 1);
    assert_int_equal(a.pad.multiple, 8);
    assert_int_equal(a.pad.nvalues, 3);
    json_t *j = ms__spec_to_json(&a);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(strstr(text, "\"pad\":{\"dim\":1,\"multiple\":8,\"value\":{"));
    assert_int_equal(ms__spec_from_json(j, &b, err, sizeof err), 0);
    assert_true(ms__spec_equal(&a, &b));
    assert_int_equal(parse("{\"backend\":\"identity\"}", &none, err), 0);
    assert_false(ms__spec_equal(&a, &none));
    json_t *n = ms__spec_to_json(&none);
    assert_null(json_object_get(n, "pad")); /* absent when none */
    json_decref(n);
    free(text);
    json_decref(j);
    ms__spec_free(&a);
    ms__spec_free(&b);
    ms__spec_free(&none);
}

static void refused(const char *text, const char *words)
{
    char err[MS__ERRLEN] = "";
    ms__spec s;
    assert_int_equal(parse(text, &s, err), MS_E_SPEC);
    if (strstr(err, words) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", words, err);
}

static void test_refused(void **state)
{
    (void)state;
    refused("{\"backend\":\"identity\",\"pad\":{\"dim\":0}}", "no \"dim\" from 1 to 7");
    refused("{\"backend\":\"identity\",\"pad\":{\"dim\":8}}", "no \"dim\" from 1 to 7");
    refused("{\"backend\":\"identity\",\"pad\":{\"dim\":1,\"multiple\":0}}", "\"multiple\"");
    refused("{\"backend\":\"identity\",\"pad\":{\"dim\":1,\"size\":3}}", "an unknown key");
    refused("{\"backend\":\"identity\",\"pad\":{\"dim\":1,\"value\":{\"x\":\"a\"}}}",
            "\"value\" entry");
    refused("{\"backend\":\"identity\",\"pad\":[1]}", "got an array");
    refused("{\"backend\":\"identity\",\"batchable\":false,\"pad\":{\"dim\":1}}",
            "only with batchable true");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
