/* The control protocol: frame decoding, send/receive over real socketpairs with descriptors,
 * the non-blocking reader fed byte by byte, reply helpers and signatures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/proto.h"
#include "../../src/common/util.h"

/* A frame: length word then body. */
static uint8_t *frame(const char *body, size_t *len)
{
    size_t n = strlen(body);
    uint8_t *b = malloc(4 + n);
    assert_non_null(b);
    b[0] = (uint8_t)n;
    b[1] = (uint8_t)(n >> 8);
    b[2] = (uint8_t)(n >> 16);
    b[3] = (uint8_t)(n >> 24);
    memcpy(b + 4, body, n);
    *len = 4 + n;
    return b;
}

static void test_decode_whole_and_partial(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    size_t len, used = 99;
    uint8_t *b = frame("{\"op\":\"hello\",\"id\":1}", &len);
    json_t *m = NULL;
    /* Every strict prefix asks for more. */
    for (size_t i = 0; i < len; i++) {
        used = 99;
        assert_int_equal(ms__frame_decode(b, i, &m, &used, err, sizeof err), 0);
        assert_int_equal(used, 0);
        assert_null(m);
    }
    assert_int_equal(ms__frame_decode(b, len, &m, &used, err, sizeof err), 0);
    assert_int_equal(used, len);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "op")), "hello");
    json_decref(m);
    free(b);
}

static void test_decode_two_frames(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    size_t l1, l2, used;
    uint8_t *a = frame("{\"id\":1}", &l1);
    uint8_t *b = frame("{\"id\":2,\"x\":[1,2,3]}", &l2);
    uint8_t *both = malloc(l1 + l2);
    memcpy(both, a, l1);
    memcpy(both + l1, b, l2);
    json_t *m;
    assert_int_equal(ms__frame_decode(both, l1 + l2, &m, &used, err, sizeof err), 0);
    assert_int_equal(used, l1);
    assert_int_equal(json_integer_value(json_object_get(m, "id")), 1);
    json_decref(m);
    assert_int_equal(ms__frame_decode(both + used, l1 + l2 - used, &m, &used, err, sizeof err), 0);
    assert_int_equal(used, l2);
    assert_int_equal(json_integer_value(json_object_get(m, "id")), 2);
    json_decref(m);
    free(a);
    free(b);
    free(both);
}

static void expect_decode_error(const uint8_t *buf, size_t len, int code, const char *needle)
{
    char err[MS__ERRLEN] = "";
    json_t *m = NULL;
    size_t used = 12345;
    assert_int_equal(ms__frame_decode(buf, len, &m, &used, err, sizeof err), code);
    assert_null(m);
    if (strstr(err, needle) == NULL)
        fail_msg("expected \"%s\" in the message, got \"%s\"", needle, err);
}

static void test_decode_errors(void **state)
{
    (void)state;
    /* Zero length. */
    uint8_t zero[8] = {0, 0, 0, 0, '{', '}'};
    expect_decode_error(zero, 4, MS_E_TOO_LARGE, "got 0");
    /* Too large: reported as soon as the length word is there, body or not. */
    uint32_t big = MS__FRAME_MAX + 1;
    uint8_t tl[4] = {(uint8_t)big, (uint8_t)(big >> 8), (uint8_t)(big >> 16), (uint8_t)(big >> 24)};
    expect_decode_error(tl, 4, MS_E_TOO_LARGE, "1048577");
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    expect_decode_error(huge, 4, MS_E_TOO_LARGE, "expected a frame length");

    size_t len;
    uint8_t *b = frame("{not json", &len);
    expect_decode_error(b, len, MS_E_PROTOCOL, "invalid JSON");
    free(b);
    b = frame("[1,2]", &len);
    expect_decode_error(b, len, MS_E_PROTOCOL, "got an array");
    free(b);
    b = frame("\"str\"", &len);
    expect_decode_error(b, len, MS_E_PROTOCOL, "got a string");
    free(b);
    b = frame("{\"a\":1} {}", &len);
    expect_decode_error(b, len, MS_E_PROTOCOL, "invalid JSON");
    free(b);
    b = frame("{\"a\":1,\"a\":2}", &len);
    expect_decode_error(b, len, MS_E_PROTOCOL, "invalid JSON");
    free(b);
    b = frame("{\"a\":\"\xff\"}", &len);
    expect_decode_error(b, len, MS_E_PROTOCOL, "invalid JSON");
    free(b);
}

