/* Timestamped log lines on stderr for the daemon and the worker. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_prog[64] = "modelshare";
static int log_level = MS_LOG_INFO;

void ms__log_init(const char *progname, int level)
{
    if (progname != NULL && progname[0] != '\0')
        snprintf(log_prog, sizeof log_prog, "%s", progname);
    if (level >= MS_LOG_ERROR && level <= MS_LOG_DEBUG)
        log_level = level;
}

int ms__log_level_parse(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (name == NULL)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return MS_LOG_WARN;
    return -1;
}

void ms__log(int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > log_level)
        return;
    if (level < MS_LOG_ERROR)
        level = MS_LOG_ERROR;
    if (level > MS_LOG_DEBUG)
        level = MS_LOG_DEBUG;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);

    /* One write per line so that lines of several processes do not interleave. */
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_prog, (long)getpid(), names[level]);
    if (n < 0)
        return;
    size_t pos = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(line + pos, sizeof line - pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        pos += (size_t)n;
    if (pos > sizeof line - 2)
        pos = sizeof line - 2;
    while (pos > 0 && line[pos - 1] == '\n')
        pos--;
    line[pos++] = '\n';
    size_t off = 0;
    while (off < pos) {
        ssize_t w = write(STDERR_FILENO, line + off, pos - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void ms__log_limited(ms__log_limit *lim, int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    long long next = atomic_load(&lim->next_ns);
    /* One thread wins the second: the others count themselves as suppressed. */
    if (now < next || !atomic_compare_exchange_strong(&lim->next_ns, &next, now + 1000000000LL)) {
        atomic_fetch_add(&lim->held, 1);
        return;
    }
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    unsigned long long held = atomic_exchange(&lim->held, 0);
    if (held > 0)
        ms__log(level, "%s (%llu more like this suppressed in the last second or more)", msg, held);
    else
        ms__log(level, "%s", msg);
}
