/*
 * ms-chaosclient: the client processes of the chaos and load suite (tests/chaos/), each driven
 * by the harness as a separate process and killed by it at will.
 *
 *   ms-chaosclient cycle TAG SPEC SEED PHASEFILE
 *       Until killed: connect, acquire, 1 to 4 requests (identity: each output must equal its
 *       input), release (one cycle in four leaves the lease to the disconnect), disconnect.
 *       Keeps the step it is in as one letter in the first byte of PHASEFILE (mapped shared:
 *       c connect, a acquire, t tensor, i infer, r release, d disconnect), so that whoever kills
 *       it can tell where it struck. On any failure prints "error ..." and exits 1.
 *   ms-chaosclient busy TAG SPEC SEED [TIMEOUT_MS]
 *       Until SIGTERM: requests of 1 to 8 rows with inputs no other client uses, each checked
 *       against the model run in this process (dense) or against its input (identity), each
 *       with a deadline of TIMEOUT_MS (ms_set_timeout; none when absent or 0).
 *       MS_E_WORKER_LOST: the lease is released and TAG acquired again. MS_E_DAEMON_LOST: the
 *       client disconnects, connects again (which starts a new daemon) and acquires again.
 *       MS_E_TIMEOUT whose message names TAG: counted apart, the lease kept (another is
 *       "other"). Prints a line per event ("lost worker NS", "lost daemon NS", "timeout NS",
 *       "connected DAEMON_PID", and "served NS" at the first right answer after a loss or a
 *       timeout; NS: CLOCK_MONOTONIC in ns), then one JSON line of counts: ok, wrong,
 *       worker_lost, daemon_lost, timeout, other, the longest call of each kind in
 *       microseconds, the first unexpected error and the first timeout's message.
 *   ms-chaosclient load TAG SPEC SEED N LATFILE CTRL_EVERY
 *       N requests of mixed sizes to an identity model (rows of 256 float32, 1 row = 1 KiB to
 *       16384 rows = 16 MiB) with inputs from SEED; each output's checksum is compared with its
 *       input's. Every CTRL_EVERY requests (0: never) one status call, timed as well. Writes one
 *       record per call to LATFILE (uint64 ns, uint32 bytes, uint32 kind: 0 infer, 1 status),
 *       then prints one JSON line: ok, lost, mismatched, status_failed, first_error.
 *   ms-chaosclient slowreader SOCKET
 *       Speaks the control protocol itself: hello, then status requests without end, never
 *       reading a reply. When the daemon drops it, connects again. Until SIGTERM; then prints
 *       "dropped N".
 *   ms-chaosclient halfframe SOCKET
 *       Sends hello, then the first 10 bytes of a frame that announces 4096, and waits. When the
 *       daemon drops it, does it again. Until SIGTERM; then prints "dropped N".
 */
#include <modelshare.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "reference.h"

#define WIDTH 256 /* float32 per row in the load and cycle modes: 1 KiB */

static volatile sig_atomic_t stop_asked;

static void on_term(int sig)
{
    (void)sig;
    stop_asked = 1;
}

static void catch_term(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int fail(ms_client *c, const char *what, int rc)
{
    printf("error %s %s: %s\n", what, ms_errname(rc), c ? ms_errmsg(c) : ms_errmsg(NULL));
    fflush(stdout);
    return 1;
}

/* Fills n bytes (a multiple of 8) from key and returns their checksum. */
static uint64_t fill(void *p, size_t n, uint64_t key)
{
    uint64_t *w = p, h = key, x = mix(key);
    for (size_t k = 0; k < n / 8; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[k] = x;
        h = (h ^ x) * 0x100000001b3ull;
    }
    return h;
}

static uint64_t checksum(const void *p, size_t n, uint64_t key)
{
    const uint64_t *w = p;
    uint64_t h = key;
    for (size_t k = 0; k < n / 8; k++)
        h = (h ^ w[k]) * 0x100000001b3ull;
    return h;
}

/* --- cycle ------------------------------------------------------------------------------- */

/* One request of 1 to 16 rows; 0 when its output is its input. */
static int cycle_request(ms_client *c, ms_model *m, char *phase, uint64_t key)
{
    int64_t shape[2] = {1 + (int64_t)(key % 16), WIDTH};
    ms_tensor *x = NULL, *y = NULL;
    *phase = 't';
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc != 0)
        return fail(c, "alloc", rc);
    uint64_t sum = fill(ms_tensor_data(x), ms_tensor_nbytes(x), key);
    *phase = 'i';
    rc = ms_infer(m, x, &y);
    if (rc != 0)
        return fail(c, "infer", rc);
    if (ms_tensor_nbytes(y) != ms_tensor_nbytes(x) ||
        checksum(ms_tensor_data(y), ms_tensor_nbytes(y), key) != sum) {
        printf("error mismatch: request %llx got another input's output\n",
               (unsigned long long)key);
        return 1;
    }
    *phase = 't';
    ms_tensor_free(y);
    ms_tensor_free(x);
    return 0;
}

