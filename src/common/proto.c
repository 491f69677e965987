/* The control protocol: length-prefixed JSON frames over Unix stream sockets, descriptors passed
 * with SCM_RIGHTS. See proto.h for the messages. */
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dtype.h"
#include "fdlimit.h"
#include "modelshare.h"
#include "util.h"

/* Descriptors a single receive call accepts before the kernel truncates the control data. */
#define CMSG_FDS_MAX (MS__FDS_MAX * 2)
#define READER_CAP_MAX ((size_t)4 + MS__FRAME_MAX)
#define READER_CAP_MIN ((size_t)4096)

static uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Milliseconds left until deadline_ns (-1: no deadline). */
static int ms_left(int64_t deadline_ns)
{
    if (deadline_ns < 0)
        return -1;
    int64_t left = deadline_ns - ms__now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

static int64_t deadline_from(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : ms__now_ns() + (int64_t)timeout_ms * 1000000;
}

/* Checks the length word of a frame at buf (at least 4 bytes). */
static int frame_length(const uint8_t *buf, uint32_t *n, char *err, size_t errlen)
{
    uint32_t v = le32_get(buf);
    if (v == 0)
        return ms__fail(err, errlen, MS_E_TOO_LARGE,
                        "expected a frame length from 1 to %u bytes, got 0", MS__FRAME_MAX);
    if (v > MS__FRAME_MAX)
        return ms__fail(err, errlen, MS_E_TOO_LARGE,
                        "expected a frame length from 1 to %u bytes, got %u", MS__FRAME_MAX, v);
    *n = v;
    return 0;
}

static int frame_body(const uint8_t *body, uint32_t n, json_t **msg, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)body, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (j == NULL)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a JSON object in the frame, got invalid JSON (%s at byte %d)",
                        jerr.text, jerr.position);
    if (!json_is_object(j)) {
        int t = json_typeof(j);
        json_decref(j);
        static const char *const names[] = {"an object", "an array", "a string", "an integer",
                                            "a real",    "true",     "false",    "null"};
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected a JSON object in the frame, got %s",
                        t >= 0 && t < (int)MS__ARRAY_LEN(names) ? names[t] : "something else");
    }
    *msg = j;
    return 0;
}

int ms__frame_decode(const uint8_t *buf, size_t len, json_t **msg, size_t *consumed, char *err,
                     size_t errlen)
{
    if (buf == NULL && len > 0)
        return ms__fail(err, errlen, MS_E_INVAL, "expected a buffer, got NULL");
    if (len < 4) {
        *consumed = 0;
        return 0;
    }
    uint32_t n;
    int rc = frame_length(buf, &n, err, errlen);
    if (rc != 0)
        return rc;
    if (len - 4 < n) {
        *consumed = 0;
        return 0;
    }
    rc = frame_body(buf + 4, n, msg, err, errlen);
    if (rc != 0)
        return rc;
    *consumed = 4 + (size_t)n;
    return 0;
}

int ms__frame_encode(const json_t *msg, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    if (msg == NULL || !json_is_object(msg))
        return ms__fail(err, errlen, MS_E_INVAL, "expected a JSON object to send");
    size_t flags = JSON_COMPACT | JSON_ENSURE_ASCII;
    size_t n = json_dumpb(msg, NULL, 0, flags);
    if (n == 0)
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot serialise the message");
    if (n > MS__FRAME_MAX)
        return ms__fail(err, errlen, MS_E_TOO_LARGE,
                        "message of %zu bytes is over the frame limit of %u bytes", n,
                        MS__FRAME_MAX);
    uint8_t *buf = malloc(4 + n);
    if (buf == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a %zu-byte frame", n);
    if (json_dumpb(msg, (char *)buf + 4, n, flags) != n) {
        free(buf);
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot serialise the message");
    }
    le32_put(buf, (uint32_t)n);
    *out = buf;
    *outlen = 4 + n;
    return 0;
}

/* The "nfds" a message declares: 0 when absent; -1 when present but not 0..MS__FDS_MAX. */
static int declared_nfds(const json_t *msg)
{
    const json_t *v = json_object_get(msg, "nfds");
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return -1;
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > MS__FDS_MAX)
        return -1;
    return (int)n;
}

/* One sendmsg of len bytes from buf, with the descriptors attached when nfds > 0. Returns what
 * sendmsg returns (errno set). */
