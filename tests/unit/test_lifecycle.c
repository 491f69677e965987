/* The life-cycle owner (src/daemon/lifecycle.c) against a fake supervisor: spawn gives a worker
 * record whose control socket is one end of a socketpair (the test reads what the daemon sends
 * it on the other), stop only marks it; the test says for each worker what a real one would
 * ("ready", "failed", "drained", its exit) through the owner's entry points, and moves the
 * registry's injected clock. Every row of the transition table is taken by some test; the last
 * test checks that. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/common/log.h"
#include "../../src/daemon/models_int.h"
#include "modelshare.h"

#define SEC 1000000000LL
#define FAKES_MAX 64

typedef struct told {
    ms__model *m;
    int what, code;
    char message[MS__ERRLEN];
} told;

typedef struct fixture {
    ms__models ml;
    ms__wproc *w[FAKES_MAX]; /* every worker spawned, in order */
    int peer[FAKES_MAX];     /* the worker's end of its control socket */
    char version[FAKES_MAX][MS__SPEC_VERSION_MAX + 1];
    bool freed[FAKES_MAX];
    int n;
    int spawn_fail; /* the next so many spawns fail */
    int stops;
    int kills;
    told told[64];
    int ntold;
} fixture;

static fixture *F;
static int64_t fake_now;

static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static void on_settled(void *ctx, ms__model *m, int what, int code, const char *message)
{
    fixture *f = ctx;
    assert_true(f->ntold < 64);
    told *t = &f->told[f->ntold++];
    t->m = m;
    t->what = what;
    t->code = code;
    snprintf(t->message, sizeof t->message, "%s", message != NULL ? message : "");
}

static int fake_spawn(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                      const json_t *spec_json, const ms__door_fds *door, int ctor_fd,
                      ms__wproc **out, char *err, size_t errlen)
{
    (void)s, (void)spec_json, (void)door, (void)ctor_fd;
    if (F->spawn_fail > 0) {
        F->spawn_fail--;
        return ms__fail(err, errlen, MS_E_LOAD_FAILED, "cannot fork a worker (test)");
    }
    assert_true(F->n < FAKES_MAX);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ms__wproc *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->pid = 5000000 + F->n; /* above any pid_max: no such process */
    w->pidfd = w->err_fd = w->epfd = -1;
    w->ctrl_fd = sv[0];
    ms__writer_init(&w->wr);
    w->inst = inst;
    ms__reader_init(&w->reader);
    F->peer[F->n] = sv[1];
    snprintf(F->version[F->n], sizeof F->version[0], "%s", spec->version);
    F->w[F->n++] = w;
    (void)m;
    *out = w;
    return 0;
}

static void fake_stop(ms__supervisor *s, ms__wproc *w, int64_t now)
{
    (void)s, (void)now;
    if (!w->stopping)
        F->stops++;
    w->stopping = true;
}

static void fake_kill(ms__supervisor *s, ms__wproc *w)
{
    (void)s;
    if (!w->killed)
        F->kills++;
    w->killed = true;
}

static const ms__sup_ops fake_ops = {fake_spawn, fake_stop, fake_kill};

static int setup(void **state)
{
    char err[MS__ERRLEN];
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    F = f;
    fake_now = 1000 * SEC;
    ms__models_init(&f->ml, on_settled, f);
    f->ml.reg.clock = fake_clock;
    f->ml.ops = &fake_ops;
    f->ml.sup.epfd = -1;
    assert_int_equal(ms__admission_init(&f->ml.budgets, "host=1000MB", err, sizeof err), 0);
    *state = f;
    return 0;
}

static int index_of(const ms__wproc *w)
{
    for (int i = F->n - 1; i >= 0; i--) /* a freed record's address comes back in a later one */
        if (F->w[i] == w && !F->freed[i])
            return i;
    fail_msg("not a worker of the test");
    return -1;
}

/* The worker leaves: the supervisor's record goes (as ms__sup_retire and ms__sup_collect do). */
static void forget(ms__wproc *w)
{
    int i = index_of(w);
    ms__sup_retire(&F->ml.sup, w);
    ms__sup_collect(&F->ml.sup);
    close(F->peer[i]);
    F->freed[i] = true;
}

