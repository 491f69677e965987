/*
 * `modelshare load`'s progress line on a terminal: while the load waits, a thread with a client
 * of its own (the load's client is busy with it) reads the status every 200 ms and rewrites one
 * line on stderr with the model's phase and bytes read ("loading m: reading weights 12.0 MiB of
 * 1.0 GiB (1%)"); the line is erased when the load ends. Nothing at all when stderr is not a
 * terminal: piped output stays exactly what it was.
 */
#include "cli.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_MS 200

struct ms__cli_progress {
    pthread_t thread;
    atomic_bool stop;
    char tag[MS__CLI_TAG_CELL];
    bool shown; /* a line is on the terminal */
};

/* The status object of tag in the status document text, or NULL. */
static json_t *find_model(json_t *st, const char *tag)
{
    json_t *models = json_object_get(st, "models");
    for (size_t i = 0; json_is_array(models) && i < json_array_size(models); i++) {
        json_t *m = json_array_get(models, i);
        if (strcmp(ms__cli_jstr(m, "tag", ""), tag) == 0)
            return m;
    }
    return NULL;
}

/* One look: the line rewritten when the model is there and still loading. */
static void show(ms__cli_progress *p, ms_client *c)
{
    char *text = NULL;
    if (ms_status_json(c, &text) != 0)
        return;
    json_t *st = json_loads(text, 0, NULL);
    free(text);
    json_t *m = st != NULL ? find_model(st, p->tag) : NULL;
    const char *state = ms__cli_jstr(m, "state", "");
    if (m != NULL && (strcmp(state, "loading") == 0 || strcmp(state, "waiting") == 0)) {
        char line[256];
        ms__cli_fmt_state(m, line, sizeof line);
        fprintf(stderr, "\r\033[K%s %s", p->tag, line);
        fflush(stderr);
        p->shown = true;
    }
    json_decref(st);
}

static void *run(void *arg)
{
    ms__cli_progress *p = arg;
    ms_client *c = NULL;
    if (ms_connect(NULL, &c) != 0)
        return NULL;
    struct timespec tick = {.tv_sec = 0, .tv_nsec = 10 * 1000000L};
    for (int n = 0; !atomic_load(&p->stop); n++) {
        if (n % (PERIOD_MS / 10) == 0)
            show(p, c);
        nanosleep(&tick, NULL);
    }
    ms_disconnect(c);
    return NULL;
}

ms__cli_progress *ms__cli_progress_start(const char *tag)
{
    if (!isatty(STDERR_FILENO))
        return NULL;
    ms__cli_progress *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    snprintf(p->tag, sizeof p->tag, "%s", tag);
    atomic_init(&p->stop, false);
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void ms__cli_progress_stop(ms__cli_progress *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    if (p->shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    free(p);
}
