/* `modelshare infer`: runs a model once on a .npy array, through the daemon like any client. */
#include "cli.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/npy.h"
#include "common/util.h"

const char ms__usage_infer[] =
    "usage: modelshare infer TAG [--spec JSON | --weights FILE] --input X.npy [--output Y.npy]\n"
    "\n"
    "Runs the model TAG on the array in X.npy (C order, little-endian) and writes the result to\n"
    "Y.npy, or prints it. With --spec or --weights the model is loaded first if needed\n"
    "(--weights FILE means {\"backend\":\"dense\",\"weights\":FILE}); without them TAG must be\n"
    "loaded already.\n"
    "\n"
    "  --spec JSON      the model's spec\n"
    "  --weights FILE   a dense model's safetensors weights\n"
    "  --input X.npy    the input array\n"
    "  --output Y.npy   where to write the output (default: print it)\n"
    "  -h, --help       this help\n";

/* ---- printing, numpy-like ---------------------------------------------------------------- */

static double half_to_double(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = ldexp(mant, -24);
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp(mant + 1024, exp - 25);
    return sign ? -v : v;
}

static double value_at(const void *data, int dtype, size_t i)
{
    switch (dtype) {
    case MS_FLOAT32:
        return ((const float *)data)[i];
    case MS_FLOAT64:
        return ((const double *)data)[i];
    case MS_FLOAT16:
        return half_to_double(((const uint16_t *)data)[i]);
    case MS_BFLOAT16: {
        uint32_t bits = (uint32_t)((const uint16_t *)data)[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    case MS_INT8:
        return ((const int8_t *)data)[i];
    case MS_UINT8:
        return ((const uint8_t *)data)[i];
    case MS_INT16:
        return ((const int16_t *)data)[i];
    case MS_INT32:
        return ((const int32_t *)data)[i];
    case MS_INT64:
        return (double)((const int64_t *)data)[i];
    case MS_BOOL:
        return ((const uint8_t *)data)[i] != 0;
    default:
        return NAN;
    }
}

static bool is_float(int dtype)
{
    return dtype == MS_FLOAT32 || dtype == MS_FLOAT64 || dtype == MS_FLOAT16 ||
           dtype == MS_BFLOAT16;
}

static void format_value(const void *data, int dtype, size_t i, char *buf, size_t buflen)
{
    if (dtype == MS_BOOL)
        snprintf(buf, buflen, "%s", value_at(data, dtype, i) != 0 ? "True" : "False");
    else if (dtype == MS_INT64)
        snprintf(buf, buflen, "%lld", (long long)((const int64_t *)data)[i]);
    else if (!is_float(dtype))
        snprintf(buf, buflen, "%.0f", value_at(data, dtype, i));
    else
        snprintf(buf, buflen, "%.6g", value_at(data, dtype, i));
}

#define SHOW 10 /* rows and columns shown at most; beyond, the first and last SHOW/2 */

/* Which of n indices to show: k indices into idx, with a gap (-1) where "..." goes. */
static int pick(size_t n, long long *idx)
{
    int k = 0;
    if (n <= SHOW) {
        for (size_t i = 0; i < n; i++)
            idx[k++] = (long long)i;
        return k;
    }
    for (size_t i = 0; i < SHOW / 2; i++)
        idx[k++] = (long long)i;
    idx[k++] = -1;
    for (size_t i = n - SHOW / 2; i < n; i++)
        idx[k++] = (long long)i;
    return k;
}

/* Prints the array as rows × columns (the last dimension is the columns; leading dimensions are
 * flattened into rows). */
static void print_array(const void *data, int dtype, int rank, const int64_t *shape)
{
    char shp[256];
    ms__shape_str(rank, shape, shp, sizeof shp);
    size_t numel;
    if (!ms__shape_numel(rank, shape, &numel))
        numel = 0;
    size_t cols = rank == 0 ? 1 : (size_t)shape[rank - 1];
    size_t rows = cols ? numel / cols : 0;
    printf("%s %s", ms_dtype_name(dtype), shp);
    if (rank > 2)
        printf(" (shown as %zu rows of %zu)", rows, cols);
    printf("\n");
    if (numel == 0) {
        printf("[]\n");
        return;
    }
    if (rank == 0) {
        char v[64];
        format_value(data, dtype, 0, v, sizeof v);
        printf("%s\n", v);
        return;
    }

    long long ri[SHOW + 1], ci[SHOW + 1];
    int nr = pick(rows, ri), nc = pick(cols, ci);
    int width = 1;
    char v[64];
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < nc; c++) {
            if (ri[r] < 0 || ci[c] < 0)
                continue;
            format_value(data, dtype, (size_t)ri[r] * cols + (size_t)ci[c], v, sizeof v);
            int len = (int)strlen(v);
            if (len > width)
                width = len;
        }

    bool matrix = rank >= 2;
    for (int r = 0; r < nr; r++) {
        fputs(!matrix ? "[" : r == 0 ? "[[" : " [", stdout);
        if (ri[r] < 0) {
            printf("%*s", width, "...");
        } else {
            for (int c = 0; c < nc; c++) {
                if (c)
                    fputs(" ", stdout);
                if (ci[c] < 0) {
                    printf("%*s", width, "...");
                    continue;
                }
                format_value(data, dtype, (size_t)ri[r] * cols + (size_t)ci[c], v, sizeof v);
                printf("%*s", width, v);
            }
        }
        fputs(!matrix ? "]\n" : r == nr - 1 ? "]]\n" : "]\n", stdout);
    }
}

/* ---- the verb ---------------------------------------------------------------------------- */

typedef struct infer_args {
    const char *tag, *spec, *weights, *input, *output;
} infer_args;

/* Reads the command line into *a. Returns -1 to go on, else the exit status. */
static int infer_args_parse(int argc, char **argv, infer_args *a)
{
    const ms__cli_opt opts[] = {MS__CLI_OPT_TEXT("spec", 0, &a->spec),
                                MS__CLI_OPT_TEXT("weights", 0, &a->weights),
                                MS__CLI_OPT_TEXT("input", 'i', &a->input),
                                MS__CLI_OPT_TEXT("output", 'o', &a->output), MS__CLI_OPT_END};
    static const char *const names[] = {"TAG", NULL};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_infer, names, &a->tag);
    if (r >= 0)
        return r;
    if (!a->input)
        return ms__cli_usage_error(argv[0], ms__usage_infer, "missing --input X.npy");
    if (a->spec && a->weights)
        return ms__cli_usage_error(argv[0], ms__usage_infer,
                                   "give either --spec or --weights, not both");
    return -1;
}

