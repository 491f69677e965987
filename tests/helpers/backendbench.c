/*
 * ms-backend-bench: one process calling a backend directly (no daemon, no worker, no shared
 * memory): the baseline the GPU benchmark compares modelshare with. For "device":"cuda:N" that is
 * cuBLAS in this process.
 *
 *   ms-backend-bench SPEC_JSON [--batch B] [--seconds S]
 *
 * Prints one JSON object: backend, device, batch, runs, rows_per_s, p50_us, p99_us.
 */
#include <modelshare.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/backends/backend.h"
#include "../../src/common/util.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    char err[MS__ERRLEN];
    if (argc < 2) {
        fprintf(stderr, "usage: ms-backend-bench SPEC_JSON [--batch B] [--seconds S]\n");
        return 2;
    }
    long batch = 64;
    double seconds = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--batch") == 0)
            batch = strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = strtod(argv[i + 1], NULL);
    }
    if (batch < 1 || batch > (1 << 20) || !(seconds > 0)) {
        fprintf(stderr, "ms-backend-bench: expected --batch 1..1048576 and --seconds > 0\n");
        return 2;
    }
    ms__spec spec;
    const ms__backend_ops *be = NULL;
    void *st = NULL;
    int rc = ms__spec_parse(argv[1], &spec, err, sizeof err);
    if (rc == 0)
        rc = ms__backend_open(&spec, &be, err, sizeof err);
    if (rc == 0)
        rc = be->load(&spec, &st, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "ms-backend-bench: %s: %s\n", ms_errname(rc), err);
        return 1;
    }
    ms__sig sin, sout;
    be->signature(st, &sin, &sout);
    ms__tensor_view in = {.dtype = MS_FLOAT32, .rank = 2, .shape = {batch, sin.shape[1]}};
    in.nbytes = (size_t)batch * (size_t)sin.shape[1] * sizeof(float);
    ms__tensor_view out;
    rc = be->output_for(st, &in, &out, err, sizeof err);
    in.data = calloc(1, in.nbytes);
    out.data = malloc(out.nbytes);
    size_t cap = 1 << 20, n = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    if (rc != 0 || in.data == NULL || out.data == NULL || lat == NULL) {
        fprintf(stderr, "ms-backend-bench: %s\n", rc != 0 ? err : "out of memory");
        return 1;
    }
    for (size_t i = 0; i < in.nbytes / sizeof(float); i++)
        ((float *)in.data)[i] = (float)(i % 17) / 17.0f - 0.5f;
    be->run(st, &in, &out, err, sizeof err); /* warm-up */
    int64_t t0 = ms__now_ns(), end = t0 + (int64_t)(seconds * 1e9);
    while (n < cap) {
        int64_t a = ms__now_ns();
        if (a >= end)
            break;
        rc = be->run(st, &in, &out, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "ms-backend-bench: %s: %s\n", ms_errname(rc), err);
            return 1;
        }
        lat[n++] = ms__now_ns() - a;
    }
    double elapsed = (double)(ms__now_ns() - t0) / 1e9;
    qsort(lat, n, sizeof *lat, cmp_i64);
    printf("{\"backend\":\"%s\",\"device\":\"%s\",\"batch\":%ld,\"runs\":%zu,"
           "\"rows_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           be->name, spec.device, batch, n, (double)n * (double)batch / elapsed,
           n ? (double)lat[n / 2] / 1e3 : 0.0, n ? (double)lat[n * 99 / 100] / 1e3 : 0.0);
    be->unload(st);
    ms__spec_free(&spec);
    free(in.data);
    free(out.data);
    free(lat);
    return 0;
}
