/* ms-sigclient TAG: prints what the model loaded under TAG says of its inputs and outputs, as a C
 * program reads them (ms_model_inputs_count, ms_model_input, ...): one line each,
 * "input|output NAME DTYPE [DIMS]" (NAME "-" when unnamed, DTYPE "?" when not known, DIMS "?"
 * when not known), then "past the end ERRNAME" for the index after the last input.
 * On an error: "error NAME message" and exit status 1. */
#include <stdio.h>

#include "modelshare.h"

static int fail(ms_client *c, int r)
{
    printf("error %s %s\n", ms_errname(r), ms_errmsg(c));
    return 1;
}

static const char *kind(int dtype)
{
    if (dtype == MS_TEXT_UTF8)
        return "str";
    if (dtype == MS_TEXT_BYTES)
        return "bytes";
    return dtype == 0 ? "?" : ms_dtype_name(dtype);
}

static void print_info(const char *side, const ms_tensor_info *t)
{
    printf("%s %s %s [", side, t->name != NULL ? t->name : "-", kind(t->dtype));
    if (t->rank < 0)
        printf("?");
    for (int d = 0; d < t->rank; d++)
        printf(d ? ",%lld" : "%lld", (long long)t->shape[d]);
    printf("]\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: ms-sigclient TAG\n");
        return 2;
    }
    ms_client *c = NULL;
    ms_model *m = NULL;
    int r = ms_connect(NULL, &c);
    if (r < 0)
        return fail(NULL, r);
    if ((r = ms_acquire(c, argv[1], NULL, &m)) < 0)
        return fail(c, r);
    ms_tensor_info t;
    int n = ms_model_inputs_count(m);
    for (int i = 0; i < n; i++) {
        if ((r = ms_model_input(m, i, &t)) < 0)
            return fail(c, r);
        print_info("input", &t);
    }
    for (int i = 0; i < ms_model_outputs_count(m); i++) {
        if ((r = ms_model_output(m, i, &t)) < 0)
            return fail(c, r);
        print_info("output", &t);
    }
    printf("past the end %s\n", ms_errname(ms_model_input(m, n, &t)));
    ms_release(m);
    ms_disconnect(c);
    return 0;
}
