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
 *   ms-abuseclient ring CASE TAG SPEC_JSON
 *       Acquires TAG twice; publishes the one hostile record CASE (ring_cases below: bad magic,
 *       flags, dtype, rank, shapes, lengths, ranges, deadline, slot number, tail) in the first
 *       lease's ring and prints "CASE MS_E_NAME message" with the worker's answer ("CASE none
 *       skipped" for a slot number out of range, which has no slot to answer in), then checks
 *       that the first lease still gets an answer to a good record and that the second lease is
 *       still served: prints "ok" last.
 *   ms-abuseclient fdflood TAG SPEC_JSON N
 *       Opens up to N clients, each acquiring TAG, until N are held or an acquire fails with
 *       something other than MS_E_LIMIT; then calls every model held. Prints "ok A limit L other
 *       O infer I" (acquires that worked, refused with MS_E_LIMIT, failed otherwise; held models
 *       that answered), then "limit MESSAGE" and "other MESSAGE" (the first of each) and "held
 *       A", waits for the end of its stdin and releases everything.
 *   ms-abuseclient fdself TAG SPEC_JSON N
 *       One client acquires TAG up to N times (this process at its own RLIMIT_NOFILE: until
 *       MS_E_LIMIT); then, on the same connection, releases one lease and acquires again, and
 *       calls every model held. Prints "limit MESSAGE" (the first MS_E_LIMIT), "again ok" and
 *       "held A", waits for the end of stdin and releases everything.
 *   ms-abuseclient garbage TAG SPEC_JSON N
 *       Acquires TAG twice; publishes N entries naming no slot in the first lease's ring (each
 *       one a warning of the worker's), with a good record answered after every 32, then checks
 *       that the second lease is still served. Prints "ok".
 *   ms-abuseclient call TAG SPEC_JSON
 *       A method call (ms_call) with a few bytes: prints "MS_E_NAME message" or "ok N" (N bytes
 *       of answer).
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

static int fail_line(ms_client *c, int rc)
{
    printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
    return 1;
}

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

/* Infers one row of zeros on m through the library. */
static int infer_zeros(ms_model *m, int64_t width)
{
    int64_t shape[2] = {2, width};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        rc = ms_infer(m, x, &y);
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    return rc;
}

/* The end of a hostile run: the other lease good must still be served. Prints "ok". */
static int finish_good(ms_client *c, ms_model *good, int64_t width)
{
    int rc = infer_zeros(good, width);
    if (rc != 0)
        return fail_line(c, rc);
    ms_release(good);
    ms_disconnect(c);
    printf("ok\n");
    return 0;
}

/* Connects and acquires tag once (*b NULL) or twice. Returns 0, or 1 after printing why. */
static int open_leases(const char *tag, const char *spec, ms_client **c, ms_model **a, ms_model **b)
{
    int rc = ms_connect(NULL, c);
    if (rc == 0)
        rc = ms_acquire(*c, tag, spec, a);
    if (rc == 0 && b != NULL)
        rc = ms_acquire(*c, tag, spec, b);
    return rc != 0 ? fail_line(*c, rc) : 0;
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
    ms_client *c = NULL;
    ms_model *bad = NULL, *good = NULL;
    if (open_leases(tag, spec, &c, &bad, &good) != 0)
        return 1;
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
    return finish_good(c, good, in_rank == 2 ? in_shape[1] : 4);
}

static int errmsg(const char *tag, const char *spec)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    if (open_leases(tag, spec, &c, &m, NULL) != 0)
        return 1;
    int rc;
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

/* ---- ring: one hostile record per run ---------------------------------------------------- */

/* A well-formed request for a model of input width `width`: one row of float32 at the start of
 * the tensor space, 1 MiB of output room after it. */
static void good_req(ms__req *r, int64_t width)
{
    memset(r, 0, sizeof *r);
    r->magic = MS__REQ_MAGIC;
    r->dtype = MS_FLOAT32;
    r->rank = 2;
    r->shape[0] = 1;
    r->shape[1] = width;
    r->in_off = MS__ARENA_DATA;
    r->in_len = (uint64_t)width * 4;
    r->out_off = MS__ARENA_DATA + (1u << 20);
    r->out_cap = 1u << 20;
    r->id = 77;
}