static ssize_t send_some(int fd, const uint8_t *buf, size_t len, const int *fds, int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * MS__FDS_MAX)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Waits until fd is writable or the deadline passes (off of len bytes sent so far, for the
 * message). Returns 0 to try again, or MS_E_IO. */
static int wait_writable(int fd, int64_t deadline, int timeout_ms, size_t off, size_t len,
                         char *err, size_t errlen)
{
    int left = ms_left(deadline);
    if (left == 0)
        return ms__fail(err, errlen, MS_E_IO,
                        "timed out after %d ms sending a message (%zu of %zu bytes sent)",
                        timeout_ms, off, len);
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, left) < 0 && errno != EINTR)
        return ms__fail(err, errlen, MS_E_IO, "poll failed while sending: %s", strerror(errno));
    return 0;
}

/* Sends all len bytes of buf, the descriptors with the first bytes. */
static int send_all(int fd, const uint8_t *buf, size_t len, const int *fds, int nfds,
                    int timeout_ms, char *err, size_t errlen)
{
    int64_t deadline = deadline_from(timeout_ms);
    size_t off = 0;
    while (off < len) {
        ssize_t w = send_some(fd, buf + off, len - off, fds, off == 0 ? nfds : 0);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_writable(fd, deadline, timeout_ms, off, len, err, errlen);
            if (rc != 0)
                return rc;
            continue;
        }
        return ms__fail(err, errlen, MS_E_IO, "cannot send a message: %s",
                        w == 0 ? "connection closed" : strerror(errno));
    }
    return 0;
}

/* The descriptors that go with msg: 0 to MS__FDS_MAX, as many as its "nfds" says. */
static int send_args_check(const json_t *msg, const int *fds, int nfds, char *err, size_t errlen)
{
    if (nfds < 0 || nfds > MS__FDS_MAX || (nfds > 0 && fds == NULL))
        return ms__fail(err, errlen, MS_E_INVAL, "expected 0 to %d descriptors, got %d",
                        MS__FDS_MAX, nfds);
    if (msg != NULL && declared_nfds(msg) != nfds)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "message carries %d descriptor(s) but its \"nfds\" field says %d", nfds,
                        declared_nfds(msg));
    return 0;
}

int ms__msg_send(int fd, const json_t *msg, const int *fds, int nfds, int timeout_ms, char *err,
                 size_t errlen)
{
    int rc = send_args_check(msg, fds, nfds, err, errlen);
    if (rc != 0)
        return rc;
    uint8_t *buf;
    size_t len;
    rc = ms__frame_encode(msg, &buf, &len, err, errlen);
    if (rc != 0)
        return rc;
    rc = send_all(fd, buf, len, fds, nfds, timeout_ms, err, errlen);
    free(buf);
    return rc;
}

/* ---- the queued writer ---------------------------------------------------------------------- */

struct ms__wframe {
    uint8_t *buf; /* owned: the whole frame */
    size_t len, off;
    int fds[MS__FDS_MAX]; /* owned copies, until the first byte goes */
    int nfds;
    ms__wframe *next;
};

static void wframe_free(ms__wframe *f)
{
    close_fds(f->fds, f->nfds);
    free(f->buf);
    free(f);
}

void ms__writer_init(ms__writer *w)
{
    memset(w, 0, sizeof *w);
}

void ms__writer_free(ms__writer *w)
{
    if (w == NULL)
        return;
    while (w->head != NULL) {
        ms__wframe *f = w->head;
        w->head = f->next;
        wframe_free(f);
    }
    ms__writer_init(w);
}

/* Copies of fds into f (f->nfds of them made). MS_E_LIMIT when one cannot be made. */
static int wframe_take_fds(ms__wframe *f, const int *fds, int nfds, char *err, size_t errlen)
{
    for (int i = 0; i < nfds; i++) {
        int c = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (c < 0)
            return ms__fail(err, errlen, MS_E_LIMIT,
                            "cannot copy descriptor %d of %d for a queued message: %s", i + 1, nfds,
                            strerror(errno));
        f->fds[f->nfds++] = c;
    }
    return 0;
}

int ms__writer_push(ms__writer *w, const json_t *msg, const int *fds, int nfds, char *err,
                    size_t errlen)
{
    int rc = send_args_check(msg, fds, nfds, err, errlen);
    if (rc != 0)
        return rc;
    ms__wframe *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a queued message");
    rc = ms__frame_encode(msg, &f->buf, &f->len, err, errlen);
    if (rc == 0)
        rc = wframe_take_fds(f, fds, nfds, err, errlen);
    if (rc != 0) {
        wframe_free(f);
        return rc;
    }
    if (w->tail != NULL)
        w->tail->next = f;
    else
        w->head = f;
    w->tail = f;
    w->bytes += f->len;
    w->nframes++;
    return 0;
}

