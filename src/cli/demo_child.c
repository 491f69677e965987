/* The demo's child processes: one plain in-process load (what every process pays without
 * modelshare), and the clients that share one model through the daemon. */
#include "demo.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "backends/backend.h"
#include "common/procmem.h"
#include "common/spec.h"
#include "common/util.h"

#define FIXED_SEED 0x5eedf00dull

static void child_init(void)
{
    /* Default signal handling, and no orphans: the parent's death ends the child. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        _exit(1);
}

static void send_msg(int fd, const ms__demo_msg *m)
{
    ssize_t n;
    do
        n = write(fd, m, sizeof *m);
    while (n < 0 && errno == EINTR);
}

__attribute__((noreturn, format(printf, 4, 5))) static void fail(int fd, ms__demo_msg *m, int code,
                                                                 const char *fmt, ...)
{
    va_list ap;
    m->kind = MS__DEMO_ERROR;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof m->error, fmt, ap);
    va_end(ap);
    send_msg(fd, m);
    (void)code;
    _exit(1);
}

static void checksum(const float *y, size_t n, ms__demo_msg *m)
{
    double sum = 0, abs_sum = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *b = (const uint8_t *)y;
    for (size_t i = 0; i < n; i++) {
        sum += y[i];
        abs_sum += y[i] < 0 ? -(double)y[i] : y[i];
    }
    for (size_t i = 0; i < n * sizeof(float); i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    m->sum = sum;
    m->abs_sum = abs_sum;
    m->hash = h;
}

static void fixed_input(const ms__demo_cfg *cfg, float *x)
{
    ms__cli_rng rng;
    ms__cli_rng_seed(&rng, FIXED_SEED);
    ms__cli_rng_fill_uniform(&rng, x, (size_t)cfg->batch * (size_t)cfg->layers[0], -1.0f, 1.0f);
}

void ms__demo_measure_child(const ms__demo_cfg *cfg, int report_fd)
{
    ms__demo_msg m = {.kind = MS__DEMO_MEASURED, .pid = getpid()};
    char err[MS__ERRLEN] = "";
    child_init();

    const ms__backend_ops *dense = ms__backend_find("dense");
    if (!dense)
        fail(report_fd, &m, MS_E_BACKEND, "the dense backend is not built in");
    ms__spec spec;
    int rc = ms__spec_parse(cfg->spec, &spec, err, sizeof err);
    if (rc < 0)
        fail(report_fd, &m, rc, "spec %s: %s", cfg->spec, err);

    uint64_t before, after;
    if (ms__proc_pss(0, &before) < 0)
        fail(report_fd, &m, MS_E_IO, "cannot read this process's memory (/proc/self/smaps)");
    double t0 = ms__now_s();
    void *state = NULL;
    rc = dense->load(&spec, &state, err, sizeof err);
    if (rc < 0)
        fail(report_fd, &m, rc, "in-process load of %s failed: %s", cfg->weights,
             err[0] ? err : ms_strerror(rc));
    m.load_s = ms__now_s() - t0;
    if (ms__proc_pss(0, &after) < 0)
        fail(report_fd, &m, MS_E_IO, "cannot read this process's memory (/proc/self/smaps)");
    m.pss_bytes = after > before ? after - before : 0;

    /* The reference answer for the shared fixed input, computed without modelshare. */
    size_t in_n = (size_t)cfg->batch * (size_t)cfg->layers[0];
    ms__tensor_view in = {.dtype = MS_FLOAT32, .rank = 2, .shape = {cfg->batch, cfg->layers[0]}};
    ms__tensor_view out = {0};
    in.nbytes = in_n * sizeof(float);
    in.data = malloc(in.nbytes);
    if (!in.data)
        fail(report_fd, &m, MS_E_NOMEM, "out of memory");
    fixed_input(cfg, in.data);
    rc = dense->output_for(state, &in, &out, err, sizeof err);
    if (rc < 0)
        fail(report_fd, &m, rc, "in-process run: %s", err);
    out.data = malloc(out.nbytes ? out.nbytes : 1);
    if (!out.data)
        fail(report_fd, &m, MS_E_NOMEM, "out of memory");
    rc = dense->run(state, &in, &out, err, sizeof err);
    if (rc < 0)
        fail(report_fd, &m, rc, "in-process run: %s", err);
    checksum(out.data, out.nbytes / sizeof(float), &m);
    send_msg(report_fd, &m);
    /* Exiting frees everything; unloading first would only cost time. */
    _exit(0);
}

