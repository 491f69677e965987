/* `modelshare make-dense`: a PyTorch-like nn.Sequential(Linear, ReLU, Linear, ...) of random
 * weights, saved as safetensors, for the dense backend, the demo and benchmarks. */
#include "cli.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/safetensors.h"
#include "common/util.h"

const char ms__usage_make_dense[] =
    "usage: modelshare make-dense OUT.safetensors --layers A,B,C[,...] [--seed N]\n"
    "\n"
    "Writes a multilayer perceptron of random float32 weights, as PyTorch's\n"
    "nn.Sequential(Linear(A,B), ReLU(), Linear(B,C), ...) names them: \"0.weight\" [B, A],\n"
    "\"0.bias\" [B], \"2.weight\" [C, B], ... Values are uniform in [-1/sqrt(in), 1/sqrt(in)]\n"
    "from a deterministic generator: the same layers and seed give the same file.\n"
    "\n"
    "  --layers A,B,...  layer sizes, input first (at least 2, each 1..1000000)\n"
    "  --seed N          generator seed (default 0)\n"
    "  -h, --help        this help\n";

bool ms__cli_dense_count(const int64_t *sizes, int n, ms__cli_dense_info *info)
{
    size_t params = 0;
    for (int i = 0; i + 1 < n; i++) {
        size_t w, wb;
        if (__builtin_mul_overflow((size_t)sizes[i], (size_t)sizes[i + 1], &w) ||
            __builtin_add_overflow(w, (size_t)sizes[i + 1], &wb) ||
            __builtin_add_overflow(params, wb, &params))
            return false;
    }
    size_t bytes;
    if (__builtin_mul_overflow(params, sizeof(float), &bytes))
        return false;
    info->params = params;
    info->data_bytes = bytes;
    return true;
}

/* Names as nn.Sequential numbers its modules: Linear k is module 2k (a ReLU between each). */
static void layer_name(int layer, const char *what, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%d.%s", 2 * layer, what);
}

/* Fills layer l's weight and bias (data[2l], data[2l+1]) and their tensor records t[2l],
 * t[2l+1], drawing the values from *rng. */
static int dense_layer(ms__cli_rng *rng, const int64_t *sizes, int l, ms__st_out_tensor *t,
                       char (*names)[32], float **data, char *err, size_t errlen)
{
    int64_t in = sizes[l], outn = sizes[l + 1];
    float bound = (float)(1.0 / sqrt((double)in));
    ms__st_out_tensor *w = &t[2 * l], *b = &t[2 * l + 1];
    size_t wn = (size_t)in * (size_t)outn;

    data[2 * l] = malloc(wn * sizeof(float));
    data[2 * l + 1] = malloc((size_t)outn * sizeof(float));
    if (!data[2 * l] || !data[2 * l + 1])
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for %zu weights of layer %d", wn,
                        l);
    ms__cli_rng_fill_uniform(rng, data[2 * l], wn, -bound, bound);
    ms__cli_rng_fill_uniform(rng, data[2 * l + 1], (size_t)outn, -bound, bound);

    layer_name(l, "weight", names[2 * l], sizeof names[0]);
    layer_name(l, "bias", names[2 * l + 1], sizeof names[0]);
    w->name = names[2 * l];
    w->rank = 2;
    w->shape[0] = outn;
    w->shape[1] = in;
    w->data = data[2 * l];
    b->name = names[2 * l + 1];
    b->rank = 1;
    b->shape[0] = outn;
    b->data = data[2 * l + 1];
    return 0;
}

/* Writes the ntensors of t to a temporary file beside path, renamed to path at the end: never a
 * half-written model. */
static int write_renamed(const char *path, const ms__st_out_tensor *t, size_t ntensors, char *err,
                         size_t errlen)
{
    char *tmp;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
        return MS_E_NOMEM;
    int rc = ms__st_write_f32(tmp, t, ntensors, err, errlen);
    if (rc >= 0 && rename(tmp, path) < 0)
        rc = ms__fail(err, errlen, MS_E_IO, "cannot rename %s to %s: %m", tmp, path);
    if (rc < 0)
        unlink(tmp);
    else
        rc = 0;
    free(tmp);
    return rc;
}

int ms__cli_dense_write(const char *path, const int64_t *sizes, int n, uint64_t seed, char *err,
                        size_t errlen)
{
    int rc = MS_E_NOMEM;
    int nlayers = n - 1;
    ms__st_out_tensor *t = calloc((size_t)nlayers * 2, sizeof *t);
    char(*names)[32] = calloc((size_t)nlayers * 2, sizeof *names);
    float **data = calloc((size_t)nlayers * 2, sizeof *data);
    if (!t || !names || !data)
        goto out;

    ms__cli_rng rng;
    ms__cli_rng_seed(&rng, seed);
    for (int l = 0; l < nlayers; l++)
        if ((rc = dense_layer(&rng, sizes, l, t, names, data, err, errlen)) < 0)
            goto out;
    rc = write_renamed(path, t, (size_t)nlayers * 2, err, errlen);
out:
    if (rc == MS_E_NOMEM && err && errlen && !err[0])
        snprintf(err, errlen, "out of memory");
    if (data)
        for (int i = 0; i < nlayers * 2; i++)
            free(data[i]);
    free(data);
    free(names);
    free(t);
    return rc;
}

