/* `modelshare demo`: several processes share one ~1 GB model through a private daemon, and the
 * demo shows what that saves, measured. */
#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/exitstatus.h"
#include "common/procmem.h"
#include "common/util.h"

const char ms__usage_demo[] =
    "usage: modelshare demo [--clients N] [--requests R] [--batch B] [--layers A,B,...]\n"
    "                       [--dir D]\n"
    "\n"
    "Shows modelshare at work: N separate processes acquire the same ~1 GB model by tag, the\n"
    "daemon loads it once, in one worker process, and all of them run requests on it through\n"
    "shared memory. Prints the memory that this saves (measured) and the throughput. The demo\n"
    "runs its own private daemon and stops it at the end.\n"
    "\n"
    "  --clients N        client processes (default 4, at most 64)\n"
    "  --requests R       requests per client (default 20)\n"
    "  --batch B          rows per request (default 8)\n"
    "  --layers A,B,...   the model's layer sizes (default 4096,12288,12288,4096,1000: 1 GB)\n"
    "  --dir D            where the model file is made once and kept (default ./demo-data)\n"
    "  -h, --help         this help\n";

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

typedef struct demo {
    ms__demo_cfg cfg;
    const char *datadir;
    char path[PATH_MAX]; /* model file as shown (relative to datadir) */
    uint64_t file_bytes;

    pid_t measure_pid;
    pid_t kids[MS__DEMO_CLIENTS_MAX];
    int report[MS__DEMO_CLIENTS_MAX]; /* read ends */
    int go_w;                         /* write end of the shared go pipe */
    ms__demo_msg msgs[MS__DEMO_CLIENTS_MAX];
    ms__demo_msg measured;

    char sockdir[64], socket[128];
    ms_client *client;
    pid_t daemon_pid;
    pid_t workers[64];
    int nworkers;

    /* From the daemon's status while every client holds its lease. */
    long long loads, leases, requests, batches;
    uint64_t worker_bytes; /* measured PSS of the workers (the daemon's figure if unreadable) */
    double load_wall_s, run_s;
} demo;

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    if ((size_t)snprintf(buf, sizeof buf, "%s", dir) >= sizeof buf)
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Reads child i's message (its fd is readable) into msgs[i]. Returns 0 when it is of kind `kind`,
 * else -1 with a message in err: the child's own error, or how it ended when it died first. */
static int take_message(const int *fds, pid_t *pids, int n, int i, int kind, ms__demo_msg *msgs,
                        const char *who, const char *doing, char *err, size_t errlen)
{
    char name[96]; /* "client 2", or just who when there is one */
    if (n > 1)
        snprintf(name, sizeof name, "%s %d", who, i + 1);
    else
        snprintf(name, sizeof name, "%s", who);
    ms__demo_msg m;
    ssize_t got_n;
    do
        got_n = read(fds[i], &m, sizeof m);
    while (got_n < 0 && errno == EINTR);
    if (got_n == (ssize_t)sizeof m && m.kind == MS__DEMO_ERROR) {
        ms__fail(err, errlen, -1, "%s (pid %ld): %s", name, (long)pids[i], m.error);
        return -1;
    }
    if (got_n == (ssize_t)sizeof m && m.kind == kind) {
        msgs[i] = m;
        return 0;
    }
    /* EOF or a short message: the child died before it could say why. */
    int status = 0;
    char how[128] = "ended";
    if (pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i]) {
        ms__exit_text(status, how, sizeof how);
        pids[i] = -pids[i];
    }
    ms__fail(err, errlen, -1, "%s (pid %ld) ended unexpectedly while %s: %s", name,
             (long)(pids[i] < 0 ? -pids[i] : pids[i]), doing, how);
    return -1;
}

/* Waits for one message of kind `kind` from each of n children (fds[i], pids[i]), into msgs[i].
 * Prints a progress line every 10 s. Returns 0, or -1 with a message in err. */
