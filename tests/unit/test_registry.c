/* The daemon's registry: leases, clients, keep-alive with an injected clock, spec conflicts,
 * limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/common/spec.h"
#include "../../src/daemon/registry.h"
#include "modelshare.h"

#define SEC 1000000000LL

static int64_t fake_now;

static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

typedef struct fixture {
    ms__registry reg;
    ms__spec spec;
    ms__wproc workers[4];
} fixture;

static int setup(void **state)
{
    char err[MS__ERRLEN];
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fake_now = 1000 * SEC;
    ms__registry_init(&f->reg, fake_clock, NULL);
    int rc = ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/m/a.safetensors\","
                            "\"keep_alive\":5}",
                            &f->spec, err, sizeof err);
    assert_int_equal(rc, 0);
    for (int i = 0; i < 4; i++) {
        f->workers[i].pid = 100 + i;
        f->workers[i].pidfd = f->workers[i].ctrl_fd = -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ms__registry_destroy(&f->reg);
    ms__spec_free(&f->spec);
    free(f);
    return 0;
}

/* A model with n ready workers (from the fixture's, starting at first), in state ready. */
static ms__model *ready_model_at(fixture *f, const char *tag, int first, int n)
{
    char err[MS__ERRLEN];
    ms__model *m;
    assert_int_equal(ms__registry_add(&f->reg, tag, &f->spec, &m, err, sizeof err), 0);
    ms__model_begin_load(&f->reg, m);
    assert_int_equal(m->state, MS__MODEL_LOADING);
    assert_false(ms__model_all_ready(m));
    m->ninst = n; /* instance records without doors: the registry only links them */
    for (int i = first; i < first + n; i++) {
        f->workers[i].ready = true;
        f->workers[i].memory_bytes = 1000;
        f->workers[i].inst = i - first;
        assert_int_equal(ms__model_add_worker(m, &f->workers[i]), 0);
    }
    assert_true(ms__model_all_ready(m));
    ms__model_set_ready(&f->reg, m);
    assert_int_equal(m->state, MS__MODEL_READY);
    assert_int_equal(m->memory_bytes, 1000 * (uint64_t)n);
    return m;
}

static ms__model *ready_model(fixture *f, const char *tag, int n)
{
    return ready_model_at(f, tag, 0, n);
}

static ms__client *client(fixture *f, pid_t pid)
{
    char err[MS__ERRLEN];
    ms__client *c;
    assert_int_equal(ms__client_add(&f->reg, pid, 0, NULL, &c, err, sizeof err), 0);
    return c;
}

static ms__lease *lease(fixture *f, ms__client *c, ms__model *m)
{
    char err[MS__ERRLEN];
    ms__lease *l;
    assert_int_equal(ms__lease_add(&f->reg, c, m, -1, NULL, &l, err, sizeof err), 0);
    return l;
}

static void test_lease_add_release_counts(void **state)
{
    fixture *f = *state;
    ms__model *m = ready_model(f, "t", 1);
    ms__client *a = client(f, 11), *b = client(f, 22);
    ms__lease *la = lease(f, a, m);
    ms__lease *lb1 = lease(f, b, m);
    ms__lease *lb2 = lease(f, b, m);
    assert_int_equal(m->leases, 3);
    assert_int_equal(f->workers[0].leases, 3);
    assert_int_equal(a->nleases, 1);
    assert_int_equal(b->nleases, 2);
    assert_int_equal(f->reg.nleases, 3);
    assert_true(la->id != lb1->id && lb1->id != lb2->id);
    assert_ptr_equal(ms__client_lease(b, lb2->id), lb2);
    assert_null(ms__client_lease(a, lb2->id)); /* not a's */

    char pids[64];
    ms__model_lease_pids(m, pids, sizeof pids);
    assert_true(strstr(pids, "11") != NULL && strstr(pids, "22") != NULL);
    assert_int_equal(strlen(pids), strlen("22, 11")); /* each pid once */

    ms__lease_release(&f->reg, lb1);
    assert_int_equal(m->leases, 2);
    assert_int_equal(b->nleases, 1);
    assert_int_equal(f->workers[0].leases, 2);
    assert_false(m->idle_armed);
    ms__lease_release(&f->reg, la);
    ms__lease_release(&f->reg, lb2);
    assert_int_equal(m->leases, 0);
    assert_int_equal(f->reg.nleases, 0);
    assert_true(m->idle_armed);
}

