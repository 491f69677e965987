/* `modelshare status [--json]`: what the daemon holds. Never starts a daemon just to say that
 * nothing is there. */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/paths.h"
#include "common/util.h"

const char ms__usage_status[] =
    "usage: modelshare status [--json]\n"
    "\n"
    "Shows the models the daemon holds: one line per model (tag, backend, state, device or,\n"
    "when its instances are on different devices, each instance's in order, memory, leases,\n"
    "worker pids, loads, restarts, requests, batches), a line per instance that crashed (its\n"
    "restarts and last crash), and a line per memory budget.\n"
    "Does not start a daemon when none runs.\n"
    "\n"
    "  --json      print the daemon's status as one JSON object\n"
    "  -h, --help  this help\n";

#define jstr ms__cli_jstr
#define jint ms__cli_jint

/* One table: every cell pre-formatted, columns as wide as their widest cell. */
#define NCOLS 11

static void print_row(char cells[][64], const int *width, FILE *f)
{
    for (int c = 0; c < NCOLS; c++) {
        bool last = c == NCOLS - 1;
        /* Numbers right-aligned, text left-aligned. */
        bool right = c == 4 || c == 5 || c >= 7;
        if (last && !right)
            fprintf(f, "%s", cells[c]);
        else if (last)
            fprintf(f, "%*s", width[c], cells[c]);
        else if (right)
            fprintf(f, "%*s  ", width[c], cells[c]);
        else
            fprintf(f, "%-*s  ", width[c], cells[c]);
    }
    fputc('\n', f);
}

/* The model's device, or, when its instances are on different devices, each instance's in
 * order: "cuda:1,cuda:0,cuda:1". */
static void device_cell(const json_t *m, char *buf, size_t buflen)
{
    const json_t *inst = json_object_get(m, "instances");
    const char *first = json_is_array(inst) && json_array_size(inst) > 0
                            ? jstr(json_array_get(inst, 0), "device", NULL)
                            : NULL;
    bool same = true;
    for (size_t i = 1; first != NULL && json_is_array(inst) && i < json_array_size(inst); i++) {
        const char *d = jstr(json_array_get(inst, i), "device", "");
        same &= strcmp(d, first) == 0;
    }
    snprintf(buf, buflen, "%s", jstr(m, "device", "?"));
    for (size_t i = 0, off = 0; !same && i < json_array_size(inst); i++) {
        int w = snprintf(buf + off, buflen - off, "%s%s", i ? "," : "",
                         jstr(json_array_get(inst, i), "device", "?"));
        if (w < 0 || (size_t)w >= buflen - off)
            break;
        off += (size_t)w;
    }
}

/* The cells of one model's row. */
static void model_row(const json_t *m, char row[][64])
{
    /* "tag@version" when the spec names a version; "ready, swapping" during a swap. */
    const char *version = jstr(m, "version", NULL);
    snprintf(row[0], 64, "%.40s%s%.20s", jstr(m, "tag", "?"), version ? "@" : "",
             version ? version : "");
    snprintf(row[1], 64, "%s", jstr(m, "backend", "?"));
    ms__cli_fmt_state(m, row[2], 64);
    if (json_is_true(json_object_get(m, "swapping")))
        snprintf(row[2] + strlen(row[2]), 64 - strlen(row[2]), ", swapping");
    device_cell(m, row[3], 64);
    ms__cli_fmt_bytes_bin((uint64_t)jint(m, "memory_bytes"), row[4], 64);
    snprintf(row[5], 64, "%lld", jint(m, "leases"));
    const json_t *pids = json_object_get(m, "worker_pids");
    size_t off = 0;
    row[6][0] = '\0';
    for (size_t k = 0; json_is_array(pids) && k < json_array_size(pids); k++) {
        int w = snprintf(row[6] + off, 64 - off, "%s%lld", k ? "," : "",
                         (long long)json_integer_value(json_array_get(pids, k)));
        if (w < 0 || (size_t)w >= 64 - off)
            break;
        off += (size_t)w;
    }
    if (!row[6][0])
        snprintf(row[6], 64, "-");
    snprintf(row[7], 64, "%lld", jint(m, "loads"));
    snprintf(row[8], 64, "%lld", jint(m, "restarts"));
    snprintf(row[9], 64, "%lld", jint(m, "requests"));
    snprintf(row[10], 64, "%lld", jint(m, "batches"));
}

/* "  TAG: instance I (pid P, state): N restart(s), last crash SIGKILL" for each instance that
 * crashed. */
