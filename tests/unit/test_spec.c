/* Model specs: defaults, every field's errors, unknown fields, equality, canonical JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/spec.h"
#include "../../src/common/util.h"

static void test_defaults(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec s;
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/m.st\"}", &s, err, sizeof err), 0);
    assert_string_equal(s.backend, "dense");
    assert_string_equal(s.weights, "/m.st");
    assert_string_equal(s.device, "cpu");
    assert_int_equal(s.output, MS__OUTPUT_LINEAR);
    assert_true(s.keep_alive == 300);
    assert_int_equal(s.max_batch, 64);
    assert_int_equal(s.batch_delay_us, 0);
    assert_int_equal(s.instances, 1);
    assert_false(s.thread_safe);
    assert_int_equal(s.threads, 0);
    assert_true(s.batchable);
    assert_true(s.memory == 0);
    assert_true(s.load_timeout == 60);
    ms__spec_free(&s);
    assert_null(s.weights);
    ms__spec_free(&s); /* twice is harmless */

    assert_int_equal(ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\","
                                    "\"executable\":\"/p\",\"cwd\":\"/\"}}",
                                    &s, err, sizeof err),
                     0);
    assert_null(s.weights);
    /* A python model's rows may depend on each other: its calls are merged only when it says so. */
    assert_false(s.batchable);
    ms__spec_free(&s);
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"python\",\"batchable\":true,\"python\":{"
                       "\"constructor\":\"gAR=\",\"executable\":\"/p\",\"cwd\":\"/\"}}",
                       &s, err, sizeof err),
        0);
    assert_true(s.batchable);
    ms__spec_free(&s);
    assert_int_equal(ms__spec_parse("{\"backend\":\"identity\"}", &s, err, sizeof err), 0);
    assert_true(s.batchable);
    ms__spec_free(&s);
}

static void test_all_fields(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec s;
    const char *text =
        "{\"backend\":\"dense\",\"weights\":\"w.st\",\"device\":\"cuda:12\","
        "\"output\":\"softmax\",\"keep_alive\":0.5,\"max_batch\":65536,"
        "\"batch_delay_us\":1000000,\"instances\":64,\"thread_safe\":true,"
        "\"threads\":64,\"batchable\":false,\"memory\":3000000000.0,\"load_timeout\":86400}";
    assert_int_equal(ms__spec_parse(text, &s, err, sizeof err), 0);
    assert_string_equal(s.device, "cuda:12");
    assert_int_equal(s.output, MS__OUTPUT_SOFTMAX);
    assert_true(s.keep_alive == 0.5);
    assert_int_equal(s.max_batch, 65536);
    assert_int_equal(s.batch_delay_us, 1000000);
    assert_int_equal(s.instances, 64);
    assert_true(s.thread_safe);
    assert_int_equal(s.threads, 64);
    assert_false(s.batchable);
    assert_true(s.memory == 3000000000ull);
    assert_true(s.load_timeout == 86400);
    ms__spec_free(&s);

    /* "cuda" means cuda:0; weights null means absent. */
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"python\",\"device\":\"cuda\",\"weights\":null,"
                       "\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\",\"cwd\":\"/\"}}",
                       &s, err, sizeof err),
        0);
    assert_string_equal(s.device, "cuda:0");
    assert_null(s.weights);
    ms__spec_free(&s);
}

static void expect_err(const char *text, const char *needle)
{
    char err[MS__ERRLEN] = "";
    ms__spec s;
    memset(&s, 0x5a, sizeof s);
    int rc = ms__spec_parse(text, &s, err, sizeof err);
    if (rc != MS_E_SPEC)
        fail_msg("spec %s: expected MS_E_SPEC, got %d (%s)", text, rc, err);
    if (strstr(err, needle) == NULL)
        fail_msg("spec %s: expected \"%s\" in the message, got \"%s\"", text, needle, err);
}

#define D "\"backend\":\"dense\",\"weights\":\"w\","