static void test_leases_spread_over_instances(void **state)
{
    fixture *f = *state;
    ms__model *m = ready_model(f, "multi", 3);
    ms__client *c = client(f, 5);
    for (int i = 0; i < 6; i++)
        lease(f, c, m);
    for (int i = 0; i < 3; i++)
        assert_int_equal(f->workers[i].leases, 2);
    /* A worker gone: its leases stay (counted) but lose their worker. */
    ms__model_detach_worker(m, &f->workers[1]);
    assert_int_equal(m->nworkers, 2);
    assert_int_equal(m->leases, 6);
    int orphans = 0;
    for (ms__lease *o = LIST_FIRST(&c->lease_list); o != NULL; o = LIST_NEXT(o, by_client))
        orphans += o->worker == NULL;
    assert_int_equal(orphans, 2);
    ms__lease *l = lease(f, c, m);
    assert_true(l->worker == &f->workers[0] || l->worker == &f->workers[2]);
}

static int released_cb_count;
static void on_release(ms__lease *l, void *ctx)
{
    (void)l;
    (void)ctx;
    released_cb_count++;
}

static void test_client_drop_releases_all(void **state)
{
    fixture *f = *state;
    ms__model *m = ready_model(f, "t", 1);
    ms__model *m2 = ready_model_at(f, "u", 3, 1);
    ms__client *a = client(f, 1), *b = client(f, 2);
    for (int i = 0; i < 5; i++)
        lease(f, a, i % 2 ? m : m2);
    lease(f, b, m);
    assert_int_equal(f->reg.nclients, 2);
    released_cb_count = 0;
    ms__client_remove(&f->reg, a, on_release, NULL);
    assert_int_equal(released_cb_count, 5);
    assert_int_equal(f->reg.nclients, 1);
    assert_int_equal(m->leases, 1);
    assert_int_equal(m2->leases, 0);
    assert_int_equal(f->reg.nleases, 1);
    assert_false(m->idle_armed);
    assert_true(m2->idle_armed);
}

static void test_keep_alive_deadline(void **state)
{
    fixture *f = *state;
    int64_t t;
    ms__model *m = ready_model(f, "t", 1); /* keep_alive 5 s, no lease: idle from now */
    assert_true(m->idle_armed);
    assert_true(ms__registry_next_deadline(&f->reg, &t));
    assert_int_equal(t, fake_now + 5 * SEC);

    ms__client *c = client(f, 1);
    ms__lease *l = lease(f, c, m);
    assert_false(m->idle_armed);
    assert_false(ms__registry_next_deadline(&f->reg, &t));

    fake_now += 100 * SEC;
    ms__lease_release(&f->reg, l);
    assert_true(ms__registry_next_deadline(&f->reg, &t));
    assert_int_equal(t, fake_now + 5 * SEC);
    assert_int_equal(m->last_used_ns, fake_now);

    fake_now += 4 * SEC;
    assert_null(ms__registry_expired(&f->reg));
    ms__model_touch(&f->reg, m); /* a load of the same model: the keep-alive starts again */
    fake_now += 4 * SEC;
    assert_null(ms__registry_expired(&f->reg));
    fake_now += 1 * SEC;
    assert_ptr_equal(ms__registry_expired(&f->reg), m);
    assert_false(m->idle_armed); /* handed out once */
    assert_null(ms__registry_expired(&f->reg));
    assert_false(ms__registry_next_deadline(&f->reg, &t));
}

static void test_keep_alive_zero_expires_at_once(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    ms__spec zero;
    assert_int_equal(ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/w\",\"keep_alive\":0}",
                                    &zero, err, sizeof err),
                     0);
    ms__model *m;
    assert_int_equal(ms__registry_add(&f->reg, "z", &zero, &m, err, sizeof err), 0);
    ms__spec_free(&zero);
    ms__model_begin_load(&f->reg, m);
    f->workers[0].ready = true;
    m->ninst = 1;
    ms__model_add_worker(m, &f->workers[0]);
    ms__client *c = client(f, 1);
    ms__model_set_ready(&f->reg, m);
    ms__lease *l = lease(f, c, m);
    ms__lease_release(&f->reg, l);
    assert_ptr_equal(ms__registry_expired(&f->reg), m);
}

