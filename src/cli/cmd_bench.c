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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
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
    "                   rows_per_s, p50_us, p99_us, mean_us, wall_s, mode, client_cpu_us,\n"
    "                   worker_cpu_us\n"
    "\n"
    "Beside the latencies and rates it reports the CPU time used per request: by the clients\n"
    "(their own user + system time over the timed requests) and by the model's workers (theirs,\n"
    "from /proc, over the same span; in process, the caller's alone). With more clients than\n"
    "cores, what a client burns while it waits is what the others and the model cannot use.\n"
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
    int64_t cpu_ns[1024]; /* each client's user + system time over its timed requests */
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

/* CPU time used per request: by the clients and by the model's workers (-1: not known). */
typedef struct bench_cpu {
    double client_us, worker_us;
} bench_cpu;

static void report(const bench_cfg *cfg, const char *mode, int64_t clients, int64_t *lat, size_t n,
                   double wall_s, bench_cpu cpu)
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
        json_t *j =
            json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:o}",
                      "tag", cfg->tag, "mode", mode, "clients", (json_int_t)clients, "requests",
                      (json_int_t)cfg->requests, "batch", (json_int_t)cfg->batch, "gap_us",
                      (json_int_t)cfg->gap_us, "requests_per_s", rps, "rows_per_s", rows, "p50_us",
                      p50, "p99_us", p99, "mean_us", mean, "wall_s", wall_s, "client_cpu_us",
                      cpu.client_us >= 0 ? json_real(cpu.client_us) : json_null(), "worker_cpu_us",
                      cpu.worker_us >= 0 ? json_real(cpu.worker_us) : json_null());
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
    if (cpu.worker_us >= 0)
        printf("  cpu       %.1f us a request in the clients, %.1f us in the workers\n",
               cpu.client_us, cpu.worker_us);
    else
        printf("  cpu       %.1f us a request\n", cpu.client_us);
}

/* This process's user + system time so far. */
static int64_t self_cpu_ns(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0)
        return 0;
    return ((int64_t)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000LL +
           ((int64_t)u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000LL;
}

/* The time process pid's threads have run so far (each /proc/PID/task/TID/schedstat's first
 * figure, in nanoseconds: /proc/PID/stat counts in clock ticks, too coarse here), or -1. */
static int64_t proc_cpu_ns(long long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/task", pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char file[320], buf[128];
        snprintf(file, sizeof file, "/proc/%lld/task/%s/schedstat", pid, e->d_name);
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (n > 0) {
            buf[n] = '\0';
            total += strtoll(buf, NULL, 10);
        }
    }
    closedir(d);
    return total;
}

/* The CPU time used so far by the workers of tag's instances (status), or -1. */
static int64_t workers_cpu_ns(const char *tag)
{
    json_t *st = NULL;
    if (ms__cli_fetch_status(&st) < 0)
        return -1;
    int64_t total = -1;
    size_t i, k;
    json_t *m, *in;
    json_array_foreach(json_object_get(st, "models"), i, m)
    {
        if (strcmp(ms__cli_jstr(m, "tag", ""), tag) != 0)
            continue;
        json_array_foreach(json_object_get(m, "instances"), k, in)
        {
            int64_t c = proc_cpu_ns(ms__cli_jint(in, "pid"));
            if (c >= 0)
                total = (total < 0 ? 0 : total) + c;
        }
    }
    json_decref(st);
    return total;
}

/* ---- in process ----------------------------------------------------------------------------- */

/* A model loaded in this process, with one input and one output buffer. */
typedef struct inproc {
    const ms__backend_ops *be;
    void *state;
    ms__tensor_view in, out;
} inproc;

/* Loads the spec's model here and makes its buffers. Returns 0, or -1 after printing why (what
 * was made is in *p for inproc_close either way). */
static int inproc_open(const bench_cfg *cfg, const ms__spec *spec, inproc *p)
{
    char err[MS__ERRLEN];
    /* The same lookup as a worker's: "dense" on "cuda:N" runs the CUDA backend here too. */
    if (ms__backend_open(spec, &p->be, err, sizeof err) < 0)
        return ms__cli_error("backend \"%s\" cannot run in process: %s", spec->backend, err), -1;
    if (p->be->load(spec, &p->state, err, sizeof err) < 0) {
        p->state = NULL;
        return ms__cli_error("cannot load the model: %s", err), -1;
    }
    ms__sig sin, sout;
    p->be->signature(p->state, &sin, &sout);
    p->in.dtype = MS_FLOAT32;
    p->in.rank = 2;
    input_shape(cfg, sin.rank, sin.shape, p->in.shape);
    p->in.nbytes = (size_t)(p->in.shape[0] * p->in.shape[1]) * sizeof(float);
    if (p->be->output_for(p->state, &p->in, &p->out, err, sizeof err) < 0)
        return ms__cli_error("%s", err), -1;
    p->in.data = malloc(p->in.nbytes ? p->in.nbytes : 1);
    p->out.data = malloc(p->out.nbytes ? p->out.nbytes : 1);
    if (!p->in.data || !p->out.data)
        return ms__cli_error("out of memory"), -1;
    fill_input((float *)p->in.data, p->in.nbytes / sizeof(float));
    memset(p->out.data, 0, p->out.nbytes);
    return 0;
}

