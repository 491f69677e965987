/*
 * ms-faultclient: clients that misbehave or outlive their daemon, for the stall and daemon-death
 * tests (tests/integration/test_stall.py, test_daemon_death.py).
 *
 *   ms-faultclient slowreader TAG SPEC_JSON
 *       Acquires TAG (a lease), prints "acquired", then obeys stdin, one command a line:
 *         send N   sends N status requests on its control socket without reading a reply
 *                  -> "sent N"
 *         read     reads every reply not yet read, each checked (its id, "ok") -> "read N"
 *         flood    sends status requests without reading until the daemon drops it
 *                  -> "dropped after N" (or "not dropped after N")
 *   ms-faultclient ctlping COUNT
 *       COUNT status calls in a row; prints "ok COUNT p50_us A p99_us B max_us C".
 *   ms-faultclient loadloop TAG SPEC_JSON infer|status ROWS
 *       Acquires TAG, prints "ready", then infers (ROWS rows of zeros) or asks for the status in
 *       a loop until a call fails; prints "lost NAME CALLS T" (T: CLOCK_MONOTONIC seconds of
 *       the failure), then "next status NAME US infer NAME US acquire NAME US": one more call of
 *       each kind on the same client, its code and how long it took.
 *   ms-faultclient orphanworker WORKER SPEC_JSON
 *       Starts the worker program WORKER itself (fd 3: a socketpair, fd 5: a door), waits for
 *       its "ready", closes the control socket while staying alive (so no parent-death signal
 *       helps), and prints "exited MS STATUS": how long the worker took to exit.
 */
#include <modelshare.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../src/common/proto.h"
#include "../../src/common/ring.h"
#include "../../src/lib/internal.h"

#define FIRST_ID 1000000
#define FLOOD_MAX 200000 /* a flood that is not dropped by then fails the test */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(ms_client *c, const char *what, int rc)
{
    printf("error %s %s %s\n", what, ms_errname(rc), ms_errmsg(c));
    return 1;
}

/* --- slowreader -------------------------------------------------------------------------- */

/* One status request with id, sent raw on the client's socket. */
static int send_status(ms_client *c, int64_t id)
{
    char err[MS__ERRLEN];
    json_t *req = json_pack("{s:s,s:I}", "op", "status", "id", (json_int_t)id);
    int rc = ms__msg_send(c->fd, req, NULL, 0, -1, err, sizeof err);
    json_decref(req);
    return rc;
}

/* Reads the replies to ids [*next_read, sent) in order. Returns how many, or -1 (printed). */
static int read_replies(ms_client *c, int64_t *next_read, int64_t sent)
{
    char err[MS__ERRLEN];
    int n = 0;
    for (; *next_read < sent; (*next_read)++, n++) {
        json_t *r = NULL;
        if (ms__msg_recv(c->fd, &r, NULL, NULL, 0, 30000, err, sizeof err) != 0) {
            printf("error reply %lld: %s\n", (long long)*next_read, err);
            return -1;
        }
        json_t *id = json_object_get(r, "id");
        int ok = json_is_integer(id) && json_integer_value(id) == *next_read &&
                 json_is_true(json_object_get(r, "ok"));
        json_decref(r);
        if (!ok) {
            printf("error reply %lld out of step or refused\n", (long long)*next_read);
            return -1;
        }
    }
    return n;
}

static int slowreader(const char *tag, const char *spec)
{
    ms_client *c;
    ms_model *m;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, "connect", rc);
    if ((rc = ms_acquire(c, tag, spec, &m)) != 0)
        return fail(c, "acquire", rc);
    printf("acquired\n");
    fflush(stdout);
    int64_t sent = FIRST_ID, next_read = FIRST_ID;
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        int n;
        if (sscanf(line, "send %d", &n) == 1) {
            for (int i = 0; i < n; i++)
                if (send_status(c, sent++) != 0) {
                    printf("error send %d\n", i);
                    return 1;
                }
            printf("sent %d\n", n);
        } else if (strncmp(line, "read", 4) == 0) {
            if ((n = read_replies(c, &next_read, sent)) < 0)
                return 1;
            printf("read %d\n", n);
        } else if (strncmp(line, "flood", 5) == 0) {
            long k = 0;
            while (k < FLOOD_MAX && send_status(c, sent++) == 0)
                k++;
            printf(k < FLOOD_MAX ? "dropped after %ld\n" : "not dropped after %ld\n", k);
        } else {
            printf("error unknown command %s", line);
        }
        fflush(stdout);
    }
    _Exit(0); /* the handle's lease dies with the connection */
}

/* --- ctlping ----------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int ctlping(int count)
{
    ms_client *c;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, "connect", rc);
    double *us = calloc((size_t)count, sizeof *us);
    for (int i = 0; i < count; i++) {
        char *json = NULL;
        double t0 = mono_s();
        rc = ms_status_json(c, &json);
        us[i] = (mono_s() - t0) * 1e6;
        free(json);
        if (rc != 0)
            return fail(c, "status", rc);
    }
    qsort(us, (size_t)count, sizeof *us, cmp_double);
    printf("ok %d p50_us %.0f p99_us %.0f max_us %.0f\n", count, us[count / 2],
           us[(count * 99) / 100], us[count - 1]);
    free(us);
    ms_disconnect(c);
    return 0;
}

/* --- loadloop ---------------------------------------------------------------------------- */