static void print_crashes(const json_t *m)
{
    const json_t *inst = json_object_get(m, "instances");
    for (size_t i = 0; json_is_array(inst) && i < json_array_size(inst); i++) {
        const json_t *in = json_array_get(inst, i);
        const char *crash = jstr(in, "last_crash", NULL);
        if (crash == NULL)
            continue;
        char pid[32] = "no worker";
        if (json_is_integer(json_object_get(in, "pid")))
            snprintf(pid, sizeof pid, "pid %lld", jint(in, "pid"));
        printf("  %s: instance %zu (%s, %s): %lld restart(s), last crash %s\n", jstr(m, "tag", "?"),
               i, pid, jstr(in, "state", "?"), jint(in, "restarts"), crash);
    }
}

/* The table of models: a head row, one row per model, then why each failed model failed. */
static void print_models(const json_t *models, size_t nmodels)
{
    static const char *const heads[NCOLS] = {"TAG",      "BACKEND",  "STATE",   "DEVICE",
                                             "MEMORY",   "LEASES",   "WORKERS", "LOADS",
                                             "RESTARTS", "REQUESTS", "BATCHES"};
    char(*cells)[NCOLS][64] = calloc(nmodels + 1, sizeof *cells);
    int width[NCOLS] = {0};
    if (!cells) {
        fputs("(out of memory)\n", stdout);
        return;
    }
    for (int c = 0; c < NCOLS; c++)
        snprintf(cells[0][c], 64, "%s", heads[c]);
    for (size_t i = 0; i < nmodels; i++)
        model_row(json_array_get(models, i), cells[i + 1]);
    for (size_t r = 0; r <= nmodels; r++)
        for (int c = 0; c < NCOLS; c++) {
            int len = (int)strlen(cells[r][c]);
            if (len > width[c])
                width[c] = len;
        }
    for (size_t r = 0; r <= nmodels; r++)
        print_row(cells[r], width, stdout);
    free(cells);
    /* A model that failed says why. */
    for (size_t i = 0; i < nmodels; i++) {
        const json_t *m = json_array_get(models, i);
        const char *e = jstr(m, "error", NULL);
        if (e)
            printf("  %s: %s\n", jstr(m, "tag", "?"), e);
        print_crashes(m);
    }
}

/* One line per device budget. */
static void print_budgets(const json_t *budgets)
{
    if (!json_is_object(budgets) || json_object_size(budgets) == 0)
        return;
    const char *dev;
    json_t *b;
    printf("\n");
    json_object_foreach((json_t *)budgets, dev, b)
    {
        char used[32], budget[32], avail[32];
        ms__cli_fmt_bytes_bin((uint64_t)jint(b, "used_bytes"), used, sizeof used);
        ms__cli_fmt_bytes_bin((uint64_t)jint(b, "budget_bytes"), budget, sizeof budget);
        ms__cli_fmt_bytes_bin((uint64_t)jint(b, "free_bytes"), avail, sizeof avail);
        if (jint(b, "budget_bytes") > 0)
            printf("%s: %s used of %s, %s free\n", dev, used, budget, avail);
        else
            printf("%s: %s used, budget unknown (device memory not known)\n", dev, used);
    }
}

static void print_table(const json_t *status)
{
    const json_t *models = json_object_get(status, "models");
    size_t nmodels = json_is_array(models) ? json_array_size(models) : 0;
    printf("daemon pid %lld on %s, up %.0f s, %lld client%s\n", jint(status, "daemon_pid"),
           jstr(status, "socket", "?"), json_number_value(json_object_get(status, "uptime_s")),
           jint(status, "clients"), jint(status, "clients") == 1 ? "" : "s");
    if (nmodels == 0) {
        printf("no models loaded\n");
    } else {
        printf("\n");
        print_models(models, nmodels);
    }
    print_budgets(json_object_get(status, "budgets"));
}

int ms__cmd_status(int argc, char **argv)
{
    bool as_json = false;
    const ms__cli_opt opts[] = {MS__CLI_OPT_FLAG("json", 0, &as_json), MS__CLI_OPT_END};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_status, NULL, NULL);
    if (r >= 0)
        return r;

    json_t *status = NULL;
    int rc = ms__cli_fetch_status(&status);
    if (rc == MS_E_NO_DAEMON) {
        if (as_json) {
            printf("{\"daemon\":null,\"models\":[],\"budgets\":{}}\n");
        } else {
            char path[MS__SOCKET_PATH_MAX + 1], err[MS__ERRLEN];
            if (ms__socket_path_default(path, sizeof path, err, sizeof err) < 0)
                snprintf(path, sizeof path, "(no valid socket path)");
            printf("no daemon running on %s\n", path);
        }
        return MS__EXIT_OK;
    }
    if (rc < 0)
        return MS__EXIT_ERROR;
    if (as_json) {
        char *out = json_dumps(status, JSON_COMPACT);
        if (out == NULL) {
            json_decref(status);
            return ms__cli_error("out of memory");
        }
        puts(out);
        free(out);
    } else {
        print_table(status);
    }
    json_decref(status);
    return MS__EXIT_OK;
}
