/* Logging for the daemon and the worker (the client library never logs). Lines go to stderr as
 * "2026-11-23T09:00:00.123Z modelshared[123] info: message". */
#ifndef MS_LOG_H
#define MS_LOG_H

enum { MS_LOG_ERROR = 0, MS_LOG_WARN = 1, MS_LOG_INFO = 2, MS_LOG_DEBUG = 3 };

/* Program name shown in each line, and the most verbose level printed (default MS_LOG_INFO). */
void ms__log_init(const char *progname, int level);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int ms__log_level_parse(const char *name);
void ms__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A message that can repeat (one a client, a request, a connection attempt) is rate-limited: at
 * most one line a second per kind (one ms__log_limit per call site, zero-initialised, static),
 * and the next line printed says how many of that kind were suppressed since the last one.
 * Thread-safe (the worker's runner threads log at once). */
typedef struct ms__log_limit {
    _Atomic long long next_ns;       /* the earliest time the next line may be printed */
    _Atomic unsigned long long held; /* lines suppressed since the last one printed */
} ms__log_limit;

void ms__log_limited(ms__log_limit *lim, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ms__log_warn() for a message that can repeat: a limit of its own at each call site. */
#define ms__log_warn_limited(...)                                                                  \
    do {                                                                                           \
        static ms__log_limit ms__lim_;                                                             \
        ms__log_limited(&ms__lim_, MS_LOG_WARN, __VA_ARGS__);                                      \
    } while (0)
#define ms__log_info_limited(...)                                                                  \
    do {                                                                                           \
        static ms__log_limit ms__lim_;                                                             \
        ms__log_limited(&ms__lim_, MS_LOG_INFO, __VA_ARGS__);                                      \
    } while (0)
#define ms__log_error_limited(...)                                                                 \
    do {                                                                                           \
        static ms__log_limit ms__lim_;                                                             \
        ms__log_limited(&ms__lim_, MS_LOG_ERROR, __VA_ARGS__);                                     \
    } while (0)

#define ms__log_error(...) ms__log(MS_LOG_ERROR, __VA_ARGS__)
#define ms__log_warn(...) ms__log(MS_LOG_WARN, __VA_ARGS__)
#define ms__log_info(...) ms__log(MS_LOG_INFO, __VA_ARGS__)
#define ms__log_debug(...) ms__log(MS_LOG_DEBUG, __VA_ARGS__)

#endif