int ms__writer_flush(ms__writer *w, int fd, char *err, size_t errlen)
{
    while (w->head != NULL) {
        ms__wframe *f = w->head;
        /* One frame per send: descriptors belong to their own frame's first byte. */
        ssize_t n = send_some(fd, f->buf + f->off, f->len - f->off, f->fds, f->nfds);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return ms__fail(err, errlen, MS_E_IO, "cannot send a message: %s",
                            n == 0 ? "connection closed" : strerror(errno));
        /* The descriptors went with the bytes just sent: the kernel holds them now. */
        close_fds(f->fds, f->nfds);
        f->nfds = 0;
        f->off += (size_t)n;
        w->bytes -= (size_t)n;
        if (f->off < f->len)
            continue;
        w->head = f->next;
        if (w->head == NULL)
            w->tail = NULL;
        w->nframes--;
        wframe_free(f);
    }
    return 0;
}

/* Moves the descriptors of the control messages of mh into q (up to qcap, *qn updated). Those
 * that do not fit are closed. Returns the number closed that way. */
static int take_fds(struct msghdr *mh, int *q, int *qn, int qcap)
{
    int dropped = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int f;
            memcpy(&f, data + i * sizeof(int), sizeof(int));
            if (*qn < qcap) {
                q[(*qn)++] = f;
            } else {
                close(f);
                dropped++;
            }
        }
    }
    return dropped;
}

/* One recvmsg into dst (at most want bytes), never waiting (MSG_DONTWAIT, on a blocking socket
 * too), queueing descriptors. Returns bytes read; 0 on EOF, or with *again set when nothing is
 * there yet (the read would block: the caller polls, or stops for now); or a negative MS_E_*
 * code. *lost is set when the kernel could not hand over every descriptor that came (this
 * process at its RLIMIT_NOFILE, MSG_CTRUNC): those that did come with this read are closed, and
 * the frame whose first byte this read began with is the one that lost them (descriptors travel
 * with a frame's first byte, and a read never goes past them). */
static ssize_t recv_some(int fd, uint8_t *dst, size_t want, int *q, int *qn, int qcap, int *again,
                         int *lost, char *err, size_t errlen)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CMSG_FDS_MAX)];
        struct cmsghdr align;
    } ctl;
    *again = 0;
    *lost = 0;
    for (;;) {
        struct iovec iov = {.iov_base = dst, .iov_len = want};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof ctl.buf};
        ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *again = 1;
                return 0;
            }
            return ms__fail(err, errlen, MS_E_IO, "cannot receive: %s", strerror(errno));
        }
        int before = *qn;
        int dropped = take_fds(&mh, q, qn, qcap);
        if (mh.msg_flags & MSG_CTRUNC) {
            /* Our own room is CMSG_FDS_MAX, twice what a message may carry: a truncation
             * is the descriptor limit. */
            close_fds(q + before, *qn - before);
            *qn = before;
            *lost = 1;
        }
        if (dropped > 0)
            return ms__fail(err, errlen, MS_E_LIMIT,
                            "expected at most %d queued descriptors, got %d more", qcap, dropped);
        return r;
    }
}

/* Reads exactly len bytes: poll() up to the deadline, then what recv_some finds, until len
 * (MS_E_TIMEOUT when the deadline passes first). */
static int recv_exact(int fd, uint8_t *dst, size_t len, int *q, int *qn, int qcap, int64_t deadline,
                      int timeout_ms, size_t already, int *lost, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < len) {
        int left = ms_left(deadline);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, left);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return ms__fail(err, errlen, MS_E_IO, "poll failed while receiving: %s",
                            strerror(errno));
        }
        if (pr == 0)
            return ms__fail(err, errlen, MS_E_TIMEOUT,
                            "timed out after %d ms waiting for a message", timeout_ms);
        int again, lost_now;
        ssize_t r =
            recv_some(fd, dst + off, len - off, q, qn, qcap, &again, &lost_now, err, errlen);
        if (r < 0)
            return (int)r;
        *lost |= lost_now;
        if (again)
            continue;
        if (r == 0) {
            if (off + already == 0)
                return ms__fail(err, errlen, MS_E_IO, "connection closed");
            return ms__fail(err, errlen, MS_E_IO,
                            "connection closed in the middle of a message (%zu bytes of it came)",
                            off + already);
        }
        off += (size_t)r;
    }
    return 0;
}

