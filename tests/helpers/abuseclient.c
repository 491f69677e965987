/*
 * ms-abuseclient: checks of the client library and the worker that the abuse tests
 * (tests/integration/test_client_abuse.py) drive as a separate process.
 *
 *   ms-abuseclient churn TAG SPEC_JSON NTHREADS ITERS
 *       NTHREADS threads of one client each acquire, allocate, infer, free and release TAG ITERS
 *       times, while ms_errmsg() must be empty after each successful call. Prints "ok N".
 *   ms-abuseclient evil TAG SPEC_JSON
 *       Acquires TAG twice; in the first lease's ring publishes malformed and hostile records
 *       straight to the worker (each must get an error answer), then checks that the second lease
 *       is still served. Prints "ok".
 *   ms-abuseclient errmsg TAG SPEC_JSON
 *       A failed call then a successful one: ms_errmsg() must be empty after the success.
 */
#include <modelshare.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
        int in_dtype = 0, in_rank = 0;
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

/* Writes a record straight into slot `slot` of the handle's first ring set and publishes it, as
 * a hostile client could: the library's own bookkeeping is bypassed. */
static void publish_raw(ms_model *m, unsigned slot, const void *rec, size_t len)
{
    ms__inst *in = &m->inst[0];
    ms__slot *sl = ms__slot_of(m->arena_base, 0, slot % MS__RING_SLOTS);
    memset(&sl->req, 0, sizeof sl->req);
    memcpy(&sl->req, rec, len < sizeof sl->req ? len : sizeof sl->req);
    atomic_store(&sl->state, MS__SLOT_SUBMITTED);
    atomic_store(&in->ring->entries[in->tail % MS__RING_SLOTS], slot);
    in->tail++;
    atomic_store(&in->ring->tail, in->tail);
    ms__door_ring(in->door);
}

/* Waits up to 10 s for slot to be done; returns its response status, or 1 on no answer. */
static int answer_of(ms_model *m, unsigned slot)
{
    ms__slot *sl = ms__slot_of(m->arena_base, 0, slot);
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(&sl->state) == MS__SLOT_DONE) {
            atomic_store(&sl->state, MS__SLOT_FREE);
            return sl->resp.status;
        }
        usleep(1000);
    }
    return 1;
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
    uint64_t cap = bad->arena_capacity;
    const uint64_t data = MS__ARENA_DATA;
    char junk[sizeof(ms__req)];
    memset(junk, 0x5a, sizeof junk);
    /* Garbage bytes in a slot: an error answer, never a crash. */
    publish_raw(bad, 0, junk, sizeof junk);
    int st = answer_of(bad, 0);
    if (st >= 0) {
        printf("error garbage record answered %d, expected an MS_E_* code\n", st);
        return 1;
    }
    /* Well-formed records with hostile ranges: each gets an error answer. */
    ms__req req;
    memset(&req, 0, sizeof req);
    req.magic = MS__REQ_MAGIC;
    req.dtype = MS_FLOAT32;
    req.rank = 2;
    req.shape[0] = 1;
    req.shape[1] = 4;
    req.in_len = 16;
    const uint64_t offs[][2] = {
        {0, data},               /* input in the header */
        {4096, data},            /* input in the rings */
        {cap - 8, data},         /* input past the end */
        {UINT64_MAX - 7, data},  /* offset overflow */
        {data, 64},              /* output in the header */
        {data, cap},             /* output at the end */
        {data, UINT64_MAX - 63}, /* output offset overflow */
        {data, data},            /* overlapping */
        {data + 2, data + 8192}, /* misaligned */
    };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        req.id = 1000 + i;
        req.in_off = offs[i][0];
        req.out_off = offs[i][1];
        req.out_cap = 1u << 20;
        publish_raw(bad, 1, &req, sizeof req);
        st = answer_of(bad, 1);
        if (st >= 0) {
            printf("error hostile range %zu answered %d, expected an MS_E_* code\n", i, st);
            return 1;
        }
    }
    /* Huge and negative shapes. */
    req.in_off = data;
    req.out_off = data + (1u << 20);
    req.out_cap = 1u << 20;
    req.shape[0] = INT64_MAX;
    req.in_len = 0;
    publish_raw(bad, 2, &req, sizeof req);
    req.shape[0] = -5;
    publish_raw(bad, 3, &req, sizeof req);
    if (answer_of(bad, 2) >= 0 || answer_of(bad, 3) >= 0) {
        printf("error a huge or negative shape was not refused\n");
        return 1;
    }
    /* A slot number out of range: skipped. Then a tail far ahead of the worker: every submitted
     * slot gets MS_E_PROTOCOL. */
    publish_raw(bad, 999, &req, sizeof req);
    req.shape[0] = 1;
    req.in_len = 16;
    ms__slot *s4 = ms__slot_of(bad->arena_base, 0, 4);
    memcpy(&s4->req, &req, sizeof req);
    atomic_store(&s4->state, MS__SLOT_SUBMITTED);
    atomic_store(&bad->inst[0].ring->entries[bad->inst[0].tail % MS__RING_SLOTS], 4);
    bad->inst[0].tail += 5001; /* published together: the worker cannot see it in range */
    atomic_store(&bad->inst[0].ring->tail, bad->inst[0].tail);
    ms__door_ring(bad->inst[0].door);
    st = answer_of(bad, 4);
    if (st != MS_E_PROTOCOL) {
        printf("error a runaway tail gave %d, expected an error\n", st);
        return 1;
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