static void test_field_errors(void **state)
{
    (void)state;
    expect_err("{}", "spec field \"backend\"");
    expect_err("{\"backend\":\"torch\"}", "spec field \"backend\": expected \"dense\", "
                                          "\"python\" or \"identity\", got \"torch\"");
    expect_err("{\"backend\":1}", "got 1");
    expect_err("{\"backend\":\"dense\"}", "spec field \"weights\"");
    expect_err("{\"backend\":\"dense\",\"weights\":\"\"}", "spec field \"weights\"");
    expect_err("{\"backend\":\"dense\",\"weights\":3}", "spec field \"weights\"");
    expect_err("{\"backend\":\"dense\",\"weights\":null}", "spec field \"weights\"");
    expect_err("{" D "\"device\":\"gpu\"}", "spec field \"device\": expected \"cpu\" or");
    expect_err("{" D "\"device\":\"cuda:64\"}", "got \"cuda:64\"");
    expect_err("{" D "\"device\":\"cuda:-1\"}", "spec field \"device\"");
    expect_err("{" D "\"device\":\"cuda:01\"}", "spec field \"device\"");
    expect_err("{" D "\"device\":\"cuda:\"}", "spec field \"device\"");
    expect_err("{" D "\"device\":\"cuda:1x\"}", "spec field \"device\"");
    expect_err("{" D "\"device\":\"cuda:100\"}", "spec field \"device\"");
    expect_err("{" D "\"output\":\"relu\"}",
               "spec field \"output\": expected \"linear\" or \"softmax\", got \"relu\"");
    expect_err("{" D "\"keep_alive\":-1}", "spec field \"keep_alive\"");
    expect_err("{" D "\"keep_alive\":\"5\"}", "spec field \"keep_alive\"");
    expect_err("{" D "\"max_batch\":\"ten\"}",
               "spec field \"max_batch\": expected an integer from 1 to 65536, got \"ten\"");
    expect_err("{" D "\"max_batch\":0}", "got 0");
    expect_err("{" D "\"max_batch\":65537}", "got 65537");
    expect_err("{" D "\"max_batch\":2.5}", "got 2.5");
    expect_err("{" D "\"max_batch\":true}", "got true");
    expect_err("{" D "\"batch_delay_us\":-1}", "spec field \"batch_delay_us\"");
    expect_err("{" D "\"batch_delay_us\":1000001}", "spec field \"batch_delay_us\"");
    expect_err("{" D "\"instances\":0}", "spec field \"instances\"");
    expect_err("{" D "\"instances\":65}", "spec field \"instances\"");
    expect_err("{" D "\"thread_safe\":1}", "spec field \"thread_safe\": expected true or false");
    expect_err("{" D "\"thread_safe\":true,\"threads\":65}",
               "spec field \"threads\": expected null or an integer from 0 to 64");
    expect_err("{" D "\"thread_safe\":true,\"threads\":-1}", "spec field \"threads\"");
    expect_err("{" D "\"thread_safe\":true,\"threads\":\"4\"}", "spec field \"threads\"");
    /* More than one runner only for a model that says it may be called from several threads. */
    expect_err("{" D "\"threads\":2}", "spec field \"threads\": expected null, 0 or 1 for a model "
                                       "that is not thread_safe");
    expect_err("{" D "\"batchable\":\"yes\"}", "spec field \"batchable\"");
    expect_err("{" D "\"batchable\":false,\"batch_sizes\":[1,8]}",
               "spec field \"batch_sizes\": expected only with batchable true");
    expect_err("{" D "\"memory\":-5}", "spec field \"memory\"");
    expect_err("{" D "\"memory\":1.5}", "spec field \"memory\"");
    expect_err("{" D "\"memory\":1e30}", "spec field \"memory\"");
    expect_err("{" D "\"load_timeout\":86401}", "spec field \"load_timeout\"");
    expect_err("{" D "\"load_timeout\":-0.1}", "spec field \"load_timeout\"");
    expect_err("{" D "\"load_timeout\":null}", "got null");
    expect_err("{" D "\"max_batch\":{\"a\":1}}", "got an object");
    expect_err("[1]", "expected the spec to be a JSON object, got an array");
    expect_err("{\"backend\":", "invalid JSON");
    expect_err("{" D "\"max_batch\":1,\"max_batch\":2}", "invalid JSON");
}

static void test_unknown_field(void **state)
{
    (void)state;
    expect_err("{\"backend\":\"dense\",\"weigths\":\"w\"}",
               "unknown spec field \"weigths\" (known: backend, weights, device, devices, output, "
               "keep_alive, max_batch, batch_sizes, batch_delay_us, instances, thread_safe, "
               "threads, batchable, memory, load_timeout, call_timeout, max_restarts, python, "
               "version, pad, shared_with)");
    /* A very long unknown name is shortened, the message stays whole. */
    char text[600];
    char name[400];
    memset(name, 'z', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    snprintf(text, sizeof text, "{\"%s\":1}", name);
    expect_err(text, "...\" (known: backend");
}

static void test_integral_reals(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec s;
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"python\",\"max_batch\":32.0,\"instances\":2.0,"
                       "\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\",\"cwd\":\"/\"}}",
                       &s, err, sizeof err),
        0);
    assert_int_equal(s.max_batch, 32);
    assert_int_equal(s.instances, 2);
    ms__spec_free(&s);
}

