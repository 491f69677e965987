/*
 * ms-testclient: a small client of the C API that the integration tests (pytest) drive as a
 * separate process.
 *
 *   ms-testclient connect
 *       Connects (starting the daemon when none runs), prints "connected PID" with the daemon's
 * pid. ms-testclient session TAG SPEC_JSON|- Acquires TAG ("-": attach to the loaded model without
 * a spec), prints "acquired", then reads commands on stdin, one per line, answering each with one
 * line: infer IN.npy OUT.npy   -> "ok" | "error MS_E_NAME message" release                ->
 * "released" | "error ..." quit                   -> exits 0 (without releasing: the connection's
 * end does it) EOF on stdin: exits 0. Errors print "error MS_E_NAME message" on stdout and exit 1.
 */
#include <modelshare.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/npy.h"
#include "reference.h"

static int fail(ms_client *c, int rc)
{
    printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
    fflush(stdout);
    return 1;
}

static int daemon_pid(ms_client *c)
{
    char *json = NULL;
    if (ms_status_json(c, &json) != 0)
        return -1;
    const char *p = strstr(json, "\"daemon_pid\"");
    int pid = -1;
    if (p && (p = strchr(p, ':')))
        pid = atoi(p + 1);
    free(json);
    return pid;
}

static void infer_cmd(ms_client *c, ms_model *m, const char *in_path, const char *out_path)
{
    char err[1024];
    ms__npy_header hdr;
    void *data = NULL;
    int rc = ms__npy_read(in_path, &hdr, &data, err, sizeof err);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), err);
        return;
    }
    ms_tensor *x = NULL, *y = NULL;
    rc = ms_tensor_from(m, hdr.dtype, hdr.rank, hdr.shape, data, hdr.nbytes, &x);
    free(data);
    if (rc == 0)
        rc = ms_infer(m, x, &y);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        ms_tensor_free(x);
        return;
    }
    rc = ms__npy_write(out_path, ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y),
                       ms_tensor_data(y), err, sizeof err);
    if (rc != 0)
        printf("error %s %s\n", ms_errname(rc), err);
    else
        printf("ok\n");
    ms_tensor_free(y);
    ms_tensor_free(x);
}

static int session(const char *tag, const char *spec)
{
    ms_client *c = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, rc);
    ms_model *m = NULL;
    rc = ms_acquire(c, tag, strcmp(spec, "-") == 0 ? NULL : spec, &m);
    if (rc != 0) {
        fail(c, rc);
        ms_disconnect(c);
        return 1;
    }
    printf("acquired\n");
    fflush(stdout);
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char in_path[4096], out_path[4096];
        if (sscanf(line, "infer %4095s %4095s", in_path, out_path) == 2) {
            if (!m)
                printf("error MS_E_INVAL released already\n");
            else
                infer_cmd(c, m, in_path, out_path);
        } else if (strcmp(line, "release") == 0) {
            rc = ms_release(m);
            m = NULL;
            if (rc != 0)
                printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
            else
                printf("released\n");
        } else if (strcmp(line, "quit") == 0) {
            fflush(stdout);
            _Exit(0);
        } else {
            printf("error MS_E_INVAL unknown command: %s\n", line);
        }
        fflush(stdout);
    }
    ms_release(m);
    ms_disconnect(c);
    return 0;
}

/* --- threads ----------------------------------------------------------------------------- */

typedef struct thread_job {
    ms_client *client;
    ms_model *shared;
    const char *tag;
    const char *spec;
    int index, iters;
    int64_t in_features;
    float **expected; /* [iters] outputs of this thread's inputs */
    size_t out_bytes;
    const reference *ref; /* the model's reduction length, for first_mismatch */
    int rc;
    char msg[512];
} thread_job;

static void fill_input(float *x, int64_t n, int thread, int iter)
{
    for (int64_t k = 0; k < n; k++)
        x[k] = (float)((thread * 131 + iter * 17 + k) % 23) / 23.0f - 0.5f;
}

/* One inference of (thread, iter) through model m; *out is malloc'd (caller frees). */
static int run_one(ms_model *m, int64_t in_features, int thread, int iter, float **out,
                   size_t *out_bytes)
{
    int64_t shape[2] = {2, in_features};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        fill_input(ms_tensor_data(x), 2 * in_features, thread, iter);
        rc = ms_infer(m, x, &y);
    }
    if (rc == 0) {
        *out_bytes = ms_tensor_nbytes(y);
        *out = malloc(*out_bytes);
        memcpy(*out, ms_tensor_data(y), *out_bytes);
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    return rc;
}