static int cycle(const char *tag, const char *spec, uint64_t seed, const char *phase_file)
{
    int f = open(phase_file, O_RDWR | O_CLOEXEC);
    char *phase = f < 0 ? NULL : mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (phase == NULL || phase == MAP_FAILED) {
        printf("error cannot map %s: %s\n", phase_file, strerror(errno));
        return 1;
    }
    for (uint64_t i = 0;; i++) {
        uint64_t key = mix(seed * 1000003u + i);
        ms_client *c = NULL;
        ms_model *m = NULL;
        *phase = 'c';
        int rc = ms_connect(NULL, &c);
        if (rc != 0)
            return fail(NULL, "connect", rc);
        *phase = 'a';
        rc = ms_acquire(c, tag, spec, &m);
        if (rc != 0)
            return fail(c, "acquire", rc);
        for (uint64_t k = 0; k <= key % 4; k++)
            if (cycle_request(c, m, phase, mix(key + k)) != 0)
                return 1;
        *phase = 'r';
        if (key % 4 != 0 && (rc = ms_release(m)) != 0)
            return fail(c, "release", rc);
        *phase = 'd';
        ms_disconnect(c);
    }
}

/* --- busy -------------------------------------------------------------------------------- */

typedef struct busy {
    const char *tag, *spec;
    ms_client *c;
    ms_model *m;
    reference ref;
    bool identity;
    bool owe_served; /* a loss or timeout came: say "served" at the next right answer */
    int64_t width;
    uint64_t timeout_us; /* each request's deadline; 0 none */
    long ok, wrong, worker_lost, daemon_lost, timeout, other;
    int64_t max_ns[3]; /* infer, acquire, connect */
    char first_error[512], first_timeout[512];
} busy;

enum { CALL_INFER, CALL_ACQUIRE, CALL_CONNECT };

static void note_call(busy *b, int kind, int64_t t0)
{
    int64_t d = now_ns() - t0;
    if (d > b->max_ns[kind])
        b->max_ns[kind] = d;
}

static void note_other(busy *b, const char *what, int rc)
{
    b->other++;
    if (b->first_error[0] == '\0')
        snprintf(b->first_error, sizeof b->first_error, "%s: %s: %s", what, ms_errname(rc),
                 ms_errmsg(b->c));
}

/* The lease or the connection is gone: drop them, say so, and count it. */
static void busy_lost(busy *b, int rc)
{
    ms_release(b->m);
    b->m = NULL;
    if (rc == MS_E_DAEMON_LOST) {
        b->daemon_lost++;
        ms_disconnect(b->c);
        b->c = NULL;
    } else {
        b->worker_lost++;
    }
    b->owe_served = true;
    printf("lost %s %lld\n", rc == MS_E_DAEMON_LOST ? "daemon" : "worker", (long long)now_ns());
    fflush(stdout);
}

/* MS_E_TIMEOUT: counted when its message names the model (the lease stays usable), else
 * "other". */