static void test_equal_and_copy(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b, c;
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/w\"}", &a, err, sizeof err), 0);
    /* Same model, defaults written out and fields in another order. */
    assert_int_equal(ms__spec_parse("{\"max_batch\":64,\"weights\":\"/w\",\"device\":\"cpu\","
                                    "\"backend\":\"dense\",\"keep_alive\":300}",
                                    &b, err, sizeof err),
                     0);
    assert_true(ms__spec_equal(&a, &b));
    ms__spec_free(&b);
    const char *differ[] = {
        "{\"backend\":\"dense\",\"weights\":\"/w2\"}",
        "{\"backend\":\"python\",\"weights\":\"/"
        "w\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\",\"cwd\":\"/\"}}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"device\":\"cuda:0\"}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"output\":\"softmax\"}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"keep_alive\":300.0001}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"max_batch\":63}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"batch_delay_us\":1}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"instances\":2}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"thread_safe\":true}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"threads\":1}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"batchable\":false}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"memory\":1}",
        "{\"backend\":\"dense\",\"weights\":\"/w\",\"load_timeout\":61}",
    };
    for (size_t i = 0; i < MS__ARRAY_LEN(differ); i++) {
        assert_int_equal(ms__spec_parse(differ[i], &b, err, sizeof err), 0);
        if (ms__spec_equal(&a, &b))
            fail_msg("expected %s to differ from the defaults", differ[i]);
        ms__spec_free(&b);
    }
    ms__spec p1, p2;
    assert_int_equal(ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\","
                                    "\"executable\":\"/p\",\"cwd\":\"/\"}}",
                                    &p1, err, sizeof err),
                     0);
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"python\",\"weights\":\"x\",\"python\":{\"constructor\":"
                       "\"gAR=\",\"executable\":\"/p\",\"cwd\":\"/\"}}",
                       &p2, err, sizeof err),
        0);
    assert_false(ms__spec_equal(&p1, &p2));
    assert_false(ms__spec_equal(&p2, &p1));
    ms__spec_free(&p1);
    ms__spec_free(&p2);

    assert_int_equal(ms__spec_copy(&a, &c), 0);
    assert_true(ms__spec_equal(&a, &c));
    assert_ptr_not_equal(a.weights, c.weights);
    ms__spec_free(&a);
    assert_string_equal(c.weights, "/w");
    ms__spec_free(&c);
}

static void test_canonical(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b;
    assert_int_equal(ms__spec_parse("{\"weights\":\"/w\",\"backend\":\"dense\",\"keep_alive\":2.5,"
                                    "\"device\":\"cuda\"}",
                                    &a, err, sizeof err),
                     0);
    json_t *j = ms__spec_to_json(&a);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s,
                        "{\"backend\":\"dense\",\"batch_delay_us\":0,\"batch_sizes\":null,"
                        "\"batchable\":true,\"call_timeout\":600.0,"
                        "\"device\":\"cuda:0\",\"devices\":null,\"instances\":1,\"keep_alive\":2.5,"
                        "\"load_timeout\":60.0,\"max_batch\":64,\"max_restarts\":5,\"memory\":0,"
                        "\"output\":\"linear\",\"thread_safe\":false,\"threads\":null,"
                        "\"version\":null,"
                        "\"weights\":\"/w\"}");
    /* The canonical text is sorted (the same with JSON_SORT_KEYS). */
    char *sorted = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, sorted);
    free(sorted);
    /* Round trip: parses back to an equal spec, and to the same text. */
    assert_int_equal(ms__spec_parse(s, &b, err, sizeof err), 0);
    assert_true(ms__spec_equal(&a, &b));
    json_t *j2 = ms__spec_to_json(&b);
    assert_true(json_equal(j, j2));
    json_decref(j2);
    ms__spec_free(&b);
    free(s);
    json_decref(j);
    ms__spec_free(&a);

    /* A python spec has weights null, and round-trips too. */
    assert_int_equal(ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\","
                                    "\"executable\":\"/p\",\"cwd\":\"/\"}}",
                                    &a, err, sizeof err),
                     0);
    j = ms__spec_to_json(&a);
    assert_true(json_is_null(json_object_get(j, "weights")));
    assert_int_equal(ms__spec_from_json(j, &b, err, sizeof err), 0);
    assert_true(ms__spec_equal(&a, &b));
    ms__spec_free(&a);
    ms__spec_free(&b);
    json_decref(j);
}

/* Two python specs are one model when their constructor (or key) and framework agree: where the
 * worker runs (executable, cwd, path) is not compared. */
