/* A connection's pending requests (src/daemon/conn.c): several at once, each ended on its own,
 * bounded by MS__CONN_PENDING_MAX. At the bound the connection's next request waits in its
 * socket (backpressure) and is served, not refused or dropped, once one ends. The connection is
 * one end of a socketpair; the test is the client at the other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/daemon/conn.h"
#include "../../src/daemon/models_int.h"
#include "modelshare.h"

typedef struct fixture {
    ms__models ml;
    ms__proto p;
    int epfd;
    int peer; /* the client's end */
    ms__conn *k;
    ms__model *m;
} fixture;

static int setup(void **state)
{
    char err[MS__ERRLEN];
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    ms__models_init(&f->ml, NULL, NULL);
    f->ml.sup.epfd = -1;
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    assert_true(f->epfd >= 0);
    ms__proto_init(&f->p, &f->ml, f->epfd, "/nonexistent/test.sock", 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    ms__conn_open(&f->p, sv[0]);
    assert_non_null(LIST_FIRST(&f->ml.reg.clients));
    f->k = LIST_FIRST(&f->ml.reg.clients)->user;
    f->k->hello = true;
    f->peer = sv[1];
    ms__spec spec;
    assert_int_equal(ms__spec_parse("{\"backend\":\"identity\"}", &spec, err, sizeof err), 0);
    assert_int_equal(ms__registry_add(&f->ml.reg, "m", &spec, &f->m, err, sizeof err), 0);
    ms__spec_free(&spec);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms__proto_free(&f->p);
    ms__models_free(&f->ml);
    close(f->peer);
    close(f->epfd);
    free(f);
    return 0;
}

/* A load of f->m pending on f->k with request id. */
static ms__pend *pend(fixture *f, int id)
{
    json_t *j = json_integer(id);
    ms__pend *q = ms__conn_set_pending(&f->p, f->k, MS__OP_LOAD, j, f->m, -1, NULL, true);
    json_decref(j);
    assert_non_null(q);
    return q;
}

/* The next reply on the client's end: its id, or -1 when none is there. */
static json_int_t reply_id(fixture *f)
{
    char err[MS__ERRLEN];
    json_t *msg = NULL;
    int fds[MS__FDS_MAX], nfds = 0;
    if (ms__msg_recv(f->peer, &msg, fds, &nfds, MS__FDS_MAX, 0, err, sizeof err) != 0)
        return -1;
    json_int_t id = json_integer_value(json_object_get(msg, "id"));
    json_decref(msg);
    return id;
}

static void send_release(fixture *f, int id)
{
    char err[MS__ERRLEN];
    json_t *req = json_pack("{s:s, s:i, s:i}", "op", "release", "id", id, "lease", 12345);
    assert_int_equal(ms__msg_send(f->peer, req, NULL, 0, 1000, err, sizeof err), 0);
    json_decref(req);
}

static void test_up_to_the_bound_pend_at_once_and_end_in_any_order(void **state)
{
    fixture *f = *state;
    ms__pend *q[MS__CONN_PENDING_MAX];
    for (int i = 0; i < MS__CONN_PENDING_MAX; i++) {
        assert_true(ms__conn_has_room(f->k));
        q[i] = pend(f, i + 1);
    }
    assert_int_equal(f->k->npend, MS__CONN_PENDING_MAX);
    assert_int_equal(f->m->waiters, MS__CONN_PENDING_MAX);
    assert_false(ms__conn_has_room(f->k));
    assert_false(f->k->watched & EPOLLIN);
    /* Found by seq until ended, in whatever order. */
    uint64_t seq = q[5]->seq;
    assert_ptr_equal(ms__conn_pend_find(f->k, seq), q[5]);
    ms__conn_resume(&f->p, f->k, q[5]);
    assert_null(ms__conn_pend_find(f->k, seq));
    ms__conn_resume(&f->p, f->k, q[0]);
    assert_int_equal(f->k->npend, MS__CONN_PENDING_MAX - 2);
    assert_int_equal(f->m->waiters, MS__CONN_PENDING_MAX - 2);
    assert_true(f->k->watched & EPOLLIN);
    /* Dying, the connection's requests stop waiting for the model. */
    ms__conn_kill(f->k, "test");
    assert_int_equal(f->m->waiters, 0);
    ms__proto_sweep(&f->p);
    assert_null(LIST_FIRST(&f->ml.reg.clients));
}

static void test_at_the_bound_the_next_request_waits_and_is_served_once_one_ends(void **state)
{
    fixture *f = *state;
    ms__pend *first = pend(f, 1);
    /* Below the bound, requests are served while others are pending. */
    send_release(f, 100);
    ms__conn_on_event(&f->p, f->k, EPOLLIN);
    assert_int_equal(reply_id(f), 100);
    for (int i = 1; i < MS__CONN_PENDING_MAX; i++)
        pend(f, i + 1);
    send_release(f, 101);
    ms__conn_on_event(&f->p, f->k, EPOLLIN);
    ms__proto_serve_more(&f->p);
    ms__proto_sweep(&f->p);
    assert_int_equal(reply_id(f), -1); /* waits in the connection, not refused */
    assert_false(f->k->dead);
    ms__conn_resume(&f->p, f->k, first);
    ms__proto_sweep(&f->p);
    assert_int_equal(reply_id(f), 101);
    assert_int_equal(f->k->npend, MS__CONN_PENDING_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_up_to_the_bound_pend_at_once_and_end_in_any_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_at_the_bound_the_next_request_waits_and_is_served_once_one_ends, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