/* Blocks for the parent's next byte on the go pipe; exits when the parent is gone. */
static void wait_go(int go_fd)
{
    char c;
    ssize_t n;
    do
        n = read(go_fd, &c, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(1);
}

/* The timed part: after the parent's go, cfg->requests requests of random rows, the input written
 * straight into shared memory (x), once per request; nothing else is copied. */
static void run_requests(const ms__demo_cfg *cfg, int index, int report_fd, ms__demo_msg *m,
                         ms_client *client, ms_model *model, ms_tensor *x, int go_fd)
{
    size_t in_n = (size_t)cfg->batch * (size_t)cfg->layers[0];
    size_t out_n = (size_t)cfg->batch * (size_t)cfg->layers[cfg->nlayers - 1];
    ms_tensor *y = NULL;
    ms__cli_rng rng;
    ms__cli_rng_seed(&rng, 1000 + (uint64_t)index);

    wait_go(go_fd);
    m->t_start = ms__now_s();
    for (int r = 0; r < cfg->requests; r++) {
        ms__cli_rng_fill_uniform(&rng, ms_tensor_data(x), in_n, -1.0f, 1.0f);
        int rc = ms_infer(model, x, &y);
        if (rc < 0)
            fail(report_fd, m, rc, "request %d failed: %s", r + 1, ms__cli_errtext(client, rc));
        if (ms_tensor_dtype(y) != MS_FLOAT32 || ms_tensor_nbytes(y) != out_n * sizeof(float))
            fail(report_fd, m, MS_E_SHAPE, "request %d: unexpected output (%s, %zu bytes)", r + 1,
                 ms_dtype_name(ms_tensor_dtype(y)), ms_tensor_nbytes(y));
        ms_tensor_free(y);
        y = NULL;
    }
    m->t_end = ms__now_s();
}

/* The same input in every client: the answers must agree. Its checksum goes into *m. */
static void shared_answer(const ms__demo_cfg *cfg, int report_fd, ms__demo_msg *m,
                          ms_client *client, ms_model *model, ms_tensor *x)
{
    size_t out_n = (size_t)cfg->batch * (size_t)cfg->layers[cfg->nlayers - 1];
    ms_tensor *y = NULL;
    fixed_input(cfg, ms_tensor_data(x));
    int rc = ms_infer(model, x, &y);
    if (rc < 0)
        fail(report_fd, m, rc, "the shared input's request failed: %s",
             ms__cli_errtext(client, rc));
    if (ms_tensor_nbytes(y) != out_n * sizeof(float))
        fail(report_fd, m, MS_E_SHAPE, "the shared input's output has %zu bytes, expected %zu",
             ms_tensor_nbytes(y), out_n * sizeof(float));
    checksum(ms_tensor_data(y), out_n, m);
    ms_tensor_free(y);
}

void ms__demo_client_child(const ms__demo_cfg *cfg, int index, int report_fd, int go_fd)
{
    ms__demo_msg m = {.index = index, .pid = getpid()};
    child_init();

    ms_client *client = NULL;
    ms_model *model = NULL;
    double t0 = ms__now_s();
    int rc = ms_connect(NULL, &client);
    if (rc < 0)
        fail(report_fd, &m, rc, "cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
    rc = ms_acquire(client, MS__DEMO_TAG, cfg->spec, &model);
    if (rc < 0)
        fail(report_fd, &m, rc, "cannot acquire \"%s\": %s", MS__DEMO_TAG,
             ms__cli_errtext(client, rc));
    m.kind = MS__DEMO_READY;
    m.load_s = ms__now_s() - t0;
    send_msg(report_fd, &m);

    int64_t in_shape[2] = {cfg->batch, cfg->layers[0]};
    ms_tensor *x = NULL;
    rc = ms_tensor_alloc(model, MS_FLOAT32, 2, in_shape, &x);
    if (rc < 0)
        fail(report_fd, &m, rc, "cannot allocate the input tensor: %s",
             ms__cli_errtext(client, rc));
    run_requests(cfg, index, report_fd, &m, client, model, x, go_fd);
    shared_answer(cfg, report_fd, &m, client, model, x);
    ms_tensor_free(x);
    m.kind = MS__DEMO_DONE;
    send_msg(report_fd, &m);

    /* Keep the lease until the parent has read the daemon's counters. */
    wait_go(go_fd);
    ms_release(model);
    ms_disconnect(client);
    _exit(0);
}