static void test_python(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b;
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\","
                       "\"executable\":\"/usr/bin/python3\",\"cwd\":\"/a\",\"path\":[\"/x\"]}}",
                       &a, err, sizeof err),
        0);
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\","
                       "\"executable\":\"/venv/bin/python\",\"cwd\":\"/b\",\"framework\":null}}",
                       &b, err, sizeof err),
        0);
    assert_true(ms__spec_equal(&a, &b));
    ms__spec_free(&b);
    const char *differ[] = {
        "{\"backend\":\"python\",\"python\":{\"constructor\":\"gAU=\",\"executable\":\"/p\","
        "\"cwd\":\"/\"}}",
        "{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
        "\"cwd\":\"/\",\"framework\":\"torch\"}}",
        "{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
        "\"cwd\":\"/\",\"framework\":\"onnxruntime\"}}",
        "{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
        "\"cwd\":\"/"
        "\",\"key\":\"0000000000000000000000000000000000000000000000000000000000000000\"}}",
    };
    for (size_t i = 0; i < MS__ARRAY_LEN(differ); i++) {
        assert_int_equal(ms__spec_parse(differ[i], &b, err, sizeof err), 0);
        if (ms__spec_equal(&a, &b))
            fail_msg("expected %s to differ", differ[i]);
        ms__spec_free(&b);
    }
    /* With a key, the key is compared, not the pickle. */
    const char *k1 = "{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":"
                     "\"/p\",\"cwd\":\"/\",\"key\":\"00000000000000000000000000000000000000000000"
                     "000000000000000000aa\"}}";
    const char *k2 = "{\"backend\":\"python\",\"python\":{\"constructor\":\"gAU=\",\"executable\":"
                     "\"/p\",\"cwd\":\"/\",\"key\":\"00000000000000000000000000000000000000000000"
                     "000000000000000000aa\"}}";
    ms__spec c;
    assert_int_equal(ms__spec_parse(k1, &b, err, sizeof err), 0);
    assert_int_equal(ms__spec_parse(k2, &c, err, sizeof err), 0);
    assert_true(ms__spec_equal(&b, &c));
    ms__spec_free(&c);
    /* Copy, canonical JSON round trip, and the brief form for messages. */
    assert_int_equal(ms__spec_copy(&a, &c), 0);
    assert_true(ms__spec_equal(&a, &c));
    ms__spec_free(&c);
    json_t *j = ms__spec_to_json(&a);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "python"), "cwd")),
                        "/a");
    assert_int_equal(ms__spec_from_json(j, &c, err, sizeof err), 0);
    assert_true(ms__spec_equal(&a, &c));
    ms__spec_free(&c);
    json_decref(j);
    j = ms__spec_to_json_brief(&a);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(j, "python"), "constructor")),
               "<pickle: 4 base64 characters"));
    json_decref(j);
    ms__spec_free(&b);
    ms__spec_free(&a);

    /* Every bad field names itself. */
    const char *bad[][2] = {
        {"{\"backend\":\"python\"}", "pickled constructor"},
        {"{\"backend\":\"dense\",\"weights\":\"/w\",\"python\":{\"constructor\":\"gAR=\","
         "\"executable\":\"/p\",\"cwd\":\"/\"}}",
         "only with backend"},
        {"{\"backend\":\"python\",\"python\":[]}", "spec field \"python\""},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"%%\",\"executable\":\"/p\","
         "\"cwd\":\"/\"}}",
         "python.constructor"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"p\","
         "\"cwd\":\"/\"}}",
         "python.executable"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\"}}",
         "python.cwd"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
         "\"cwd\":\"/\",\"path\":[1]}}",
         "python.path"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
         "\"cwd\":\"/\",\"key\":\"abc\"}}",
         "python.key"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
         "\"cwd\":\"/\",\"gpu\":1}}",
         "python.gpu"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
         "\"cwd\":\"/\",\"identity\":[]}}",
         "python.identity"},
        {"{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\",\"executable\":\"/p\","
         "\"cwd\":\"/\",\"identity\":{\"code\":1}}}",
         "python.identity"},
    };
    for (size_t i = 0; i < MS__ARRAY_LEN(bad); i++) {
        assert_int_equal(ms__spec_parse(bad[i][0], &a, err, sizeof err), MS_E_SPEC);
        if (strstr(err, bad[i][1]) == NULL)
            fail_msg("spec %s: expected \"%s\" in the message, got \"%s\"", bad[i][0], bad[i][1],
                     err);
    }
}

