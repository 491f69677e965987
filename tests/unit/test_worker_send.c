/* Messages to a worker (supervisor.c: ms__sup_send) are queued and written as its control socket
 * takes them: a worker that does not read never makes the daemon wait, what was queued arrives
 * whole and in order once it reads, and one that leaves too much unread counts as lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/daemon/supervisor.h"
#include "modelshare.h"

typedef struct fixture {
    ms__wproc w;
    int peer; /* the worker's end */
    int epfd;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    f->peer = sv[1];
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    assert_true(f->epfd >= 0);
    f->w.pid = 5000000;
    f->w.ctrl_fd = sv[0];
    f->w.epfd = f->epfd;
    f->w.ev_ctrl.obj = &f->w;
    ms__writer_init(&f->w.wr);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &f->w.ev_ctrl};
    assert_int_equal(epoll_ctl(f->epfd, EPOLL_CTL_ADD, sv[0], &ev), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms__writer_free(&f->w.wr);
    if (f->w.ctrl_fd >= 0)
        close(f->w.ctrl_fd);
    close(f->peer);
    close(f->epfd);
    free(f);
    return 0;
}

/* A message of about 64 KiB numbered n. */
static json_t *big(int n)
{
    static char pad[65536];
    memset(pad, 'x', sizeof pad - 1);
    return json_pack("{s:s, s:i, s:s}", "op", "attach", "n", n, "pad", pad);
}

/* Whether epoll says the daemon's end has room to write (EPOLLOUT watched and ready). */
static bool out_ready(const fixture *f)
{
    struct epoll_event ev;
    return epoll_wait(f->epfd, &ev, 1, 0) == 1 && (ev.events & EPOLLOUT);
}

/* Reads every message the peer has now, checking they come numbered from *next on. */
static void read_all(fixture *f, ms__reader *r, int *next)
{
    char err[MS__ERRLEN];
    assert_int_equal(ms__reader_fill(r, f->peer, err, sizeof err), 0);
    for (;;) {
        json_t *msg = NULL;
        int fds[MS__FDS_MAX], nfds = 0;
        assert_int_equal(ms__reader_next(r, &msg, fds, &nfds, err, sizeof err), 0);
        if (msg == NULL)
            return;
        assert_int_equal(json_integer_value(json_object_get(msg, "n")), *next);
        (*next)++;
        json_decref(msg);
    }
}

static void test_a_worker_that_does_not_read_gets_its_messages_queued(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    int n = 0;
    /* Far more than a socket buffer holds: every send returns at once. */
    while (f->w.wr.bytes == 0 || n < 64) {
        json_t *msg = big(n++);
        assert_int_equal(ms__sup_send(&f->w, msg, NULL, 0, err, sizeof err), 0);
        json_decref(msg);
        assert_true(n < 1000);
    }
    assert_true(f->w.want_out);
    assert_false(out_ready(f)); /* the socket is full */
    int next = 0;
    ms__reader r;
    ms__reader_init(&r);
    while (f->w.wr.bytes > 0) {
        read_all(f, &r, &next);
        assert_true(out_ready(f));
        assert_int_equal(ms__sup_ctrl_flush(&f->w, err, sizeof err), 0);
    }
    assert_false(f->w.want_out);
    read_all(f, &r, &next);
    ms__reader_free(&r);
    assert_int_equal(next, n);
}

static void test_a_worker_that_leaves_too_much_unread_counts_as_lost(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    int rc = 0;
    for (int n = 0; rc == 0 && n < 1000; n++) {
        json_t *msg = big(n);
        rc = ms__sup_send(&f->w, msg, NULL, 0, err, sizeof err);
        json_decref(msg);
    }
    assert_int_equal(rc, MS_E_IO);
    assert_non_null(strstr(err, "does not read its control socket"));
    assert_true(f->w.wr.bytes <= MS__WORKER_QUEUE_MAX + 65536 + 4096);
}

static void test_a_worker_that_is_gone_is_an_error_at_once(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    close(f->peer);
    f->peer = -1;
    json_t *msg = json_pack("{s:s}", "op", "open");
    assert_int_equal(ms__sup_send(&f->w, msg, NULL, 0, err, sizeof err), MS_E_IO);
    json_decref(msg);
    f->peer = dup(0); /* for teardown */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_worker_that_does_not_read_gets_its_messages_queued,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_worker_that_leaves_too_much_unread_counts_as_lost,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_worker_that_is_gone_is_an_error_at_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