static void test_encode(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    json_t *m = json_pack("{s:s,s:i}", "op", "status", "id", 6);
    uint8_t *out;
    size_t len, used;
    assert_int_equal(ms__frame_encode(m, &out, &len, err, sizeof err), 0);
    json_t *back;
    assert_int_equal(ms__frame_decode(out, len, &back, &used, err, sizeof err), 0);
    assert_int_equal(used, len);
    assert_true(json_equal(m, back));
    json_decref(back);
    free(out);
    json_decref(m);

    /* Over the frame limit. */
    char *s = malloc(MS__FRAME_MAX + 1);
    memset(s, 'a', MS__FRAME_MAX);
    s[MS__FRAME_MAX] = '\0';
    m = json_pack("{s:s}", "x", s);
    free(s);
    assert_int_equal(ms__frame_encode(m, &out, &len, err, sizeof err), MS_E_TOO_LARGE);
    json_decref(m);
    m = json_array();
    assert_int_equal(ms__frame_encode(m, &out, &len, err, sizeof err), MS_E_INVAL);
    json_decref(m);
}

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void test_send_recv(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2];
    pair(sv);
    json_t *m = json_pack("{s:s,s:i}", "op", "hello", "id", 1);
    assert_int_equal(ms__msg_send(sv[0], m, NULL, 0, -1, err, sizeof err), 0);
    assert_int_equal(ms__msg_send(sv[0], m, NULL, 0, 1000, err, sizeof err), 0);
    json_t *r;
    int fds[MS__FDS_MAX], nfds = -1;
    assert_int_equal(ms__msg_recv(sv[1], &r, fds, &nfds, MS__FDS_MAX, -1, err, sizeof err), 0);
    assert_true(json_equal(m, r));
    assert_int_equal(nfds, 0);
    json_decref(r);
    assert_int_equal(ms__msg_recv(sv[1], &r, NULL, NULL, 0, 1000, err, sizeof err), 0);
    json_decref(r);
    /* Nothing more: times out. */
    assert_int_equal(ms__msg_recv(sv[1], &r, NULL, NULL, 0, 20, err, sizeof err), MS_E_TIMEOUT);
    /* Peer closes: "connection closed". */
    close(sv[0]);
    assert_int_equal(ms__msg_recv(sv[1], &r, NULL, NULL, 0, 1000, err, sizeof err), MS_E_IO);
    assert_string_equal(err, "connection closed");
    /* Sending to a closed peer is an error, not SIGPIPE. */
    assert_int_equal(ms__msg_send(sv[1], m, NULL, 0, 1000, err, sizeof err), MS_E_IO);
    close(sv[1]);
    json_decref(m);
}