/* A python spec with a key and an outline of its constructor. */
static void keyed(ms__spec *s, const char *key_digit, const char *identity, const char *extra)
{
    char text[1024], err[MS__ERRLEN];
    snprintf(text, sizeof text,
             "{\"backend\":\"python\"%s,\"python\":{\"constructor\":\"gAR=\",\"executable\":"
             "\"/p\",\"cwd\":\"/\",\"key\":\"%s%s\",\"identity\":%s}}",
             extra, key_digit, "00000000000000000000000000000000000000000000000000000000000000a",
             identity);
    int rc = ms__spec_parse(text, s, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: %s", text, err);
}

static void test_diff(void **state)
{
    (void)state;
    char err[MS__ERRLEN], diff[400];
    ms__spec a, b;
    /* Spec fields: each one that differs, with both values; nothing else. */
    assert_int_equal(ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/w/a\",\"max_batch\":8}",
                                    &a, err, sizeof err),
                     0);
    assert_int_equal(ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/w/b\",\"max_batch\":16}",
                                    &b, err, sizeof err),
                     0);
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "max_batch: loaded 8, asked 16; weights: loaded \"/w/a\", asked "
                              "\"/w/b\"");
    ms__spec_diff(&a, &a, diff, sizeof diff);
    assert_string_equal(diff, "");
    ms__spec_free(&b);
    /* A tiny buffer is cut, and terminated. */
    assert_int_equal(ms__spec_parse("{\"backend\":\"identity\"}", &b, err, sizeof err), 0);
    char small[16];
    ms__spec_diff(&a, &b, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_string_equal(small + sizeof small - 4, "...");
    ms__spec_free(&a);
    ms__spec_free(&b);

    /* Constructors: the parts of the outline that differ, with both texts. */
    keyed(&a, "1", "{\"constructor\":\"lambda\",\"closure.path\":\"'/a'\",\"code\":\"[1234]\"}",
          "");
    keyed(&b, "2", "{\"constructor\":\"lambda\",\"closure.path\":\"'/b'\",\"code\":\"[1234]\"}",
          "");
    assert_false(ms__spec_equal(&a, &b));
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "constructor part closure.path: loaded '/a', asked '/b'");
    ms__spec_free(&b);
    keyed(&b, "2", "{\"constructor\":\"lambda\",\"code\":\"[1234]\",\"global.W\":\"3\"}",
          ",\"max_batch\":2");
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "max_batch: loaded 64, asked 2; constructor part closure.path: "
                              "loaded '/a', asked (none); constructor part global.W: loaded "
                              "(none), asked 3");
    ms__spec_free(&b);
    /* Keys that differ under equal outlines still say the constructor differs. */
    keyed(&b, "2", "{\"constructor\":\"lambda\",\"closure.path\":\"'/a'\",\"code\":\"[1234]\"}",
          "");
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "constructor: loaded key 100000000000..., asked key 200000000000...");
    ms__spec_free(&b);
    /* The same key is the same model, whatever the pickle and the outline. */
    keyed(&b, "1", "null", "");
    assert_true(ms__spec_equal(&a, &b));
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "");
    ms__spec_free(&b);
    ms__spec_free(&a);
}

/* version: a label; part of the model's identity (a swap moves a tag from one to the next). */
static void test_version(void **state)
{
    (void)state;
    char err[MS__ERRLEN], diff[400];
    ms__spec a, b;
    assert_int_equal(ms__spec_parse("{" D "\"version\":\"v1.2+rc\"}", &a, err, sizeof err), 0);
    assert_string_equal(a.version, "v1.2+rc");
    assert_int_equal(ms__spec_parse("{" D "\"version\":null}", &b, err, sizeof err), 0);
    assert_string_equal(b.version, "");
    assert_false(ms__spec_equal(&a, &b));
    ms__spec_diff(&b, &a, diff, sizeof diff);
    assert_string_equal(diff, "version: loaded null, asked \"v1.2+rc\"");
    ms__spec c;
    assert_int_equal(ms__spec_copy(&a, &c), 0);
    assert_true(ms__spec_equal(&a, &c));
    json_t *j = ms__spec_to_json(&a);
    assert_string_equal(json_string_value(json_object_get(j, "version")), "v1.2+rc");
    json_decref(j);
    ms__spec_free(&a);
    ms__spec_free(&b);
    ms__spec_free(&c);
    expect_err("{" D "\"version\":\"\"}", "spec field \"version\": expected a label of 1 to 64");
    expect_err("{" D "\"version\":\"has space\"}", "printable ASCII characters without spaces");
    expect_err("{" D "\"version\":2}", "got 2");
    expect_err("{" D "\"version\":\"0123456789012345678901234567890123456789012345678901234567"
               "89012345\"}",
               "spec field \"version\"");
}

static void test_batch_sizes(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b;
    assert_int_equal(
        ms__spec_parse("{" D "\"batch_sizes\":[1,2,4,8,16],\"max_batch\":64}", &a, err, sizeof err),
        0);
    assert_int_equal(a.nbatch_sizes, 5);
    assert_int_equal(a.batch_sizes[4], 16);
    assert_int_equal(ms__spec_run_rows(&a), 16); /* the largest size caps a run */
    assert_int_equal(
        ms__spec_parse("{" D "\"batch_sizes\":[1,2,4,8,32],\"max_batch\":64}", &b, err, sizeof err),
        0);
    assert_false(ms__spec_equal(&a, &b));
    char diff[200];
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "batch_sizes: loaded [1,2,4,8,16], asked [1,2,4,8,32]");
    ms__spec_free(&b);
    assert_int_equal(
        ms__spec_parse("{" D "\"batch_sizes\":null,\"max_batch\":8}", &b, err, sizeof err), 0);
    assert_int_equal(b.nbatch_sizes, 0);
    assert_int_equal(ms__spec_run_rows(&b), 8);
    ms__spec_free(&b);
    ms__spec_free(&a);
    const char *bad[] = {"[]",
                         "[2,1]",
                         "[1,1]",
                         "[0]",
                         "[65537]",
                         "[1.5]",
                         "\"4\"",
                         "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,"
                         "27,28,29,30,31,32,33]"};
    for (size_t i = 0; i < MS__ARRAY_LEN(bad); i++) {
        char text[300];
        snprintf(text, sizeof text, "{" D "\"batch_sizes\":%s}", bad[i]);
        expect_err(text, "spec field \"batch_sizes\": expected a list of 1 to 32 increasing");
    }
}

