/*
 * `modelshare bench`: N client processes each send R requests of B rows to a model and time every
 * call; or, with --inproc, one caller runs the same backend directly in this process, which is
 * the limit modelshare is measured against.
 *
 * What a call is, in both modes: the input is already in place (in the model's shared memory for
 * modelshare, in private memory in process), the clock runs around the call that produces the
 * output, and the output is freed. Clients start together (a barrier) after a warm-up; requests/s
 * is every request of every client over the wall time from the start to the last finish.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends/backend.h"
#include "common/spec.h"
#include "common/util.h"

const char ms__usage_bench[] =
    "usage: modelshare bench TAG (--spec JSON | --weights FILE) [--clients N] [--requests R]\n"
    "                        [--batch B] [--width W] [--warmup K] [--gap-us G] [--inproc]\n"
    "                        [--json]\n"
    "\n"
    "Measures a model through modelshare: N client processes each send R requests of B rows\n"
    "(after K warm-up requests each) and time every call. --inproc runs the same backend in this\n"
    "process instead, one caller: the limit to compare with.\n"
    "\n"
    "  --spec JSON      the model's spec ({\"backend\":\"identity\"} measures modelshare alone)\n"
    "  --weights FILE   a dense model's safetensors weights\n"
    "  --clients N      client processes (default 1)\n"
    "  --requests R     timed requests per client (default 10000)\n"
    "  --batch B        rows per request (default 1)\n"
    "  --width W        float32 values per row when the model does not fix it (default 256)\n"
    "  --warmup K       untimed requests per client first (default R/10, at most 1000)\n"
    "  --gap-us G       pause G microseconds before each request (untimed): with a gap longer\n"
    "                   than the spin time the worker is asleep when each request comes\n"
    "  --inproc         call the backend in this process (one caller)\n"
    "  --json           print one JSON object: clients, requests, batch, requests_per_s,\n"
    "                   rows_per_s, p50_us, p99_us, mean_us, wall_s, mode\n"
    "  -h, --help       this help\n";

typedef struct bench_cfg {
    const char *tag;
    const char *spec; /* JSON text */
    int64_t clients, requests, batch, width, warmup, gap_us;
    bool inproc, json;
} bench_cfg;

/* What every client writes back, in shared memory. */
typedef struct bench_shared {
    int64_t finish_ns[1024];
    int rc[1024];
    char msg[1024][160];
    int64_t lat_ns[]; /* clients * requests */
} bench_shared;

#define BENCH_CLIENTS_MAX 1024

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Input shape [B, in features] from the model's signature, or [B, width] when it does not say. */
static void input_shape(const bench_cfg *cfg, int sig_rank, const int64_t *sig_shape,
                        int64_t shape[2])
{
    shape[0] = cfg->batch;
    shape[1] = sig_rank == 2 && sig_shape[1] > 0 ? sig_shape[1] : cfg->width;
}

static void fill_input(float *x, size_t n)
{
    ms__cli_rng rng;
    ms__cli_rng_seed(&rng, 12345);
    ms__cli_rng_fill_uniform(&rng, x, n, -1.0f, 1.0f);
}

static void report(const bench_cfg *cfg, const char *mode, int64_t clients, int64_t *lat, size_t n,
                   double wall_s)
{
    qsort(lat, n, sizeof *lat, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
    double p50 = (double)lat[n / 2] / 1e3;
    double p99 = (double)lat[(size_t)((double)(n - 1) * 0.99)] / 1e3;
    double mean = sum / (double)n / 1e3;
    double rps = (double)n / wall_s;
    double rows = rps * (double)cfg->batch;
    if (cfg->json) {
        json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "tag",
                              cfg->tag, "mode", mode, "clients", (json_int_t)clients, "requests",
                              (json_int_t)cfg->requests, "batch", (json_int_t)cfg->batch, "gap_us",
                              (json_int_t)cfg->gap_us, "requests_per_s", rps, "rows_per_s", rows,
                              "p50_us", p50, "p99_us", p99, "mean_us", mean, "wall_s", wall_s);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(j);
        return;
    }
    printf("%s: %s, %lld client(s) x %lld requests x batch %lld\n", cfg->tag, mode,
           (long long)clients, (long long)cfg->requests, (long long)cfg->batch);
    printf("  latency   p50 %.1f us   p99 %.1f us   mean %.1f us\n", p50, p99, mean);
    printf("  rate      %.0f requests/s   %.0f rows/s   (%.2f s)\n", rps, rows, wall_s);
}

