/*
 * ms-planeclient: data-plane checks (rings, batching, deadlines, fairness) that the integration
 * tests (tests/integration/test_dataplane.py) drive as separate processes.
 *
 *   ms-planeclient stream TAG SPEC ITERS SEED
 *       ITERS requests of 1 to 3 rows with inputs that no other client uses (derived from SEED).
 *       Each output is checked against its own input: equal for the identity backend, equal to
 *       the same backend run in this process (within float rounding) for dense. Prints "ok N".
 *   ms-planeclient gaps TAG SPEC ITERS SEED MAXGAP_US
 *       As stream, with a pause of 0 to MAXGAP_US microseconds (random, from SEED) before each
 *       request: requests that find the worker spinning, about to sleep or asleep, and clients
 *       that spin or sleep for their answers (with MODELSHARE_SPIN_US=0 they always sleep).
 *   ms-planeclient survive TAG SPEC STOPFILE SEED ROWS
 *       Prints "started" once acquired, then requests of ROWS rows (inputs as for stream, checked
 *       the same way) until STOPFILE exists. A request that fails with MS_E_WORKER_LOST prints
 *       "lost T0 T1 message" (CLOCK_REALTIME seconds when it was sent and when it failed) and
 *       the loop goes on with the same handle; any other error or a wrong answer ends it (exit
 *       1). Prints "ok N lost L" at the end (for killing workers under load).
 *   ms-planeclient deadline TAG SPEC
 *       Requests with a 1 us timeout must fail with MS_E_TIMEOUT, more of them than the ring has
 *       slots (so the late answers' slots must be reclaimed); then a request without a timeout on
 *       the same handle must succeed with the right answer. Prints "ok timeouts=N".
 *   ms-planeclient once TAG SPEC ROWS
 *       Prints "sending" once the model is acquired, then runs one request of ROWS rows and prints
 *       "ok" or "error MS_E_NAME message" (for killing the worker while the request runs).
 *   ms-planeclient forkhold TAG SPEC RESULT_FILE
 *       Acquires TAG, runs a request, forks. The child tries its copy of the handle (it must get
 *       MS_E_DAEMON_LOST), writes what it got to RESULT_FILE and sleeps 60 s with its output
 *       closed; the parent prints "child PID" and exits without releasing anything.
 *   ms-planeclient forkforget TAG SPEC
 *       Acquires TAG, runs a request, forks. The child counts its mappings of modelshare memfds
 *       (arena, doors), calls ms_client_forget(NULL), counts again, then connects, acquires TAG
 *       and runs a request of its own; it prints "child maps A B leases L" (L: the tag's leases
 *       in status while it holds its own) and exits. The parent then runs a request on its own
 *       handle and prints "parent ok leases L" (its lease must be untouched: L 1).
 *   ms-planeclient fairness TAG SPEC NTHREADS ROUNDS ROWS
 *       One client floods the model from NTHREADS threads (ROWS rows each); another sends ROUNDS
 *       single-row requests one after the other and counts, for each, how many of the flooder's
 *       requests completed while it waited. Prints "max N mean M".
 */
#include <modelshare.h>

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reference.h"

static int fail(ms_client *c, const char *what, int rc)
{
    printf("error %s %s: %s\n", what, ms_errname(rc), c ? ms_errmsg(c) : ms_errmsg(NULL));
    fflush(stdout); /* LeakSanitizer's exit does not flush */
    return 1;
}

/* Connects and acquires; *width is the model's input width (0 when it takes any shape). */
static int open_model(const char *tag, const char *spec, ms_client **c, ms_model **m,
                      int64_t *width)
{
    int rc = ms_connect(NULL, c);
    if (rc != 0)
        return fail(NULL, "connect", rc);
    rc = ms_acquire(*c, tag, spec, m);
    if (rc != 0)
        return fail(*c, "acquire", rc);
    int rank = 0;
    int64_t shape[MS_MAX_RANK];
    ms_model_signature(*m, NULL, &rank, shape, NULL, NULL, NULL);
    *width = rank == 2 && shape[1] > 0 ? shape[1] : 0;
    return 0;
}

/* Request i of client seed: rows rows of inputs no other client uses, the answer checked
 * against the input (ref NULL: identity) or the reference. Returns 0, an MS_E_* code of ms_infer,
 * or 1 after printing a mismatch. */