/* Turns a good request into the hostile one named `name`; 0, or -1 for an unknown name. */
static int ring_case(const char *name, ms__req *r, uint64_t cap)
{
    const uint64_t data = MS__ARENA_DATA;
    static const struct {
        const char *name;
        int field; /* 0: in_off, 1: out_off */
        uint64_t value;
    } ranges[] = {
        {"in_in_header", 0, 0},  {"in_in_rings", 0, 4096}, {"in_past_end", 0, 1},
        {"in_off_wraps", 0, 2},  {"out_in_header", 1, 64}, {"out_at_end", 1, 1},
        {"out_off_wraps", 1, 2}, {"overlap", 1, 0},        {"misaligned", 0, 3},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        if (strcmp(name, ranges[i].name) != 0)
            continue;
        uint64_t v = ranges[i].value;
        /* 1: at the end of the arena; 2: an offset that wraps around; 3: misaligned. */
        if (ranges[i].field == 0)
            r->in_off = v == 1 ? cap - 8 : v == 2 ? UINT64_MAX - 7 : v == 3 ? data + 2 : v;
        else
            r->out_off = v == 1 ? cap : v == 2 ? UINT64_MAX - 63 : v == 0 ? data : v;
        return 0;
    }
    if (strcmp(name, "garbage") == 0)
        memset(r, 0x5a, sizeof *r);
    else if (strcmp(name, "flags") == 0)
        r->flags = 0x80;
    else if (strcmp(name, "call_not_bytes") == 0)
        r->flags = MS__REQ_CALL;
    else if (strcmp(name, "dtype_unknown") == 0)
        r->dtype = 99;
    else if (strcmp(name, "rank_9") == 0)
        r->rank = 9;
    else if (strcmp(name, "unused_dim") == 0)
        r->shape[5] = 3;
    else if (strcmp(name, "shape_huge") == 0)
        r->shape[0] = INT64_MAX;
    else if (strcmp(name, "shape_negative") == 0)
        r->shape[0] = -5;
    else if (strcmp(name, "in_len_wrong") == 0)
        r->in_len += 4;
    else if (strcmp(name, "in_len_over_arena") == 0) {
        r->shape[0] = (int64_t)(cap / (uint64_t)r->shape[1] / 4) + 1;
        r->in_len = (uint64_t)r->shape[0] * (uint64_t)r->shape[1] * 4;
    } else if (strcmp(name, "deadline_negative") == 0)
        r->deadline_ns = -1;
    else if (strcmp(name, "width_wrong") == 0) {
        r->shape[1] += 1;
        r->in_len += 4;
    } else if (strcmp(name, "dtype_wrong") == 0)
        r->dtype = MS_INT32;
    else if (strcmp(name, "out_room_small") == 0)
        r->out_cap = 4;
    else if (strcmp(name, "arena_index_huge") == 0)
        r->in_arena = MS__ARENA_LINKS + 1;
    else if (strcmp(name, "arena_not_linked") == 0)
        r->in_arena = 3;
    else if (strcmp(name, "arena_reserved") == 0)
        r->reserved = 1;
    else if (strcmp(name, "multi_not_manifest") == 0)
        r->flags = MS__REQ_MULTI; /* a float32 input where a manifest belongs */
    else if (strcmp(name, "multi_dense") == 0) {
        r->flags = MS__REQ_MULTI; /* a manifest's size to a backend of one tensor */
        r->dtype = MS_UINT8;
        r->rank = 1;
        r->shape[0] = 16;
        r->shape[1] = 0;
        r->in_len = 16;
    } else if (strcmp(name, "slot_out_of_range") != 0 && strcmp(name, "tail_runaway") != 0 &&
               strncmp(name, "linked_", 7) != 0)
        return -1;
    return 0;
}

/* The linked_* cases: the arena of a third lease on the same tag, made smaller (16 MiB) than
 * bad's, is linked to `bad` through ms_tensor_view (arena 1); then the record's input is put
 * there: at a good place (linked_ok, answered), past the end of that arena (inside bad's own),
 * naming another lease than the one linked there, in the own arena with a link named, or at the
 * output's offsets (fine: another arena). */
static int linked_case(const char *name, ms__req *r, ms_model *bad, const char *tag,
                       const char *spec)
{
    ms_tensor *src = NULL, *view = NULL;
    ms_model *small = NULL;
    int64_t shape[2] = {r->shape[0], r->shape[1]};
    setenv("MODELSHARE_ARENA_BYTES", "16MiB", 1);
    int rc = ms_acquire(bad->client, tag, spec, &small);
    unsetenv("MODELSHARE_ARENA_BYTES");
    if (rc == 0)
        rc = ms_tensor_alloc(small, MS_FLOAT32, 2, shape, &src);
    if (rc == 0) {
        memset(ms_tensor_data(src), 0, ms_tensor_nbytes(src));
        rc = ms_tensor_view(bad, MS_FLOAT32, 2, shape, ms_tensor_data(src), &view);
    }
    if (rc != 0 || view->arena != 1 || small->arena_capacity >= bad->arena_capacity) {
        printf("error linking the arena: rc %d %s\n", rc, ms_errmsg(bad->client));
        return -1;
    }
    r->in_arena = 1;
    r->in_link = (uint64_t)small->lease;
    r->in_off = src->off;
    if (strcmp(name, "linked_past_end") == 0)
        r->in_off = small->arena_capacity - 8;
    else if (strcmp(name, "linked_wrong_lease") == 0)
        r->in_link = 999999;
    else if (strcmp(name, "linked_own_with_link") == 0)
        r->in_arena = 0;
    else if (strcmp(name, "linked_same_offsets") == 0)
        r->out_off = src->off; /* apart: the output is in bad's own arena */
    else if (strcmp(name, "linked_ok") != 0)
        return -1;
    return 0;
}