static int teardown(void **state)
{
    fixture *f = *state;
    /* A swap still in progress first: ending it stops its standby workers, whose records the
     * loop below frees. */
    for (int i = 0; i < f->ml.reg.nmodels; i++)
        ms__swap_end(&f->ml, f->ml.reg.models[i]);
    for (int i = 0; i < f->n; i++) {
        if (f->freed[i])
            continue;
        if (f->w[i]->model != NULL && !f->w[i]->standby)
            ms__model_detach_worker(f->w[i]->model, f->w[i]);
        ms__sup_free(&f->ml.sup, f->w[i]);
        close(f->peer[i]);
    }
    for (int i = 0; i < f->ml.reg.nmodels; i++)
        f->ml.reg.models[i]->nworkers = 0;
    ms__models_free(&f->ml);
    free(f);
    return 0;
}

/* ---- what the test does ---- */

static ms__model *load(const char *tag, const char *spec_text)
{
    char err[MS__ERRLEN];
    ms__spec spec;
    ms__model *m;
    assert_int_equal(ms__spec_parse(spec_text, &spec, err, sizeof err), 0);
    assert_int_equal(ms__registry_add(&F->ml.reg, tag, &spec, &m, err, sizeof err), 0);
    ms__spec_free(&spec);
    ms__model_waiter_add(m, true);
    ms__start_load(&F->ml, m);
    return m;
}

#define SMALL "{\"backend\":\"identity\",\"memory\":100000000,\"instances\":2,\"max_restarts\":1}"
#define LARGE "{\"backend\":\"identity\",\"memory\":600000000,\"load_timeout\":10}"

static const char *state_of(const ms__model *m)
{
    return ms__life_state_name(ms__life_state(m));
}

static json_t *signature(const char *name)
{
    return json_pack("{s:s}", "input", name);
}

static void says_ready_as(ms__wproc *w, const char *sig)
{
    w->ready = true;
    const ms__model *m = w->model;
    w->memory_bytes = m != NULL ? m->estimate_bytes / (uint64_t)m->spec.instances : 0;
    w->signature = signature(sig);
    ms__life_worker_ready(&F->ml, w);
}

static void says_ready(ms__wproc *w)
{
    says_ready_as(w, "x");
}

static void says_failed(ms__wproc *w, int code, const char *message)
{
    w->said_failed = true;
    ms__life_worker_failed(&F->ml, w, code, message);
}

static void dies(ms__wproc *w, int status)
{
    ms__life_worker_exit(&F->ml, w, status);
    forget(w);
}

static void says_drained(ms__wproc *w)
{
    json_t *msg = json_pack("{s:s, s:[]}", "op", "drained", "heads");
    ms__life_worker_drained(&F->ml, w, msg);
    json_decref(msg);
}

/* The op of the next message the daemon sent w, "" when none is there. */
static const char *next_op(const ms__wproc *w)
{
    static char op[32];
    char err[MS__ERRLEN];
    json_t *msg = NULL;
    int fds[8], nfds = 0;
    op[0] = '\0';
    if (ms__msg_recv(F->peer[index_of(w)], &msg, fds, &nfds, 8, 0, err, sizeof err) != 0)
        return op;
    snprintf(op, sizeof op, "%s", json_string_value(json_object_get(msg, "op")));
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    json_decref(msg);
    return op;
}

static const told *last_told(void)
{
    assert_true(F->ntold > 0);
    return &F->told[F->ntold - 1];
}

static void advance(int64_t ns)
{
    fake_now += ns;
    ms__models_timers(&F->ml, fake_now);
}

/* A model of two instances, loaded and ready: workers F->w[first], F->w[first + 1]. */
static ms__model *ready_model(const char *tag)
{
    int first = F->n;
    ms__model *m = load(tag, SMALL);
    assert_int_equal(F->n, first + 2);
    says_ready(F->w[first]);
    says_ready(F->w[first + 1]);
    assert_string_equal(state_of(m), "ready");
    return m;
}

static int swap(ms__model *m, const char *version, bool drain_first)
{
    char err[MS__ERRLEN];
    int none = -1;
    json_t *patch = json_pack("{s:s}", "version", version);
    int rc = ms__swap_start(&F->ml, m, patch, drain_first, &none, err, sizeof err);
    json_decref(patch);
    return rc;
}

/* ---- load, ready, failure ---- */

