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

#define ms__log_error(...) ms__log(MS_LOG_ERROR, __VA_ARGS__)
#define ms__log_warn(...) ms__log(MS_LOG_WARN, __VA_ARGS__)
#define ms__log_info(...) ms__log(MS_LOG_INFO, __VA_ARGS__)
#define ms__log_debug(...) ms__log(MS_LOG_DEBUG, __VA_ARGS__)

#endif
