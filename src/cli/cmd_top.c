/* `modelshare top`: the daemon's models with their rates, refreshed: requests/s, rows/s, rows per
 * backend run (how well batching works), and how busy the workers are. Never starts a daemon. */
#include "cli.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

const char ms__usage_top[] =
    "usage: modelshare top [--interval S] [--count N]\n"
    "\n"
    "Shows every model with what it does now, from two looks at the daemon's status S seconds\n"
    "apart: requests/s, rows/s, rows per backend run (BATCH: how much batching joins), the share\n"
    "of time its workers spend in the backend (BUSY), leases and memory. On a terminal the\n"
    "screen is redrawn until Ctrl-C; otherwise one table is printed per interval.\n"
    "\n"
    "  --interval S  seconds between looks (default 1, from 0.1 to 3600)\n"
    "  --count N     stop after N tables (default: until Ctrl-C on a terminal, 1 otherwise)\n"
    "  -h, --help    this help\n";

#define TOP_COLS 9
#define CELL (MS__TAG_MAX + 32) /* a cell holds a whole tag */

/* What one model had at the previous look. */
typedef struct sample {
    char tag[MS__TAG_MAX + 1];
    long long loads, requests, rows, batches;
    double busy_s;
} sample;

typedef struct samples {
    sample *v;
    size_t n;
} samples;

static const sample *find(const samples *s, const char *tag)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].tag, tag) == 0)
            return &s->v[i];
    return NULL;
}

static double jreal(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static void take(const json_t *status, samples *out)
{
    const json_t *models = json_object_get(status, "models");
    size_t n = json_array_size(models);
    out->v = calloc(n ? n : 1, sizeof *out->v);
    out->n = 0;
    for (size_t i = 0; out->v && i < n; i++) {
        const json_t *m = json_array_get(models, i);
        sample *s = &out->v[out->n++];
        snprintf(s->tag, sizeof s->tag, "%s", ms__cli_jstr(m, "tag", "?"));
        s->loads = ms__cli_jint(m, "loads");
        s->requests = ms__cli_jint(m, "requests");
        s->rows = ms__cli_jint(m, "rows");
        s->batches = ms__cli_jint(m, "batches");
        s->busy_s = jreal(m, "busy_s");
    }
}

static void print_cells(char cells[][CELL], const int *width)
{
    for (int c = 0; c < TOP_COLS; c++) {
        bool right = c >= 3;
        if (right)
            printf("%*s%s", width[c], cells[c], c + 1 < TOP_COLS ? "  " : "");
        else
            printf("%-*s  ", width[c], cells[c]);
    }
    putchar('\n');
}

/* One table: the rates between prev and now over dt seconds. */
static void print_frame(const json_t *status, const samples *prev, const samples *now, double dt)
{
    static const char *head[TOP_COLS] = {"TAG",    "STATE", "WORKERS", "LEASES", "REQ/S",
                                         "ROWS/S", "BATCH", "BUSY",    "MEMORY"};
    const json_t *models = json_object_get(status, "models");
    size_t n = json_array_size(models);
    char(*cells)[TOP_COLS][CELL] = calloc(n + 1, sizeof *cells);
    if (cells == NULL)
        return;
    int width[TOP_COLS] = {0};
    for (int c = 0; c < TOP_COLS; c++)
        snprintf(cells[0][c], CELL, "%s", head[c]);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(models, i);
        char(*row)[CELL] = cells[i + 1];
        const sample *a = find(prev, ms__cli_jstr(m, "tag", "?"));
        const sample *b = &now->v[i];
        int workers = (int)json_array_size(json_object_get(m, "worker_pids"));
        snprintf(row[0], CELL, "%s", b->tag);
        ms__cli_fmt_state(m, row[1], CELL);
        snprintf(row[2], CELL, "%d", workers);
        snprintf(row[3], CELL, "%lld", ms__cli_jint(m, "leases"));
        /* Counters start again when a model is loaded again: no rate across that. */
        if (a != NULL && a->loads == b->loads && dt > 0) {
            long long dreq = b->requests - a->requests, drows = b->rows - a->rows;
            long long dbat = b->batches - a->batches;
            snprintf(row[4], CELL, "%.0f", (double)dreq / dt);
            snprintf(row[5], CELL, "%.0f", (double)drows / dt);
            if (dbat > 0)
                snprintf(row[6], CELL, "%.1f", (double)drows / (double)dbat);
            else
                snprintf(row[6], CELL, "-");
            double busy = workers > 0 ? (b->busy_s - a->busy_s) / dt / workers : 0.0;
            snprintf(row[7], CELL, "%.0f%%", fmin(fmax(busy, 0.0), 1.0) * 100.0);
        } else {
            for (int c = 4; c < 8; c++)
                snprintf(row[c], CELL, "-");
        }
        ms__cli_fmt_bytes_bin((uint64_t)ms__cli_jint(m, "memory_bytes"), row[8], CELL);
    }
    for (size_t r = 0; r <= n; r++)
        for (int c = 0; c < TOP_COLS; c++) {
            int w = (int)strlen(cells[r][c]);
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = 0; r <= n; r++)
        print_cells(cells[r], width);
    if (n == 0)
        printf("(no models)\n");
    free(cells);
}