static void test_not_object(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec s;
    assert_int_equal(ms__spec_from_json(NULL, &s, err, sizeof err), MS_E_SPEC);
    assert_int_equal(ms__spec_parse(NULL, &s, err, sizeof err), MS_E_SPEC);
    json_t *j = json_string("dense");
    assert_int_equal(ms__spec_from_json(j, &s, err, sizeof err), MS_E_SPEC);
    assert_non_null(strstr(err, "got \"dense\""));
    json_decref(j);
}

/* A pickle whose base64 text reads as a key is not that key (found by fuzz_spec's invariant:
 * equal exactly when the diff is empty). */
static void test_key_is_not_a_pickle(void **state)
{
    (void)state;
    char err[MS__ERRLEN], diff[512];
    const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char ta[512], tb[512];
    snprintf(ta, sizeof ta,
             "{\"backend\":\"python\",\"python\":{\"constructor\":\"gASV\",\"executable\":"
             "\"/p\",\"cwd\":\"/\",\"key\":\"%s\"}}",
             hex);
    snprintf(tb, sizeof tb,
             "{\"backend\":\"python\",\"python\":{\"constructor\":\"%s\",\"executable\":"
             "\"/p\",\"cwd\":\"/\"}}",
             hex);
    ms__spec a, b;
    assert_int_equal(ms__spec_parse(ta, &a, err, sizeof err), 0);
    assert_int_equal(ms__spec_parse(tb, &b, err, sizeof err), 0);
    assert_false(ms__spec_equal(&a, &b));
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_non_null(strstr(diff, "constructor"));
    ms__spec_free(&a);
    ms__spec_free(&b);
}

/* A constructor in a memfd (ctorfd.h): its size and SHA-256 instead of the pickle; compared by
 * the hash (without a key); exactly one of the two forms; the inline form's canonical JSON has no
 * memfd fields. */
static void test_constructor_memfd(void **state)
{
    (void)state;
    char err[MS__ERRLEN], diff[512], text[1024];
    const char *h1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *h2 = "2222222222222222222222222222222222222222222222222222222222222222";
    const char *form = "{\"backend\":\"python\",\"python\":{%s\"constructor_size\":%s,"
                       "\"constructor_sha256\":\"%s\",\"executable\":\"/p\",\"cwd\":\"/\"}}";
    ms__spec a, b, c;
    snprintf(text, sizeof text, form, "", "100000", h1);
    assert_int_equal(ms__spec_parse(text, &a, err, sizeof err), 0);
    assert_int_equal(a.python_ctor_size, 100000);
    snprintf(text, sizeof text, form, "\"constructor\":null,", "100000", h2);
    assert_int_equal(ms__spec_parse(text, &b, err, sizeof err), 0);
    assert_false(ms__spec_equal(&a, &b));
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_non_null(strstr(diff, "pickle of 100000 bytes in a memfd, sha256 111111111111"));
    ms__spec_free(&b);
    /* Canonical JSON: both fields and a null constructor, parsed back to the same spec; the
     * copy keeps the size. */
    json_t *j = ms__spec_to_json(&a);
    json_t *py = json_object_get(j, "python");
    assert_true(json_is_null(json_object_get(py, "constructor")));
    assert_int_equal(json_integer_value(json_object_get(py, "constructor_size")), 100000);
    assert_string_equal(json_string_value(json_object_get(py, "constructor_sha256")), h1);
    assert_int_equal(ms__spec_from_json(j, &b, err, sizeof err), 0);
    assert_true(ms__spec_equal(&a, &b));
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_string_equal(diff, "");
    assert_int_equal(b.python_ctor_size, 100000);
    json_decref(j);
    assert_int_equal(ms__spec_copy(&b, &c), 0);
    assert_int_equal(c.python_ctor_size, 100000);
    ms__spec_free(&c);
    ms__spec_free(&b);
    /* An inline pickle is not the memfd one, and its canonical JSON is as it always was. */
    assert_int_equal(ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor\":\"gAR=\","
                                    "\"executable\":\"/p\",\"cwd\":\"/\"}}",
                                    &b, err, sizeof err),
                     0);
    assert_int_equal(b.python_ctor_size, 0);
    assert_false(ms__spec_equal(&a, &b));
    j = ms__spec_to_json(&b);
    assert_null(json_object_get(json_object_get(j, "python"), "constructor_size"));
    json_decref(j);
    ms__spec_free(&b);
    ms__spec_free(&a);

    const char *bad[][3] = {
        {"\"constructor\":\"gAR=\",", "100000", "null beside constructor_size"},
        {"", "0", "python.constructor_size\": expected the size in bytes"},
        {"", "1073741825", "python.constructor_size\": expected the size in bytes"},
        {"", "\"10\"", "python.constructor_size"},
        {"", "10", "python.constructor_sha256\": expected the SHA-256"},
    };
    for (size_t i = 0; i < MS__ARRAY_LEN(bad); i++) {
        snprintf(text, sizeof text, form, bad[i][0], bad[i][1], i == 4 ? "ABC" : h1);
        assert_int_equal(ms__spec_parse(text, &a, err, sizeof err), MS_E_SPEC);
        if (strstr(err, bad[i][2]) == NULL)
            fail_msg("spec %s: expected \"%s\" in the message, got \"%s\"", text, bad[i][2], err);
    }
    /* The size without the hash, and 2^30 bytes exactly (the limit) is taken. */
    assert_int_equal(ms__spec_parse("{\"backend\":\"python\",\"python\":{\"constructor_size\":8,"
                                    "\"executable\":\"/p\",\"cwd\":\"/\"}}",
                                    &a, err, sizeof err),
                     MS_E_SPEC);
    assert_non_null(strstr(err, "python.constructor_sha256"));
    snprintf(text, sizeof text, form, "", "1073741824", h1);
    assert_int_equal(ms__spec_parse(text, &a, err, sizeof err), 0);
    ms__spec_free(&a);
}

