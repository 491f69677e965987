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

int ms__cmd_infer(int argc, char **argv)
{
    static const struct option opts[] = {
        {"spec", required_argument, NULL, 's'},  {"weights", required_argument, NULL, 'w'},
        {"input", required_argument, NULL, 'i'}, {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    const char *spec = NULL, *weights = NULL, *input = NULL, *output = NULL;
    int c;
    while ((c = ms__cli_getopt(argc, argv, ":hi:o:", opts, ms__usage_infer)) != -1) {
        switch (c) {
        case 'h':
            fputs(ms__usage_infer, stdout);
            return MS__EXIT_OK;
        case 's':
            spec = optarg;
            break;
        case 'w':
            weights = optarg;
            break;
        case 'i':
            input = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        default:
            return MS__EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return ms__cli_usage_error(argv[0], ms__usage_infer, "missing TAG");
    const char *tag = argv[optind++];
    if (optind < argc)
        return ms__cli_usage_error(argv[0], ms__usage_infer, "unexpected argument \"%s\"",
                                   argv[optind]);
    if (!input)
        return ms__cli_usage_error(argv[0], ms__usage_infer, "missing --input X.npy");
    if (spec && weights)
        return ms__cli_usage_error(argv[0], ms__usage_infer,
                                   "give either --spec or --weights, not both");

    int ret = MS__EXIT_ERROR;
    char err[MS__ERRLEN] = "";
    ms__npy_header hdr;
    void *xdata = NULL;
    char *spec_json = NULL;
    ms_client *client = NULL;
    ms_model *model = NULL;
    ms_tensor *x = NULL, *y = NULL;

    int rc = ms__npy_read(input, &hdr, &xdata, err, sizeof err);
    if (rc < 0) {
        ms__cli_error("cannot read %s: %s", input, err[0] ? err : ms_strerror(rc));
        goto out;
    }
    if (weights) {
        spec_json = ms__cli_weights_spec(weights);
        if (!spec_json) {
            ms__cli_error("out of memory");
            goto out;
        }
    }

    /* Without a spec we only attach to a loaded model: no daemon means no such model. */
    if (!spec && !weights)
        setenv("MODELSHARE_NO_AUTOSTART", "1", 1);
    rc = ms_connect(NULL, &client);
    if (rc == MS_E_NO_DAEMON && !spec && !weights) {
        ms__cli_error("no model \"%s\": no daemon is running (load it first, or give --spec or "
                      "--weights)",
                      tag);
        goto out;
    }
    if (rc < 0) {
        ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
        goto out;
    }
    rc = ms_acquire(client, tag, spec ? spec : spec_json, &model);
    if (rc < 0) {
        if (rc == MS_E_UNKNOWN_TAG && !spec && !weights)
            ms__cli_error("no model \"%s\" is loaded (load it first, or give --spec or "
                          "--weights)",
                          tag);
        else
            ms__cli_error("cannot acquire \"%s\": %s", tag, ms__cli_errtext(client, rc));
        goto out;
    }
    rc = ms_tensor_from(model, hdr.dtype, hdr.rank, hdr.shape, xdata, hdr.nbytes, &x);
    if (rc < 0) {
        ms__cli_error("cannot place %s in shared memory: %s", input, ms__cli_errtext(client, rc));
        goto out;
    }
    rc = ms_infer(model, x, &y);
    if (rc < 0) {
        ms__cli_error("inference on %s failed: %s%s", input, ms__cli_errtext(client, rc),
                      rc == MS_E_DTYPE ? " (numpy: save the array with x.astype(np.float32))" : "");
        goto out;
    }
    if (output) {
        rc = ms__npy_write(output, ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y),
                           ms_tensor_data(y), err, sizeof err);
        if (rc < 0) {
            ms__cli_error("cannot write %s: %s", output, err[0] ? err : ms_strerror(rc));
            goto out;
        }
        char shp[256];
        ms__shape_str(ms_tensor_rank(y), ms_tensor_shape(y), shp, sizeof shp);
        printf("wrote %s: %s %s\n", output, ms_dtype_name(ms_tensor_dtype(y)), shp);
    } else {
        print_array(ms_tensor_data(y), ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y));
    }
    ret = MS__EXIT_OK;
out:
    ms_tensor_free(y);
    ms_tensor_free(x);
    /* A release the daemon did not hear is done by the daemon itself when we disconnect. */
    ms_release(model);
    ms_disconnect(client);
    free(spec_json);
    free(xdata);
    return ret;
}
