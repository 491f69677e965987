/*
 * A worker's stderr as the daemon keeps it: every complete line is written through to the
 * daemon's own log (as when workers shared its stderr), and the last MS__ERRTAIL_BYTES bytes are
 * kept, so that the message of a model that keeps crashing can quote what its worker said last.
 * Pure memory and one write(2) per line group: no allocation.
 */
#ifndef MS_DAEMON_ERRTAIL_H
#define MS_DAEMON_ERRTAIL_H

#include <stddef.h>

#define MS__ERRTAIL_BYTES 2048u

typedef struct ms__errtail {
    char buf[MS__ERRTAIL_BYTES]; /* the last len bytes the worker wrote */
    size_t len;
    size_t pending; /* bytes at the end of buf not yet written through (a line without its end) */
} ms__errtail;

/* Takes n bytes the worker wrote; complete lines go to out_fd (-1: nowhere). A line longer than
 * half the buffer is written through without waiting for its end. */
void ms__errtail_feed(ms__errtail *t, const char *data, size_t n, int out_fd);
/* Writes through what is pending (the worker is gone), ended with a newline. */
void ms__errtail_flush(ms__errtail *t, int out_fd);
/* The last whole lines of what was kept, at most max bytes of them (cut at a line start when
 * possible), into buf (always terminated; "" when the worker wrote nothing). */
void ms__errtail_last(const ms__errtail *t, size_t max, char *buf, size_t buflen);

#endif