/* Reads one frame and decodes it: *j (owned by the caller on success); descriptors that come
 * with it are queued in q. */
static int recv_frame(int fd, int *q, int *qn, int timeout_ms, json_t **j, int *lost, char *err,
                      size_t errlen)
{
    int64_t deadline = deadline_from(timeout_ms);
    uint8_t hdr[4];
    int rc =
        recv_exact(fd, hdr, 4, q, qn, CMSG_FDS_MAX, deadline, timeout_ms, 0, lost, err, errlen);
    if (rc != 0)
        return rc;
    uint32_t n;
    rc = frame_length(hdr, &n, err, errlen);
    if (rc != 0)
        return rc;
    uint8_t *body = malloc(n);
    if (body == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a %u-byte message", n);
    rc = recv_exact(fd, body, n, q, qn, CMSG_FDS_MAX, deadline, timeout_ms, 4, lost, err, errlen);
    if (rc == 0)
        rc = frame_body(body, n, j, err, errlen);
    free(body);
    return rc;
}

/* The descriptors msg declares (*want): at most maxfds, and no more than the qn that came. */
static int declared_fds_check(const json_t *msg, int maxfds, int qn, int *want, char *err,
                              size_t errlen)
{
    int w = declared_nfds(msg);
    if (w < 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected \"nfds\" to be an integer from 0 to %d in the message",
                        MS__FDS_MAX);
    if (w > maxfds)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a message with at most %d descriptor(s), got one declaring %d",
                        maxfds, w);
    if (qn < w)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "message declares %d descriptor(s) but %d came with it", w, qn);
    *want = w;
    return 0;
}

/* The message's descriptors were lost (this process at its RLIMIT_NOFILE): MS_E_LIMIT. */
static int lost_fds(const json_t *msg, char *err, size_t errlen)
{
    char what[128];
    const char *op = json_string_value(json_object_get(msg, "op"));
    snprintf(what, sizeof what, "the %d descriptor(s) that came with %s%.40s%s were lost",
             declared_nfds(msg), op != NULL ? "a \"" : "the daemon's reply", op != NULL ? op : "",
             op != NULL ? "\" request" : "");
    return ms__fd_limit_fail(err, errlen, what, "this process", ms__fd_limit(0));
}

int ms__msg_recv(int fd, json_t **msg, int *fds, int *nfds, int maxfds, int timeout_ms, char *err,
                 size_t errlen)
{
    int q[CMSG_FDS_MAX];
    int qn = 0, want = 0, lost = 0;
    json_t *j = NULL;
    if (maxfds < 0 || (maxfds > 0 && fds == NULL))
        return ms__fail(err, errlen, MS_E_INVAL, "expected room for descriptors, got none");
    if (nfds != NULL)
        *nfds = 0;
    int rc = recv_frame(fd, q, &qn, timeout_ms, &j, &lost, err, errlen);
    if (rc == 0 && lost && declared_nfds(j) > 0) {
        /* The stream is whole: the caller gets the message and decides (a lease granted is
         * given back). */
        close_fds(q, qn);
        *msg = j;
        return lost_fds(j, err, errlen);
    }
    if (rc == 0)
        rc = declared_fds_check(j, maxfds, qn, &want, err, errlen);
    if (rc != 0) {
        json_decref(j);
        close_fds(q, qn);
        return rc;
    }
    for (int i = 0; i < want; i++)
        fds[i] = q[i];
    close_fds(q + want, qn - want);
    if (nfds != NULL)
        *nfds = want;
    *msg = j;
    return 0;
}

void ms__reader_init(ms__reader *r)
{
    memset(r, 0, sizeof *r);
}