static void test_send_recv_fds(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2];
    pair(sv);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    json_t *m = json_pack("{s:s,s:i,s:i}", "op", "acquire", "id", 2, "nfds", 2);
    int send[2] = {p[0], p[1]};
    assert_int_equal(ms__msg_send(sv[0], m, send, 2, -1, err, sizeof err), 0);
    /* nfds in the message and the count passed must agree. */
    assert_int_equal(ms__msg_send(sv[0], m, send, 1, -1, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "nfds"));
    json_t *r;
    int fds[MS__FDS_MAX], nfds = 0;
    assert_int_equal(ms__msg_recv(sv[1], &r, fds, &nfds, MS__FDS_MAX, 1000, err, sizeof err), 0);
    assert_int_equal(nfds, 2);
    json_decref(r);
    assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);
    /* The received descriptors are the pipe: write on one, read on the other. */
    assert_int_equal(write(fds[1], "x", 1), 1);
    char c = 0;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'x');
    close(fds[0]);
    close(fds[1]);

    /* A message declaring more descriptors than the receiver has room for: refused, and the
     * descriptors that came are closed. */
    assert_int_equal(ms__msg_send(sv[0], m, send, 2, -1, err, sizeof err), 0);
    assert_int_equal(ms__msg_recv(sv[1], &r, fds, &nfds, 1, 1000, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "at most 1"));
    json_decref(m);

    /* Declares one, sends none: protocol error (sent by hand). */
    size_t len;
    uint8_t *b = frame("{\"id\":3,\"nfds\":1}", &len);
    assert_int_equal(write(sv[0], b, len), (ssize_t)len);
    free(b);
    assert_int_equal(ms__msg_recv(sv[1], &r, fds, &nfds, MS__FDS_MAX, 1000, err, sizeof err),
                     MS_E_PROTOCOL);
    assert_non_null(strstr(err, "declares 1"));

    /* Declares none, sends one: the extra descriptor is closed, the message is fine. */
    m = json_pack("{s:i}", "id", 4);
    {
        b = frame("{\"id\":4}", &len);
        struct iovec iov = {.iov_base = b, .iov_len = len};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr a;
        } ctl;
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof ctl.buf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
        assert_int_equal(sendmsg(sv[0], &mh, 0), (ssize_t)len);
        free(b);
    }
    close(p[1]);
    assert_int_equal(ms__msg_recv(sv[1], &r, fds, &nfds, MS__FDS_MAX, 1000, err, sizeof err), 0);
    assert_int_equal(nfds, 0);
    json_decref(r);
    json_decref(m);
    /* Every write end is closed now (ours and the extra received one): the pipe reads EOF. */
    assert_int_equal(read(p[0], &c, 1), 0);
    close(p[0]);

    /* Frame too large on the wire. */
    uint8_t tl[4] = {0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(write(sv[0], tl, 4), 4);
    assert_int_equal(ms__msg_recv(sv[1], &r, NULL, NULL, 0, 1000, err, sizeof err), MS_E_TOO_LARGE);
    close(sv[0]);
    close(sv[1]);
}

/* A large message through a small socket buffer, with a non-blocking sender that must wait and
 * a receiver in another process. */
static void test_send_large(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2];
    pair(sv);
    int sz = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    size_t n = MS__FRAME_MAX - 100;
    char *s = malloc(n + 1);
    memset(s, 'q', n);
    s[n] = '\0';
    json_t *m = json_pack("{s:s}", "x", s);
    free(s);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        json_t *r;
        int rc = ms__msg_recv(sv[1], &r, NULL, NULL, 0, 10000, err, sizeof err);
        _exit(rc == 0 && json_equal(r, m) ? 0 : 1);
    }
    close(sv[1]);
    assert_int_equal(ms__msg_send(sv[0], m, NULL, 0, 10000, err, sizeof err), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(sv[0]);
    json_decref(m);
}

/* A message of about n bytes with its "nfds". */
static json_t *sized_msg(int id, size_t n, int nfds)
{
    char *s = malloc(n + 1);
    memset(s, 'a' + id, n);
    s[n] = '\0';
    json_t *m = json_pack("{s:i,s:s,s:i}", "id", id, "pad", s, "nfds", nfds);
    free(s);
    return m;
}

static ino_t inode_of(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_ino;
}

/* The receiving child of test_writer_partial_fds: the three messages in order, each with exactly
 * its own descriptors (the same pipes), nothing left over. Returns the exit status. */