static int checked_request(ms_client *c, ms_model *m, reference *ref, int64_t width, int seed,
                           int i, int64_t rows)
{
    int64_t xs[2] = {rows, width};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, xs, &x);
    if (rc != 0)
        return fail(c, "alloc", rc);
    float *xv = ms_tensor_data(x);
    for (int64_t j = 0; j < rows * width; j++) {
        if (ref == NULL) /* exact in float32: below 2^24 */
            xv[j] = (float)(seed * 1000000 + i * 64 + (int)j);
        else
            xv[j] =
                (float)((double)(mix(((uint64_t)seed << 40) ^ ((uint64_t)i << 16) ^ (uint64_t)j) %
                                 2001) /
                            1000.0 -
                        1.0);
    }
    int status = 0;
    rc = ms_infer(m, x, &y);
    if (rc != 0) {
        status = rc;
    } else if (ref == NULL) {
        if (ms_tensor_nbytes(y) != ms_tensor_nbytes(x) ||
            memcmp(ms_tensor_data(y), xv, ms_tensor_nbytes(x)) != 0) {
            printf("mismatch: client %d request %d (%lld rows) got another input's output\n", seed,
                   i, (long long)rows);
            status = 1;
        }
    } else {
        size_t n = 0;
        float *want = reference_run(ref, xv, rows, width, &n);
        const float *got = ms_tensor_data(y);
        if (want == NULL || n != ms_tensor_nbytes(y)) {
            printf("mismatch: client %d request %d: output of %zu bytes, expected %zu\n", seed, i,
                   ms_tensor_nbytes(y), n);
            status = 1;
        }
        long k = status == 0 ? first_mismatch(ref, got, want, n / sizeof(float)) : -1;
        if (k >= 0) {
            printf("mismatch: client %d request %d value %ld: %g, expected %g\n", seed, i, k,
                   got[k], want[k]);
            status = 1;
        }
        free(want);
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    return status;
}

static int stream(const char *tag, const char *spec, int iters, int seed, int maxgap_us)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    int rc;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    bool identity = width == 0;
    if (identity)
        width = 16;
    reference ref;
    memset(&ref, 0, sizeof ref);
    if (!identity && reference_load(&ref, spec) != 0)
        return 1;
    int status = 0;
    for (int i = 0; i < iters && status == 0; i++) {
        uint64_t r = mix((uint64_t)seed * 1000003u + (uint64_t)i);
        int64_t rows = 1 + (int64_t)(r % 3);
        if (maxgap_us > 0)
            usleep((useconds_t)((r >> 8) % (uint64_t)(maxgap_us + 1)));
        rc = checked_request(c, m, identity ? NULL : &ref, width, seed, i, rows);
        if (rc < 0)
            status = fail(c, "infer", rc);
        else if (rc > 0)
            status = 1;
    }
    if (status == 0)
        printf("ok %d\n", iters);
    if (!identity)
        reference_free(&ref);
    ms_release(m);
    ms_disconnect(c);
    return status;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int survive(const char *tag, const char *spec, const char *stopfile, int seed, int rows)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    bool identity = width == 0;
    reference ref;
    memset(&ref, 0, sizeof ref);
    if (!identity && reference_load(&ref, spec) != 0)
        return 1;
    printf("started\n");
    fflush(stdout);
    long ok = 0, lost = 0;
    int status = 0;
    for (int i = 0; status == 0 && access(stopfile, F_OK) != 0; i++) {
        double t0 = now_s();
        int rc =
            checked_request(c, m, identity ? NULL : &ref, identity ? 16 : width, seed, i, rows);
        if (rc == MS_E_WORKER_LOST) {
            printf("lost %.3f %.3f %s\n", t0, now_s(), ms_errmsg(c));
            fflush(stdout);
            lost++;
        } else if (rc < 0) {
            status = fail(c, "infer", rc);
        } else if (rc > 0) {
            status = 1;
        } else {
            ok++;
        }
    }
    if (status == 0)
        printf("ok %ld lost %ld\n", ok, lost);
    if (!identity)
        reference_free(&ref);
    ms_release(m);
    ms_disconnect(c);
    return status;
}