static void *thread_main(void *arg)
{
    thread_job *job = arg;
    ms_model *own = NULL;
    job->rc = ms_acquire(job->client, job->tag, job->spec, &own);
    if (job->rc != 0) {
        snprintf(job->msg, sizeof job->msg, "error %s %s", ms_errname(job->rc),
                 ms_errmsg(job->client));
        return NULL;
    }
    for (int i = 0; i < job->iters && job->rc == 0; i++) {
        ms_model *through[2] = {job->shared, own};
        for (int h = 0; h < 2; h++) {
            float *out = NULL;
            size_t n = 0;
            int rc = run_one(through[h], job->in_features, job->index, i, &out, &n);
            if (rc != 0) {
                job->rc = rc;
                snprintf(job->msg, sizeof job->msg, "error %s %s", ms_errname(rc),
                         ms_errmsg(job->client));
            } else if (n != job->out_bytes ||
                       first_mismatch(job->ref, out, job->expected[i], n / sizeof(float)) >= 0) {
                job->rc = 1;
                snprintf(job->msg, sizeof job->msg,
                         "mismatch: thread %d iteration %d through the %s handle", job->index, i,
                         h == 0 ? "shared" : "own");
            }
            free(out);
            if (job->rc != 0)
                break;
        }
    }
    ms_release(own);
    return NULL;
}

static int threads_cmd(const char *tag, const char *spec, int nthreads, int iters)
{
    ms_client *c = NULL;
    ms_model *shared = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, rc);
    rc = ms_acquire(c, tag, spec, &shared);
    if (rc != 0) {
        fail(c, rc);
        ms_disconnect(c);
        return 1;
    }
    /* The threads' requests run merged in batches of other sizes, where BLAS may sum in another
     * order than for this thread's answers alone: they agree within float rounding, the bound
     * from the model's reduction length (the model loaded here only for its layers' widths). */
    reference ref;
    if (reference_load(&ref, spec) != 0) {
        ms_release(shared);
        ms_disconnect(c);
        return 1;
    }
    int in_rank = 0;
    int64_t in_shape[MS_MAX_RANK];
    ms_model_signature(shared, NULL, &in_rank, in_shape, NULL, NULL, NULL);
    thread_job *jobs = calloc((size_t)nthreads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
    int status = 0;
    /* The answers, computed by this thread alone first. */
    for (int t = 0; t < nthreads && status == 0; t++) {
        jobs[t] = (thread_job){.client = c,
                               .shared = shared,
                               .tag = tag,
                               .spec = spec,
                               .index = t,
                               .iters = iters,
                               .in_features = in_shape[1],
                               .ref = &ref};
        jobs[t].expected = calloc((size_t)iters, sizeof(float *));
        for (int i = 0; i < iters; i++) {
            rc = run_one(shared, in_shape[1], t, i, &jobs[t].expected[i], &jobs[t].out_bytes);
            if (rc != 0) {
                status = fail(c, rc);
                break;
            }
        }
    }
    for (int t = 0; t < nthreads && status == 0; t++)
        pthread_create(&tids[t], NULL, thread_main, &jobs[t]);
    for (int t = 0; t < nthreads && status == 0; t++)
        pthread_join(tids[t], NULL);
    for (int t = 0; t < nthreads && status == 0; t++)
        if (jobs[t].rc != 0) {
            printf("%s\n", jobs[t].msg);
            status = 1;
        }
    if (status == 0)
        printf("ok %d\n", nthreads * iters * 2);
    for (int t = 0; t < nthreads; t++) {
        for (int i = 0; jobs[t].expected && i < iters; i++)
            free(jobs[t].expected[i]);
        free(jobs[t].expected);
    }
    free(jobs);
    free(tids);
    reference_free(&ref);
    ms_release(shared);
    ms_disconnect(c);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "connect") == 0) {
        ms_client *c = NULL;
        int rc = ms_connect(NULL, &c);
        if (rc != 0)
            return fail(NULL, rc);
        printf("connected %d\n", daemon_pid(c));
        ms_disconnect(c);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "session") == 0)
        return session(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "threads") == 0)
        return threads_cmd(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr,
            "usage: ms-testclient connect | session TAG SPEC_JSON|- | threads TAG SPEC N ITERS\n");
    return 2;
}