static int infer_once(ms_model *m, int64_t rows)
{
    int dtype = 0, rank = 0;
    int64_t shape[MS_MAX_RANK];
    int rc = ms_model_signature(m, &dtype, &rank, shape, NULL, NULL, NULL);
    if (rc != 0)
        return rc;
    int64_t s[2] = {rows, rank == 2 && shape[1] > 0 ? shape[1] : 4};
    ms_tensor *x = NULL, *y = NULL;
    rc = ms_tensor_alloc(m, MS_FLOAT32, 2, s, &x);
    if (rc == 0) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        rc = ms_infer(m, x, &y);
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    return rc;
}

static int status_once(ms_client *c)
{
    char *json = NULL;
    int rc = ms_status_json(c, &json);
    free(json);
    return rc;
}

static int loadloop(const char *tag, const char *spec, const char *kind, int64_t rows)
{
    ms_client *c;
    ms_model *m, *again = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, "connect", rc);
    if ((rc = ms_acquire(c, tag, spec, &m)) != 0)
        return fail(c, "acquire", rc);
    printf("ready\n");
    fflush(stdout);
    bool infer = strcmp(kind, "infer") == 0;
    long calls = 0;
    while ((rc = infer ? infer_once(m, rows) : status_once(c)) == 0)
        calls++;
    printf("lost %s %ld %.6f\n", ms_errname(rc), calls, mono_s());
    double t0 = mono_s();
    int r1 = status_once(c);
    double t1 = mono_s();
    int r2 = infer_once(m, 1);
    double t2 = mono_s();
    int r3 = ms_acquire(c, tag, spec, &again);
    double t3 = mono_s();
    printf("next status %s %.0f infer %s %.0f acquire %s %.0f\n", ms_errname(r1), (t1 - t0) * 1e6,
           ms_errname(r2), (t2 - t1) * 1e6, ms_errname(r3), (t3 - t2) * 1e6);
    fflush(stdout);
    ms_release(again);
    ms_release(m);
    ms_disconnect(c);
    return 0;
}

/* --- orphanworker ------------------------------------------------------------------------ */

/* Starts worker with fds 3 (ctrl) and 5 (door) and no stats page. */
static pid_t start_worker(const char *worker, const char *spec, int ctrl, const ms__door_fds *door)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Copies above 7 first: dup2 onto its own number would keep close-on-exec. */
    int c = fcntl(ctrl, F_DUPFD_CLOEXEC, 10), d = fcntl(door->rw, F_DUPFD_CLOEXEC, 10),
        b = fcntl(door->bell, F_DUPFD_CLOEXEC, 10);
    if (c < 0 || d < 0 || b < 0 || dup2(c, 3) != 3 || dup2(d, 5) != 5 || dup2(b, 7) != 7)
        _exit(126);
    close(4);
    execl(worker, worker, "--tag", "orphan", "--spec", spec, "--log-level", "warn", (char *)NULL);
    _exit(127);
}

static int orphanworker(const char *worker, const char *spec)
{
    char err[MS__ERRLEN];
    int sv[2];
    ms__door_fds door;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 ||
        ms__door_create(&door, err, sizeof err) != 0) {
        printf("error setup\n");
        return 1;
    }
    pid_t pid = start_worker(worker, spec, sv[1], &door);
    close(sv[1]);
    ms__door_fds_close(&door);
    json_t *ready = NULL;
    if (pid < 0 || ms__msg_recv(sv[0], &ready, NULL, NULL, 0, 30000, err, sizeof err) != 0 ||
        strcmp(json_string_value(json_object_get(ready, "op")) ?: "", "ready") != 0) {
        printf("error no ready from the worker: %s\n", err);
        return 1;
    }
    json_decref(ready);
    usleep(300000); /* let it settle into its idle sleep */
    double t0 = mono_s();
    close(sv[0]);
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (mono_s() - t0 > 10) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            printf("error the worker did not exit within 10 s of its control socket closing\n");
            return 1;
        }
        usleep(1000);
    }
    printf("exited %.0f %d\n", (mono_s() - t0) * 1e3,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "slowreader") == 0)
        return slowreader(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "ctlping") == 0)
        return ctlping(atoi(argv[2]));
    if (argc == 6 && strcmp(argv[1], "loadloop") == 0)
        return loadloop(argv[2], argv[3], argv[4], atoll(argv[5]));
    if (argc == 4 && strcmp(argv[1], "orphanworker") == 0)
        return orphanworker(argv[2], argv[3]);
    fprintf(stderr, "usage: ms-faultclient slowreader|ctlping|loadloop|orphanworker ...\n");
    return 2;
}