bool ms__cli_dense_matches(const char *path, const int64_t *sizes, int n)
{
    bool ok = false;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    uint8_t lenbuf[8];
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || pread(fd, lenbuf, 8, 0) != 8)
        goto out;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | lenbuf[i];
    if (hlen > MS__ST_HEADER_MAX || 8 + hlen > (uint64_t)st.st_size)
        goto out;
    buf = malloc(8 + hlen);
    if (!buf || pread(fd, buf, 8 + hlen, 0) != (ssize_t)(8 + hlen))
        goto out;

    ms__st_file f;
    char err[MS__ERRLEN];
    if (ms__st_parse(buf, 8 + hlen, (uint64_t)st.st_size, &f, err, sizeof err) < 0)
        goto out;
    ok = f.ntensors == (size_t)(n - 1) * 2;
    for (int l = 0; ok && l + 1 < n; l++) {
        char wname[32], bname[32];
        layer_name(l, "weight", wname, sizeof wname);
        layer_name(l, "bias", bname, sizeof bname);
        const ms__st_tensor *w = ms__st_find(&f, wname), *b = ms__st_find(&f, bname);
        ok = w && b && w->dtype == MS_FLOAT32 && b->dtype == MS_FLOAT32 && w->rank == 2 &&
             w->shape[0] == sizes[l + 1] && w->shape[1] == sizes[l] && b->rank == 1 &&
             b->shape[0] == sizes[l + 1];
    }
    ms__st_free(&f);
out:
    free(buf);
    close(fd);
    return ok;
}

static void layers_str(const int64_t *sizes, int n, const char *sep, char *buf, size_t buflen)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && off < buflen; i++) {
        int w = snprintf(buf + off, buflen - off, "%s%lld", i ? sep : "", (long long)sizes[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* Reads the command line into *out, *layers and *seed. Returns -1 to go on, else the exit
 * status. */
static int make_dense_args(int argc, char **argv, const char **out, const char **layers,
                           int64_t *seed)
{
    const ms__cli_opt opts[] = {MS__CLI_OPT_TEXT("layers", 0, layers),
                                MS__CLI_OPT_INT("seed", seed, 0, (double)INT64_MAX),
                                MS__CLI_OPT_END};
    static const char *const names[] = {"OUT.safetensors", NULL};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_make_dense, names, out);
    if (r >= 0)
        return r;
    if (!*layers)
        return ms__cli_usage_error(argv[0], ms__usage_make_dense, "missing --layers");
    return -1;
}

int ms__cmd_make_dense(int argc, char **argv)
{
    const char *layers = NULL, *out = NULL;
    int64_t seed = 0;
    int ret = make_dense_args(argc, argv, &out, &layers, &seed);
    if (ret >= 0)
        return ret;

    int64_t sizes[MS__CLI_LAYERS_MAX];
    int n;
    char err[MS__ERRLEN];
    if (!ms__cli_parse_layers(layers, sizes, MS__CLI_LAYERS_MAX, &n, err, sizeof err))
        return ms__cli_usage_error(argv[0], ms__usage_make_dense, "%s", err);
    ms__cli_dense_info info;
    if (!ms__cli_dense_count(sizes, n, &info))
        return ms__cli_error("--layers %s: the model is too large for this machine", layers);

    double t0 = ms__now_s();
    err[0] = '\0';
    int rc = ms__cli_dense_write(out, sizes, n, (uint64_t)seed, err, sizeof err);
    if (rc < 0)
        return ms__cli_error("cannot write %s: %s", out, err[0] ? err : ms_strerror(rc));

    char shape[MS__CLI_LAYERS_MAX * 12], size[32];
    struct stat st;
    layers_str(sizes, n, " > ", shape, sizeof shape);
    ms__cli_fmt_bytes_dec(stat(out, &st) == 0 ? (uint64_t)st.st_size : info.data_bytes, size,
                          sizeof size);
    printf("wrote %s\n", out);
    printf("  layers      %s (%d linear layers, ReLU between)\n", shape, n - 1);
    printf("  parameters  %llu float32\n", (unsigned long long)info.params);
    printf("  size        %s, seed %lld, %.1f s\n", size, (long long)seed, ms__now_s() - t0);
    return MS__EXIT_OK;
}