static void busy_timeout(busy *b)
{
    char named[160];
    snprintf(named, sizeof named, "\"%s\"", b->tag);
    const char *msg = ms_errmsg(b->c);
    if (strstr(msg, named) == NULL) {
        note_other(b, "infer (a timeout that does not name the model)", MS_E_TIMEOUT);
        return;
    }
    b->timeout++;
    b->owe_served = true;
    if (b->first_timeout[0] == '\0')
        snprintf(b->first_timeout, sizeof b->first_timeout, "%s", msg);
    printf("timeout %lld\n", (long long)now_ns());
    fflush(stdout);
}

/* Connects when not connected and acquires; false (counted) when either fails. */
static bool busy_open(busy *b)
{
    int64_t t0 = now_ns();
    int rc;
    if (b->c == NULL) {
        rc = ms_connect(NULL, &b->c);
        note_call(b, CALL_CONNECT, t0);
        if (rc != 0) {
            b->c = NULL;
            note_other(b, "connect", rc);
            return false;
        }
        char *st = NULL;
        if (ms_status_json(b->c, &st) == 0) {
            const char *p = strstr(st, "\"daemon_pid\"");
            printf("connected %d\n", p ? atoi(strchr(p, ':') + 1) : -1);
            fflush(stdout);
        }
        free(st);
    }
    t0 = now_ns();
    rc = ms_acquire(b->c, b->tag, b->spec, &b->m);
    note_call(b, CALL_ACQUIRE, t0);
    if (rc == MS_E_DAEMON_LOST || rc == MS_E_WORKER_LOST) {
        b->m = NULL;
        busy_lost(b, rc);
        return false;
    }
    if (rc != 0) {
        b->m = NULL;
        note_other(b, "acquire", rc);
        return false;
    }
    if (b->timeout_us > 0 && (rc = ms_set_timeout(b->m, b->timeout_us)) != 0)
        note_other(b, "set_timeout", rc);
    return true;
}

/* Checks y against the answer for x; true when right. */
static bool busy_check(busy *b, const ms_tensor *x, const ms_tensor *y, int64_t rows)
{
    if (b->identity)
        return ms_tensor_nbytes(y) == ms_tensor_nbytes(x) &&
               memcmp(ms_tensor_data(y), ms_tensor_data(x), ms_tensor_nbytes(x)) == 0;
    size_t n = 0;
    float *want = reference_run(&b->ref, ms_tensor_data(x), rows, b->width, &n);
    bool right = want != NULL && n == ms_tensor_nbytes(y) &&
                 first_mismatch(&b->ref, ms_tensor_data(y), want, n / sizeof(float)) < 0;
    free(want);
    return right;
}

static void busy_request(busy *b, uint64_t key)
{
    int64_t rows = 1 + (int64_t)(key % 8);
    int64_t shape[2] = {rows, b->width};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(b->m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        float *xv = ms_tensor_data(x);
        for (int64_t j = 0; j < rows * b->width; j++) /* exact in float32, in [-1, 1] */
            xv[j] = (float)((int)(mix(key + (uint64_t)j) % 2001) - 1000) / 1000.0f;
        int64_t t0 = now_ns();
        rc = ms_infer(b->m, x, &y);
        note_call(b, CALL_INFER, t0);
    }
    if (rc == 0 && busy_check(b, x, y, rows)) {
        b->ok++;
        if (b->owe_served) {
            b->owe_served = false;
            printf("served %lld\n", (long long)now_ns());
            fflush(stdout);
        }
    } else if (rc == 0) {
        b->wrong++;
        printf("mismatch: request %llx (%lld rows)\n", (unsigned long long)key, (long long)rows);
        fflush(stdout);
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
    if (rc == MS_E_WORKER_LOST || rc == MS_E_DAEMON_LOST)
        busy_lost(b, rc);
    else if (rc == MS_E_TIMEOUT)
        busy_timeout(b);
    else if (rc != 0)
        note_other(b, "infer", rc);
}

/* s as a JSON string's body (quotes and backslashes escaped, control characters dropped). */
static void json_body(const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        if ((unsigned char)*s >= 0x20)
            putchar(*s);
    }
}