static int collect(const int *fds, pid_t *pids, int n, int kind, ms__demo_msg *msgs,
                   const char *who, const char *doing, char *err, size_t errlen)
{
    bool got[MS__DEMO_CLIENTS_MAX] = {false};
    int have = 0;
    double t0 = ms__now_s(), next_note = t0 + 10;
    while (have < n) {
        struct pollfd pfd[MS__DEMO_CLIENTS_MAX];
        int map[MS__DEMO_CLIENTS_MAX], np = 0;
        for (int i = 0; i < n; i++)
            if (!got[i]) {
                pfd[np] = (struct pollfd){.fd = fds[i], .events = POLLIN};
                map[np++] = i;
            }
        int r = poll(pfd, (nfds_t)np, 1000);
        if (interrupted) {
            ms__fail(err, errlen, -1, "interrupted");
            return -1;
        }
        if (r < 0 && errno != EINTR) {
            ms__fail(err, errlen, -1, "poll: %s", strerror(errno));
            return -1;
        }
        if (ms__now_s() >= next_note) {
            progress("      ... %s: %d of %d after %.0f s\n", doing, have, n, ms__now_s() - t0);
            next_note += 10;
        }
        for (int k = 0; r > 0 && k < np; k++) {
            if (!pfd[k].revents)
                continue;
            int i = map[k];
            if (take_message(fds, pids, n, i, kind, msgs, who, doing, err, errlen) < 0)
                return -1;
            got[i] = true;
            have++;
        }
    }
    return 0;
}

/* Writes one byte per client on the go pipe. */
static int release_clients(demo *d)
{
    char buf[MS__DEMO_CLIENTS_MAX];
    memset(buf, 'g', sizeof buf);
    ssize_t n;
    do
        n = write(d->go_w, buf, (size_t)d->cfg.clients);
    while (n < 0 && errno == EINTR);
    return n == d->cfg.clients ? 0 : -1;
}

/* Reads the daemon's view of our model. first: also records the daemon and worker pids. */
static int read_status(demo *d, bool first, char *err, size_t errlen)
{
    char *text = NULL;
    int rc = ms_status_json(d->client, &text);
    if (rc < 0) {
        ms__fail(err, errlen, -1, "status: %s", ms__cli_errtext(d->client, rc));
        return -1;
    }
    json_error_t jerr;
    json_t *st = json_loads(text, 0, &jerr);
    free(text);
    if (!json_is_object(st)) {
        json_decref(st);
        ms__fail(err, errlen, -1, "the daemon's status is not a JSON object: %s", jerr.text);
        return -1;
    }
    if (first)
        d->daemon_pid = (pid_t)json_integer_value(json_object_get(st, "daemon_pid"));
    json_t *models = json_object_get(st, "models"), *m, *found = NULL;
    size_t i;
    json_array_foreach(models, i, m)
    {
        const char *tag = json_string_value(json_object_get(m, "tag"));
        if (tag && !strcmp(tag, MS__DEMO_TAG))
            found = m;
    }
    if (!found) {
        json_decref(st);
        ms__fail(err, errlen, -1, "the daemon's status lists no model \"%s\"", MS__DEMO_TAG);
        return -1;
    }
    d->loads = (long long)json_integer_value(json_object_get(found, "loads"));
    d->leases = (long long)json_integer_value(json_object_get(found, "leases"));
    d->requests = (long long)json_integer_value(json_object_get(found, "requests"));
    d->batches = (long long)json_integer_value(json_object_get(found, "batches"));
    uint64_t reported = (uint64_t)json_integer_value(json_object_get(found, "memory_bytes"));

    json_t *pids = json_object_get(found, "worker_pids"), *p;
    if (first)
        d->nworkers = 0;
    uint64_t measured = 0;
    bool all_measured = json_array_size(pids) > 0;
    json_array_foreach(pids, i, p)
    {
        pid_t w = (pid_t)json_integer_value(p);
        uint64_t pss;
        if (first && d->nworkers < (int)MS__ARRAY_LEN(d->workers))
            d->workers[d->nworkers++] = w;
        if (ms__proc_pss(w, &pss) == 0)
            measured += pss;
        else
            all_measured = false;
    }
    d->worker_bytes = all_measured ? measured : reported;
    json_decref(st);
    return 0;
}