static void test_a_load_spawns_each_instance_and_is_ready_when_all_are(void **state)
{
    (void)state;
    ms__model *m = load("a", SMALL);
    assert_string_equal(state_of(m), "loading");
    assert_int_equal(F->n, 2);
    says_ready(F->w[0]);
    assert_string_equal(state_of(m), "loading");
    assert_int_equal(F->ntold, 0);
    says_ready(F->w[1]);
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->what, MS__SETTLED_READY);
}

static void test_a_worker_that_fails_to_load_fails_the_model_and_stops_the_others(void **state)
{
    (void)state;
    ms__model *m = load("a", SMALL);
    says_failed(F->w[0], MS_E_LOAD_FAILED, "no such file");
    assert_string_equal(state_of(m), "failed");
    assert_int_equal(last_told()->what, MS__SETTLED_FAILED);
    assert_string_equal(last_told()->message, "no such file");
    assert_true(F->w[1]->stopping);
    assert_null(F->w[1]->model);
    /* Asked again, it loads again. */
    ms__start_load(&F->ml, m);
    assert_string_equal(state_of(m), "loading");
    assert_int_equal(m->loads, 2);
}

static void test_a_spawn_that_fails_fails_the_load_with_its_error(void **state)
{
    (void)state;
    F->spawn_fail = 1;
    ms__model *m = load("a", SMALL);
    assert_string_equal(state_of(m), "failed");
    assert_int_equal(m->error_code, MS_E_LOAD_FAILED);
    assert_non_null(strstr(m->error, "cannot fork"));
}

static void test_a_worker_that_dies_while_loading_fails_the_model(void **state)
{
    (void)state;
    ms__model *m = load("a", SMALL);
    dies(F->w[0], W_EXITCODE(3, 0));
    assert_string_equal(state_of(m), "failed");
    assert_non_null(strstr(m->error, "before the model was ready"));
}

/* ---- unload ---- */

static void test_an_unload_stops_the_workers_and_the_model_goes_with_the_last(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    ms__model_waiter_drop(m, true);
    ms__begin_unload(&F->ml, m);
    assert_string_equal(state_of(m), "unloading");
    assert_true(F->w[0]->stopping && F->w[1]->stopping);
    dies(F->w[0], 0);
    assert_string_equal(state_of(m), "unloading");
    ms__begin_unload(&F->ml, m); /* a second unload: nothing new */
    dies(F->w[1], 0);
    assert_null(ms__registry_find(&F->ml.reg, "a"));
    assert_int_equal(F->told[F->ntold - 2].what, MS__SETTLED_UNLOADED);
    assert_int_equal(last_told()->code, MS_E_UNKNOWN_TAG);
}

static void test_an_unload_with_requests_waiting_with_a_spec_loads_again(void **state)
{
    (void)state;
    ms__model *m = ready_model("a"); /* one waiter with a spec (load) */
    ms__begin_unload(&F->ml, m);
    dies(F->w[0], 0);
    dies(F->w[1], 0);
    assert_string_equal(state_of(m), "loading");
    assert_int_equal(m->loads, 2);
    assert_int_equal(F->n, 4);
}

static void test_an_unload_while_loading_or_failed_stops_what_there_is(void **state)
{
    (void)state;
    ms__model *m = load("a", SMALL);
    ms__begin_unload(&F->ml, m);
    assert_string_equal(state_of(m), "unloading");
    ms__model_waiter_drop(m, true);
    dies(F->w[0], 0);
    dies(F->w[1], 0);
    assert_null(ms__registry_find(&F->ml.reg, "a"));
    F->spawn_fail = 1;
    m = load("b", SMALL);
    assert_string_equal(state_of(m), "failed");
    ms__model_waiter_drop(m, true);
    ms__begin_unload(&F->ml, m); /* no worker: gone at once */
    assert_null(ms__registry_find(&F->ml.reg, "b"));
}

static void test_keep_alive_unloads_an_idle_ready_model(void **state)
{
    (void)state;
    ms__model *m = load("a", "{\"backend\":\"identity\",\"keep_alive\":5}");
    says_ready(F->w[0]);
    advance(4 * SEC);
    assert_string_equal(state_of(m), "ready");
    advance(2 * SEC);
    assert_string_equal(state_of(m), "unloading");
}

/* ---- admission ---- */

