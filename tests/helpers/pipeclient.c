/*
 * ms-pipeclient: a pipeline of two models, B(A(x)), with A's output passed to B by reference
 * (ms_tensor_view on B of A's output: A's arena linked to B's workers). Driven by
 * tests/integration/test_pipeline.py. Every answer by reference is compared byte for byte with
 * the same input copied into B's own arena.
 *
 *   ms-pipeclient pipe TAG_A SPEC_A TAG_B SPEC_B
 *       B(A(x)) by reference; prints "linked 1", then waits for a line on stdin (the test looks at
 *       B's worker meanwhile); then releases A: the view answers MS_E_INVAL, B serves copies; A
 *       again, linked again. Prints "released" (waits for a line) and "ok".
 *   ms-pipeclient restart TAG_A SPEC_A TAG_B SPEC_B
 *       B(A(x)) by reference, prints "linked 1", waits for a line (the test kills B's worker),
 *       then calls B on the same view until the restarted worker answers: by reference still.
 *   ms-pipeclient limit TAG_A SPEC_A TAG_B SPEC_B
 *       9 leases of A, a view of each in B: the 9th is MS_E_LIMIT; once one of them is
 *       released, it links.
 *
 * Lines: "error ..." and exit 1 on anything unexpected.
 */
#include <modelshare.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lib/internal.h"

static int fail(ms_client *c, const char *what, int rc)
{
    printf("error %s: %s (%d) %s\n", what, ms_errname(rc), rc, ms_errmsg(c));
    return 1;
}

static void wait_line(void)
{
    char line[64];
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL)
        exit(3);
}

/* A(x) for a 3-row x of A's input width (values from seed). */
static int run_a(ms_model *a, int seed, ms_tensor **y)
{
    int64_t shape[MS_MAX_RANK];
    int rank = 0;
    ms_model_signature(a, NULL, &rank, shape, NULL, NULL, NULL);
    shape[0] = 3;
    ms_tensor *x = NULL;
    int rc = ms_tensor_alloc(a, MS_FLOAT32, 2, shape, &x);
    if (rc != 0)
        return rc;
    float *p = ms_tensor_data(x);
    for (size_t i = 0; i < ms_tensor_nbytes(x) / 4; i++)
        p[i] = (float)((int)((i * 7 + (size_t)seed * 13) % 17) - 8) / 8.0f;
    rc = ms_infer(a, x, y);
    ms_tensor_free(x);
    return rc;
}

/* B on y by reference (*view made, or given) and B on a copy of y: the same bytes. *arena: the
 * view's linked arena. */
static int check_b(ms_client *c, ms_model *b, ms_tensor *y, ms_tensor **view, int *arena)
{
    int rc = 0;
    if (*view == NULL)
        rc = ms_tensor_view(b, ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y),
                            ms_tensor_data(y), view);
    if (rc != 0)
        return fail(c, "view", rc);
    ms_tensor *z = NULL, *cp = NULL, *zc = NULL;
    rc = ms_infer(b, *view, &z);
    if (rc != 0)
        return fail(c, "B by reference", rc);
    rc = ms_tensor_from(b, ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y),
                        ms_tensor_data(y), ms_tensor_nbytes(y), &cp);
    if (rc == 0)
        rc = ms_infer(b, cp, &zc);
    if (rc != 0)
        return fail(c, "B on a copy", rc);
    int same = ms_tensor_nbytes(z) == ms_tensor_nbytes(zc) &&
               memcmp(ms_tensor_data(z), ms_tensor_data(zc), ms_tensor_nbytes(z)) == 0;
    *arena = (*view)->arena;
    ms_tensor_free(z);
    ms_tensor_free(zc);
    ms_tensor_free(cp);
    if (!same) {
        printf("error B by reference and B on a copy differ\n");
        return 1;
    }
    return 0;
}

typedef struct two {
    ms_client *c;
    ms_model *a, *b;
    ms_tensor *y, *view;
} two;