static int writer_receiver(int fd, const ino_t *want_ino)
{
    char err[MS__ERRLEN];
    static const int want_nfds[3] = {0, 2, 1};
    ms__reader r;
    ms__reader_init(&r);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int got = 0, fi = 0;
    while (got < 3) {
        json_t *m = NULL;
        int fds[MS__FDS_MAX], nfds = 0;
        if (ms__reader_next(&r, &m, fds, &nfds, err, sizeof err) != 0)
            return 10;
        if (m == NULL) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 10000);
            if (ms__reader_fill(&r, fd, err, sizeof err) != 0 || r.eof)
                return 11;
            continue;
        }
        if (json_integer_value(json_object_get(m, "id")) != got || nfds != want_nfds[got])
            return 12;
        for (int i = 0; i < nfds; i++, fi++)
            if (inode_of(fds[i]) != want_ino[fi])
                return 13;
        if (got == 1 && write(fds[1], "y", 1) != 1) /* the pipe's write end, through the copy */
            return 14;
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        json_decref(m);
        got++;
    }
    int left = r.nfds; /* a descriptor sent twice would wait here */
    ms__reader_free(&r);
    return left == 0 ? 0 : 15;
}

/* The queued writer through a small socket buffer: frames go in pieces, each frame's descriptors
 * with its first byte and only then, from copies the writer owns (the originals are closed
 * before anything is written). */
static void test_writer_partial_fds(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2], p[2], q[2];
    pair(sv);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(pipe2(q, O_CLOEXEC), 0);
    int sz = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    ino_t want_ino[3] = {inode_of(p[0]), inode_of(p[1]), inode_of(q[1])};
    ms__writer w;
    ms__writer_init(&w);
    json_t *m[3] = {sized_msg(0, 200000, 0), sized_msg(1, 300000, 2), sized_msg(2, 100, 1)};
    int fb[2] = {p[0], p[1]};
    assert_int_equal(ms__writer_push(&w, m[0], NULL, 0, err, sizeof err), 0);
    assert_int_equal(ms__writer_push(&w, m[1], fb, 2, err, sizeof err), 0);
    assert_int_equal(ms__writer_push(&w, m[2], &q[1], 1, err, sizeof err), 0);
    assert_int_equal(w.nframes, 3);
    close(p[1]);
    close(q[1]);
    /* Nobody reads yet: what the socket takes goes, the rest stays queued, nothing waits. */
    assert_int_equal(ms__writer_flush(&w, sv[0], err, sizeof err), 0);
    assert_true(w.bytes > 0 && w.nframes == 3);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        _exit(writer_receiver(sv[1], want_ino));
    }
    close(sv[1]);
    while (w.bytes > 0) {
        struct pollfd pf = {.fd = sv[0], .events = POLLOUT};
        assert_true(poll(&pf, 1, 10000) == 1);
        assert_int_equal(ms__writer_flush(&w, sv[0], err, sizeof err), 0);
    }
    assert_int_equal(w.nframes, 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char c = 0;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    /* Every copy of the write ends is closed (ours, the writer's, the child's): EOF. */
    assert_int_equal(read(p[0], &c, 1), 0);
    /* The peer gone: an error, not a wait or a SIGPIPE. */
    assert_int_equal(ms__writer_push(&w, m[2], &q[0], 1, err, sizeof err), 0);
    assert_int_equal(ms__writer_flush(&w, sv[0], err, sizeof err), MS_E_IO);
    ms__writer_free(&w);
    for (int i = 0; i < 3; i++)
        json_decref(m[i]);
    close(p[0]);
    close(q[0]);
    close(sv[0]);
}

/* What a writer holds is closed when it is dropped unsent. */
static void test_writer_free_closes(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    ms__writer w;
    ms__writer_init(&w);
    json_t *m = sized_msg(0, 10, 1);
    assert_int_equal(ms__writer_push(&w, m, &p[1], 1, err, sizeof err), 0);
    /* A count that disagrees with "nfds", or too large a message: refused, nothing queued. */
    assert_int_equal(ms__writer_push(&w, m, NULL, 0, err, sizeof err), MS_E_INVAL);
    json_t *big = sized_msg(1, MS__FRAME_MAX, 0);
    assert_int_equal(ms__writer_push(&w, big, NULL, 0, err, sizeof err), MS_E_TOO_LARGE);
    assert_int_equal(w.nframes, 1);
    close(p[1]);
    ms__writer_free(&w);
    ms__writer_free(NULL);
    char c;
    assert_int_equal(read(p[0], &c, 1), 0);
    close(p[0]);
    json_decref(m);
    json_decref(big);
}