/* After a measurement, a device over its budget evicts idle models, least recently used first,
 * until it is within it (a python model measured far above its estimate); leased ones stay. */
static void test_a_measurement_over_budget_evicts_idle_models_lru(void **state)
{
    (void)state;
    ms__model *a = ready_model("a"); /* 2 instances, 100 MB estimated */
    advance(SEC);
    ms__model *b = ready_model("b");
    advance(SEC);
    ms__model *c = ready_model("c"); /* keeps its waiter: as good as leased */
    ms__model_waiter_drop(a, true);
    ms__model_waiter_drop(b, true);
    advance(3 * SEC);
    assert_string_equal(state_of(a), "ready"); /* 300 MB of 1000 MB */
    /* b's first instance measured at 950 MB: 1200 MB used; a goes (older), then b. */
    b->inst_bytes[0] = 950000000;
    b->measured = true;
    advance(3 * SEC);
    assert_string_equal(state_of(a), "unloading");
    assert_string_equal(state_of(b), "unloading");
    assert_string_equal(state_of(c), "ready");
}

/* The model-count limit: a new tag at MS__MODELS_MAX evicts the least recently used idle model
 * (ms__life_make_room) instead of being refused. */
static void test_the_model_count_limit_evicts_the_lru_idle_model(void **state)
{
    (void)state;
    ms__model *a = ready_model("a");
    advance(SEC);
    ms__model *b = ready_model("b");
    ms__model_waiter_drop(a, true);
    ms__model_waiter_drop(b, true);
    /* Below the limit: nothing. */
    ms__life_make_room(&F->ml, "new");
    assert_string_equal(state_of(a), "ready");
    /* Fill the table with models that count (loading ones, which are never evicted). */
    char err[MS__ERRLEN], tag[32];
    ms__spec spec;
    assert_int_equal(ms__spec_parse("{\"backend\":\"identity\"}", &spec, err, sizeof err), 0);
    for (int i = 2; i < MS__MODELS_MAX; i++) {
        ms__model *m;
        snprintf(tag, sizeof tag, "fill%d", i);
        assert_int_equal(ms__registry_add(&F->ml.reg, tag, &spec, &m, err, sizeof err), 0);
    }
    assert_int_equal(ms__registry_add(&F->ml.reg, "new", &spec, &b, err, sizeof err), MS_E_LIMIT);
    b = ms__registry_find(&F->ml.reg, "b");
    ms__life_make_room(&F->ml, "new");
    assert_string_equal(state_of(a), "unloading");
    assert_string_equal(state_of(b), "ready");
    ms__model *m;
    assert_int_equal(ms__registry_add(&F->ml.reg, "new", &spec, &m, err, sizeof err), 0);
    ms__spec_free(&spec);
}

static void test_a_load_that_does_not_fit_waits_and_starts_when_memory_is_free(void **state)
{
    (void)state;
    ms__model *a = load("a", LARGE);
    ms__model *b = load("b", LARGE);
    assert_string_equal(state_of(b), "waiting");
    assert_int_equal(F->n, 1);
    ms__admission_run(&F->ml);
    assert_string_equal(state_of(b), "waiting");
    /* a is ready and idle: b evicts it, then starts once its worker is gone. */
    ms__model_waiter_drop(a, true);
    says_ready(F->w[0]);
    ms__admission_run(&F->ml);
    assert_string_equal(state_of(a), "unloading");
    assert_string_equal(state_of(b), "waiting");
    dies(F->w[0], 0);
    ms__admission_run(&F->ml);
    assert_string_equal(state_of(b), "loading");
    assert_int_equal(F->n, 2);
}

static void test_a_waiting_load_times_out_or_is_forgotten(void **state)
{
    (void)state;
    load("a", LARGE);
    ms__model *b = load("b", LARGE);
    ms__model *c = load("c", LARGE);
    ms__model_waiter_drop(c, true);
    assert_string_equal(state_of(b), "waiting");
    fake_now += 11 * SEC;
    ms__admission_run(&F->ml);
    assert_string_equal(state_of(b), "failed");
    assert_int_equal(b->error_code, MS_E_NO_MEMORY);
    assert_null(ms__registry_find(&F->ml.reg, "c"));
}