static void busy_summary(const busy *b)
{
    printf("{\"ok\": %ld, \"wrong\": %ld, \"worker_lost\": %ld, \"daemon_lost\": %ld, "
           "\"timeout\": %ld, \"other\": %ld, \"max_infer_us\": %lld, \"max_acquire_us\": %lld, "
           "\"max_connect_us\": %lld, \"first_error\": \"",
           b->ok, b->wrong, b->worker_lost, b->daemon_lost, b->timeout, b->other,
           (long long)(b->max_ns[CALL_INFER] / 1000), (long long)(b->max_ns[CALL_ACQUIRE] / 1000),
           (long long)(b->max_ns[CALL_CONNECT] / 1000));
    json_body(b->first_error);
    printf("\", \"first_timeout\": \"");
    json_body(b->first_timeout);
    printf("\"}\n");
    fflush(stdout);
}

static int busy_main(const char *tag, const char *spec, uint64_t seed, uint64_t timeout_ms)
{
    catch_term();
    busy b;
    memset(&b, 0, sizeof b);
    b.tag = tag;
    b.spec = spec;
    b.timeout_us = timeout_ms * 1000;
    if (!busy_open(&b))
        return fail(b.c, "the first acquire", MS_E_IO);
    int rank = 0;
    int64_t in_shape[MS_MAX_RANK];
    ms_model_signature(b.m, NULL, &rank, in_shape, NULL, NULL, NULL);
    b.identity = !(rank == 2 && in_shape[1] > 0);
    b.width = b.identity ? 16 : in_shape[1];
    if (!b.identity && reference_load(&b.ref, spec) != 0)
        return 1;
    for (uint64_t i = 0; !stop_asked; i++) {
        if (b.m == NULL && !busy_open(&b)) {
            usleep(10000);
            continue;
        }
        busy_request(&b, mix(seed << 32 ^ i));
    }
    busy_summary(&b);
    return 0;
}

/* --- load -------------------------------------------------------------------------------- */

typedef struct lat_rec {
    uint64_t ns;
    uint32_t bytes, kind;
} lat_rec;

/* Rows of request key: 90% 1-16 rows, 9% up to 1 MiB, 0.9% up to 8 MiB, 0.1% 16 MiB. */
static int64_t load_rows(uint64_t key)
{
    uint64_t r = key % 1000, k = key / 1000;
    if (r < 900)
        return 1 + (int64_t)(k % 16);
    if (r < 990)
        return 17 + (int64_t)(k % 1008);
    if (r < 999)
        return 1025 + (int64_t)(k % 7168);
    return 16384;
}

typedef struct load_counts {
    long ok, lost, mismatched, status_failed;
    char first_error[512];
} load_counts;

static void load_error(load_counts *n, ms_client *c, const char *what, int rc)
{
    if (n->first_error[0] == '\0')
        snprintf(n->first_error, sizeof n->first_error, "%s: %s: %s", what, ms_errname(rc),
                 ms_errmsg(c));
}

/* One checked request; its latency in *rec. */
static void load_request(ms_client *c, ms_model *m, uint64_t key, load_counts *n, lat_rec *rec)
{
    int64_t shape[2] = {load_rows(key), WIDTH};
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    uint64_t sum = rc == 0 ? fill(ms_tensor_data(x), ms_tensor_nbytes(x), key) : 0;
    int64_t t0 = now_ns();
    if (rc == 0)
        rc = ms_infer(m, x, &y);
    *rec = (lat_rec){(uint64_t)(now_ns() - t0), (uint32_t)(shape[0] * WIDTH * 4), 0};
    if (rc != 0) {
        n->lost++;
        load_error(n, c, "infer", rc);
    } else if (ms_tensor_nbytes(y) != ms_tensor_nbytes(x) ||
               checksum(ms_tensor_data(y), ms_tensor_nbytes(y), key) != sum) {
        n->mismatched++;
    } else {
        n->ok++;
    }
    ms_tensor_free(y);
    ms_tensor_free(x);
}