static int setup(two *t, char **argv)
{
    memset(t, 0, sizeof *t);
    int rc = ms_connect(NULL, &t->c);
    if (rc == 0)
        rc = ms_acquire(t->c, argv[2], argv[3], &t->a);
    if (rc == 0)
        rc = ms_acquire(t->c, argv[4], argv[5], &t->b);
    if (rc == 0)
        rc = run_a(t->a, 1, &t->y);
    if (rc != 0)
        return fail(t->c, "setup", rc);
    int arena = 0;
    if (check_b(t->c, t->b, t->y, &t->view, &arena) != 0)
        return 1;
    printf("linked %d\n", arena);
    return arena == 1 ? 0 : 1;
}

static int pipe_mode(char **argv)
{
    two t;
    if (setup(&t, argv) != 0)
        return 1;
    wait_line();
    ms_release(t.a); /* frees y too */
    ms_tensor *z = NULL;
    int rc = ms_infer(t.b, t.view, &z);
    if (rc != MS_E_INVAL)
        return fail(t.c, "a view of a released model's tensor: expected MS_E_INVAL", rc);
    ms_tensor_free(t.view);
    rc = ms_acquire(t.c, argv[2], argv[3], &t.a);
    if (rc == 0)
        rc = run_a(t.a, 2, &t.y);
    if (rc != 0)
        return fail(t.c, "A again", rc);
    /* A copy of the new y into B: B serves as before. */
    printf("released\n");
    wait_line();
    int arena = 0;
    t.view = NULL;
    if (check_b(t.c, t.b, t.y, &t.view, &arena) != 0)
        return 1;
    printf("relinked %d\nok\n", arena);
    ms_disconnect(t.c);
    return 0;
}

static int restart_mode(char **argv)
{
    two t;
    if (setup(&t, argv) != 0)
        return 1;
    wait_line();
    int rc = MS_E_WORKER_LOST;
    ms_tensor *z = NULL;
    for (int i = 0; i < 200 && rc == MS_E_WORKER_LOST; i++)
        rc = ms_infer(t.b, t.view, &z);
    if (rc != 0)
        return fail(t.c, "B by reference after its worker's restart", rc);
    ms_tensor_free(z);
    int arena = 0;
    if (check_b(t.c, t.b, t.y, &t.view, &arena) != 0)
        return 1;
    printf("ok %d\n", arena);
    ms_disconnect(t.c);
    return 0;
}

static int limit_mode(char **argv)
{
    enum { N = MS__ARENA_LINKS + 1 };
    ms_client *c = NULL;
    ms_model *a[N] = {0}, *b = NULL;
    ms_tensor *y[N] = {0}, *view[N] = {0};
    int rc = ms_connect(NULL, &c);
    for (int i = 0; rc == 0 && i < N; i++) {
        rc = ms_acquire(c, argv[2], argv[3], &a[i]);
        if (rc == 0)
            rc = run_a(a[i], i, &y[i]);
    }
    if (rc == 0)
        rc = ms_acquire(c, argv[4], argv[5], &b);
    if (rc != 0)
        return fail(c, "setup", rc);
    for (int i = 0; i < N; i++) {
        int arena = 0;
        rc = ms_tensor_view(b, MS_FLOAT32, ms_tensor_rank(y[i]), ms_tensor_shape(y[i]),
                            ms_tensor_data(y[i]), &view[i]);
        if (i < N - 1 && (rc != 0 || check_b(c, b, y[i], &view[i], &arena) != 0))
            return rc != 0 ? fail(c, "a view within the limit", rc) : 1;
        if (i == N - 1 && rc != MS_E_LIMIT)
            return fail(c, "the view past the limit: expected MS_E_LIMIT", rc);
    }
    printf("limit %s\n", ms_errmsg(c));
    ms_release(a[0]);
    int arena = 0;
    view[N - 1] = NULL;
    if (check_b(c, b, y[N - 1], &view[N - 1], &arena) != 0)
        return 1;
    printf("ok %d\n", arena);
    ms_disconnect(c);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 6 && strcmp(argv[1], "pipe") == 0)
        return pipe_mode(argv);
    if (argc == 6 && strcmp(argv[1], "restart") == 0)
        return restart_mode(argv);
    if (argc == 6 && strcmp(argv[1], "limit") == 0)
        return limit_mode(argv);
    fprintf(stderr, "usage: ms-pipeclient pipe|restart|limit TAG_A SPEC_A TAG_B SPEC_B\n");
    return 2;
}