static void test_an_unload_of_a_waiting_load_with_a_spec_waiting_waits_again(void **state)
{
    (void)state;
    load("a", LARGE);
    ms__model *b = load("b", LARGE);
    ms__begin_unload(&F->ml, b);
    assert_string_equal(state_of(b), "waiting");
    assert_int_equal(b->loads, 2);
}

/* ---- instances ---- */

static void test_a_crashed_instance_restarts_after_its_back_off_and_serves_again(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    dies(F->w[0], W_EXITCODE(1, 0));
    assert_string_equal(state_of(m), "ready");
    assert_string_equal(ms__inst_state_name(m->inst[0].state), "down");
    assert_int_equal(F->n, 2);
    advance(SEC / 20);
    assert_int_equal(F->n, 2); /* the back-off: 0.1 s */
    advance(SEC / 10);
    assert_int_equal(F->n, 3);
    assert_string_equal(ms__inst_state_name(m->inst[0].state), "starting");
    says_ready(F->w[2]);
    assert_string_equal(ms__inst_state_name(m->inst[0].state), "up");
    assert_string_equal(next_op(F->w[2]), "open");
}

static void test_too_many_crashes_fail_the_model(void **state)
{
    (void)state;
    ms__model *m = ready_model("a"); /* max_restarts 1 */
    dies(F->w[0], W_EXITCODE(1, 0));
    dies(F->w[1], W_EXITCODE(1, 0));
    assert_string_equal(state_of(m), "failed");
    assert_int_equal(m->error_code, MS_E_WORKER_LOST);
}

/* Gives w a stats page whose serving loop last turned `ago` ns ago (real time, as workers
 * stamp it) and whose batch on run slot 0 began then: stuck for ago. */
static void stuck_for(ms__wproc *w, int64_t ago)
{
    int fd;
    assert_int_equal(ms__stats_create(&fd, &w->stats), 0);
    close(fd); /* the mapping stays; the supervisor unmaps it with the record */
    int64_t then = ms__now_ns() - ago;
    ms__stats_beat(w->stats, then);
    ms__stats_running(w->stats, 0, then);
}

static void test_a_worker_stuck_past_call_timeout_is_killed_and_restarts(void **state)
{
    (void)state;
    ms__model *m = ready_model("a"); /* call_timeout: the default, 600 s */
    stuck_for(F->w[0], 599 * SEC);
    advance(SEC);
    assert_int_equal(F->kills, 0);
    stuck_for(F->w[1], 601 * SEC);
    advance(SEC);
    assert_int_equal(F->kills, 1);
    assert_true(F->w[1]->killed && !F->w[0]->killed);
    /* Its callers learn why: the door names the gen it served and how long it was stuck. */
    ms__door *door = m->inst[1].door;
    assert_int_equal(atomic_load(&door->hung_gen), atomic_load(&door->gen) + 1);
    assert_true(atomic_load(&door->hung_ms) >= 601000);
    assert_int_equal(atomic_load(&door->hung_limit_ms), 600000);
    /* Its death is a crash as any other: the instance restarts after its back-off. */
    dies(F->w[1], W_EXITCODE(0, SIGKILL));
    assert_int_equal(atomic_load(&door->hung_gen), atomic_load(&door->gen));
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(m->ncrash, 1);
    advance(SEC / 5);
    assert_int_equal(F->n, 3);
    says_ready(F->w[2]);
    assert_string_equal(ms__inst_state_name(m->inst[1].state), "up");
    /* During a swap the old version's workers are watched the same way. */
    assert_int_equal(swap(m, "v2", false), 0);
    stuck_for(F->w[0], 700 * SEC);
    advance(SEC);
    assert_int_equal(F->kills, 2);
    assert_string_equal(state_of(m), "swapping");
}

static void test_call_timeout_0_never_kills(void **state)
{
    (void)state;
    ms__model *m = load("a", "{\"backend\":\"identity\",\"call_timeout\":0}");
    says_ready(F->w[0]);
    stuck_for(F->w[0], 100000 * SEC);
    advance(SEC);
    assert_int_equal(F->kills, 0);
    assert_string_equal(state_of(m), "ready");
}

