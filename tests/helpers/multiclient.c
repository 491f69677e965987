/* ms-multiclient TAG: calls the model loaded under TAG (a python model) through ms_infer_n, as a
 * C program does: a float32 [2, 3] "a" (0..5, made in shared memory), an int64 [2] "b" (7, 8,
 * copied in with ms_tensor_from) and a list "texts" ("héllo", "x"), by keyword. Prints the
 * answer's form, then one line per output: name, dtype name, shape, values (lists: their items).
 * On an error: "error NAME message" and exit status 1. */
#include <stdio.h>
#include <string.h>

#include "modelshare.h"

static int fail(ms_client *c, int r)
{
    printf("error %s %s\n", ms_errname(r), ms_errmsg(c));
    return 1;
}

static void print_output(const ms_output *o)
{
    printf("%s %s [", o->name,
           o->dtype == MS_TEXT_UTF8    ? "text"
           : o->dtype == MS_TEXT_BYTES ? "bytes"
                                       : ms_dtype_name(o->dtype));
    for (int d = 0; d < o->rank; d++)
        printf(d ? ",%lld" : "%lld", (long long)o->shape[d]);
    printf("]");
    if (o->dtype == MS_TEXT_UTF8 || o->dtype == MS_TEXT_BYTES) {
        for (int64_t i = 0; i < o->shape[0]; i++) {
            const char *b;
            size_t len;
            ms_text_item(o, (size_t)i, &b, &len);
            printf(" %.*s", (int)len, b);
        }
    } else if (o->dtype == MS_FLOAT32) {
        for (size_t i = 0; i < o->nbytes / 4; i++)
            printf(" %g", (double)((const float *)o->data)[i]);
    } else if (o->dtype == MS_INT64) {
        for (size_t i = 0; i < o->nbytes / 8; i++)
            printf(" %lld", (long long)((const int64_t *)o->data)[i]);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: ms-multiclient TAG\n");
        return 2;
    }
    ms_client *c = NULL;
    ms_model *m = NULL;
    ms_tensor *a = NULL, *b = NULL, *texts = NULL, *out = NULL;
    int r = ms_connect(NULL, &c);
    if (r < 0)
        return fail(NULL, r);
    if ((r = ms_acquire(c, argv[1], NULL, &m)) < 0)
        return fail(c, r);
    int64_t sa[2] = {2, 3}, sb[1] = {2};
    int64_t bv[2] = {7, 8};
    const char *items[2] = {"h\xc3\xa9llo", "x"};
    size_t lens[2] = {strlen(items[0]), 1};
    if ((r = ms_tensor_alloc(m, MS_FLOAT32, 2, sa, &a)) < 0 ||
        (r = ms_tensor_from(m, MS_INT64, 1, sb, bv, sizeof bv, &b)) < 0 ||
        (r = ms_text_from(m, MS_TEXT_UTF8, 2, items, lens, &texts)) < 0)
        return fail(c, r);
    for (int i = 0; i < 6; i++)
        ((float *)ms_tensor_data(a))[i] = (float)i;
    ms_named in[3] = {{"a", a}, {"b", b}, {"texts", texts}};
    if ((r = ms_infer_n(m, in, 3, MS_CALL_KWARGS, &out)) < 0)
        return fail(c, r);
    int form = 0, n = ms_outputs_count(out, &form);
    printf("form %d outputs %d\n", form, n);
    for (int i = 0; i < n; i++) {
        ms_output o;
        if (ms_outputs_get(out, i, &o) != 0)
            return 1;
        print_output(&o);
    }
    ms_tensor_free(out);
    ms_tensor_free(texts);
    ms_tensor_free(b);
    ms_tensor_free(a);
    ms_release(m);
    ms_disconnect(c);
    return 0;
}