void ms__reader_free(ms__reader *r)
{
    if (r == NULL)
        return;
    close_fds(r->fds, r->nfds);
    r->nfds = 0;
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

/* Checks the first frame's length word once 4 bytes are buffered. */
static int reader_check_head(const ms__reader *r, char *err, size_t errlen)
{
    uint32_t n;
    if (r->len < 4)
        return 0;
    return frame_length(r->buf, &n, err, errlen);
}

int ms__reader_fill(ms__reader *r, int fd, char *err, size_t errlen)
{
    for (;;) {
        int rc = reader_check_head(r, err, errlen);
        if (rc != 0)
            return rc;
        if (r->len == r->cap) {
            if (r->cap >= READER_CAP_MAX)
                return 0; /* a whole frame is buffered (its length was checked): drain first */
            size_t ncap = r->cap < READER_CAP_MIN ? READER_CAP_MIN : r->cap * 2;
            /* Grow only as far as the buffered frame needs, never past one whole frame. */
            if (ncap > READER_CAP_MAX)
                ncap = READER_CAP_MAX;
            uint8_t *nb = realloc(r->buf, ncap);
            if (nb == NULL)
                return ms__fail(err, errlen, MS_E_NOMEM, "out of memory for a %zu-byte buffer",
                                ncap);
            r->buf = nb;
            r->cap = ncap;
        }
        int again, lost;
        int qcap = (int)MS__ARRAY_LEN(r->fds);
        ssize_t n = recv_some(fd, r->buf + r->len, r->cap - r->len, r->fds, &r->nfds, qcap, &again,
                              &lost, err, errlen);
        if (n < 0)
            return (int)n;
        if (lost && n > 0) {
            if (r->nlost == (int)MS__ARRAY_LEN(r->lost_at))
                return ms__fd_limit_fail(err, errlen, "descriptors of several messages were lost",
                                         "this process", ms__fd_limit(0));
            r->lost_at[r->nlost++] = r->len;
        }
        if (again)
            return reader_check_head(r, err, errlen);
        if (n == 0) {
            r->eof = 1;
            return reader_check_head(r, err, errlen);
        }
        r->len += (size_t)n;
    }
}

/* The first `used` bytes of the buffer are gone: true when the frame there lost its descriptors
 * (it began where a truncated read began). */
static bool reader_forget(ms__reader *r, size_t used)
{
    bool lost = false;
    int k = 0;
    for (int i = 0; i < r->nlost; i++) {
        if (r->lost_at[i] < used)
            lost = true;
        else
            r->lost_at[k++] = r->lost_at[i] - used;
    }
    r->nlost = k;
    return lost;
}

/* The descriptors j declares, taken from r's queue into fds (*nfds), j given to the caller
 * (*msg); j freed on an error. lost: its descriptors never came (ms__reader_next). */
static int reader_take(ms__reader *r, json_t *j, bool lost, json_t **msg, int *fds, int *nfds,
                       char *err, size_t errlen)
{
    int want = declared_nfds(j);
    if (lost && want > 0) {
        *msg = j; /* its descriptors never came: the caller answers it (proto.h) */
        return lost_fds(j, err, errlen);
    }
    if (want < 0) {
        json_decref(j);
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected \"nfds\" to be an integer from 0 to %d in the message",
                        MS__FDS_MAX);
    }
    if (want > r->nfds) {
        json_decref(j);
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "message declares %d descriptor(s) but %d came with it", want, r->nfds);
    }
    if (want > 0 && fds == NULL) {
        json_decref(j);
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a message without descriptors, got one declaring %d", want);
    }
    for (int i = 0; i < want; i++)
        fds[i] = r->fds[i];
    memmove(r->fds, r->fds + want, sizeof(int) * (size_t)(r->nfds - want));
    r->nfds -= want;
    if (nfds != NULL)
        *nfds = want;
    *msg = j;
    return 0;
}

int ms__reader_next(ms__reader *r, json_t **msg, int *fds, int *nfds, char *err, size_t errlen)
{
    *msg = NULL;
    if (nfds != NULL)
        *nfds = 0;
    if (r->len < 4)
        return 0;
    uint32_t n;
    int rc = frame_length(r->buf, &n, err, errlen);
    if (rc != 0)
        return rc;
    if (r->len - 4 < n)
        return 0;
    json_t *j = NULL;
    rc = frame_body(r->buf + 4, n, &j, err, errlen);
    /* The frame is consumed whether or not it parsed: its length was valid. */
    size_t used = 4 + (size_t)n;
    memmove(r->buf, r->buf + used, r->len - used);
    r->len -= used;
    bool lost = reader_forget(r, used);
    if (r->cap > READER_CAP_MIN && r->len < READER_CAP_MIN) {
        /* Give back a large buffer once it is drained. */
        uint8_t *nb = realloc(r->buf, READER_CAP_MIN);
        if (nb != NULL) {
            r->buf = nb;
            r->cap = READER_CAP_MIN;
        }
    }
    if (rc != 0)
        return rc;
    return reader_take(r, j, lost, msg, fds, nfds, err, errlen);
}