static void test_reader_bytewise(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2];
    pair(sv);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);

    /* Frame 1 with a descriptor, then frame 2 without, then frame 3, byte by byte. */
    json_t *m1 = json_pack("{s:s,s:i,s:i}", "op", "acquire", "id", 1, "nfds", 1);
    uint8_t *f1, *f2, *f3;
    size_t l1, l2, l3;
    assert_int_equal(ms__frame_encode(m1, &f1, &l1, err, sizeof err), 0);
    f2 = frame("{\"op\":\"status\",\"id\":2}", &l2);
    f3 = frame("{\"op\":\"release\",\"id\":3,\"lease\":7}", &l3);

    ms__reader r;
    ms__reader_init(&r);
    json_t *msg;
    int fds[MS__FDS_MAX], nfds;
    /* First byte of frame 1 carries the descriptor. */
    {
        struct iovec iov = {.iov_base = f1, .iov_len = 1};
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr a;
        } ctl;
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof ctl.buf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &p[1], sizeof(int));
        assert_int_equal(sendmsg(sv[0], &mh, 0), 1);
    }
    int got = 0;
    for (size_t i = 1; i <= l1 + l2 + l3; i++) {
        assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), 0);
        for (;;) {
            assert_int_equal(ms__reader_next(&r, &msg, fds, &nfds, err, sizeof err), 0);
            if (msg == NULL)
                break;
            got++;
            json_int_t id = json_integer_value(json_object_get(msg, "id"));
            assert_int_equal(id, got);
            if (got == 1) {
                assert_int_equal(i, l1);
                assert_int_equal(nfds, 1);
                assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
                assert_int_equal(write(fds[0], "y", 1), 1);
                close(fds[0]);
            } else {
                assert_int_equal(nfds, 0);
            }
            if (got == 2)
                assert_int_equal(i, l1 + l2);
            json_decref(msg);
        }
        if (i == l1 + l2 + l3)
            break;
        uint8_t byte = i < l1 ? f1[i] : i < l1 + l2 ? f2[i - l1] : f3[i - l1 - l2];
        assert_int_equal(write(sv[0], &byte, 1), 1);
    }
    assert_int_equal(got, 3);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    assert_int_equal(r.eof, 0);
    close(sv[0]);
    assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), 0);
    assert_int_equal(r.eof, 1);
    ms__reader_free(&r);
    close(sv[1]);
    close(p[0]);
    close(p[1]);
    free(f1);
    free(f2);
    free(f3);
    json_decref(m1);
}