/* ---- in process ----------------------------------------------------------------------------- */

static int bench_inproc(const bench_cfg *cfg)
{
    char err[MS__ERRLEN];
    ms__spec spec;
    int rc = ms__spec_parse(cfg->spec, &spec, err, sizeof err);
    if (rc < 0)
        return ms__cli_error("%s", err);
    int ret = MS__EXIT_ERROR;
    void *state = NULL;
    float *x = NULL;
    void *y = NULL;
    int64_t *lat = NULL;
    /* The same lookup as a worker's: "dense" on "cuda:N" runs the CUDA backend here too. */
    const ms__backend_ops *be = NULL;
    rc = ms__backend_open(&spec, &be, err, sizeof err);
    if (rc < 0) {
        ms__cli_error("backend \"%s\" cannot run in process: %s", spec.backend, err);
        goto out;
    }
    rc = be->load(&spec, &state, err, sizeof err);
    if (rc < 0) {
        ms__cli_error("cannot load the model: %s", err);
        state = NULL;
        goto out;
    }
    ms__sig sin, sout;
    be->signature(state, &sin, &sout);
    ms__tensor_view in, out;
    memset(&in, 0, sizeof in);
    memset(&out, 0, sizeof out);
    in.dtype = MS_FLOAT32;
    in.rank = 2;
    input_shape(cfg, sin.rank, sin.shape, in.shape);
    in.nbytes = (size_t)(in.shape[0] * in.shape[1]) * sizeof(float);
    rc = be->output_for(state, &in, &out, err, sizeof err);
    if (rc < 0) {
        ms__cli_error("%s", err);
        goto out;
    }
    x = malloc(in.nbytes ? in.nbytes : 1);
    y = malloc(out.nbytes ? out.nbytes : 1);
    lat = malloc((size_t)cfg->requests * sizeof *lat);
    if (!x || !y || !lat) {
        ms__cli_error("out of memory");
        goto out;
    }
    fill_input(x, in.nbytes / sizeof(float));
    memset(y, 0, out.nbytes);
    in.data = x;
    out.data = y;
    for (int64_t i = 0; i < cfg->warmup; i++)
        be->run(state, &in, &out, err, sizeof err);
    int64_t t0 = ms__now_ns();
    for (int64_t i = 0; i < cfg->requests; i++) {
        if (cfg->gap_us > 0)
            usleep((useconds_t)cfg->gap_us);
        int64_t a = ms__now_ns();
        rc = be->run(state, &in, &out, err, sizeof err);
        lat[i] = ms__now_ns() - a;
        if (rc < 0) {
            ms__cli_error("run failed: %s", err);
            goto out;
        }
    }
    double wall = (double)(ms__now_ns() - t0) / 1e9;
    report(cfg, "in process", 1, lat, (size_t)cfg->requests, wall);
    ret = MS__EXIT_OK;
out:
    if (state)
        be->unload(state);
    ms__spec_free(&spec);
    free(x);
    free(y);
    free(lat);
    return ret;
}

/* ---- through modelshare --------------------------------------------------------------------- */