static volatile sig_atomic_t stop;

static void on_sigint(int signo)
{
    (void)signo;
    stop = 1;
}

/* Reads the command line into *interval and *count. Returns -1 to go on, else the exit status. */
static int top_args(int argc, char **argv, double *interval, int64_t *count)
{
    const ms__cli_opt opts[] = {MS__CLI_OPT_NUMBER("interval", interval, 0.1, 3600, "seconds"),
                                MS__CLI_OPT_INT("count", count, 1, 1000000), MS__CLI_OPT_END};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_top, NULL, NULL);
    if (r >= 0)
        return r;
    return -1;
}

/* Sleeps interval seconds, or until Ctrl-C. */
static void top_sleep(double interval)
{
    struct timespec ts = {.tv_sec = (time_t)interval,
                          .tv_nsec = (long)((interval - floor(interval)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && !stop)
        ;
}

/* Prints count tables, interval seconds apart, from the first look prev (freed here). Returns
 * the exit status. */
static int top_loop(double interval, int64_t count, bool tty, samples prev)
{
    int64_t t_prev = ms__now_ns();
    int ret = MS__EXIT_OK;
    for (int64_t frame = 0; frame < count && !stop; frame++) {
        top_sleep(interval);
        if (stop)
            break;
        json_t *status = NULL;
        int rc = ms__cli_fetch_status(&status);
        if (rc < 0) {
            if (rc == MS_E_NO_DAEMON)
                printf("the daemon is gone\n");
            ret = rc == MS_E_NO_DAEMON ? MS__EXIT_OK : MS__EXIT_ERROR;
            break;
        }
        int64_t t_now = ms__now_ns();
        samples now;
        take(status, &now);
        if (tty)
            fputs("\033[H\033[J", stdout);
        printf("modelshare top: daemon pid %lld, the last %.1f s%s\n\n",
               ms__cli_jint(status, "daemon_pid"), (double)(t_now - t_prev) / 1e9,
               tty ? " (Ctrl-C to stop)" : "");
        print_frame(status, &prev, &now, (double)(t_now - t_prev) / 1e9);
        if (!tty && frame + 1 < count)
            putchar('\n');
        fflush(stdout);
        json_decref(status);
        free(prev.v);
        prev = now;
        t_prev = t_now;
    }
    free(prev.v);
    return ret;
}

int ms__cmd_top(int argc, char **argv)
{
    double interval = 1.0;
    int64_t count = -1;
    int ret = top_args(argc, argv, &interval, &count);
    if (ret >= 0)
        return ret;
    bool tty = isatty(STDOUT_FILENO);
    if (count < 0)
        count = tty ? 1000000 : 1;
    signal(SIGINT, on_sigint);

    json_t *status = NULL;
    int rc = ms__cli_fetch_status(&status);
    if (rc == MS_E_NO_DAEMON) {
        printf("no daemon running\n");
        return MS__EXIT_OK;
    }
    if (rc < 0)
        return MS__EXIT_ERROR;
    samples prev;
    take(status, &prev);
    json_decref(status);
    return top_loop(interval, count, tty, prev);
}