static void test_reader_errors(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2];
    json_t *msg;
    int fds[MS__FDS_MAX], nfds;
    ms__reader r;

    /* A too-large length word is refused at fill time, before any body is buffered. */
    pair(sv);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    ms__reader_init(&r);
    uint8_t tl[4] = {0x01, 0x00, 0x10, 0x00}; /* MS__FRAME_MAX + 1 */
    assert_int_equal(write(sv[0], tl, 4), 4);
    assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), MS_E_TOO_LARGE);
    ms__reader_free(&r);
    close(sv[0]);
    close(sv[1]);

    /* Not JSON: the frame is consumed and the next one still comes. */
    pair(sv);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    ms__reader_init(&r);
    size_t l1, l2;
    uint8_t *f1 = frame("nope", &l1), *f2 = frame("{\"id\":9}", &l2);
    assert_int_equal(write(sv[0], f1, l1), (ssize_t)l1);
    assert_int_equal(write(sv[0], f2, l2), (ssize_t)l2);
    assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), 0);
    assert_int_equal(ms__reader_next(&r, &msg, fds, &nfds, err, sizeof err), MS_E_PROTOCOL);
    assert_null(msg);
    assert_int_equal(ms__reader_next(&r, &msg, fds, &nfds, err, sizeof err), 0);
    assert_non_null(msg);
    json_decref(msg);
    free(f1);
    free(f2);

    /* Declares a descriptor that never came. */
    f1 = frame("{\"id\":1,\"nfds\":1}", &l1);
    assert_int_equal(write(sv[0], f1, l1), (ssize_t)l1);
    free(f1);
    assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), 0);
    assert_int_equal(ms__reader_next(&r, &msg, fds, &nfds, err, sizeof err), MS_E_PROTOCOL);
    /* nfds out of range. */
    f1 = frame("{\"id\":1,\"nfds\":999}", &l1);
    assert_int_equal(write(sv[0], f1, l1), (ssize_t)l1);
    free(f1);
    assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), 0);
    assert_int_equal(ms__reader_next(&r, &msg, fds, &nfds, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "nfds"));

    /* Too many descriptors queued without messages claiming them: MS_E_LIMIT. */
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int rc = 0;
    for (int i = 0; i < MS__FDS_MAX * 4 && rc == 0; i++) {
        /* A valid length word (65536), then body bytes: the frame never completes. */
        static const uint8_t head[4] = {0x00, 0x00, 0x01, 0x00};
        uint8_t byte = i < 4 ? head[i] : ' ';
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        union {
            char buf[CMSG_SPACE(sizeof(int) * 2)];
            struct cmsghdr a;
        } ctl;
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = ctl.buf,
                            .msg_controllen = sizeof ctl.buf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * 2);
        memcpy(CMSG_DATA(cm), p, sizeof(int) * 2);
        assert_int_equal(sendmsg(sv[0], &mh, 0), 1);
        rc = ms__reader_fill(&r, sv[1], err, sizeof err);
    }
    assert_int_equal(rc, MS_E_LIMIT);
    assert_true(r.nfds <= (int)MS__ARRAY_LEN(r.fds));
    ms__reader_free(&r);
    assert_int_equal(r.nfds, 0);
    close(sv[0]);
    close(sv[1]);
    close(p[1]);
    /* Every copy of the write end was closed (queued ones by reader_free, extra ones at once). */
    char c;
    assert_int_equal(read(p[0], &c, 1), 0);
    close(p[0]);
}

/* A maximal frame fills the reader's bounded buffer exactly and still comes through, followed by
 * a small one. */
static void test_reader_max_frame(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int sv[2];
    pair(sv);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    char *body = malloc(MS__FRAME_MAX + 1);
    memset(body, ' ', MS__FRAME_MAX);
    memcpy(body, "{\"id\":1}", 8);
    body[MS__FRAME_MAX] = '\0';
    size_t l1, l2;
    uint8_t *f1 = frame(body, &l1), *f2 = frame("{\"id\":2}", &l2);
    free(body);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[1]);
        int ok = write(sv[0], f1, l1) == (ssize_t)l1 && write(sv[0], f2, l2) == (ssize_t)l2;
        _exit(ok ? 0 : 1);
    }
    close(sv[0]);
    ms__reader r;
    ms__reader_init(&r);
    int got = 0;
    while (got < 2) {
        struct pollfd pfd = {.fd = sv[1], .events = POLLIN};
        poll(&pfd, 1, 1000);
        assert_int_equal(ms__reader_fill(&r, sv[1], err, sizeof err), 0);
        assert_true(r.cap <= 4 + MS__FRAME_MAX);
        json_t *msg;
        while (ms__reader_next(&r, &msg, NULL, NULL, err, sizeof err) == 0 && msg != NULL) {
            got++;
            assert_int_equal(json_integer_value(json_object_get(msg, "id")), got);
            json_decref(msg);
        }
        if (r.eof)
            break;
    }
    assert_int_equal(got, 2);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ms__reader_free(&r);
    close(sv[1]);
    free(f1);
    free(f2);
}