static int load_main(const char *tag, const char *spec, uint64_t seed, long count,
                     const char *lat_file, long ctrl_every)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, "connect", rc);
    if ((rc = ms_acquire(c, tag, spec, &m)) != 0)
        return fail(c, "acquire", rc);
    lat_rec *recs = calloc((size_t)count * 2 + 1, sizeof *recs);
    size_t nrec = 0;
    load_counts n;
    memset(&n, 0, sizeof n);
    for (long i = 0; i < count; i++) {
        load_request(c, m, mix(seed << 32 ^ (uint64_t)i), &n, &recs[nrec++]);
        if (ctrl_every > 0 && i % ctrl_every == ctrl_every - 1) {
            char *st = NULL;
            int64_t t0 = now_ns();
            rc = ms_status_json(c, &st);
            recs[nrec++] = (lat_rec){(uint64_t)(now_ns() - t0), 0, 1};
            free(st);
            if (rc != 0) {
                n.status_failed++;
                load_error(&n, c, "status", rc);
            }
        }
    }
    FILE *f = fopen(lat_file, "wb");
    if (f == NULL || fwrite(recs, sizeof *recs, nrec, f) != nrec || fclose(f) != 0)
        printf("error writing %s: %s\n", lat_file, strerror(errno));
    free(recs);
    printf("{\"ok\": %ld, \"lost\": %ld, \"mismatched\": %ld, \"status_failed\": %ld, "
           "\"first_error\": \"%s\"}\n",
           n.ok, n.lost, n.mismatched, n.status_failed, n.first_error);
    ms_release(m);
    ms_disconnect(c);
    return 0;
}

/* --- control-socket abusers -------------------------------------------------------------- */

static int raw_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Sends one frame (4-byte little-endian length, then body); only the first `upto` bytes of it
 * when upto > 0. 0, or -1 when the daemon is gone. */
static int send_frame(int fd, const char *body, size_t upto)
{
    char buf[512];
    uint32_t n = (uint32_t)strlen(body);
    memcpy(buf, &n, 4);
    memcpy(buf + 4, body, n);
    size_t len = upto > 0 ? upto : n + 4;
    for (size_t off = 0; off < len && !stop_asked;) {
        ssize_t w = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Waits until the daemon closes fd (or SIGTERM). */
static void wait_closed(int fd)
{
    char junk[4096];
    while (!stop_asked) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1 && recv(fd, junk, sizeof junk, 0) <= 0)
            return;
    }
}

static int abuser(const char *path, bool half)
{
    catch_term();
    long dropped = 0;
    static const char hello[] = "{\"op\":\"hello\",\"version\":2,\"id\":1}";
    static const char status[] = "{\"op\":\"status\",\"id\":2}";
    static const char partial[] = "{\"op\":\"status\",\"id\":3,\"padding\":\"xxxxxxxxxxxxxxxxxx\"}";
    while (!stop_asked) {
        int fd = raw_connect(path);
        if (fd < 0) {
            usleep(10000);
            continue;
        }
        if (send_frame(fd, hello, 0) == 0) {
            if (half) {
                /* The announced length is the whole frame's; 10 bytes of it come. */
                if (send_frame(fd, partial, 10) == 0)
                    wait_closed(fd);
            } else {
                while (!stop_asked && send_frame(fd, status, 0) == 0)
                    ;
            }
        }
        close(fd);
        if (!stop_asked)
            dropped++;
    }
    printf("dropped %ld\n", dropped);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "cycle") == 0)
        return cycle(argv[2], argv[3], strtoull(argv[4], NULL, 10), argv[5]);
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "busy") == 0)
        return busy_main(argv[2], argv[3], strtoull(argv[4], NULL, 10),
                         argc == 6 ? strtoull(argv[5], NULL, 10) : 0);
    if (argc == 8 && strcmp(argv[1], "load") == 0)
        return load_main(argv[2], argv[3], strtoull(argv[4], NULL, 10), atol(argv[5]), argv[6],
                         atol(argv[7]));
    if (argc == 3 && strcmp(argv[1], "slowreader") == 0)
        return abuser(argv[2], false);
    if (argc == 3 && strcmp(argv[1], "halfframe") == 0)
        return abuser(argv[2], true);
    fprintf(
        stderr,
        "usage: ms-chaosclient cycle TAG SPEC SEED PHASEFILE | busy TAG SPEC SEED [TIMEOUT_MS] | "
        "load TAG SPEC SEED N LATFILE CTRL_EVERY | slowreader SOCKET | "
        "halfframe SOCKET\n");
    return 2;
}