/* One client process: connect, acquire, warm up, wait for the start, time R requests. */
static void client_main(const bench_cfg *cfg, int index, bench_shared *sh, int ready_fd, int go_fd)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    ms_tensor *x = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc == 0)
        rc = ms_acquire(c, cfg->tag, cfg->spec, &m);
    int sig_rank = 0;
    int64_t sig_shape[MS_MAX_RANK];
    if (rc == 0)
        rc = ms_model_signature(m, NULL, &sig_rank, sig_shape, NULL, NULL, NULL);
    int64_t shape[2];
    input_shape(cfg, sig_rank, sig_shape, shape);
    if (rc == 0)
        rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0)
        fill_input(ms_tensor_data(x), ms_tensor_nbytes(x) / sizeof(float));
    for (int64_t i = 0; rc == 0 && i < cfg->warmup; i++) {
        ms_tensor *y = NULL;
        rc = ms_infer(m, x, &y);
        ms_tensor_free(y);
    }
    char b = rc == 0 ? 'r' : 'e';
    if (write(ready_fd, &b, 1) != 1)
        _exit(1);
    if (read(go_fd, &b, 1) < 0)
        _exit(1);
    int64_t *lat = sh->lat_ns + (size_t)index * (size_t)cfg->requests;
    for (int64_t i = 0; rc == 0 && i < cfg->requests; i++) {
        ms_tensor *y = NULL;
        if (cfg->gap_us > 0)
            usleep((useconds_t)cfg->gap_us);
        int64_t a = ms__now_ns();
        rc = ms_infer(m, x, &y);
        ms_tensor_free(y);
        lat[i] = ms__now_ns() - a;
    }
    sh->finish_ns[index] = ms__now_ns();
    sh->rc[index] = rc;
    if (rc != 0)
        snprintf(sh->msg[index], sizeof sh->msg[index], "%s: %s", ms_errname(rc), ms_errmsg(c));
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    _exit(rc == 0 ? 0 : 1);
}

static int bench_shared_mode(const bench_cfg *cfg)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int ret = MS__EXIT_ERROR;
    bench_shared *sh = MAP_FAILED;
    size_t shbytes =
        sizeof(bench_shared) + (size_t)cfg->clients * (size_t)cfg->requests * sizeof(int64_t);
    int ready[2] = {-1, -1}, go[2] = {-1, -1};
    pid_t pids[BENCH_CLIENTS_MAX];
    int64_t started = 0, t0 = 0;
    int errors = 0;

    /* Load the model once, and hold a lease for the whole run. */
    int rc = ms_connect(NULL, &c);
    if (rc < 0)
        return ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
    rc = ms_acquire(c, cfg->tag, cfg->spec, &m);
    if (rc < 0) {
        ms__cli_error("cannot acquire \"%s\": %s", cfg->tag, ms__cli_errtext(c, rc));
        goto out;
    }
    sh = mmap(NULL, shbytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || pipe2(ready, O_CLOEXEC) != 0 || pipe2(go, O_CLOEXEC) != 0) {
        ms__cli_error("cannot set up the clients: %s", strerror(errno));
        goto out;
    }
    fflush(NULL);
    for (; started < cfg->clients; started++) {
        pid_t p = fork();
        if (p < 0) {
            ms__cli_error("fork: %s", strerror(errno));
            goto reap;
        }
        if (p == 0) {
            close(ready[0]);
            close(go[1]);
            client_main(cfg, (int)started, sh, ready[1], go[0]);
        }
        pids[started] = p;
    }
    close(ready[1]);
    ready[1] = -1;
    close(go[0]);
    go[0] = -1;
    for (int64_t i = 0; i < cfg->clients; i++) {
        char b;
        if (read(ready[0], &b, 1) != 1 || b != 'r')
            errors++;
    }
    t0 = ms__now_ns();
    close(go[1]); /* every client's read returns: go */
    go[1] = -1;
reap:
    for (int64_t i = 0; i < started; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            errors++;
    }
    if (started < cfg->clients)
        goto out;
    if (errors > 0) {
        for (int64_t i = 0; i < cfg->clients; i++)
            if (sh->rc[i] != 0) {
                ms__cli_error("client %lld failed: %s", (long long)i, sh->msg[i]);
                goto out;
            }
        ms__cli_error("%d client(s) failed before the start", errors);
        goto out;
    }
    int64_t last = t0;
    for (int64_t i = 0; i < cfg->clients; i++)
        if (sh->finish_ns[i] > last)
            last = sh->finish_ns[i];
    report(cfg, "modelshare", cfg->clients, sh->lat_ns,
           (size_t)cfg->clients * (size_t)cfg->requests, (double)(last - t0) / 1e9);
    ret = MS__EXIT_OK;