/* json_string() that never fails on bytes that are not UTF-8: they become '?'. */
static json_t *string_lossy(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    size_t len = strlen(s);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i <= len; i++)
        copy[i] = (unsigned char)s[i] >= 0x80 ? '?' : s[i];
    j = json_string(copy);
    free(copy);
    return j;
}

json_t *ms__reply_ok(json_t *id)
{
    json_t *r = json_object();
    if (r == NULL)
        return NULL;
    json_object_set(r, "id", id != NULL ? id : json_null());
    json_object_set_new(r, "ok", json_true());
    return r;
}

json_t *ms__reply_err(json_t *id, int code, const char *message)
{
    json_t *r = json_object();
    if (r == NULL)
        return NULL;
    json_object_set(r, "id", id != NULL ? id : json_null());
    json_object_set_new(r, "ok", json_false());
    json_object_set_new(r, "code", json_integer(code));
    json_object_set_new(
        r, "error",
        string_lossy(message != NULL && message[0] != '\0' ? message : ms_strerror(code)));
    return r;
}

static json_t *sig_side(const ms__sig *s)
{
    json_t *o = json_object();
    json_t *shape = json_array();
    if (o == NULL || shape == NULL) {
        json_decref(o);
        json_decref(shape);
        return NULL;
    }
    int dtype = s != NULL ? s->dtype : 0;
    int rank = s != NULL ? s->rank : 0;
    if (rank < 0 || rank > MS_MAX_RANK)
        rank = 0;
    if (ms_dtype_size(dtype) != 0)
        json_object_set_new(o, "dtype", json_string(ms_dtype_name(dtype)));
    else
        json_object_set_new(o, "dtype", json_null());
    for (int i = 0; i < rank; i++)
        json_array_append_new(shape, json_integer(s->shape[i]));
    json_object_set_new(o, "shape", shape);
    return o;
}

json_t *ms__sig_to_json(const ms__sig *in, const ms__sig *out)
{
    json_t *j = json_object();
    if (j == NULL)
        return NULL;
    json_object_set_new(j, "input", sig_side(in));
    json_object_set_new(j, "output", sig_side(out));
    return j;
}

int ms__sig_side_from(const json_t *o, const char *which, ms__sig *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (o == NULL || json_is_null(o))
        return 0;
    if (!json_is_object(o))
        return ms__fail(err, errlen, MS_E_PROTOCOL, "signature %s: expected an object", which);
    const json_t *d = json_object_get(o, "dtype");
    if (d != NULL && !json_is_null(d)) {
        if (!json_is_string(d))
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "signature %s: expected \"dtype\" to be a dtype name", which);
        s->dtype = ms__dtype_from_name(json_string_value(d));
        if (s->dtype == 0)
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "signature %s: expected a dtype name like \"float32\", got \"%.40s\"",
                            which, json_string_value(d));
    }
    const json_t *sh = json_object_get(o, "shape");
    if (sh == NULL || json_is_null(sh))
        return 0;
    if (!json_is_array(sh) || json_array_size(sh) > MS_MAX_RANK)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "signature %s: expected \"shape\" to be an array of at most %d dimensions",
                        which, MS_MAX_RANK);
    size_t i;
    const json_t *v;
    json_array_foreach(sh, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < -1)
            return ms__fail(err, errlen, MS_E_PROTOCOL,
                            "signature %s: expected each dimension to be an integer >= -1 "
                            "(-1: varies), dimension %zu is not",
                            which, i);
        s->shape[i] = json_integer_value(v);
    }
    s->rank = (int)json_array_size(sh);
    return 0;
}

int ms__sig_from_json(const json_t *j, ms__sig *in, ms__sig *out, char *err, size_t errlen)
{
    ms__sig a, b;
    if (j != NULL && !json_is_null(j) && !json_is_object(j))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected the signature to be an object with \"input\" and \"output\"");
    int rc =
        ms__sig_side_from(j != NULL ? json_object_get(j, "input") : NULL, "input", &a, err, errlen);
    if (rc != 0)
        return rc;
    rc = ms__sig_side_from(j != NULL ? json_object_get(j, "output") : NULL, "output", &b, err,
                           errlen);
    if (rc != 0)
        return rc;
    if (in != NULL)
        *in = a;
    if (out != NULL)
        *out = b;
    return 0;
}

const char *ms__json_kind(const json_t *j)
{
    if (j == NULL)
        return "nothing";
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}
