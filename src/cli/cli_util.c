/* Helpers shared by the CLI's verbs: messages, option parsing, number formatting, the PRNG. */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int ms__cli_error(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("modelshare: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return MS__EXIT_ERROR;
}

int ms__cli_usage_error(const char *verb, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "modelshare %s: ", verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    fputs(usage, stderr);
    return MS__EXIT_USAGE;
}

const char *ms__cli_errtext(const ms_client *client, int code)
{
    const char *msg = ms_errmsg(client);
    if (msg && msg[0])
        return msg;
    return ms_strerror(code);
}

bool ms__cli_parse_i64(const char *text, int64_t min, int64_t max, int64_t *out)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool ms__cli_parse_double(const char *text, double min, double max, double *out)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool ms__cli_parse_layers(const char *text, int64_t *sizes, int max, int *count, char *err,
                          size_t errlen)
{
    int n = 0;
    const char *p = text;
    if (!text || !*text) {
        snprintf(err, errlen, "--layers needs sizes like 1024,4096,1000");
        return false;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        if (len == 0 || len >= sizeof item) {
            snprintf(err, errlen,
                     "--layers: expected comma-separated sizes like 1024,4096,1000, "
                     "got \"%s\"",
                     text);
            return false;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        int64_t v;
        if (!ms__cli_parse_i64(item, 1, 1000000, &v)) {
            snprintf(err, errlen,
                     "--layers: each size must be an integer from 1 to 1000000, "
                     "got \"%s\"",
                     item);
            return false;
        }
        if (n == max) {
            snprintf(err, errlen, "--layers: at most %d sizes", max);
            return false;
        }
        sizes[n++] = v;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (n < 2) {
        snprintf(err, errlen,
                 "--layers: need at least 2 sizes (input and output), got %d in \"%s\"", n, text);
        return false;
    }
    *count = n;
    return true;
}

static void fmt_bytes(uint64_t bytes, double unit, const char *const *names, char *buf,
                      size_t buflen)
{
    double v = (double)bytes;
    int i = 0;
    while (v >= unit && i < 4) {
        v /= unit;
        i++;
    }
    if (i == 0)
        snprintf(buf, buflen, "%llu %s", (unsigned long long)bytes, names[0]);
    else if (v >= 100)
        snprintf(buf, buflen, "%.0f %s", v, names[i]);
    else if (v >= 10)
        snprintf(buf, buflen, "%.1f %s", v, names[i]);
    else
        snprintf(buf, buflen, "%.2f %s", v, names[i]);
}

void ms__cli_fmt_bytes_bin(uint64_t bytes, char *buf, size_t buflen)
{
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    fmt_bytes(bytes, 1024.0, names, buf, buflen);
}

/* The longest an instance of m has been stuck (status "stuck_s"), seconds. */
static double stuck_s(const json_t *m)
{
    double most = 0.0;
    const json_t *inst = json_object_get(m, "instances");
    for (size_t i = 0; json_is_array(inst) && i < json_array_size(inst); i++) {
        double s = json_number_value(json_object_get(json_array_get(inst, i), "stuck_s"));
        if (s > most)
            most = s;
    }
    return most;
}

void ms__cli_fmt_state(const json_t *m, char *buf, size_t buflen)
{
    const char *state = ms__cli_jstr(m, "state", "?");
    double stuck = stuck_s(m);
    /* A second and more: a batch that long, or a worker that stopped (the watchdog's view). */
    if (strcmp(state, "ready") == 0 && stuck >= 1.0) {
        snprintf(buf, buflen, "ready, stuck %.1f s", stuck);
        return;
    }
    const char *phase = ms__cli_jstr(m, "load_phase", NULL);
    long long done = ms__cli_jint(m, "loaded_bytes"), total = ms__cli_jint(m, "load_total_bytes");
    if (strcmp(state, "loading") != 0 || phase == NULL) {
        snprintf(buf, buflen, "%s", state);
        return;
    }
    if (strcmp(phase, "reading weights") != 0 || total <= 0) {
        snprintf(buf, buflen, "loading: %s", phase);
        return;
    }
    char a[32], b[32];
    ms__cli_fmt_bytes_bin((uint64_t)done, a, sizeof a);
    ms__cli_fmt_bytes_bin((uint64_t)total, b, sizeof b);
    snprintf(buf, buflen, "loading: %s %s of %s (%.0f%%)", phase, a, b,
             100.0 * (double)done / (double)total);
}

void ms__cli_fmt_bytes_dec(uint64_t bytes, char *buf, size_t buflen)
{
    static const char *const names[] = {"B", "kB", "MB", "GB", "TB"};
    fmt_bytes(bytes, 1000.0, names, buf, buflen);
}

void ms__cli_rng_seed(ms__cli_rng *rng, uint64_t seed)
{
    rng->state = seed;
}

uint64_t ms__cli_rng_next(ms__cli_rng *rng)
{
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ms__cli_rng_fill_uniform(ms__cli_rng *rng, float *out, size_t n, float lo, float hi)
{
    /* Two floats per 64-bit draw, 24 random bits each: every float32 in [0, 1) step 2^-24. */
    const float scale = (hi - lo) * (1.0f / 16777216.0f);
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t r = ms__cli_rng_next(rng);
        out[i] = lo + (float)(uint32_t)(r >> 40) * scale;
        out[i + 1] = lo + (float)(uint32_t)((r >> 8) & 0xffffffu) * scale;
    }
    if (i < n)
        out[i] = lo + (float)(uint32_t)(ms__cli_rng_next(rng) >> 40) * scale;
}

char *ms__cli_weights_spec(const char *weights)
{
    char abs[PATH_MAX];
    json_t *obj = json_pack("{s:s, s:s}", "backend", "dense", "weights",
                            realpath(weights, abs) ? abs : weights);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    return text;
}

const char *ms__cli_jstr(const json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

long long ms__cli_jint(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    return 0;
}

int ms__cli_fetch_status(json_t **out)
{
    /* Asking must not start a daemon. */
    setenv("MODELSHARE_NO_AUTOSTART", "1", 1);
    ms_client *client = NULL;
    int rc = ms_connect(NULL, &client);
    if (rc == MS_E_NO_DAEMON)
        return rc;
    if (rc < 0) {
        ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
        return rc;
    }
    char *text = NULL;
    rc = ms_status_json(client, &text);
    if (rc < 0) {
        ms__cli_error("status: %s", ms__cli_errtext(client, rc));
        ms_disconnect(client);
        return rc;
    }
    ms_disconnect(client);
    json_error_t jerr;
    json_t *status = json_loads(text, 0, &jerr);
    free(text);
    if (!json_is_object(status)) {
        json_decref(status);
        ms__cli_error("the daemon's status is not a JSON object: %s", jerr.text);
        return MS_E_PROTOCOL;
    }
    *out = status;
    return 0;
}

/* getopt_long's table and short options from a verb's table; the option's index is its value. */
static size_t cli_getopt_table(const ms__cli_opt *opts, struct option *lo, char *shortopts)
{
    size_t n = 0, k = 0;
    shortopts[k++] = ':';
    shortopts[k++] = 'h';
    for (; opts[n].name && n < MS__CLI_OPTS_MAX; n++) {
        bool arg = opts[n].kind != MS__CLI_FLAG;
        lo[n] = (struct option){opts[n].name, arg ? required_argument : no_argument, NULL,
                                (int)(n + 256)};
        if (opts[n].letter) {
            shortopts[k++] = opts[n].letter;
            if (arg)
                shortopts[k++] = ':';
        }
    }
    lo[n] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n + 1] = (struct option){NULL, 0, NULL, 0};
    shortopts[k] = '\0';
    return n;
}

/* A range bound of an integer option as an integer (INT64_MAX written as a double is 2^63). */
static int64_t cli_i64(double v)
{
    return v >= 0x1p63 ? INT64_MAX : v <= -0x1p63 ? INT64_MIN : (int64_t)v;
}

/* Stores optarg (or true) at o->dst; false (after the usage error) when a number is wrong. */
static bool cli_store(const char *verb, const char *usage, const ms__cli_opt *o)
{
    double d;
    int64_t i;
    switch (o->kind) {
    case MS__CLI_FLAG:
        *(bool *)o->dst = true;
        return true;
    case MS__CLI_TEXT:
        *(const char **)o->dst = optarg;
        return true;
    case MS__CLI_INT:
        if (ms__cli_parse_i64(optarg, cli_i64(o->lo), cli_i64(o->hi), &i)) {
            *(int64_t *)o->dst = i;
            return true;
        }
        ms__cli_usage_error(verb, usage, "--%s: expected %s from %lld to %lld, got \"%s\"", o->name,
                            o->of ? o->of : "an integer", (long long)cli_i64(o->lo),
                            (long long)cli_i64(o->hi), optarg);
        return false;
    case MS__CLI_NUMBER:
        if (ms__cli_parse_double(optarg, o->lo, o->hi, &d)) {
            *(double *)o->dst = d;
            return true;
        }
        ms__cli_usage_error(verb, usage, "--%s: expected %s from %g to %g, got \"%s\"", o->name,
                            o->of ? o->of : "a number", o->lo, o->hi, optarg);
        return false;
    }
    return false;
}

/* The option getopt_long returned as c: -1 to go on, else the exit status. */
static int cli_option(char **argv, const ms__cli_opt *opts, size_t n, const char *usage, int c)
{
    if (c == 'h') {
        fputs(usage, stdout);
        return MS__EXIT_OK;
    }
    if (c == ':')
        return ms__cli_usage_error(argv[0], usage, "option '%s' needs a value", argv[optind - 1]);
    for (size_t i = 0; c != '?' && i < n; i++)
        if (c == (int)(i + 256) || (opts[i].letter && c == opts[i].letter))
            return cli_store(argv[0], usage, &opts[i]) ? -1 : MS__EXIT_USAGE;
    if (optopt >= 256 && (size_t)optopt < n + 256)
        return ms__cli_usage_error(argv[0], usage, "option '--%s' takes no value",
                                   opts[optopt - 256].name);
    if (optopt > 0 && optopt < 256 && optopt != '?')
        return ms__cli_usage_error(argv[0], usage, "unknown option '-%c'", optopt);
    return ms__cli_usage_error(argv[0], usage, "unknown option '%s'", argv[optind - 1]);
}

int ms__cli_parse(int argc, char **argv, const ms__cli_opt *opts, const char *usage,
                  const char *const *names, const char **pos)
{
    struct option lo[MS__CLI_OPTS_MAX + 2];
    char shortopts[3 * MS__CLI_OPTS_MAX + 4];
    size_t n = cli_getopt_table(opts, lo, shortopts);
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, shortopts, lo, NULL)) != -1) {
        int rc = cli_option(argv, opts, n, usage, c);
        if (rc >= 0)
            return rc;
    }
    size_t k = 0;
    for (; names && names[k]; k++) {
        if (optind >= argc)
            return ms__cli_usage_error(argv[0], usage, "missing %s", names[k]);
        pos[k] = argv[optind++];
    }
    if (optind < argc)
        return ms__cli_usage_error(argv[0], usage, "unexpected argument \"%s\"", argv[optind]);
    return -1;
}
