/* A worker's stderr: written through line by line, its last bytes kept. See errtail.h. */
#include "errtail.h"

#include <string.h>
#include <unistd.h>

static void write_all(int fd, const char *p, size_t n)
{
    while (fd >= 0 && n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Appends at most MS__ERRTAIL_BYTES / 2 bytes, dropping the oldest to make room. */
static void append(ms__errtail *t, const char *data, size_t n)
{
    if (t->len + n > MS__ERRTAIL_BYTES) {
        size_t drop = t->len + n - MS__ERRTAIL_BYTES;
        memmove(t->buf, t->buf + drop, t->len - drop);
        t->len -= drop;
        if (t->pending > t->len)
            t->pending = t->len;
    }
    memcpy(t->buf + t->len, data, n);
    t->len += n;
    t->pending += n;
}

void ms__errtail_feed(ms__errtail *t, const char *data, size_t n, int out_fd)
{
    const size_t piece = MS__ERRTAIL_BYTES / 2;
    while (n > 0) {
        size_t k = n < piece ? n : piece;
        /* What is pending must be written before append can drop it. */
        if (t->pending + k > piece) {
            write_all(out_fd, t->buf + t->len - t->pending, t->pending);
            t->pending = 0;
        }
        append(t, data, k);
        data += k;
        n -= k;
        const char *start = t->buf + t->len - t->pending;
        const char *nl = memrchr(start, '\n', t->pending);
        if (nl != NULL) {
            size_t w = (size_t)(nl - start) + 1;
            write_all(out_fd, start, w);
            t->pending -= w;
        }
    }
}

void ms__errtail_flush(ms__errtail *t, int out_fd)
{
    if (t->pending == 0)
        return;
    write_all(out_fd, t->buf + t->len - t->pending, t->pending);
    write_all(out_fd, "\n", 1);
    t->pending = 0;
}

void ms__errtail_last(const ms__errtail *t, size_t max, char *buf, size_t buflen)
{
    if (buflen == 0)
        return;
    size_t end = t->len;
    while (end > 0 && (t->buf[end - 1] == '\n' || t->buf[end - 1] == '\r'))
        end--;
    if (max > buflen - 1)
        max = buflen - 1;
    size_t start = end > max ? end - max : 0;
    if (start > 0) {
        /* Cut at the next line start, unless the last line alone is longer than max. */
        const char *nl = memchr(t->buf + start, '\n', end - start);
        if (nl != NULL)
            start = (size_t)(nl - t->buf) + 1;
    }
    memcpy(buf, t->buf + start, end - start);
    buf[end - start] = '\0';
}