/* Connects and acquires a->tag (*client and *model owned by the caller, also on failure).
 * Returns 0, or -1 after printing why. */
static int infer_acquire(const infer_args *a, const char *spec_json, ms_client **client,
                         ms_model **model)
{
    bool attach = !a->spec && !a->weights;
    /* Without a spec we only attach to a loaded model: no daemon means no such model. */
    if (attach)
        setenv("MODELSHARE_NO_AUTOSTART", "1", 1);
    int rc = ms_connect(NULL, client);
    if (rc == MS_E_NO_DAEMON && attach) {
        ms__cli_error("no model \"%s\": no daemon is running (load it first, or give --spec or "
                      "--weights)",
                      a->tag);
        return -1;
    }
    if (rc < 0) {
        ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
        return -1;
    }
    rc = ms_acquire(*client, a->tag, a->spec ? a->spec : spec_json, model);
    if (rc == MS_E_UNKNOWN_TAG && attach)
        ms__cli_error("no model \"%s\" is loaded (load it first, or give --spec or "
                      "--weights)",
                      a->tag);
    else if (rc < 0)
        ms__cli_error("cannot acquire \"%s\": %s", a->tag, ms__cli_errtext(*client, rc));
    return rc < 0 ? -1 : 0;
}

/* Writes y to a->output, or prints it. Returns 0, or -1 after printing why. */
static int infer_show(const infer_args *a, const ms_tensor *y)
{
    char err[MS__ERRLEN] = "";
    if (!a->output) {
        print_array(ms_tensor_data(y), ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y));
        return 0;
    }
    int rc = ms__npy_write(a->output, ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y),
                           ms_tensor_data(y), err, sizeof err);
    if (rc < 0) {
        ms__cli_error("cannot write %s: %s", a->output, err[0] ? err : ms_strerror(rc));
        return -1;
    }
    char shp[256];
    ms__shape_str(ms_tensor_rank(y), ms_tensor_shape(y), shp, sizeof shp);
    printf("wrote %s: %s %s\n", a->output, ms_dtype_name(ms_tensor_dtype(y)), shp);
    return 0;
}

/* Runs the model once on the input array and shows the output. Returns 0, or -1 after printing
 * why. */
static int infer_run(const infer_args *a, ms_client *client, ms_model *model,
                     const ms__npy_header *hdr, const void *xdata)
{
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_tensor_from(model, hdr->dtype, hdr->rank, hdr->shape, xdata, hdr->nbytes, &x);
    if (rc < 0) {
        ms__cli_error("cannot place %s in shared memory: %s", a->input,
                      ms__cli_errtext(client, rc));
        return -1;
    }
    rc = ms_infer(model, x, &y);
    if (rc < 0)
        ms__cli_error("inference on %s failed: %s%s", a->input, ms__cli_errtext(client, rc),
                      rc == MS_E_DTYPE ? " (numpy: save the array with x.astype(np.float32))" : "");
    else
        rc = infer_show(a, y);
    ms_tensor_free(y);
    ms_tensor_free(x);
    return rc < 0 ? -1 : 0;
}

int ms__cmd_infer(int argc, char **argv)
{
    infer_args a = {0};
    int ret = infer_args_parse(argc, argv, &a);
    if (ret >= 0)
        return ret;

    ret = MS__EXIT_ERROR;
    char err[MS__ERRLEN] = "";
    ms__npy_header hdr;
    void *xdata = NULL;
    char *spec_json = NULL;
    ms_client *client = NULL;
    ms_model *model = NULL;

    int rc = ms__npy_read(a.input, &hdr, &xdata, err, sizeof err);
    if (rc < 0) {
        ms__cli_error("cannot read %s: %s", a.input, err[0] ? err : ms_strerror(rc));
        goto out;
    }
    if (a.weights && !(spec_json = ms__cli_weights_spec(a.weights))) {
        ms__cli_error("out of memory");
        goto out;
    }
    if (infer_acquire(&a, spec_json, &client, &model) == 0 &&
        infer_run(&a, client, model, &hdr, xdata) == 0)
        ret = MS__EXIT_OK;
out:
    /* A release the daemon did not hear is done by the daemon itself when we disconnect. */
    ms_release(model);
    ms_disconnect(client);
    free(spec_json);
    free(xdata);
    return ret;
}