static void test_not_idle_unless_ready(void **state)
{
    fixture *f = *state;
    ms__model *m = ready_model(f, "t", 1);
    ms__client *c = client(f, 1);
    ms__lease *l = lease(f, c, m);
    ms__model_set_unloading(m);
    ms__lease_release(&f->reg, l);
    assert_false(m->idle_armed);
    fake_now += 1000 * SEC;
    assert_null(ms__registry_expired(&f->reg));
}

static void test_spec_conflict(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    ms__model *m = ready_model(f, "t", 1);
    ms__spec same, other;
    assert_int_equal(ms__spec_parse("{\"keep_alive\":5,\"weights\":\"/m/a.safetensors\","
                                    "\"backend\":\"dense\"}",
                                    &same, err, sizeof err),
                     0);
    assert_int_equal(ms__model_spec_check(m, &same, err, sizeof err), 0);
    assert_int_equal(ms__spec_parse("{\"backend\":\"dense\",\"weights\":\"/m/b.safetensors\"}",
                                    &other, err, sizeof err),
                     0);
    assert_int_equal(ms__model_spec_check(m, &other, err, sizeof err), MS_E_SPEC_CONFLICT);
    assert_non_null(strstr(err, "/m/a.safetensors"));
    assert_non_null(strstr(err, "/m/b.safetensors"));
    assert_non_null(strstr(err, "\"t\""));
    /* A failed model takes the next spec. */
    ms__model_set_failed(m, MS_E_WEIGHTS, "bad file");
    assert_int_equal(ms__model_spec_replace(m, &other, err, sizeof err), 0);
    assert_int_equal(ms__model_spec_check(m, &other, err, sizeof err), 0);
    assert_int_equal(m->error_code, MS_E_WEIGHTS);
    ms__model_begin_load(&f->reg, m);
    assert_int_equal(m->loads, 2);
    assert_string_equal(m->error, "");
    ms__spec_free(&same);
    ms__spec_free(&other);
}

/* What a model is charged on each device: its instances there (the estimate split evenly, or
 * each one's figure), the host memory of its GPU instances on "host", and a swap's share. */
static void test_charge_per_instance_device(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    ms__model *m;
    f->spec.instances = 3;
    assert_int_equal(ms__registry_add(&f->reg, "c", &f->spec, &m, err, sizeof err), 0);
    ms__model_begin_load(&f->reg, m);
    snprintf(m->inst_device[0], sizeof m->inst_device[0], "cuda:0");
    snprintf(m->inst_device[1], sizeof m->inst_device[1], "cpu");
    snprintf(m->inst_device[2], sizeof m->inst_device[2], "cuda:0");
    ms__model_set_estimate(m, 301); /* 101 + 100 + 100 */
    assert_int_equal(ms__model_charge(m, "cuda:0"), 201);
    assert_int_equal(ms__model_charge(m, "host"), 100);
    assert_int_equal(ms__model_charge(m, "cuda:1"), 0);
    assert_string_equal(ms__model_inst_budget(m, 1), "host");
    m->inst_bytes[0] = 10;
    m->inst_bytes[1] = 20;
    m->inst_bytes[2] = 30;
    m->inst_host_bytes[0] = 1; /* measured PSS of the GPU instances */
    m->inst_host_bytes[2] = 3;
    assert_int_equal(ms__model_charge(m, "cuda:0"), 40);
    assert_int_equal(ms__model_charge(m, "host"), 24);
    m->swap_bytes = 10; /* 4 + 3 + 3 */
    assert_int_equal(ms__model_charge(m, "cuda:0"), 47);
    assert_int_equal(ms__model_charge(m, "host"), 27);
    m->swap_bytes = 0;
    ms__model_set_failed(m, MS_E_LOAD_FAILED, "x"); /* nothing held after */
    assert_int_equal(ms__model_charge(m, "host"), 0);
    assert_int_equal(ms__model_charge(m, "cuda:0"), 0);
}

static void test_lease_on_model_not_ready(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    ms__model *m;
    assert_int_equal(ms__registry_add(&f->reg, "t", &f->spec, &m, err, sizeof err), 0);
    ms__model_begin_load(&f->reg, m);
    ms__client *c = client(f, 1);
    ms__lease *l;
    assert_int_equal(ms__lease_add(&f->reg, c, m, -1, NULL, &l, err, sizeof err), MS_E_INVAL);
    assert_int_equal(c->nleases, 0);
}