static void test_a_load_past_load_timeout_fails_with_timeout_naming_its_phase(void **state)
{
    (void)state;
    ms__model *m = load("a", "{\"backend\":\"identity\",\"instances\":2,\"load_timeout\":5}");
    assert_int_equal(F->n, 2);
    says_ready(F->w[0]);
    stuck_for(F->w[1], 0);
    atomic_store(&F->w[1]->stats->phase, MS__PHASE_CONSTRUCTING);
    advance(4 * SEC);
    assert_string_equal(state_of(m), "loading");
    advance(2 * SEC);
    assert_string_equal(state_of(m), "failed");
    assert_int_equal(m->error_code, MS_E_TIMEOUT);
    assert_non_null(strstr(m->error, "load_timeout of 5 s (phase: constructing"));
    assert_int_equal(F->kills, 2);
    assert_int_equal(last_told()->code, MS_E_TIMEOUT);
}

/* ---- swaps ---- */

/* Both versions loaded at once: the old worker of instance i (old[i]) drains, its new one
 * (F->w[first + i]) takes over. */
static void swap_completes(ms__model *m, ms__wproc **old, int first)
{
    says_ready(F->w[first]);
    assert_string_equal(state_of(m), "swapping");
    says_ready(F->w[first + 1]);
    assert_string_equal(next_op(old[0]), "drain");
    assert_string_equal(next_op(old[1]), "drain");
    says_drained(old[0]);
    assert_string_equal(next_op(F->w[first]), "takeover");
    assert_string_equal(next_op(F->w[first]), "open");
    says_drained(old[1]);
    assert_string_equal(state_of(m), "ready");
}

static void test_a_swap_loads_the_new_version_beside_the_old_and_hands_over(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    ms__wproc *old[2] = {F->w[0], F->w[1]};
    assert_int_equal(swap(m, "2", false), 0);
    assert_string_equal(state_of(m), "swapping");
    assert_string_equal(F->version[2], "2");
    swap_completes(m, old, 2);
    assert_int_equal(last_told()->what, MS__SETTLED_SWAPPED);
    assert_int_equal(last_told()->code, 0);
    assert_string_equal(m->spec.version, "2");
    assert_ptr_equal(m->inst[0].w, F->w[2]);
    dies(old[0], 0); /* the drained workers exit: nothing more happens */
    dies(old[1], 0);
    assert_string_equal(state_of(m), "ready");
}

static void test_a_swap_whose_new_worker_fails_stops_and_the_old_version_serves_on(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    assert_int_equal(swap(m, "2", false), 0);
    says_failed(F->w[2], MS_E_LOAD_FAILED, "bad weights");
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->what, MS__SETTLED_SWAPPED);
    assert_int_equal(last_told()->code, MS_E_LOAD_FAILED);
    assert_non_null(strstr(last_told()->message, "bad weights"));
    assert_true(F->w[3]->stopping);
    dies(F->w[2], W_EXITCODE(1, 0)); /* its exit after "failed": nothing more */
    assert_string_equal(m->spec.version, "");
    /* A new worker that dies before it is ready stops the next swap the same way. */
    assert_int_equal(swap(m, "3", false), 0);
    dies(F->w[4], W_EXITCODE(0, 9));
    assert_string_equal(state_of(m), "ready");
    assert_non_null(strstr(last_told()->message, "before it was ready"));
}

static void test_a_swap_that_changes_the_signature_is_refused(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    assert_int_equal(swap(m, "2", false), 0);
    says_ready_as(F->w[2], "other");
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->code, MS_E_SPEC_CONFLICT);
}

static void test_a_crash_during_a_swap_restarts_the_old_version_and_the_swap_goes_on(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    ms__wproc *old[2] = {F->w[0], F->w[1]};
    assert_int_equal(swap(m, "2", false), 0);
    dies(old[0], W_EXITCODE(1, 0));
    assert_string_equal(state_of(m), "swapping");
    advance(SEC / 5);
    assert_int_equal(F->n, 5);
    assert_string_equal(F->version[4], ""); /* the old version's restart */
    says_ready(F->w[4]);
    assert_string_equal(ms__inst_state_name(m->inst[0].state), "up");
    assert_string_equal(next_op(F->w[4]), "open");
    old[0] = F->w[4];
    swap_completes(m, old, 2);
    assert_int_equal(last_told()->code, 0);
}

static void test_an_old_worker_that_dies_while_it_drains_loses_its_requests_only(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    ms__wproc *old[2] = {F->w[0], F->w[1]};
    assert_int_equal(swap(m, "2", false), 0);
    says_ready(F->w[2]);
    says_ready(F->w[3]);
    dies(old[0], W_EXITCODE(0, 9));
    assert_int_equal(m->inst[0].door->gen, 1);
    says_drained(old[1]);
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->code, 0);
}