static int deadline(const char *tag, const char *spec)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    int64_t xs[2] = {256, width > 0 ? width : 16};
    ms_tensor *x = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, xs, &x);
    if (rc != 0)
        return fail(c, "alloc", rc);
    float *xv = ms_tensor_data(x);
    for (int64_t j = 0; j < xs[0] * xs[1]; j++)
        xv[j] = (float)(j % 7) * 0.1f;
    ms_set_timeout(m, 1);
    int timeouts = 0;
    for (int i = 0; i < 100; i++) {
        ms_tensor *y = NULL;
        rc = ms_infer(m, x, &y);
        if (rc == 0) {
            printf("error a request with a 1 us timeout succeeded\n");
            return 1;
        }
        if (rc != MS_E_TIMEOUT)
            return fail(c, "infer with a timeout", rc);
        if (strstr(ms_errmsg(c), "timeout") == NULL) {
            printf("error the timeout's message does not say so: %s\n", ms_errmsg(c));
            return 1;
        }
        timeouts++;
    }
    ms_set_timeout(m, 0);
    reference ref;
    if (reference_load(&ref, spec) != 0)
        return 1;
    ms_tensor *y = NULL;
    rc = ms_infer(m, x, &y);
    if (rc != 0)
        return fail(c, "infer after the timeouts", rc);
    size_t n = 0;
    float *want = reference_run(&ref, xv, xs[0], xs[1], &n);
    const float *got = ms_tensor_data(y);
    int status = want == NULL || n != ms_tensor_nbytes(y) ||
                 first_mismatch(&ref, got, want, n / sizeof(float)) >= 0;
    if (status)
        printf("mismatch: the answer after the timeouts is wrong\n");
    else
        printf("ok timeouts=%d\n", timeouts);
    free(want);
    reference_free(&ref);
    ms_tensor_free(y);
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    return status;
}

typedef struct flood {
    ms_model *m;
    int64_t rows, width;
    _Atomic long *done;
    _Atomic int *stop;
    int rc;
} flood;

static void *flood_main(void *arg)
{
    flood *f = arg;
    int64_t xs[2] = {f->rows, f->width};
    ms_tensor *x = NULL;
    f->rc = ms_tensor_alloc(f->m, MS_FLOAT32, 2, xs, &x);
    if (f->rc == 0)
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
    while (f->rc == 0 && !atomic_load(f->stop)) {
        ms_tensor *y = NULL;
        f->rc = ms_infer(f->m, x, &y);
        ms_tensor_free(y);
        atomic_fetch_add(f->done, 1);
    }
    ms_tensor_free(x);
    return NULL;
}

static int fairness(const char *tag, const char *spec, int nthreads, int rounds, int64_t rows)
{
    ms_client *cf = NULL, *cs = NULL;
    ms_model *mf = NULL, *ms = NULL;
    int rc = ms_connect(NULL, &cf);
    if (rc == 0)
        rc = ms_connect(NULL, &cs);
    if (rc != 0)
        return fail(NULL, "connect", rc);
    if ((rc = ms_acquire(cf, tag, spec, &mf)) != 0 || (rc = ms_acquire(cs, tag, spec, &ms)) != 0)
        return fail(cf, "acquire", rc);
    int rank = 0;
    int64_t shape[MS_MAX_RANK];
    ms_model_signature(ms, NULL, &rank, shape, NULL, NULL, NULL);
    int64_t width = rank == 2 && shape[1] > 0 ? shape[1] : 16;
    _Atomic long done = 0;
    _Atomic int stop = 0;
    flood *fl = calloc((size_t)nthreads, sizeof *fl);
    pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
    for (int t = 0; t < nthreads; t++) {
        fl[t] = (flood){.m = mf, .rows = rows, .width = width, .done = &done, .stop = &stop};
        pthread_create(&tids[t], NULL, flood_main, &fl[t]);
    }
    /* Let the flood fill the ring first. */
    while (atomic_load(&done) < 10L * nthreads)
        ;
    int64_t xs[2] = {1, width};
    ms_tensor *x = NULL;
    rc = ms_tensor_alloc(ms, MS_FLOAT32, 2, xs, &x);
    long worst = 0, total = 0;
    for (int r = 0; rc == 0 && r < rounds; r++) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        ms_tensor *y = NULL;
        long before = atomic_load(&done);
        rc = ms_infer(ms, x, &y);
        long waited = atomic_load(&done) - before;
        ms_tensor_free(y);
        if (waited > worst)
            worst = waited;
        total += waited;
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < nthreads; t++)
        pthread_join(tids[t], NULL);
    int status = 0;
    if (rc != 0)
        status = fail(cs, "infer of the slow client", rc);
    for (int t = 0; status == 0 && t < nthreads; t++)
        if (fl[t].rc != 0)
            status = fail(cf, "infer of the flooder", fl[t].rc);
    if (status == 0)
        printf("max %ld mean %.2f\n", worst, (double)total / rounds);
    free(fl);
    free(tids);
    ms_tensor_free(x);
    ms_release(mf);
    ms_release(ms);
    ms_disconnect(cf);
    ms_disconnect(cs);
    return status;
}

