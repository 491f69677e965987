/*
 * ms-swapclient: one of the client processes of the swap test (tests/integration/test_swap.py).
 *
 *   ms-swapclient TAG OLD.safetensors NEW.safetensors SEED
 *       Acquires TAG (no spec: whatever is loaded) and calls it without pause, 1 to 8 rows of
 *       random input a request, until SIGTERM. Each answer is checked against both versions run
 *       in this process (dense references): it must be the old version's or the new one's.
 *       SIGUSR1 says a swap starts, SIGUSR2 that it returned: a request started after SIGUSR2
 *       must get the new version's answer, and once this client got the new version's answer,
 *       never the old one's again (one instance). Prints "ready" after its first answer, then at
 *       the end one JSON line: requests, failed, old, new, wrong, old_after_swap, old_after_new,
 *       during (requests started between SIGUSR1 and SIGUSR2), longest_us and longest_during_us,
 *       after (requests started after SIGUSR2), first_error.
 */
#include <modelshare.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reference.h"

static volatile sig_atomic_t stop_asked, phase;

static void on_signal(int sig)
{
    if (sig == SIGTERM)
        stop_asked = 1;
    else if (sig == SIGUSR1 && phase == 0)
        phase = 1;
    else if (sig == SIGUSR2)
        phase = 2;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

typedef struct counts {
    long requests, failed, old, fresh, wrong, old_after_swap, old_after_new, during, after;
    int64_t longest_ns, longest_during_ns;
    char first_error[300];
} counts;

/* Which version answered y: 0 old, 1 new, -1 neither. */
static int which(reference *ref, const float *x, int64_t rows, int64_t width, const ms_tensor *y)
{
    for (int v = 0; v < 2; v++) {
        size_t nbytes = 0;
        float *want = reference_run(&ref[v], x, rows, width, &nbytes);
        bool same = want != NULL && nbytes == ms_tensor_nbytes(y) &&
                    first_mismatch(&ref[v], ms_tensor_data(y), want, nbytes / sizeof(float)) < 0;
        free(want);
        if (same)
            return v;
    }
    return -1;
}

/* One request; its result counted in *k. */
static void one(ms_client *c, ms_model *m, reference *ref, int64_t width, uint64_t key, counts *k)
{
    int p = phase;
    int64_t shape[2] = {1 + (int64_t)(key % 8), width};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        float *xs = ms_tensor_data(x);
        for (int64_t i = 0; i < shape[0] * width; i++)
            xs[i] = (float)((double)(mix(key + (uint64_t)i) % 2001) / 1000.0 - 1.0);
    }
    int64_t t0 = now_ns();
    if (rc == 0)
        rc = ms_infer(m, x, &y);
    int64_t took = now_ns() - t0;
    k->requests++;
    k->during += p == 1;
    k->after += p == 2;
    if (took > k->longest_ns)
        k->longest_ns = took;
    if (p == 1 && took > k->longest_during_ns)
        k->longest_during_ns = took;
    if (rc != 0) {
        k->failed++;
        if (!k->first_error[0])
            snprintf(k->first_error, sizeof k->first_error, "%s: %s", ms_errname(rc), ms_errmsg(c));
    } else {
        int v = which(ref, ms_tensor_data(x), shape[0], width, y);
        k->wrong += v < 0;
        k->old += v == 0;
        k->old_after_swap += v == 0 && p == 2;
        k->old_after_new += v == 0 && k->fresh > 0;
        k->fresh += v == 1;
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
}

static void print_counts(const counts *k)
{
    char err[400];
    size_t j = 0;
    for (const char *c = k->first_error; *c && j + 2 < sizeof err; c++) {
        if (*c == '"' || *c == '\\')
            err[j++] = '\\';
        err[j++] = (*c == '\n') ? ' ' : *c;
    }
    err[j] = '\0';
    printf("{\"requests\": %ld, \"failed\": %ld, \"old\": %ld, \"new\": %ld, \"wrong\": %ld, "
           "\"old_after_swap\": %ld, \"old_after_new\": %ld, \"during\": %ld, \"after\": %ld, "
           "\"longest_us\": %lld, \"longest_during_us\": %lld, \"first_error\": \"%s\"}\n",
           k->requests, k->failed, k->old, k->fresh, k->wrong, k->old_after_swap, k->old_after_new,
           k->during, k->after, (long long)(k->longest_ns / 1000),
           (long long)(k->longest_during_ns / 1000), err);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: ms-swapclient TAG OLD.safetensors NEW.safetensors SEED\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    reference ref[2];
    char spec[2][8192];
    for (int v = 0; v < 2; v++) {
        snprintf(spec[v], sizeof spec[v], "{\"backend\":\"dense\",\"weights\":\"%s\"}",
                 argv[2 + v]);
        if (reference_load(&ref[v], spec[v]) != 0)
            return 1;
    }
    ms_client *c = NULL;
    ms_model *m = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc == 0)
        rc = ms_acquire(c, argv[1], NULL, &m);
    if (rc != 0) {
        printf("error acquire %s: %s\n", ms_errname(rc), ms_errmsg(c));
        return 1;
    }
    int64_t width = 0, shape[MS_MAX_RANK];
    int dtype, rank;
    if (ms_model_signature(m, &dtype, &rank, shape, NULL, NULL, NULL) == 0 && rank == 2)
        width = shape[1];
    if (width <= 0) {
        printf("error the model's input is not [rows, width]\n");
        return 1;
    }
    counts k;
    memset(&k, 0, sizeof k);
    uint64_t key = mix(strtoull(argv[4], NULL, 10)) & 0xffffffffffffull;
    one(c, m, ref, width, key++, &k);
    printf("ready\n");
    fflush(stdout);
    while (!stop_asked)
        one(c, m, ref, width, key += 1000, &k);
    print_counts(&k);
    ms_release(m);
    ms_disconnect(c);
    reference_free(&ref[0]);
    reference_free(&ref[1]);
    return 0;
}