static void test_a_drain_first_swap_drains_then_loads_the_new_version(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    ms__wproc *old[2] = {F->w[0], F->w[1]};
    assert_int_equal(swap(m, "2", true), 0);
    assert_string_equal(state_of(m), "draining");
    assert_int_equal(F->n, 2);
    says_drained(old[0]);
    dies(old[1], W_EXITCODE(0, 9)); /* died while it drained */
    assert_string_equal(state_of(m), "swapping");
    assert_int_equal(F->n, 4);
    says_ready(F->w[2]);
    says_ready(F->w[3]);
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->code, 0);
    assert_string_equal(m->spec.version, "2");
}

static void test_a_restart_during_a_drain_first_swap_is_stopped_and_its_instance_moves(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    dies(F->w[1], W_EXITCODE(1, 0));
    advance(SEC / 5);
    assert_string_equal(ms__inst_state_name(m->inst[1].state), "starting");
    ms__wproc *restarted = F->w[2];
    assert_int_equal(swap(m, "2", true), 0);
    assert_true(restarted->stopping);
    says_ready(restarted); /* too late: it is no longer the model's */
    says_drained(F->w[0]);
    assert_string_equal(state_of(m), "swapping");
    says_ready(F->w[3]);
    says_ready(F->w[4]);
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->code, 0);
    assert_string_equal(next_op(F->w[4]), "takeover");
    assert_string_equal(next_op(F->w[4]), "open");
}

static void test_a_drain_first_swap_that_fails_loads_the_old_version_again(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    assert_int_equal(swap(m, "2", true), 0);
    says_drained(F->w[0]);
    says_drained(F->w[1]);
    says_failed(F->w[2], MS_E_LOAD_FAILED, "bad weights");
    assert_string_equal(state_of(m), "swapping");
    assert_int_equal(F->n, 6);
    assert_string_equal(F->version[4], ""); /* the old version, again */
    says_ready(F->w[4]);
    says_ready(F->w[5]);
    assert_string_equal(state_of(m), "ready");
    assert_int_equal(last_told()->code, MS_E_LOAD_FAILED);
    assert_non_null(strstr(last_told()->message, "loaded again"));
    assert_string_equal(m->spec.version, "");
}

static void test_a_drain_first_swap_that_cannot_spawn_rolls_back_or_fails(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    assert_int_equal(swap(m, "2", true), 0);
    F->spawn_fail = 1;
    says_drained(F->w[0]);
    says_drained(F->w[1]);
    assert_string_equal(state_of(m), "swapping"); /* rolled back: the old version loads */
    assert_string_equal(F->version[2], "");
    /* The old version failing too fails the model. */
    says_failed(F->w[2], MS_E_LOAD_FAILED, "disk gone");
    assert_string_equal(state_of(m), "failed");
    assert_non_null(strstr(m->error, "then the old version failed to load again"));
    assert_int_equal(F->told[F->ntold - 2].what, MS__SETTLED_SWAPPED);
    ms__model *b = ready_model("b");
    assert_int_equal(swap(b, "2", true), 0);
    F->spawn_fail = 2;
    says_drained(F->w[4]);
    says_drained(F->w[5]);
    assert_string_equal(state_of(b), "failed");
}

static void test_an_unload_or_a_stop_during_a_swap_stops_the_swap(void **state)
{
    (void)state;
    ms__model *a = ready_model("a");
    ms__model *b = ready_model("b");
    ms__model *c = ready_model("c");
    assert_int_equal(swap(a, "2", false), 0);
    assert_int_equal(swap(b, "2", true), 0);
    ms__begin_unload(&F->ml, a);
    assert_string_equal(state_of(a), "unloading");
    assert_int_equal(last_told()->what, MS__SETTLED_SWAPPED);
    assert_int_equal(last_told()->code, MS_E_UNLOADED);
    assert_true(F->w[6]->stopping && F->w[7]->stopping);
    ms__begin_unload(&F->ml, b);
    assert_string_equal(state_of(b), "unloading");
    assert_int_equal(swap(c, "2", false), 0);
    ms__model *d = ready_model("d");
    assert_int_equal(swap(d, "2", true), 0);
    ms__models_shutdown(&F->ml);
    assert_string_equal(state_of(c), "unloading");
    assert_string_equal(state_of(d), "unloading");
    assert_null(c->swap);
    assert_null(d->swap);
}