/* Publishes r in slot `slot` but names slot number `entry` in the ring, and moves the tail by
 * `advance`: the ways a client can lie about its ring. */
static void publish_lie(ms_model *m, unsigned slot, const ms__req *r, uint32_t entry,
                        uint32_t advance)
{
    ms__inst *in = &m->inst[0];
    ms__slot *sl = ms__slot_of(m->arena_base, 0, slot);
    memcpy(&sl->req, r, sizeof *r);
    atomic_store(&sl->state, MS__SLOT_SUBMITTED);
    atomic_store(&in->ring->entries[in->tail % MS__RING_SLOTS], entry);
    in->tail += advance;
    atomic_store(&in->ring->tail, in->tail);
    ms__door_ring(in->door);
}

/* Answer of slot, as "MS_E_NAME message", "OK", or "none" when none came in 2 s. */
static void slot_answer(ms_model *m, unsigned slot, char *buf, size_t buflen, int wait_ms)
{
    ms__slot *sl = ms__slot_of(m->arena_base, 0, slot);
    for (int i = 0; i < wait_ms; i++) {
        if (atomic_load(&sl->state) == MS__SLOT_DONE) {
            int st = sl->resp.status;
            if (st == 0)
                snprintf(buf, buflen, "OK");
            else
                snprintf(buf, buflen, "%s %.*s", ms_errname(st), (int)sizeof sl->resp.msg,
                         sl->resp.msg);
            atomic_store(&sl->state, MS__SLOT_FREE);
            return;
        }
        usleep(1000);
    }
    snprintf(buf, buflen, "none");
}

static int ring(const char *name, const char *tag, const char *spec)
{
    ms_client *c = NULL;
    ms_model *bad = NULL, *good = NULL;
    if (open_leases(tag, spec, &c, &bad, &good) != 0)
        return 1;
    int in_rank = 0;
    int64_t in_shape[MS_MAX_RANK];
    ms_model_signature(bad, NULL, &in_rank, in_shape, NULL, NULL, NULL);
    int64_t width = in_rank == 2 && in_shape[1] > 0 ? in_shape[1] : 4;
    ms__req r;
    good_req(&r, width);
    if (ring_case(name, &r, bad->arena_capacity) != 0 ||
        (strncmp(name, "linked_", 7) == 0 && linked_case(name, &r, bad, tag, spec) != 0)) {
        printf("error unknown case %s\n", name);
        return 2;
    }
    char answer[600];
    if (strcmp(name, "slot_out_of_range") == 0)
        publish_lie(bad, 5, &r, 999, 1);
    else if (strcmp(name, "tail_runaway") == 0)
        publish_lie(bad, 5, &r, 5, 5001);
    else
        publish_lie(bad, 5, &r, 5, 1);
    slot_answer(bad, 5, answer, sizeof answer,
                strcmp(name, "slot_out_of_range") == 0 ? 500 : 10000);
    if (strcmp(name, "slot_out_of_range") == 0 && strcmp(answer, "none") == 0)
        snprintf(answer, sizeof answer, "none skipped");
    printf("%s %s\n", name, answer);
    /* The same lease is still answered (its ring starts again where its tail stands). */
    good_req(&r, width);
    publish_lie(bad, 6, &r, 6, 1);
    slot_answer(bad, 6, answer, sizeof answer, 10000);
    if (strcmp(answer, "OK") != 0) {
        printf("error a good record after the case got %s\n", answer);
        return 1;
    }
    ms_release(bad);
    return finish_good(c, good, width);
}

static int garbage(const char *tag, const char *spec, int n)
{
    ms_client *c = NULL;
    ms_model *bad = NULL, *good = NULL;
    char answer[600];
    if (open_leases(tag, spec, &c, &bad, &good) != 0)
        return 1;
    ms__req r;
    for (int i = 0; i < n; i++) {
        good_req(&r, 4);
        publish_lie(bad, 5, &r, 999, 1);
        if (i % 32 != 31 && i != n - 1)
            continue;
        /* A good record after them: once it is answered, the worker has read them all. */
        publish_lie(bad, 6, &r, 6, 1);
        slot_answer(bad, 6, answer, sizeof answer, 10000);
        if (strcmp(answer, "OK") != 0) {
            printf("error a good record after %d bad entries got %s\n", i + 1, answer);
            return 1;
        }
    }
    ms_release(bad);
    return finish_good(c, good, 4);
}

