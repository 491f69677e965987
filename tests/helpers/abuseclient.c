/*
 * ms-abuseclient: checks of the client library and the worker that the abuse tests
 * (tests/integration/test_client_abuse.py) drive as a separate process.
 *
 *   ms-abuseclient churn TAG SPEC_JSON NTHREADS ITERS
 *       NTHREADS threads of one client each acquire, allocate, infer, free and release TAG ITERS
 *       times, while ms_errmsg() must be empty after each successful call. Prints "ok N".
 *   ms-abuseclient evil TAG SPEC_JSON
 *       Acquires TAG twice; on the first lease's channel sends malformed and hostile records
 *       straight to the worker, then checks that the second lease is still served. Prints "ok".
 *   ms-abuseclient errmsg TAG SPEC_JSON
 *       A failed call then a successful one: ms_errmsg() must be empty after the success.
 */
#include <modelshare.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/lib/internal.h"
#include "../../src/common/arena.h"

typedef struct job {
    ms_client *client;
    const char *tag, *spec;
    int iters, rc, done;
    char msg[600];
} job;

static void *churn_thread(void *arg)
{
    job *j = arg;
    for (int i = 0; i < j->iters; i++) {
        ms_model *m = NULL;
        ms_tensor *x = NULL, *y = NULL;
        int rc = ms_acquire(j->client, j->tag, j->spec, &m);
        if (rc == 0 && ms_errmsg(j->client)[0] != '\0') {
            snprintf(j->msg, sizeof j->msg, "message after a successful acquire: %s",
                     ms_errmsg(j->client));
            j->rc = -100;
            ms_release(m);
            return NULL;
        }
        int in_dtype, in_rank;
        int64_t in_shape[MS_MAX_RANK];
        if (rc == 0)
            rc = ms_model_signature(m, &in_dtype, &in_rank, in_shape, NULL, NULL, NULL);
        int64_t shape[2] = {3, in_rank == 2 ? in_shape[1] : 4};
        if (rc == 0)
            rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
        if (rc == 0) {
            memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
            rc = ms_infer(m, x, &y);
        }
        if (rc != 0) {
            snprintf(j->msg, sizeof j->msg, "%s: %s", ms_errname(rc), ms_errmsg(j->client));
            j->rc = rc;
            ms_release(m);
            return NULL;
        }
        ms_tensor_free(y);
        /* x is left for ms_release to free. */
        rc = ms_release(m);
        if (rc != 0) {
            snprintf(j->msg, sizeof j->msg, "release %s: %s", ms_errname(rc), ms_errmsg(j->client));
            j->rc = rc;
            return NULL;
        }
        j->done++;
    }
    return NULL;
}

static int churn(const char *tag, const char *spec, int n, int iters)
{
    ms_client *c;
    int rc = ms_connect(NULL, &c);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(NULL));
        return 1;
    }
    job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    for (int i = 0; i < n; i++) {
        jobs[i].client = c;
        jobs[i].tag = tag;
        jobs[i].spec = spec;
        jobs[i].iters = iters;
        pthread_create(&th[i], NULL, churn_thread, &jobs[i]);
    }
    int total = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].done;
        if (jobs[i].rc != 0 && !bad) {
            printf("error thread %d: %s\n", i, jobs[i].msg);
            bad = 1;
        }
    }
    ms_disconnect(c);
    free(jobs);
    free(th);
    if (bad)
        return 1;
    printf("ok %d\n", total);
    return 0;
}