static void test_a_stop_unloads_every_model_whatever_its_state(void **state)
{
    (void)state;
    ms__model *a = ready_model("a");
    ms__begin_unload(&F->ml, a);
    ms__model *e = ready_model("e");
    ms__model *b = load("b", LARGE);
    ms__model *c = load("c", LARGE); /* waits */
    F->spawn_fail = 1;
    ms__model *d = load("d", SMALL); /* fails */
    ms__models_shutdown(&F->ml);
    assert_string_equal(state_of(a), "unloading");
    assert_string_equal(state_of(b), "unloading");
    assert_string_equal(state_of(c), "unloading");
    assert_string_equal(state_of(d), "unloading");
    assert_string_equal(state_of(e), "unloading");
}

static void test_an_unasked_drained_is_ignored(void **state)
{
    (void)state;
    ms__model *m = ready_model("a");
    says_drained(F->w[0]);
    assert_string_equal(state_of(m), "ready");
    assert_ptr_equal(m->inst[0].w, F->w[0]);
}

/* Last: every row of the table was taken by the tests above. */
static void test_every_row_of_the_table_is_taken(void **state)
{
    (void)state;
    int missed = 0;
    for (int i = 0; i < ms__life_rows(); i++) {
        int s, ev, next;
        if (ms__life_row(i, &s, &ev, &next) == 0) {
            print_error("row %s x %s -> %s was never taken\n", ms__life_state_name(s),
                        ms__life_event_name(ev), ms__life_state_name(next));
            missed++;
        }
    }
    assert_int_equal(missed, 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_a_load_spawns_each_instance_and_is_ready_when_all_are),
        T(test_a_worker_that_fails_to_load_fails_the_model_and_stops_the_others),
        T(test_a_spawn_that_fails_fails_the_load_with_its_error),
        T(test_a_worker_that_dies_while_loading_fails_the_model),
        T(test_an_unload_stops_the_workers_and_the_model_goes_with_the_last),
        T(test_an_unload_with_requests_waiting_with_a_spec_loads_again),
        T(test_an_unload_while_loading_or_failed_stops_what_there_is),
        T(test_keep_alive_unloads_an_idle_ready_model),
        T(test_a_measurement_over_budget_evicts_idle_models_lru),
        T(test_the_model_count_limit_evicts_the_lru_idle_model),
        T(test_a_load_that_does_not_fit_waits_and_starts_when_memory_is_free),
        T(test_a_waiting_load_times_out_or_is_forgotten),
        T(test_an_unload_of_a_waiting_load_with_a_spec_waiting_waits_again),
        T(test_a_crashed_instance_restarts_after_its_back_off_and_serves_again),
        T(test_too_many_crashes_fail_the_model),
        T(test_a_worker_stuck_past_call_timeout_is_killed_and_restarts),
        T(test_call_timeout_0_never_kills),
        T(test_a_load_past_load_timeout_fails_with_timeout_naming_its_phase),
        T(test_a_swap_loads_the_new_version_beside_the_old_and_hands_over),
        T(test_a_swap_whose_new_worker_fails_stops_and_the_old_version_serves_on),
        T(test_a_swap_that_changes_the_signature_is_refused),
        T(test_a_crash_during_a_swap_restarts_the_old_version_and_the_swap_goes_on),
        T(test_an_old_worker_that_dies_while_it_drains_loses_its_requests_only),
        T(test_a_drain_first_swap_drains_then_loads_the_new_version),
        T(test_a_restart_during_a_drain_first_swap_is_stopped_and_its_instance_moves),
        T(test_a_drain_first_swap_that_fails_loads_the_old_version_again),
        T(test_a_drain_first_swap_that_cannot_spawn_rolls_back_or_fails),
        T(test_an_unload_or_a_stop_during_a_swap_stops_the_swap),
        T(test_a_stop_unloads_every_model_whatever_its_state),
        T(test_an_unasked_drained_is_ignored),
        cmocka_unit_test(test_every_row_of_the_table_is_taken),
    };
    ms__log_init("test_lifecycle", MS_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