/* A method call with a few bytes that are no pickle. */
static int call(const char *tag, const char *spec)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    if (open_leases(tag, spec, &c, &m, NULL) != 0)
        return 1;
    int rc;
    static const uint8_t junk[] = "not a pickle";
    int64_t n = (int64_t)sizeof junk;
    ms_tensor *x = NULL, *y = NULL;
    rc = ms_tensor_from(m, MS_UINT8, 1, &n, junk, sizeof junk, &x);
    if (rc == 0)
        rc = ms_call(m, x, &y);
    if (rc != 0)
        printf("%s %s\n", ms_errname(rc), ms_errmsg(c));
    else
        printf("ok %zu\n", ms_tensor_nbytes(y));
    ms_tensor_free(y);
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    return 0;
}

#define FLOOD_MAX 4096

typedef struct flood {
    int ok, limit, other, infer;
    char limit_msg[600], other_msg[600];
} flood;

/* One more client acquiring tag: its outcome counted in f. Returns the rc. */
static int flood_one(flood *f, const char *tag, const char *spec, ms_client **c, ms_model **m)
{
    int rc = ms_connect(NULL, c);
    if (rc == 0)
        rc = ms_acquire(*c, tag, spec, m);
    const char *msg = ms_errmsg(*c); /* NULL: the failed ms_connect of this thread */
    if (rc == 0)
        f->ok++;
    else if (rc == MS_E_LIMIT && f->limit++ == 0)
        snprintf(f->limit_msg, sizeof f->limit_msg, "%s", msg);
    else if (rc != MS_E_LIMIT && f->other++ == 0)
        snprintf(f->other_msg, sizeof f->other_msg, "%s %s", ms_errname(rc), msg);
    return rc;
}

static void wait_stdin(void)
{
    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL) {
    }
}

static int fdflood(const char *tag, const char *spec, int n)
{
    static ms_client *cs[FLOOD_MAX];
    static ms_model *ms[FLOOD_MAX];
    flood f = {0};
    int held = 0;
    for (int i = 0; i < n && i < FLOOD_MAX; i++) {
        ms_client *c = NULL;
        ms_model *m = NULL;
        int rc = flood_one(&f, tag, spec, &c, &m);
        if (rc == 0) {
            cs[held] = c;
            ms[held++] = m;
        } else if (c != NULL) {
            ms_disconnect(c);
        }
        if (rc != 0 && rc != MS_E_LIMIT)
            break;
    }
    for (int i = 0; i < held; i++)
        f.infer += infer_zeros(ms[i], 4) == 0;
    printf("ok %d limit %d other %d infer %d\nlimit %s\nother %s\nheld %d\n", f.ok, f.limit,
           f.other, f.infer, f.limit_msg, f.other_msg, held);
    fflush(stdout);
    wait_stdin();
    for (int i = 0; i < held; i++) {
        ms_release(ms[i]);
        ms_disconnect(cs[i]);
    }
    return 0;
}

static int fdself(const char *tag, const char *spec, int n)
{
    static ms_model *ms[FLOOD_MAX];
    ms_client *c = NULL;
    int held = 0, rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail_line(c, rc);
    while (held < n && held < FLOOD_MAX && (rc = ms_acquire(c, tag, spec, &ms[held])) == 0)
        held++;
    if (rc != MS_E_LIMIT)
        return fail_line(c, rc);
    printf("limit %s\n", ms_errmsg(c));
    ms_release(ms[--held]);
    rc = ms_acquire(c, tag, spec, &ms[held]);
    if (rc != 0)
        return fail_line(c, rc);
    held++;
    int infer = 0;
    for (int i = 0; i < held; i++)
        infer += infer_zeros(ms[i], 4) == 0;
    printf("again ok\ninfer %d\nheld %d\n", infer, held);
    fflush(stdout);
    wait_stdin();
    for (int i = 0; i < held; i++)
        ms_release(ms[i]);
    ms_disconnect(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "fdflood") == 0)
        return fdflood(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "garbage") == 0)
        return garbage(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "fdself") == 0)
        return fdself(argv[2], argv[3], atoi(argv[4]));
    if (argc == 5 && strcmp(argv[1], "ring") == 0)
        return ring(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "call") == 0)
        return call(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "churn") == 0)
        return churn(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if (argc == 4 && strcmp(argv[1], "evil") == 0)
        return evil(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "errmsg") == 0)
        return errmsg(argv[2], argv[3]);
    fprintf(
        stderr,
        "usage: ms-abuseclient churn|evil|errmsg|call TAG SPEC [N ITERS] | ring CASE TAG SPEC\n");
    return 2;
}
