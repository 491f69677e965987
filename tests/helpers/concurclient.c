/*
 * ms-concurclient: control calls of one client's threads at once, for
 * tests/integration/test_concurrent_calls.py. One client (one connection) throughout.
 *
 *   ms-concurclient one SLOW_TAG SLOW_SPEC FAST_TAG FAST_SPEC
 *       Loads FAST_TAG; a second thread acquires SLOW_TAG (whose constructor waits for the test);
 *       once the daemon shows SLOW_TAG loading, this thread does a status, an acquire, a call
 *       and a release of FAST_TAG, and prints "second done; first waits" (or "... first done"
 *       when the first thread's acquire returned already). Then it waits for the first thread
 *       and prints "first ok" when its model answered a call, else "first error NAME message".
 *   ms-concurclient two TAG_A SPEC_A TAG_B SPEC_B
 *       Two threads acquire TAG_A and TAG_B at once; prints "both ok" when each got its model
 *       and it answered a call, else "error NAME message".
 *
 * The models are float32 identity-like (y = x) of width 4. Exit status 0 when every line said
 * ok.
 */
#include <modelshare.h>

#include "echo.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ms_client *client;

typedef struct job {
    const char *tag, *spec;
    int rc;
    char msg[1024];
    atomic_bool done;
} job;

/* Acquires j's model, calls it once, releases it. */
static void *acquire_and_call(void *arg)
{
    job *j = arg;
    ms_model *m = NULL;
    j->rc = ms_acquire(client, j->tag, j->spec, &m);
    if (j->rc == 0)
        j->rc = echo_call(m, 7.0f);
    if (j->rc != 0)
        snprintf(j->msg, sizeof j->msg, "%s %s", ms_errname(j->rc), ms_errmsg(client));
    if (m != NULL)
        ms_release(m);
    atomic_store(&j->done, true);
    return NULL;
}

/* Whether the status shows tag (its acquire reached the daemon); -1 on an error. */
static int status_shows(const char *tag)
{
    char *st = NULL;
    char quoted[300];
    int rc = ms_status_json(client, &st);
    if (rc != 0)
        return -1;
    snprintf(quoted, sizeof quoted, "\"tag\": \"%s\"", tag);
    char compact[300];
    snprintf(compact, sizeof compact, "\"tag\":\"%s\"", tag);
    int seen = strstr(st, quoted) != NULL || strstr(st, compact) != NULL;
    free(st);
    return seen;
}

static int fail(const char *what, int rc)
{
    printf("%s error %s %s\n", what, ms_errname(rc), ms_errmsg(client));
    fflush(stdout);
    return 1;
}

static int one(char **argv)
{
    job first = {.tag = argv[2], .spec = argv[3]};
    int rc = ms_load(client, argv[4], argv[5]);
    if (rc != 0)
        return fail("load", rc);
    pthread_t t;
    pthread_create(&t, NULL, acquire_and_call, &first);
    int seen;
    while ((seen = status_shows(argv[2])) == 0)
        ;
    if (seen < 0)
        return fail("status", MS_E_DAEMON_LOST);
    /* The first thread's acquire waits in the daemon: this thread's calls go on. */
    job second = {.tag = argv[4], .spec = NULL};
    acquire_and_call(&second);
    if (second.rc != 0) {
        printf("second error %s\n", second.msg);
        fflush(stdout);
        pthread_join(t, NULL);
        return 1;
    }
    printf("second done; first %s\n", atomic_load(&first.done) ? "done" : "waits");
    fflush(stdout);
    pthread_join(t, NULL);
    if (first.rc != 0)
        printf("first error %s\n", first.msg);
    else
        printf("first ok\n");
    return first.rc != 0;
}

static int two(char **argv)
{
    job a = {.tag = argv[2], .spec = argv[3]}, b = {.tag = argv[4], .spec = argv[5]};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, acquire_and_call, &a);
    pthread_create(&tb, NULL, acquire_and_call, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    if (a.rc != 0 || b.rc != 0) {
        printf("error %s\n", a.rc != 0 ? a.msg : b.msg);
        return 1;
    }
    printf("both ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6 || (strcmp(argv[1], "one") != 0 && strcmp(argv[1], "two") != 0)) {
        fprintf(stderr, "usage: ms-concurclient one|two TAG SPEC TAG SPEC\n");
        return 2;
    }
    int rc = ms_connect(NULL, &client);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(NULL));
        return 1;
    }
    rc = strcmp(argv[1], "one") == 0 ? one(argv) : two(argv);
    ms_disconnect(client);
    return rc;
}