static void inproc_close(inproc *p)
{
    if (p->state)
        p->be->unload(p->state);
    free(p->in.data);
    free(p->out.data);
}

/* Warms up, then times cfg->requests runs into lat. Returns 0, or -1 after printing why. */
static int inproc_time(const bench_cfg *cfg, inproc *p, int64_t *lat, double *wall, int64_t *cpu_ns)
{
    char err[MS__ERRLEN];
    for (int64_t i = 0; i < cfg->warmup; i++)
        p->be->run(p->state, &p->in, &p->out, err, sizeof err);
    int64_t t0 = ms__now_ns(), c0 = self_cpu_ns();
    for (int64_t i = 0; i < cfg->requests; i++) {
        if (cfg->gap_us > 0)
            usleep((useconds_t)cfg->gap_us);
        int64_t a = ms__now_ns();
        int rc = p->be->run(p->state, &p->in, &p->out, err, sizeof err);
        lat[i] = ms__now_ns() - a;
        if (rc < 0)
            return ms__cli_error("run failed: %s", err), -1;
    }
    *wall = (double)(ms__now_ns() - t0) / 1e9;
    *cpu_ns = self_cpu_ns() - c0;
    return 0;
}

static int bench_inproc(const bench_cfg *cfg)
{
    char err[MS__ERRLEN];
    ms__spec spec;
    if (ms__spec_parse(cfg->spec, &spec, err, sizeof err) < 0)
        return ms__cli_error("%s", err);
    int ret = MS__EXIT_ERROR;
    inproc p = {0};
    int64_t *lat = malloc((size_t)cfg->requests * sizeof *lat);
    double wall = 0;
    int64_t cpu = 0;
    if (!lat)
        ms__cli_error("out of memory");
    else if (inproc_open(cfg, &spec, &p) == 0 && inproc_time(cfg, &p, lat, &wall, &cpu) == 0) {
        bench_cpu per = {(double)cpu / 1e3 / (double)cfg->requests, -1};
        report(cfg, "in process", 1, lat, (size_t)cfg->requests, wall, per);
        ret = MS__EXIT_OK;
    }
    inproc_close(&p);
    ms__spec_free(&spec);
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
    int64_t c0 = self_cpu_ns();
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
    sh->cpu_ns[index] = self_cpu_ns() - c0;
    sh->rc[index] = rc;
    if (rc != 0)
        snprintf(sh->msg[index], sizeof sh->msg[index], "%s: %s", ms_errname(rc), ms_errmsg(c));
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    _exit(rc == 0 ? 0 : 1);
}

/* The client processes of one run and the pipes that start them together. */
typedef struct fleet {
    bench_shared *sh;
    int ready[2], go[2];
    pid_t pids[BENCH_CLIENTS_MAX];
    int64_t started;
    int errors;
} fleet;