static void test_limits(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN], tag[32];
    ms__model *m;
    /* Tags. */
    assert_int_equal(ms__registry_add(&f->reg, "bad tag", &f->spec, &m, err, sizeof err),
                     MS_E_INVAL);
    assert_int_equal(ms__registry_add(&f->reg, "", &f->spec, &m, err, sizeof err), MS_E_INVAL);
    /* Models. */
    for (int i = 0; i < MS__MODELS_MAX; i++) {
        snprintf(tag, sizeof tag, "m%d", i);
        assert_int_equal(ms__registry_add(&f->reg, tag, &f->spec, &m, err, sizeof err), 0);
    }
    assert_int_equal(ms__registry_add(&f->reg, "one-more", &f->spec, &m, err, sizeof err),
                     MS_E_LIMIT);
    assert_non_null(strstr(err, "256"));
    assert_ptr_equal(ms__registry_find(&f->reg, "m17"), f->reg.models[17]);
    ms__registry_remove(&f->reg, ms__registry_find(&f->reg, "m17"));
    assert_null(ms__registry_find(&f->reg, "m17"));
    assert_int_equal(ms__registry_add(&f->reg, "one-more", &f->spec, &m, err, sizeof err), 0);
    assert_int_equal(f->reg.nmodels, MS__MODELS_MAX);
    /* Workers per model. */
    ms__wproc extra[MS__INSTANCES_MAX + 1];
    memset(extra, 0, sizeof extra);
    for (int i = 0; i < MS__INSTANCES_MAX; i++) {
        extra[i].inst = i;
        assert_int_equal(ms__model_add_worker(m, &extra[i]), 0);
    }
    assert_int_equal(ms__model_add_worker(m, &extra[MS__INSTANCES_MAX]), MS_E_LIMIT);
    while (m->nworkers > 0)
        ms__model_detach_worker(m, m->workers[0]);
}

/* A full table makes room by forgetting the least recently used failed model without leases;
 * models that are loading, ready, or failed with leases are never forgotten. */
static void test_full_table_forgets_failed_models(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN], tag[32];
    ms__model *m;
    /* "busy" fails with a lease (its worker died under a client): kept. m7 and m9 fail. */
    ms__model *busy = ready_model_at(f, "busy", 0, 1);
    for (int i = 1; i < MS__MODELS_MAX; i++) {
        snprintf(tag, sizeof tag, "m%d", i);
        fake_now += SEC;
        assert_int_equal(ms__registry_add(&f->reg, tag, &f->spec, &m, err, sizeof err), 0);
        ms__model_begin_load(&f->reg, m);
    }
    assert_int_equal(f->reg.nmodels, MS__MODELS_MAX);
    ms__client *c = client(f, 1);
    ms__lease *l;
    assert_int_equal(ms__lease_add(&f->reg, c, busy, -1, NULL, &l, err, sizeof err), 0);
    ms__model_detach_worker(busy, &f->workers[0]);
    ms__model_set_failed(busy, MS_E_WORKER_LOST, "worker died");
    ms__model_set_failed(ms__registry_find(&f->reg, "m9"), MS_E_LOAD_FAILED, "bad weights");
    ms__model_set_failed(ms__registry_find(&f->reg, "m7"), MS_E_LOAD_FAILED, "bad weights");
    assert_int_equal(ms__registry_add(&f->reg, "new1", &f->spec, &m, err, sizeof err), 0);
    assert_null(ms__registry_find(&f->reg, "m7")); /* used before m9 */
    assert_non_null(ms__registry_find(&f->reg, "m9"));
    assert_int_equal(ms__registry_add(&f->reg, "new2", &f->spec, &m, err, sizeof err), 0);
    assert_null(ms__registry_find(&f->reg, "m9"));
    assert_int_equal(ms__registry_add(&f->reg, "new3", &f->spec, &m, err, sizeof err), MS_E_LIMIT);
    assert_ptr_equal(ms__registry_find(&f->reg, "busy"), busy);
    assert_int_equal(f->reg.nmodels, MS__MODELS_MAX);
}