static void layers_text(const ms__demo_cfg *cfg, const char *sep, char *buf, size_t buflen)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < cfg->nlayers && off < buflen; i++) {
        int w =
            snprintf(buf + off, buflen - off, "%s%lld", i ? sep : "", (long long)cfg->layers[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* Step 1: the model file, made once and reused. */
static int prepare_model(demo *d, char *err, size_t errlen)
{
    char name[MS__CLI_LAYERS_MAX * 12], size[32];
    layers_text(&d->cfg, "-", name, sizeof name);
    if (mkdir_p(d->datadir) < 0) {
        ms__fail(err, errlen, -1, "cannot create %s: %s", d->datadir, strerror(errno));
        return -1;
    }
    if ((size_t)snprintf(d->path, sizeof d->path, "%s/mlp-%s.safetensors", d->datadir, name) >=
        sizeof d->path) {
        ms__fail(err, errlen, -1, "path too long in %s", d->datadir);
        return -1;
    }
    ms__cli_dense_info info;
    if (!ms__cli_dense_count(d->cfg.layers, d->cfg.nlayers, &info)) {
        ms__fail(err, errlen, -1, "--layers: the model is too large");
        return -1;
    }
    ms__cli_fmt_bytes_dec(info.data_bytes, size, sizeof size);
    if (ms__cli_dense_matches(d->path, d->cfg.layers, d->cfg.nlayers)) {
        progress("[1/5] model file: %s (%s, made earlier, reused)\n", d->path, size);
    } else {
        progress("[1/5] making the model file %s (%s of random weights, once) ...\n", d->path,
                 size);
        double t0 = ms__now_s();
        char werr[MS__ERRLEN] = "";
        int rc = ms__cli_dense_write(d->path, d->cfg.layers, d->cfg.nlayers, 0, werr, sizeof werr);
        if (rc < 0) {
            ms__fail(err, errlen, -1, "cannot write %s: %s", d->path,
                     werr[0] ? werr : ms_strerror(rc));
            return -1;
        }
        progress("      done in %.1f s\n", ms__now_s() - t0);
    }
    struct stat st;
    if (!realpath(d->path, d->cfg.weights) || stat(d->cfg.weights, &st) < 0) {
        ms__fail(err, errlen, -1, "%s: %s", d->path, strerror(errno));
        return -1;
    }
    d->file_bytes = (uint64_t)st.st_size;
    json_t *spec = json_pack("{s:s, s:s, s:i}", "backend", "dense", "weights", d->cfg.weights,
                             "keep_alive", 0);
    char *text = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
    json_decref(spec);
    if (!text || strlen(text) >= sizeof d->cfg.spec) {
        free(text);
        ms__fail(err, errlen, -1, "cannot build the spec");
        return -1;
    }
    strcpy(d->cfg.spec, text);
    free(text);
    return 0;
}

/* A pipe (p: read and write end) and a child that gets it: *pid is 0 in the child, the child's
 * pid in the parent. Returns 0, or -1 with a message in err (and no pipe left open). */
static int pipe_fork(int p[2], pid_t *pid, char *err, size_t errlen)
{
    if (pipe2(p, O_CLOEXEC) < 0) {
        ms__fail(err, errlen, -1, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) {
        ms__fail(err, errlen, -1, "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    return 0;
}

/* Step 2: one plain load in a process of its own, measured. */
static int measure_plain_load(demo *d, char *err, size_t errlen)
{
    progress("[2/5] loading the model once in a plain process, to measure what one copy costs "
             "...\n");
    int p[2];
    pid_t pid;
    if (pipe_fork(p, &pid, err, errlen) < 0)
        return -1;
    if (pid == 0) {
        close(p[0]);
        ms__demo_measure_child(&d->cfg, p[1]);
    }
    close(p[1]);
    d->measure_pid = pid;
    pid_t pids[1] = {pid};
    int rc = collect(&p[0], pids, 1, MS__DEMO_MEASURED, &d->measured, "the measuring process",
                     "loading", err, errlen);
    close(p[0]);
    if (pids[0] > 0) {
        if (rc < 0)
            kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    d->measure_pid = 0;
    if (rc < 0)
        return -1;
    char size[32];
    ms__cli_fmt_bytes_dec(d->measured.pss_bytes, size, sizeof size);
    progress("      one copy: %s of memory (loaded in %.1f s)\n", size, d->measured.load_s);
    return 0;
}

/* Forks client i, which reports on a pipe of its own (d->report[i]) and waits on the go pipe
 * (go). Returns 0, or -1 with a message in err. */
static int fork_client(demo *d, int i, const int go[2], char *err, size_t errlen)
{
    int p[2];
    pid_t pid;
    if (pipe_fork(p, &pid, err, errlen) < 0)
        return -1;
    if (pid == 0) {
        /* Only this child's report pipe and the go pipe's read end stay open. */
        for (int k = 0; k < i; k++)
            close(d->report[k]);
        close(p[0]);
        close(go[1]);
        ms__demo_client_child(&d->cfg, i, p[1], go[0]);
    }
    close(p[1]);
    d->kids[i] = pid;
    d->report[i] = p[0];
    return 0;
}

/* Step 3: the clients. Forked before this process connects to anything. */
static int start_clients(demo *d, char *err, size_t errlen)
{
    int n = d->cfg.clients;
    int go[2];
    if (ms__demo_daemon_dir(d->sockdir, sizeof d->sockdir, d->socket, sizeof d->socket) < 0) {
        ms__fail(err, errlen, -1, "cannot make a private socket directory under /tmp: %s",
                 strerror(errno));
        d->sockdir[0] = '\0';
        return -1;
    }
    progress("[3/5] starting %d client processes; each acquires tag \"%s\", and the first one's "
             "request\n      starts a private daemon (%s) that loads the model ...\n",
             n, MS__DEMO_TAG, d->socket);
    if (pipe2(go, O_CLOEXEC) < 0) {
        ms__fail(err, errlen, -1, "pipe: %s", strerror(errno));
        return -1;
    }
    d->go_w = go[1];
    for (int i = 0; i < n; i++) {
        if (fork_client(d, i, go, err, errlen) < 0) {
            close(go[0]);
            return -1;
        }
    }
    close(go[0]);

    double t0 = ms__now_s();
    if (collect(d->report, d->kids, n, MS__DEMO_READY, d->msgs, "client", "loading", err, errlen) <
        0)
        return -1;
    d->load_wall_s = ms__now_s() - t0;

    int rc = ms_connect(NULL, &d->client);
    if (rc < 0) {
        ms__fail(err, errlen, -1, "cannot connect to the demo's daemon: %s",
                 ms__cli_errtext(NULL, rc));
        return -1;
    }
    if (read_status(d, true, err, errlen) < 0)
        return -1;
    progress("      all %d clients hold a lease after %.1f s; the daemon loaded the model %lld "
             "time%s\n",
             n, d->load_wall_s, d->loads, d->loads == 1 ? "" : "s");
    return 0;
}

/* Step 4: every client runs its requests at the same time. */
static int run_clients(demo *d, char *err, size_t errlen)
{
    int n = d->cfg.clients;
    progress("[4/5] each client sends %d requests of %d rows, all at once ...\n", d->cfg.requests,
             d->cfg.batch);
    if (release_clients(d) < 0) {
        ms__fail(err, errlen, -1, "cannot signal the clients: %s", strerror(errno));
        return -1;
    }
    if (collect(d->report, d->kids, n, MS__DEMO_DONE, d->msgs, "client", "running", err, errlen) <
        0)
        return -1;
    double start = d->msgs[0].t_start, end = d->msgs[0].t_end;
    for (int i = 1; i < n; i++) {
        start = fmin(start, d->msgs[i].t_start);
        end = fmax(end, d->msgs[i].t_end);
    }
    d->run_s = end - start;
    /* Counters and memory while the leases are still held. */
    if (read_status(d, false, err, errlen) < 0)
        return -1;
    progress("      done in %.1f s\n", d->run_s);
    if (release_clients(d) < 0) {
        ms__fail(err, errlen, -1, "cannot signal the clients: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int status;
        if (d->kids[i] > 0 && waitpid(d->kids[i], &status, 0) == d->kids[i]) {
            d->kids[i] = 0;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                char how[128];
                ms__exit_text(status, how, sizeof how);
                ms__fail(err, errlen, -1, "client %d ended badly after its requests: %s", i + 1,
                         how);
                return -1;
            }
        }
    }
    return 0;
}

/* Ends everything this demo started: clients, measuring child, the daemon and its directory. */
static void cleanup(demo *d)
{
    for (int i = 0; i < d->cfg.clients; i++)
        if (d->kids[i] > 0)
            kill(d->kids[i], SIGTERM);
    if (d->measure_pid > 0)
        kill(d->measure_pid, SIGKILL);
    if (d->go_w >= 0) {
        close(d->go_w);
        d->go_w = -1;
    }
    for (int i = 0; i < d->cfg.clients; i++) {
        if (d->kids[i] > 0)
            waitpid(d->kids[i], NULL, 0);
        d->kids[i] = 0;
        if (d->report[i] >= 0)
            close(d->report[i]);
        d->report[i] = -1;
    }
    if (d->measure_pid > 0)
        waitpid(d->measure_pid, NULL, 0);
    d->measure_pid = 0;
    ms_disconnect(d->client);
    d->client = NULL;
    if (d->sockdir[0])
        ms__demo_daemon_stop(d->daemon_pid, d->workers, d->nworkers, d->sockdir);
    d->sockdir[0] = '\0';
}

/* The first `shown` of n pids, space-separated, then " ..." when there are more. */
static void pids_text(const pid_t *pids, int n, int shown, char *buf, size_t buflen)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && off < buflen; i++) {
        int w = i < shown ? snprintf(buf + off, buflen - off, "%s%ld", i ? " " : "", (long)pids[i])
                          : snprintf(buf + off, buflen - off, " ...");
        if (w < 0 || i >= shown)
            break;
        off += (size_t)w;
    }
}

/* The shared input's answers: all clients against the plain in-process run. Returns whether they
 * agree to float32 rounding; *exact: whether they are the same bits. */
static bool answers_agree(const demo *d, bool *exact)
{
    bool close_enough = true;
    *exact = true;
    for (int i = 0; i < d->cfg.clients; i++) {
        const ms__demo_msg *m = &d->msgs[i];
        if (m->hash != d->measured.hash)
            *exact = false;
        double tol = 1e-4 * d->measured.abs_sum + 1e-6;
        if (!(fabs(m->sum - d->measured.sum) <= tol &&
              fabs(m->abs_sum - d->measured.abs_sum) <= tol))
            close_enough = false;
    }
    return close_enough;
}

/* The report's first part: the model, the processes, and the memory they use. */
static void report_memory(const demo *d)
{
    int n = d->cfg.clients;
    char arch[MS__CLI_LAYERS_MAX * 12], file[32], worker[32], one[32], without[32], saved[32];
    layers_text(&d->cfg, " > ", arch, sizeof arch);
    ms__cli_fmt_bytes_dec(d->file_bytes, file, sizeof file);
    ms__cli_fmt_bytes_dec(d->worker_bytes, worker, sizeof worker);
    ms__cli_fmt_bytes_dec(d->measured.pss_bytes, one, sizeof one);
    uint64_t total = d->measured.pss_bytes * (uint64_t)n;
    ms__cli_fmt_bytes_dec(total, without, sizeof without);

    pid_t kids[MS__DEMO_CLIENTS_MAX];
    char pids[160], wpids[160];
    for (int i = 0; i < n; i++)
        kids[i] = (pid_t)d->msgs[i].pid;
    pids_text(kids, n, 8, pids, sizeof pids);
    pids_text(d->workers, d->nworkers, d->nworkers, wpids, sizeof wpids);

    printf("\nmodelshare demo — %d process%s share%s one model\n", n, n == 1 ? "" : "es",
           n == 1 ? "s" : "");
    printf("  %-21s dense MLP %s, float32, %s file\n", "model", arch, file);
    printf("  %-21s %d (pids %s), %lld lease%s on tag \"%s\"\n", "client processes", n, pids,
           d->leases, d->leases == 1 ? "" : "s", MS__DEMO_TAG);
    if (d->nworkers == 1)
        printf("  %-21s %lld (one worker process, pid %s)\n", "model loads", d->loads, wpids);
    else
        printf("  %-21s %lld (%d worker processes, pids %s)\n", "model loads", d->loads,
               d->nworkers, wpids);
    printf("  %-21s %s (measured: proportional set size)\n", "worker memory", worker);
    printf("  %-21s %s (%d separate load%s; one load measured %s in a plain process)\n",
           "without modelshare", without, n, n == 1 ? "" : "s", one);
    if (total > d->worker_bytes) {
        ms__cli_fmt_bytes_dec(total - d->worker_bytes, saved, sizeof saved);
        printf("  %-21s %s\n", "memory saved", saved);
    } else {
        printf("  %-21s none at this size (a worker process costs more than such small "
               "copies)\n",
               "memory saved");
    }
}

/* The report's second part: throughput, batching and whether the answers agree. */
static void report_requests(const demo *d, bool exact, bool close_enough)
{
    int n = d->cfg.clients;
    long long reqs = (long long)n * d->cfg.requests;
    double rps = d->run_s > 0 ? (double)reqs / d->run_s : 0;
    printf("  %-21s %lld in %.*f s: %.1f requests/s, %.0f rows/s (batch %d)\n", "requests", reqs,
           d->run_s < 1 ? 3 : 1, d->run_s, rps, rps * d->cfg.batch, d->cfg.batch);
    if (d->batches > 0 && d->batches < d->requests)
        printf("  %-21s the worker ran the %lld requests as %lld batches, combining requests of "
               "several processes\n",
               "batching", d->requests, d->batches);
    if (exact)
        printf("  %-21s yes (all %d clients got the same output for the same input)\n",
               "same answer", n);
    else if (close_enough)
        printf("  %-21s yes (all %d clients agree with a plain in-process run, to float32 "
               "rounding)\n",
               "same answer", n);
    else
        printf("  %-21s NO: the clients' outputs for the same input differ from a plain "
               "in-process run\n",
               "same answer");
}

/* The report's end: what happened, in words, and the commands to look further. */
static void report_epilogue(const demo *d)
{
    printf("\n%d separate processes asked for the same model by its tag; the daemon loaded it "
           "once, in one\nworker process, and every request went to that worker through shared "
           "memory. Without\nmodelshare each process would hold its own copy.\n",
           d->cfg.clients);
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    const char *exe = "modelshare";
    if (len > 0) {
        self[len] = '\0';
        exe = self;
    }
    printf("\nLook further, with your own daemon (started on first use):\n");
    printf("  %s load mlp --weights %s\n", exe, d->path);
    printf("  %s status\n", exe);
    printf("  %s unload mlp\n", exe);
}

static void report(const demo *d, bool *same_out)
{
    bool exact;
    *same_out = answers_agree(d, &exact);
    report_memory(d);
    report_requests(d, exact, *same_out);
    report_epilogue(d);
}

/* Reads the command line into d->cfg and d->datadir. Returns -1 to go on, else the exit
 * status. */
static int demo_args(int argc, char **argv, demo *d)
{
    const char *layers = "4096,12288,12288,4096,1000";
    int64_t clients = d->cfg.clients, requests = d->cfg.requests, batch = d->cfg.batch;
    const ms__cli_opt opts[] = {MS__CLI_OPT_INT("clients", &clients, 1, MS__DEMO_CLIENTS_MAX),
                                MS__CLI_OPT_INT("requests", &requests, 1, 1000000),
                                MS__CLI_OPT_INT("batch", &batch, 1, 65536),
                                MS__CLI_OPT_TEXT("layers", 0, &layers),
                                MS__CLI_OPT_TEXT("dir", 0, &d->datadir),
                                MS__CLI_OPT_END};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_demo, NULL, NULL);
    if (r >= 0)
        return r;
    d->cfg.clients = (int)clients, d->cfg.requests = (int)requests, d->cfg.batch = (int)batch;
    char err[MS__ERRLEN] = "";
    if (!ms__cli_parse_layers(layers, d->cfg.layers, MS__CLI_LAYERS_MAX, &d->cfg.nlayers, err,
                              sizeof err))
        return ms__cli_usage_error(argv[0], ms__usage_demo, "%s", err);
    return -1;
}

/* The defaults, before the command line. */
static void demo_init(demo *d)
{
    memset(d, 0, sizeof *d);
    d->cfg.clients = 4;
    d->cfg.requests = 20;
    d->cfg.batch = 8;
    d->datadir = "demo-data";
    d->go_w = -1;
    for (int i = 0; i < MS__DEMO_CLIENTS_MAX; i++)
        d->report[i] = -1;
}

int ms__cmd_demo(int argc, char **argv)
{
    static demo d; /* large; one per process */
    demo_init(&d);
    int ret = demo_args(argc, argv, &d);
    if (ret >= 0)
        return ret;

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: waits see EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    progress("modelshare demo: %d client processes will share one model through a private "
             "daemon\n",
             d.cfg.clients);
    char err[MS__ERRLEN] = "";
    if (prepare_model(&d, err, sizeof err) < 0 || measure_plain_load(&d, err, sizeof err) < 0 ||
        start_clients(&d, err, sizeof err) < 0 || run_clients(&d, err, sizeof err) < 0) {
        progress("      stopping everything the demo started ...\n");
        cleanup(&d);
        ms__cli_error("demo failed: %s", err);
        return MS__EXIT_ERROR;
    }
    progress("[5/5] stopping the private daemon and its worker\n");
    cleanup(&d);

    bool same;
    report(&d, &same);
    if (!same)
        return ms__cli_error("demo failed: the clients did not get the same answer");
    return MS__EXIT_OK;
}