static void test_replies(void **state)
{
    (void)state;
    json_t *id = json_integer(5);
    json_t *ok = ms__reply_ok(id);
    assert_true(json_is_true(json_object_get(ok, "ok")));
    assert_int_equal(json_integer_value(json_object_get(ok, "id")), 5);
    json_t *e = ms__reply_err(id, MS_E_UNKNOWN_TAG, "no model \"x\"");
    assert_true(json_is_false(json_object_get(e, "ok")));
    assert_int_equal(json_integer_value(json_object_get(e, "code")), MS_E_UNKNOWN_TAG);
    assert_string_equal(json_string_value(json_object_get(e, "error")), "no model \"x\"");
    json_decref(e);
    /* Bytes that are not UTF-8 do not lose the message. */
    e = ms__reply_err(NULL, MS_E_WEIGHTS, "file /tmp/\xff\xfe.st missing");
    assert_string_equal(json_string_value(json_object_get(e, "error")), "file /tmp/??.st missing");
    assert_true(json_is_null(json_object_get(e, "id")));
    json_decref(e);
    e = ms__reply_err(id, MS_E_BUSY, NULL);
    assert_string_equal(json_string_value(json_object_get(e, "error")), ms_strerror(MS_E_BUSY));
    json_decref(e);
    json_decref(ok);
    json_decref(id);
}

static void test_signature(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    ms__sig in = {.dtype = MS_FLOAT32, .rank = 2, .shape = {-1, 1024}};
    ms__sig out = {.dtype = MS_FLOAT32, .rank = 2, .shape = {-1, 1000}};
    json_t *j = ms__sig_to_json(&in, &out);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "{\"input\":{\"dtype\":\"float32\",\"shape\":[-1,1024]},"
                           "\"output\":{\"dtype\":\"float32\",\"shape\":[-1,1000]}}");
    free(s);
    ms__sig a, b;
    assert_int_equal(ms__sig_from_json(j, &a, &b, err, sizeof err), 0);
    assert_int_equal(a.dtype, MS_FLOAT32);
    assert_int_equal(a.rank, 2);
    assert_true(a.shape[0] == -1 && a.shape[1] == 1024);
    assert_true(b.shape[1] == 1000);
    json_decref(j);

    /* Unknown signature: dtype null, rank 0. */
    ms__sig unk = {0};
    j = ms__sig_to_json(&unk, NULL);
    assert_true(json_is_null(json_object_get(json_object_get(j, "input"), "dtype")));
    assert_int_equal(ms__sig_from_json(j, &a, &b, err, sizeof err), 0);
    assert_int_equal(a.dtype, 0);
    assert_int_equal(b.rank, 0);
    json_decref(j);
    assert_int_equal(ms__sig_from_json(NULL, &a, &b, err, sizeof err), 0);

    const char *bad[] = {
        "[1]",
        "{\"input\":{\"dtype\":\"float33\",\"shape\":[1]}}",
        "{\"input\":{\"dtype\":\"float32\",\"shape\":[-2]}}",
        "{\"input\":{\"dtype\":\"float32\",\"shape\":[1,2,3,4,5,6,7,8,9]}}",
        "{\"input\":{\"dtype\":\"float32\",\"shape\":[1.5]}}",
        "{\"input\":{\"dtype\":7}}",
        "{\"output\":3}",
    };
    for (size_t i = 0; i < MS__ARRAY_LEN(bad); i++) {
        j = json_loads(bad[i], 0, NULL);
        assert_non_null(j);
        assert_int_equal(ms__sig_from_json(j, &a, &b, err, sizeof err), MS_E_PROTOCOL);
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_whole_and_partial),
        cmocka_unit_test(test_decode_two_frames),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_send_recv),
        cmocka_unit_test(test_send_recv_fds),
        cmocka_unit_test(test_send_large),
        cmocka_unit_test(test_writer_partial_fds),
        cmocka_unit_test(test_writer_free_closes),
        cmocka_unit_test(test_reader_bytewise),
        cmocka_unit_test(test_reader_errors),
        cmocka_unit_test(test_reader_max_frame),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