static void test_lease_limit(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    ms__model *m = ready_model(f, "t", 1);
    ms__client *c = client(f, 1);
    for (int i = 0; i < MS__CLIENT_LEASES_MAX; i++)
        lease(f, c, m);
    ms__lease *l;
    assert_int_equal(ms__lease_add(&f->reg, c, m, -1, NULL, &l, err, sizeof err), MS_E_LIMIT);
    assert_non_null(strstr(err, "4096"));
    assert_int_equal(m->leases, MS__CLIENT_LEASES_MAX);
    /* Another client still gets one. */
    ms__client *d = client(f, 2);
    lease(f, d, m);
    ms__client_remove(&f->reg, c, NULL, NULL);
    assert_int_equal(m->leases, 1);
}

static void test_client_limit(void **state)
{
    fixture *f = *state;
    char err[MS__ERRLEN];
    ms__client *c;
    for (int i = 0; i < MS__CLIENTS_MAX; i++)
        client(f, i + 1);
    assert_int_equal(ms__client_add(&f->reg, 9999, 0, NULL, &c, err, sizeof err), MS_E_LIMIT);
    assert_non_null(strstr(err, "1024"));
    ms__client_remove(&f->reg, LIST_FIRST(&f->reg.clients), NULL, NULL);
    assert_int_equal(ms__client_add(&f->reg, 9999, 0, NULL, &c, err, sizeof err), 0);
}

static void test_revoke_and_remove_make_leases_dead(void **state)
{
    fixture *f = *state;
    ms__model *m = ready_model(f, "t", 1);
    ms__client *c = client(f, 1);
    ms__arena_header *hdr;
    char err[MS__ERRLEN];
    ms__lease *l;
    /* A real arena: the registry closes and unmaps it when the lease goes. */
    int fd;
    void *base;
    assert_int_equal(ms__arena_create(MS__ARENA_MIN, &fd, &base, err, sizeof err), 0);
    assert_int_equal(ms__arena_map_header(fd, &hdr, err, sizeof err), 0);
    assert_int_equal(ms__lease_add(&f->reg, c, m, fd, hdr, &l, err, sizeof err), 0);
    ms__lease *l2 = lease(f, c, m);
    ms__model_revoke_leases(&f->reg, m);
    assert_int_equal(((ms__arena_header *)base)->state, MS__ARENA_UNLOADED);
    assert_int_equal(m->leases, 0);
    assert_null(l->model);
    assert_null(l2->worker);
    assert_int_equal(c->nleases, 2); /* still held, dead */
    while (m->nworkers > 0)
        ms__model_detach_worker(m, m->workers[0]);
    ms__registry_remove(&f->reg, m);
    ms__lease_release(&f->reg, l);
    ms__lease_release(&f->reg, l2);
    assert_int_equal(c->nleases, 0);
    ms__arena_unmap(base, MS__ARENA_MIN);
}

/* The admission's transitions and the waiter counts are the registry's to write. */
static void test_waiting_admitted_and_waiters(void **state)
{
    char err[MS__ERRLEN];
    fixture *f = *state;
    ms__model *m;
    f->spec.load_timeout = 2.5;
    assert_int_equal(ms__registry_add(&f->reg, "w", &f->spec, &m, err, sizeof err), 0);
    ms__model_begin_load(&f->reg, m);
    ms__model_set_estimate(m, 1234);
    assert_int_equal(m->estimate_bytes, 1234);
    assert_int_equal(m->memory_bytes, 1234);
    assert_false(m->measured);
    ms__model_set_waiting(m, fake_now);
    assert_int_equal(m->state, MS__MODEL_WAITING);
    assert_int_equal(m->wait_since_ns, fake_now);
    assert_int_equal(m->wait_deadline_ns, fake_now + 2500000000LL);
    ms__model_set_admitted(m);
    assert_int_equal(m->state, MS__MODEL_LOADING);

    ms__model_waiter_add(m, true);
    ms__model_waiter_add(m, false);
    assert_int_equal(m->waiters, 2);
    assert_int_equal(m->spec_waiters, 1);
    ms__model_waiter_drop(m, true);
    assert_int_equal(m->waiters, 1);
    assert_int_equal(m->spec_waiters, 0);
    ms__model_waiter_drop(m, false);
    ms__model_waiter_drop(m, true); /* never below zero */
    assert_int_equal(m->waiters, 0);
    assert_int_equal(m->spec_waiters, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lease_add_release_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leases_spread_over_instances, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_drop_releases_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_zero_expires_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_idle_unless_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spec_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_on_model_not_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_table_forgets_failed_models, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_and_remove_make_leases_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiting_admitted_and_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_charge_per_instance_device, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