/* device "auto", and devices: the list, "auto", null; with device, only "auto" beside it. */
static void test_devices(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b;
    assert_int_equal(ms__spec_parse("{" D "\"device\":\"auto\"}", &a, err, sizeof err), 0);
    assert_string_equal(a.device, "auto");
    assert_true(ms__spec_placed(&a));
    ms__spec_free(&a);
    assert_int_equal(ms__spec_parse("{" D
                                    "\"instances\":3,\"devices\":[\"cuda:1\",\"cuda\",\"cpu\"]}",
                                    &a, err, sizeof err),
                     0);
    assert_int_equal(a.ndevices, 3);
    assert_string_equal(a.devices[0], "cuda:1");
    assert_string_equal(a.devices[1], "cuda:0");
    assert_string_equal(a.devices[2], "cpu");
    assert_string_equal(a.device, "auto"); /* implied */
    assert_true(ms__spec_placed(&a));
    json_t *j = ms__spec_to_json(&a);
    char *t = json_dumps(json_object_get(j, "devices"), JSON_COMPACT);
    assert_string_equal(t, "[\"cuda:1\",\"cuda:0\",\"cpu\"]");
    free(t);
    assert_int_equal(ms__spec_from_json(j, &b, err, sizeof err), 0); /* round trip */
    assert_true(ms__spec_equal(&a, &b));
    json_decref(j);
    ms__spec_free(&b);
    /* Another order is another model. */
    assert_int_equal(ms__spec_parse("{" D
                                    "\"instances\":3,\"devices\":[\"cuda:0\",\"cuda:1\",\"cpu\"]}",
                                    &b, err, sizeof err),
                     0);
    assert_false(ms__spec_equal(&a, &b));
    char diff[512];
    ms__spec_diff(&a, &b, diff, sizeof diff);
    assert_non_null(strstr(diff, "devices: loaded [\"cuda:1\",\"cuda:0\",\"cpu\"]"));
    ms__spec_free(&b);
    ms__spec_free(&a);
    assert_int_equal(
        ms__spec_parse("{" D "\"devices\":\"auto\",\"device\":\"auto\"}", &a, err, sizeof err), 0);
    assert_true(a.devices_auto);
    j = ms__spec_to_json(&a);
    assert_string_equal(json_string_value(json_object_get(j, "devices")), "auto");
    json_decref(j);
    ms__spec_free(&a);
    assert_int_equal(ms__spec_parse("{" D "\"devices\":null}", &a, err, sizeof err), 0);
    assert_false(ms__spec_placed(&a));
    ms__spec_free(&a);
    expect_err("{" D "\"device\":\"cuda:0\",\"devices\":[\"cuda:1\"]}",
               "spec fields \"device\" and \"devices\": expected one of them");
    expect_err("{" D "\"device\":\"cpu\",\"devices\":\"auto\"}", "got device \"cpu\"");
    expect_err("{" D "\"devices\":[]}", "spec field \"devices\": expected null, \"auto\"");
    expect_err("{" D "\"devices\":[\"gpu\"]}", "spec field \"devices\"");
    expect_err("{" D "\"devices\":[\"auto\"]}", "spec field \"devices\"");
    expect_err("{" D "\"devices\":[\"cuda:0\",\"cuda\"]}", "got \"cuda\""); /* twice */
    expect_err("{" D "\"devices\":\"cuda:0\"}", "spec field \"devices\"");
    expect_err("{" D "\"devices\":[\"cpu\",\"cuda:0\",\"cuda:1\",\"cuda:2\",\"cuda:3\",\"cuda:4\","
               "\"cuda:5\",\"cuda:6\",\"cuda:7\",\"cuda:8\",\"cuda:9\",\"cuda:10\",\"cuda:11\","
               "\"cuda:12\",\"cuda:13\",\"cuda:14\",\"cuda:15\"]}",
               "spec field \"devices\"");
    expect_err("{" D "\"device\":\"Auto\"}", "spec field \"device\"");
}