out:
    for (int i = 0; i < 2; i++) {
        if (ready[i] >= 0)
            close(ready[i]);
        if (go[i] >= 0)
            close(go[i]);
    }
    if (sh != MAP_FAILED)
        munmap(sh, shbytes);
    ms_release(m);
    ms_disconnect(c);
    return ret;
}

int ms__cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"spec", required_argument, NULL, 's'},    {"weights", required_argument, NULL, 'w'},
        {"clients", required_argument, NULL, 'c'}, {"requests", required_argument, NULL, 'r'},
        {"batch", required_argument, NULL, 'b'},   {"width", required_argument, NULL, 'W'},
        {"warmup", required_argument, NULL, 'k'},  {"inproc", no_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},          {"gap-us", required_argument, NULL, 'g'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    bench_cfg cfg = {.clients = 1, .requests = 10000, .batch = 1, .width = 256, .warmup = -1};
    const char *weights = NULL;
    int c;
    while ((c = ms__cli_getopt(argc, argv, ":h", opts, ms__usage_bench)) != -1) {
        int64_t *num = NULL, lo = 1, hi = 0;
        const char *name = NULL;
        switch (c) {
        case 'h':
            fputs(ms__usage_bench, stdout);
            return MS__EXIT_OK;
        case 's':
            cfg.spec = optarg;
            break;
        case 'w':
            weights = optarg;
            break;
        case 'c':
            num = &cfg.clients, hi = BENCH_CLIENTS_MAX, name = "--clients";
            break;
        case 'r':
            num = &cfg.requests, hi = 100000000, name = "--requests";
            break;
        case 'b':
            num = &cfg.batch, hi = 1 << 20, name = "--batch";
            break;
        case 'W':
            num = &cfg.width, hi = 1 << 28, name = "--width";
            break;
        case 'k':
            num = &cfg.warmup, lo = 0, hi = 100000000, name = "--warmup";
            break;
        case 'g':
            num = &cfg.gap_us, lo = 0, hi = 10000000, name = "--gap-us";
            break;
        case 'i':
            cfg.inproc = true;
            break;
        case 'j':
            cfg.json = true;
            break;
        default:
            return MS__EXIT_USAGE;
        }
        if (num && !ms__cli_parse_i64(optarg, lo, hi, num))
            return ms__cli_usage_error(argv[0], ms__usage_bench,
                                       "%s: expected an integer from %lld to %lld, got \"%s\"",
                                       name, (long long)lo, (long long)hi, optarg);
    }
    if (optind >= argc)
        return ms__cli_usage_error(argv[0], ms__usage_bench, "missing TAG");
    cfg.tag = argv[optind++];
    if (optind < argc)
        return ms__cli_usage_error(argv[0], ms__usage_bench, "unexpected argument \"%s\"",
                                   argv[optind]);
    if (!cfg.spec == !weights)
        return ms__cli_usage_error(argv[0], ms__usage_bench, "give either --spec or --weights");
    if (cfg.warmup < 0)
        cfg.warmup = cfg.requests / 10 < 1000 ? cfg.requests / 10 : 1000;
    if ((double)cfg.clients * (double)cfg.requests * 8.0 > (double)(4ull << 30))
        return ms__cli_usage_error(argv[0], ms__usage_bench,
                                   "--clients x --requests: at most 500 million timed requests");
    char *owned = weights ? ms__cli_weights_spec(weights) : NULL;
    if (weights && !owned)
        return ms__cli_error("out of memory");
    if (owned)
        cfg.spec = owned;
    int r = cfg.inproc ? bench_inproc(&cfg) : bench_shared_mode(&cfg);
    free(owned);
    return r;
}