static void close_pipe_end(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Forks the clients and waits until each is ready. Returns 0, or -1 after printing why (the
 * clients started are in f->pids). */
static int fleet_start(const bench_cfg *cfg, fleet *f)
{
    fflush(NULL);
    for (; f->started < cfg->clients; f->started++) {
        pid_t p = fork();
        if (p < 0)
            return ms__cli_error("fork: %s", strerror(errno)), -1;
        if (p == 0) {
            close(f->ready[0]);
            close(f->go[1]);
            client_main(cfg, (int)f->started, f->sh, f->ready[1], f->go[0]);
        }
        f->pids[f->started] = p;
    }
    close_pipe_end(&f->ready[1]);
    close_pipe_end(&f->go[0]);
    for (int64_t i = 0; i < cfg->clients; i++) {
        char b;
        if (read(f->ready[0], &b, 1) != 1 || b != 'r')
            f->errors++;
    }
    return 0;
}

/* Waits for every client started; counts those that failed in f->errors. */
static void fleet_reap(fleet *f)
{
    for (int64_t i = 0; i < f->started; i++) {
        int st;
        while (waitpid(f->pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            f->errors++;
    }
}

/* After the run: reports it, or the first client's failure. Returns the exit status. */
static int fleet_report(const bench_cfg *cfg, const fleet *f, int64_t t0, int64_t worker_ns)
{
    if (f->errors > 0) {
        for (int64_t i = 0; i < cfg->clients; i++)
            if (f->sh->rc[i] != 0)
                return ms__cli_error("client %lld failed: %s", (long long)i, f->sh->msg[i]);
        return ms__cli_error("%d client(s) failed before the start", f->errors);
    }
    int64_t last = t0, client_ns = 0;
    for (int64_t i = 0; i < cfg->clients; i++) {
        if (f->sh->finish_ns[i] > last)
            last = f->sh->finish_ns[i];
        client_ns += f->sh->cpu_ns[i];
    }
    size_t n = (size_t)cfg->clients * (size_t)cfg->requests;
    bench_cpu per = {(double)client_ns / 1e3 / (double)n,
                     worker_ns >= 0 ? (double)worker_ns / 1e3 / (double)n : -1};
    report(cfg, "modelshare", cfg->clients, f->sh->lat_ns, n, (double)(last - t0) / 1e9, per);
    return MS__EXIT_OK;
}

/* Runs the clients against the loaded model. Returns the exit status. */
static int fleet_run(const bench_cfg *cfg, fleet *f)
{
    int ret = MS__EXIT_ERROR;
    int64_t t0 = 0, w0 = -1, w1 = -1;
    bool started = fleet_start(cfg, f) == 0;
    if (started) {
        w0 = workers_cpu_ns(cfg->tag);
        t0 = ms__now_ns();
        close_pipe_end(&f->go[1]); /* every client's read returns: go */
    }
    fleet_reap(f);
    if (started) {
        /* The workers' time from the start to the last client's end (a worker idles after). */
        w1 = workers_cpu_ns(cfg->tag);
        ret = fleet_report(cfg, f, t0, w0 >= 0 && w1 >= w0 ? w1 - w0 : -1);
    }
    return ret;
}

static int bench_shared_mode(const bench_cfg *cfg)
{
    ms_client *c = NULL;
    ms_model *m = NULL;
    int ret = MS__EXIT_ERROR;
    size_t shbytes =
        sizeof(bench_shared) + (size_t)cfg->clients * (size_t)cfg->requests * sizeof(int64_t);
    fleet f = {.sh = MAP_FAILED, .ready = {-1, -1}, .go = {-1, -1}};

    /* Load the model once, and hold a lease for the whole run. */
    int rc = ms_connect(NULL, &c);
    if (rc < 0)
        return ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
    rc = ms_acquire(c, cfg->tag, cfg->spec, &m);
    if (rc < 0) {
        ms__cli_error("cannot acquire \"%s\": %s", cfg->tag, ms__cli_errtext(c, rc));
    } else {
        f.sh = mmap(NULL, shbytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (f.sh == MAP_FAILED || pipe2(f.ready, O_CLOEXEC) != 0 || pipe2(f.go, O_CLOEXEC) != 0)
            ms__cli_error("cannot set up the clients: %s", strerror(errno));
        else
            ret = fleet_run(cfg, &f);
    }
    for (int i = 0; i < 2; i++) {
        close_pipe_end(&f.ready[i]);
        close_pipe_end(&f.go[i]);
    }
    if (f.sh != MAP_FAILED)
        munmap(f.sh, shbytes);
    ms_release(m);
    ms_disconnect(c);
    return ret;
}

/* Reads the command line into *cfg and *weights. Returns -1 to go on, else the exit status. */
static int bench_args(int argc, char **argv, bench_cfg *cfg, const char **weights)
{
    const ms__cli_opt opts[] = {MS__CLI_OPT_TEXT("spec", 0, &cfg->spec),
                                MS__CLI_OPT_TEXT("weights", 0, weights),
                                MS__CLI_OPT_INT("clients", &cfg->clients, 1, BENCH_CLIENTS_MAX),
                                MS__CLI_OPT_INT("requests", &cfg->requests, 1, 100000000),
                                MS__CLI_OPT_INT("batch", &cfg->batch, 1, 1 << 20),
                                MS__CLI_OPT_INT("width", &cfg->width, 1, 1 << 28),
                                MS__CLI_OPT_INT("warmup", &cfg->warmup, 0, 100000000),
                                MS__CLI_OPT_INT("gap-us", &cfg->gap_us, 0, 10000000),
                                MS__CLI_OPT_FLAG("inproc", 0, &cfg->inproc),
                                MS__CLI_OPT_FLAG("json", 0, &cfg->json),
                                MS__CLI_OPT_END};
    static const char *const names[] = {"TAG", NULL};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_bench, names, &cfg->tag);
    if (r >= 0)
        return r;
    if (!cfg->spec == !*weights)
        return ms__cli_usage_error(argv[0], ms__usage_bench, "give either --spec or --weights");
    if (cfg->warmup < 0)
        cfg->warmup = cfg->requests / 10 < 1000 ? cfg->requests / 10 : 1000;
    if ((double)cfg->clients * (double)cfg->requests * 8.0 > (double)(4ull << 30))
        return ms__cli_usage_error(argv[0], ms__usage_bench,
                                   "--clients x --requests: at most 500 million timed requests");
    return -1;
}

int ms__cmd_bench(int argc, char **argv)
{
    bench_cfg cfg = {.clients = 1, .requests = 10000, .batch = 1, .width = 256, .warmup = -1};
    const char *weights = NULL;
    int r = bench_args(argc, argv, &cfg, &weights);
    if (r >= 0)
        return r;
    char *owned = weights ? ms__cli_weights_spec(weights) : NULL;
    if (weights && !owned)
        return ms__cli_error("out of memory");
    if (owned)
        cfg.spec = owned;
    r = cfg.inproc ? bench_inproc(&cfg) : bench_shared_mode(&cfg);
    free(owned);
    return r;
}