/* include/modelshare.h's table of spec fields names the fields of MS__SPEC_FIELDS, in its order:
 * the lines of the table that start a field ("   name   type ..."). */
static void test_header_table_agrees(void **state)
{
    (void)state;
#define NAME(name, dflt, keyword) #name,
    static const char *const fields[] = {MS__SPEC_FIELDS(NAME)};
#undef NAME
    FILE *f = fopen(MS_SOURCE_DIR "/include/modelshare.h", "r");
    assert_non_null(f);
    char line[256];
    bool in_table = false;
    size_t n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, " *   field           type") == line) {
            in_table = true;
            continue;
        }
        if (in_table && strstr(line, " * Two specs are the same model") == line)
            break;
        /* A field's first line: three spaces, then a name; a continuation starts further in. */
        char name[64];
        if (!in_table || strncmp(line, " *   ", 5) != 0 || line[5] == ' ' ||
            sscanf(line + 5, "%63[a-z_]", name) != 1)
            continue;
        assert_true(n < MS__ARRAY_LEN(fields));
        assert_string_equal(name, fields[n]);
        n++;
    }
    fclose(f);
    assert_int_equal(n, MS__ARRAY_LEN(fields));
}

/* The canonical JSON has every field of the table (python with a python spec; pad when given,
 * so that the canonical text of a spec without it is what it was before the field). */
static void test_canonical_has_every_field(void **state)
{
    (void)state;
#define NAME(name, dflt, keyword) #name,
    static const char *const fields[] = {MS__SPEC_FIELDS(NAME)};
#undef NAME
    char err[MS__ERRLEN];
    ms__spec s;
    assert_int_equal(ms__spec_parse("{\"backend\":\"identity\"}", &s, err, sizeof err), 0);
    json_t *j = ms__spec_to_json(&s);
    assert_non_null(j);
    for (size_t i = 0; i < MS__ARRAY_LEN(fields); i++)
        assert_true((json_object_get(j, fields[i]) != NULL) ==
                    (strcmp(fields[i], "python") != 0 && strcmp(fields[i], "pad") != 0 &&
                     strcmp(fields[i], "shared_with") != 0));
    assert_int_equal(json_object_size(j), MS__ARRAY_LEN(fields) - 3);
    json_decref(j);
    ms__spec_free(&s);
}

/* shared_with: "owner" (default, left out of the canonical JSON) or "group" (kept); anything
 * else names the field; two specs that differ only in it are the same model. */
static void test_shared_with(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b;
    assert_int_equal(ms__spec_parse("{\"backend\":\"identity\"}", &a, err, sizeof err), 0);
    assert_false(a.shared_group);
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"identity\",\"shared_with\":\"group\"}", &b, err, sizeof err),
        0);
    assert_true(b.shared_group);
    json_t *j = ms__spec_to_json(&b);
    assert_string_equal(json_string_value(json_object_get(j, "shared_with")), "group");
    json_decref(j);
    assert_true(ms__spec_equal(&a, &b));
    ms__spec_free(&a);
    ms__spec_free(&b);
    expect_err("{\"backend\":\"identity\",\"shared_with\":\"all\"}", "spec field \"shared_with\"");
    expect_err("{\"backend\":\"identity\",\"shared_with\":true}", "spec field \"shared_with\"");
}

/* One field compared alone, as ms__spec_equal compares it. */
static void test_field_equal(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__spec a, b;
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"identity\",\"devices\":[\"cpu\"]}", &a, err, sizeof err), 0);
    assert_int_equal(
        ms__spec_parse("{\"backend\":\"identity\",\"max_batch\":8}", &b, err, sizeof err), 0);
    assert_false(ms__spec_field_equal(&a, &b, "max_batch"));
    assert_false(ms__spec_field_equal(&a, &b, "devices"));
    assert_false(ms__spec_field_equal(&a, &b, "device")); /* "auto" beside devices */
    assert_true(ms__spec_field_equal(&a, &b, "backend"));
    assert_true(ms__spec_field_equal(&a, &b, "instances"));
    assert_false(ms__spec_field_equal(&a, &a, "no_such_field"));
    ms__spec_free(&a);
    ms__spec_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_fields),
        cmocka_unit_test(test_field_errors),
        cmocka_unit_test(test_unknown_field),
        cmocka_unit_test(test_integral_reals),
        cmocka_unit_test(test_equal_and_copy),
        cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_python),
        cmocka_unit_test(test_diff),
        cmocka_unit_test(test_batch_sizes),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_key_is_not_a_pickle),
        cmocka_unit_test(test_constructor_memfd),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_header_table_agrees),
        cmocka_unit_test(test_canonical_has_every_field),
        cmocka_unit_test(test_shared_with),
        cmocka_unit_test(test_field_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