static int once(const char *tag, const char *spec, int64_t rows)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    int64_t xs[2] = {rows, width > 0 ? width : 16};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, xs, &x);
    if (rc != 0)
        return fail(c, "alloc", rc);
    memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
    printf("sending\n");
    fflush(stdout);
    rc = ms_infer(m, x, &y);
    int status = rc != 0 ? fail(c, "infer", rc) : 0;
    if (rc == 0)
        printf("ok\n");
    ms_tensor_free(y);
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    return status;
}

static int forkhold(const char *tag, const char *spec, const char *result)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    int64_t xs[2] = {1, width > 0 ? width : 16};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, xs, &x);
    if (rc == 0) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        rc = ms_infer(m, x, &y);
    }
    if (rc != 0)
        return fail(c, "infer", rc);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        ms_tensor *y2 = NULL;
        int r = ms_infer(m, x, &y2);
        FILE *f = fopen(result, "w");
        if (f) {
            fprintf(f, "%s %s\n", ms_errname(r), ms_errmsg(c));
            fclose(f);
        }
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        dup2(devnull, 1);
        dup2(devnull, 2);
        sleep(60);
        _exit(0);
    }
    printf("child %d\n", (int)pid);
    return 0; /* no release, no disconnect: the process's end is what the daemon sees */
}

/* Mappings of modelshare memfds (arenas, doors) in this process. */
static int memfd_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        n += strstr(line, "/memfd:modelshare-") != NULL;
    if (f != NULL)
        fclose(f);
    return n;
}

/* The tag's leases as status says, or -1. */
static int leases_of(ms_client *c, const char *tag)
{
    char *st = NULL, key[300];
    if (ms_status_json(c, &st) != 0)
        return -1;
    snprintf(key, sizeof key, "\"tag\": \"%s\"", tag);
    char *at = strstr(st, key);
    at = at != NULL ? strstr(at, "\"leases\": ") : NULL;
    int n = at != NULL ? atoi(at + strlen("\"leases\": ")) : -1;
    free(st);
    return n;
}

/* One request of a zero row through m: 0, or the error. */
static int one_request(ms_model *m, int64_t width)
{
    int64_t xs[2] = {1, width > 0 ? width : 16};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, xs, &x);
    if (rc == 0) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        rc = ms_infer(m, x, &y);
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    return rc;
}

static int forget_child(const char *tag, const char *spec)
{
    int before = memfd_maps();
    ms_client_forget(NULL);
    int after = memfd_maps();
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    int rc = one_request(m, width);
    if (rc != 0)
        return fail(c, "child infer", rc);
    printf("child maps %d %d leases %d\n", before, after, leases_of(c, tag));
    ms_release(m);
    ms_disconnect(c);
    return 0;
}

static int forkforget(const char *tag, const char *spec)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int64_t width;
    if (open_model(tag, spec, &c, &m, &width) != 0)
        return 1;
    int rc = one_request(m, width);
    if (rc != 0)
        return fail(c, "infer", rc);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        int r = forget_child(tag, spec);
        fflush(stdout);
        _exit(r);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    rc = one_request(m, width);
    if (rc != 0)
        return fail(c, "parent infer", rc);
    printf("parent ok leases %d\n", leases_of(c, tag));
    ms_release(m);
    ms_disconnect(c);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "forkforget") == 0)
        return forkforget(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "forkhold") == 0)
        return forkhold(argv[2], argv[3], argv[4]);
    if (argc == 5 && strcmp(argv[1], "once") == 0)
        return once(argv[2], argv[3], atoll(argv[4]));
    if (argc == 6 && strcmp(argv[1], "stream") == 0)
        return stream(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), 0);
    if (argc == 7 && strcmp(argv[1], "gaps") == 0)
        return stream(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    if (argc == 7 && strcmp(argv[1], "survive") == 0)
        return survive(argv[2], argv[3], argv[4], atoi(argv[5]), atoi(argv[6]));
    if (argc == 4 && strcmp(argv[1], "deadline") == 0)
        return deadline(argv[2], argv[3]);
    if (argc == 7 && strcmp(argv[1], "fairness") == 0)
        return fairness(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), atoll(argv[6]));
    fprintf(
        stderr,
        "usage: ms-planeclient stream TAG SPEC ITERS SEED | gaps TAG SPEC ITERS SEED MAXGAP_US | "
        "survive TAG SPEC STOPFILE SEED ROWS | "
        "deadline TAG SPEC | "
        "once TAG SPEC ROWS | fairness TAG SPEC NTHREADS ROUNDS ROWS\n");
    return 2;
}