static int send_raw(int fd, const void *buf, size_t len)
{
    return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Reads one record; returns its length or -1. */
static ssize_t recv_raw(int fd, void *buf, size_t len)
{
    return recv(fd, buf, len, 0);
}

static int evil(const char *tag, const char *spec)
{
    ms_client *c;
    ms_model *bad = NULL, *good = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc == 0)
        rc = ms_acquire(c, tag, spec, &bad);
    if (rc == 0)
        rc = ms_acquire(c, tag, spec, &good);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        return 1;
    }
    int fd = bad->chan_fd;
    uint64_t cap = bad->arena_capacity;
    char junk[sizeof(ms__req) + 200];
    ms__resp resp;
    memset(junk, 0x5a, sizeof junk);
    /* A record too long, one too short, one empty-ish. */
    send_raw(fd, junk, sizeof junk);
    recv_raw(fd, &resp, sizeof resp);
    send_raw(fd, junk, 3);
    recv_raw(fd, &resp, sizeof resp);
    /* Well-formed records with hostile ranges. */
    ms__req req;
    memset(&req, 0, sizeof req);
    req.magic = MS__REQ_MAGIC;
    req.dtype = MS_FLOAT32;
    req.rank = 2;
    req.shape[0] = 1;
    req.shape[1] = 4;
    req.in_len = 16;
    const uint64_t offs[][2] = {
        {0, 8192},               /* input in the header */
        {cap - 8, 8192},         /* input past the end */
        {UINT64_MAX - 7, 8192},  /* offset overflow */
        {8192, 0},               /* output in the header */
        {8192, cap},             /* output at the end */
        {8192, UINT64_MAX - 63}, /* output offset overflow */
        {8192, 8192},            /* overlapping */
        {8194, 16384},           /* misaligned */
    };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        req.id = 1000 + i;
        req.in_off = offs[i][0];
        req.out_off = offs[i][1];
        req.out_cap = 1u << 20;
        if (send_raw(fd, &req, sizeof req) == 0)
            recv_raw(fd, &resp, sizeof resp);
    }
    /* Huge shapes. */
    req.in_off = 8192;
    req.out_off = 1u << 20;
    req.out_cap = 1u << 20;
    req.shape[0] = INT64_MAX;
    req.in_len = 0;
    if (send_raw(fd, &req, sizeof req) == 0)
        recv_raw(fd, &resp, sizeof resp);
    req.shape[0] = -5;
    if (send_raw(fd, &req, sizeof req) == 0)
        recv_raw(fd, &resp, sizeof resp);
    /* Many requests without reading the answers, then hang up. */
    req.shape[0] = 1;
    req.in_len = 16;
    for (int i = 0; i < 2000; i++) {
        req.id = 5000 + (uint64_t)i;
        if (send_raw(fd, &req, sizeof req) != 0)
            break;
    }
    ms_release(bad);

    /* The other lease must still be served. */
    int in_rank;
    int64_t in_shape[MS_MAX_RANK];
    ms_model_signature(good, NULL, &in_rank, in_shape, NULL, NULL, NULL);
    int64_t shape[2] = {2, in_rank == 2 ? in_shape[1] : 4};
    ms_tensor *x = NULL, *y = NULL;
    rc = ms_tensor_alloc(good, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        rc = ms_infer(good, x, &y);
    }
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        return 1;
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    ms_release(good);
    ms_disconnect(c);
    printf("ok\n");
    return 0;
}

static int errmsg(const char *tag, const char *spec)
{
    ms_client *c;
    ms_model *m;
    int rc = ms_connect(NULL, &c);
    if (rc == 0)
        rc = ms_acquire(c, tag, spec, &m);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        return 1;
    }
    int64_t shape[1] = {-1};
    ms_tensor *x = NULL;
    rc = ms_tensor_alloc(m, MS_FLOAT32, 1, shape, &x);
    if (rc == 0 || ms_errmsg(c)[0] == '\0') {
        printf("error expected a failure with a message, got %d\n", rc);
        return 1;
    }
    shape[0] = 4;
    rc = ms_tensor_alloc(m, MS_FLOAT32, 1, shape, &x);
    if (rc != 0 || ms_errmsg(c)[0] != '\0') {
        printf("error after a success: rc %d, message \"%s\"\n", rc, ms_errmsg(c));
        return 1;
    }
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "churn") == 0)
        return churn(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if (argc == 4 && strcmp(argv[1], "evil") == 0)
        return evil(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "errmsg") == 0)
        return errmsg(argv[2], argv[3]);
    fprintf(stderr, "usage: ms-abuseclient churn|evil|errmsg TAG SPEC [N ITERS]\n");
    return 2;
}
