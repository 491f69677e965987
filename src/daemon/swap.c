/*
 * A swap: a tag moves to a new version of its model while it serves (modelshare swap, ms_swap).
 *
 * Why this way. Clients keep the doors they got at acquire and one ring set per instance in each
 * arena; a swap must leave both as they are, so that a client's handle needs no change. So each
 * instance keeps its door, and its worker is replaced in the way that loses nothing:
 *
 *  1. The new version's workers start beside the old ones, each on a door of its own that no
 *     client knows (a standby worker: not yet the model's), and load. The old ones serve on.
 *  2. When every new worker said ready (with the old signature: a swap that changes what the
 *     model takes or gives is refused), the old worker of each instance gets "drain". A worker
 *     reads its control socket only between two batches, so at that point every request it took
 *     is answered. It answers "drained" with its head in each client's ring (what it took) and
 *     exits. Clients go on publishing meanwhile: their requests wait in the rings.
 *  3. The new worker gets "takeover" with the instance's door, each lease attached with the head
 *     where the old worker stopped, then "open" (keeping the door's in-flight count: those
 *     requests are still to serve). It serves the same gen, so nothing a client sent is lost or
 *     answered twice, and no client sees MS_E_WORKER_LOST.
 *
 * A new worker that fails to load stops the swap: its workers are stopped, the old version
 * serves on, and the caller gets the error. The new version is charged in the budget beside the
 * old one while it loads (model.swap_bytes); when both do not fit, the swap is refused with
 * MS_E_NO_MEMORY unless drain_first: then the old workers drain first (requests wait in the
 * rings), and if the new version then fails to load, the old one is loaded again the same way
 * (a rollback) before the caller gets the error.
 *
 * A policy: the life-cycle owner (lifecycle.c) calls each step, and each step posts what follows
 * to the owner's inbox (SWAP_LOAD, SWAP_ROLLBACK, SWAP_END, FAIL); the owner ends the swap
 * (ms__swap_end) and tells its caller. So the record never goes while a step runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../backends/backend.h"
#include "../common/ctorfd.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

/* Where each instance stands in the swap. */
enum { IN_LOADING = 0, IN_READY, IN_DRAINING, IN_DRAINED, IN_DONE };

typedef struct swap_inst {
    ms__wproc *w;          /* the new worker (standby until it takes over), NULL before spawn */
    ms__door_fds door_fds; /* owned: the door it loads on, -1 when none */
    ms__door *door;        /* owned mapping of it: rung when the takeover is sent */
    int state;             /* IN_* */
    json_t *heads;         /* owned: the old worker's [[lease, head], ...], NULL when none */
    bool old_lost;         /* the old worker died before it drained: its requests are lost */
} swap_inst;

struct ms__swap {
    ms__spec spec;     /* the version being loaded */
    json_t *spec_json; /* its canonical JSON */
    int ctor_fd; /* owned, -1 when none: its constructor memfd (spec python.constructor_size) */
    bool drain_first;
    uint64_t need; /* the version being loaded: its estimate (spec "memory", else the backend's) */
    bool loading;  /* the new workers are spawned */
    bool rollback; /* drain-first: the new version failed; the old one loads again */
    int code;      /* rollback: the error to tell once the old version serves again */
    char error[MS__ERRLEN];
    int64_t t0;
    swap_inst in[MS__INSTANCES_MAX];
};

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static void swap_free(ms__swap *sw)
{
    for (int i = 0; i < MS__INSTANCES_MAX; i++) {
        ms__door_unmap(sw->in[i].door);
        ms__door_fds_close(&sw->in[i].door_fds);
        json_decref(sw->in[i].heads);
    }
    ms__spec_free(&sw->spec);
    json_decref(sw->spec_json);
    if (sw->ctor_fd >= 0)
        close(sw->ctor_fd);
    free(sw);
}

/* Stops the standby workers of sw not yet taken over (they are forgotten by the model). */
static void stop_standby(ms__models *ml, ms__model *m, ms__swap *sw)
{
    int64_t now = ms__registry_now(&ml->reg);
    for (int i = 0; i < m->ninst; i++) {
        ms__wproc *w = sw->in[i].w;
        if (w == NULL || sw->in[i].state == IN_DONE)
            continue;
        w->standby = false;
        w->model = NULL;
        ml->ops->stop(&ml->sup, w, now);
        sw->in[i].w = NULL;
    }
}

void ms__swap_end(ms__models *ml, ms__model *m)
{
    ms__swap *sw = m->swap;
    if (sw == NULL)
        return;
    stop_standby(ml, m, sw);
    m->swap = NULL;
    m->swap_bytes = 0;
    swap_free(sw);
}

bool ms__swap_drain_phase(const ms__model *m)
{
    return m->swap != NULL && !m->swap->loading;
}

void ms__swap_attach(ms__model *m, ms__swap *sw)
{
    m->swap = sw;
    m->swap_bytes = sw->need;
}

/* Spawns the standby workers of sw's spec, one per instance, each on a door of its own. */
static int spawn_standby(ms__models *ml, ms__model *m, ms__swap *sw, char *err, size_t errlen)
{
    for (int i = 0; i < m->ninst; i++) {
        swap_inst *si = &sw->in[i];
        ms__door_unmap(si->door);
        si->door = NULL;
        ms__door_fds_close(&si->door_fds);
        si->w = NULL;
        int rc = ms__door_create(&si->door_fds, err, errlen);
        if (rc == 0)
            rc = ms__door_map(si->door_fds.rw, si->door_fds.bell, true, &si->door, err, errlen);
        if (rc == 0)
            rc = ml->ops->spawn(&ml->sup, m, i, &sw->spec, sw->spec_json, &si->door_fds,
                                sw->ctor_fd, &si->w, err, errlen);
        if (rc != 0)
            return rc;
        si->w->model = m;
        si->w->standby = true;
        if (si->state != IN_DRAINED)
            si->state = IN_LOADING;
    }
    sw->loading = true;
    return 0;
}

/* Sends the old worker of instance i "drain" (and rings its door: it may sleep). No client is
 * attached to it from now on: the new worker gets every lease. */
static void send_drain(ms__models *ml, ms__model *m, int i)
{
    char err[MS__ERRLEN];
    ms__instance *in = &m->inst[i];
    ms__swap *sw = m->swap;
    if (in->w == NULL || in->state != MS__INST_UP) {
        /* Down (it crashed) or a restart loading: nothing to drain, its requests were lost. */
        if (in->w != NULL) {
            ms__wproc *old = in->w;
            ms__worker_detach(old);
            ml->ops->stop(&ml->sup, old, ms__registry_now(&ml->reg));
        }
        sw->in[i].old_lost = true;
        sw->in[i].state = IN_DRAINED;
        in->state = MS__INST_STARTING;
        return;
    }
    json_t *msg = json_pack("{s:s}", "op", "drain");
    int rc = msg != NULL ? ms__sup_send(in->w, msg, NULL, 0, err, sizeof err) : MS_E_NOMEM;
    json_decref(msg);
    if (rc != 0) {
        /* It cannot hear: it is stopped, and counts as lost (ms__swap_drain_lost). */
        ms__log_warn("model \"%s\": instance %d: cannot tell worker %ld to drain: %s", m->tag, i,
                     (long)in->w->pid, rc == MS_E_NOMEM ? "out of memory" : err);
        ml->ops->stop(&ml->sup, in->w, ms__registry_now(&ml->reg));
    }
    ms__door_ring(in->door);
    in->state = MS__INST_STARTING;
    sw->in[i].state = IN_DRAINING;
}

/* Where the old worker stopped in lease's ring: its head, 0 for a lease it never had. */
static json_int_t head_of(const json_t *heads, uint64_t lease)
{
    size_t k;
    json_t *e;
    json_array_foreach(heads, k, e)
    {
        if ((uint64_t)json_integer_value(json_array_get(e, 0)) == lease)
            return json_integer_value(json_array_get(e, 1));
    }
    return 0;
}

/* Sends w the takeover of instance i's door, every lease with its head, and "open". */
static int send_takeover(ms__model *m, int i, ms__wproc *w, char *err, size_t errlen)
{
    ms__swap *sw = m->swap;
    const swap_inst *si = &sw->in[i];
    /* Its page 0 read-write, then its bell page. */
    int door[2] = {m->inst[i].door_fds.rw, m->inst[i].door_fds.bell};
    json_t *msg = json_pack("{s:s, s:i}", "op", "takeover", "nfds", 2);
    int rc = msg != NULL ? ms__sup_send(w, msg, door, 2, err, errlen) : MS_E_NOMEM;
    json_decref(msg);
    for (ms__lease *l = LIST_FIRST(&m->lease_list); rc == 0 && l != NULL;
         l = LIST_NEXT(l, by_model)) {
        /* The old worker lost: what was published before was its (resume, like a restart). */
        msg = si->old_lost ? json_pack("{s:s, s:I, s:i, s:i, s:b}", "op", "attach", "lease",
                                       (json_int_t)l->id, "ring", i, "nfds", 1, "resume", 1)
                           : json_pack("{s:s, s:I, s:i, s:i, s:I}", "op", "attach", "lease",
                                       (json_int_t)l->id, "ring", i, "nfds", 1, "head",
                                       head_of(si->heads, l->id));
        rc = msg != NULL ? ms__sup_send(w, msg, &l->arena_fd, 1, err, errlen) : MS_E_NOMEM;
        json_decref(msg);
        if (rc == 0)
            rc = ms__links_send(w, l, err, errlen);
    }
    msg = rc == 0 ? json_pack("{s:s, s:b}", "op", "open", "keep_inflight", !si->old_lost) : NULL;
    if (rc == 0)
        rc = msg != NULL ? ms__sup_send(w, msg, NULL, 0, err, errlen) : MS_E_NOMEM;
    json_decref(msg);
    if (rc == MS_E_NOMEM)
        snprintf(err, errlen, "out of memory");
    return rc;
}

/* The swap (or its rollback) is complete: the model is the new version. */
static void complete(ms__models *ml, ms__model *m)
{
    char err[MS__ERRLEN];
    ms__swap *sw = m->swap;
    json_t *js = json_incref(sw->spec_json);
    ms__spec spec;
    int rc = ms__spec_copy(&sw->spec, &spec);
    if (rc == 0) {
        ms__spec_free(&m->spec);
        m->spec = spec;
        json_decref(m->spec_json);
        m->spec_json = json_incref(js);
        /* The constructor memfd goes with the spec (a rollback's is a copy of m's own). */
        ms__model_ctor_set(m, sw->ctor_fd);
        sw->ctor_fd = -1;
    }
    json_decref(js);
    ms__model_new_estimate(m, sw->need);
    m->measured = false;
    ms__model_memory_from_workers(m);
    ms__measure_model(m);
    ms__log_info(
        "model \"%s\": %s version %s in %.3f s: %d worker(s), %.1f MiB", m->tag,
        sw->rollback ? "back on" : "swapped to", m->spec.version[0] ? m->spec.version : "(none)",
        (double)(ms__registry_now(&ml->reg) - sw->t0) / 1e9, m->nworkers, mib(m->memory_bytes));
    if (rc != 0)
        snprintf(err, sizeof err, "out of memory keeping the new spec");
    if (sw->rollback)
        ms__inbox_error(ml, m, MS__EV_SWAP_END, sw->code, sw->error);
    else
        ms__inbox_error(ml, m, MS__EV_SWAP_END, rc, rc != 0 ? err : NULL);
}

/* Instance i's old worker is gone (drained or lost) and its new one ready: the new one takes
 * over. When every instance has, the swap is complete. */
static void hand_over(ms__models *ml, ms__model *m, int i)
{
    char err[MS__ERRLEN];
    ms__swap *sw = m->swap;
    swap_inst *si = &sw->in[i];
    ms__wproc *w = si->w;
    w->standby = false;
    w->model = NULL;
    if (ms__model_add_worker(m, w) != 0 || send_takeover(m, i, w, err, sizeof err) != 0) {
        /* The instance goes down and restarts on the new version (which is now m's spec). */
        ms__log_warn("model \"%s\": instance %d: the new worker %ld cannot take over: %s", m->tag,
                     i, (long)w->pid, err);
        ml->ops->stop(&ml->sup, w, ms__registry_now(&ml->reg));
    } else {
        m->inst[i].state = MS__INST_UP;
        m->inst[i].up_since_ns = ms__registry_now(&ml->reg);
    }
    /* A door that is down (its old worker was lost) is opened by the new worker itself, after
     * its attaches read the rings' tails (ring.h): never from here. */
    ms__door_ring(si->door); /* it may sleep on the door it loaded on */
    ms__door_ring(m->inst[i].door);
    si->state = IN_DONE;
    ms__log_info("model \"%s\": instance %d: worker %ld took over%s", m->tag, i, (long)w->pid,
                 si->old_lost ? " (its old worker was lost)" : "");
    for (int k = 0; k < m->ninst; k++)
        if (sw->in[k].state != IN_DONE)
            return;
    complete(ml, m);
}

/* Every new worker is ready: the old ones drain (or, drain-first, are gone already). */
static void all_ready(ms__models *ml, ms__model *m)
{
    ms__swap *sw = m->swap;
    m->swap_bytes = 0;
    for (int i = 0; i < m->ninst; i++)
        m->swap_bytes += sw->in[i].w->memory_bytes;
    for (int i = 0; i < m->ninst; i++) {
        if (sw->in[i].state != IN_DRAINED && sw->in[i].state != IN_DONE)
            send_drain(ml, m, i);
        /* Drained already (drain-first), or had nothing to drain (its worker was lost). */
        if (sw->in[i].state == IN_DRAINED)
            hand_over(ml, m, i);
    }
}

static swap_inst *standby_of(const ms__wproc *w)
{
    ms__model *m = w->model;
    if (m == NULL || m->swap == NULL || w->inst < 0 || w->inst >= m->ninst ||
        m->swap->in[w->inst].w != w)
        return NULL;
    return &m->swap->in[w->inst];
}

/* The new version failed to load (code, message): the swap stops; drain-first, the old version
 * loads again first (a rollback); a rollback that fails too fails the model. */
static void load_failed(ms__models *ml, ms__model *m, int code, const char *message)
{
    char err[MS__ERRLEN];
    ms__swap *sw = m->swap;
    bool drained = false;
    for (int i = 0; i < m->ninst; i++)
        drained |= sw->in[i].state == IN_DRAINED;
    if (sw->rollback) {
        snprintf(err, sizeof err, "%.500s; then the old version failed to load again: %.400s",
                 sw->error, message);
        ms__inbox_error(ml, m, MS__EV_FAIL, code, err);
    } else if (!drained) {
        ms__inbox_post(ml, &(ms__life_event){.m = m,
                                             .ev = MS__EV_SWAP_END,
                                             .inst = -1,
                                             .code = code,
                                             .status = 1, /* stopped */
                                             .message = (char *)message});
    } else {
        ms__inbox_error(ml, m, MS__EV_SWAP_ROLLBACK, code, message);
    }
}

void ms__swap_rollback(ms__models *ml, ms__model *m, int code, const char *message)
{
    char err[MS__ERRLEN];
    ms__swap *sw = m->swap;
    ms__log_warn("model \"%s\": the new version failed to load (%s); loading the old one again",
                 m->tag, message);
    stop_standby(ml, m, sw);
    sw->rollback = true;
    sw->code = code;
    snprintf(sw->error, sizeof sw->error,
             "the new version failed to load, and the old one was loaded again (drain-first): "
             "%.900s",
             message);
    ms__spec_free(&sw->spec);
    json_decref(sw->spec_json);
    sw->spec_json = json_incref(m->spec_json);
    sw->need = m->estimate_bytes;
    if (sw->ctor_fd >= 0)
        close(sw->ctor_fd);
    sw->ctor_fd = -1;
    int rc = ms__spec_copy(&m->spec, &sw->spec);
    if (rc == 0 && m->ctor_fd >= 0 && (sw->ctor_fd = fcntl(m->ctor_fd, F_DUPFD_CLOEXEC, 0)) < 0)
        rc = ms__fail(err, sizeof err, MS_E_LIMIT,
                      "cannot copy the old version's constructor memfd for its reload: %s",
                      strerror(errno));
    if (rc == 0)
        rc = spawn_standby(ml, m, sw, err, sizeof err);
    if (rc != 0)
        ms__inbox_error(ml, m, MS__EV_FAIL, rc, err);
}

void ms__swap_ready(ms__models *ml, ms__wproc *w)
{
    char msg[MS__ERRLEN];
    swap_inst *si = standby_of(w);
    if (si == NULL)
        return;
    ms__model *m = w->model;
    const json_t *old = m->signature != NULL ? m->signature : json_null();
    if (!json_equal(old, w->signature)) {
        char *a = json_dumps(old, JSON_COMPACT | JSON_ENCODE_ANY);
        char *b = json_dumps(w->signature, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(msg, sizeof msg,
                 "the new version's signature %.400s differs from the loaded one's %.400s: a swap "
                 "keeps what the model takes and gives (clients hold it); unload and load the "
                 "new version instead",
                 b != NULL ? b : "?", a != NULL ? a : "?");
        free(a);
        free(b);
        load_failed(ml, m, MS_E_SPEC_CONFLICT, msg);
        return;
    }
    si->state = si->state == IN_DRAINED ? IN_DRAINED : IN_READY;
    for (int i = 0; i < m->ninst; i++)
        if (m->swap->in[i].w == NULL || !m->swap->in[i].w->ready)
            return;
    ms__log_info("model \"%s\": the new version is loaded beside the old (%.3f s): handing over",
                 m->tag, (double)(ms__registry_now(&ml->reg) - m->swap->t0) / 1e9);
    all_ready(ml, m);
}

/* Standby worker w died (how: its exit text). */
static void standby_exit(ms__models *ml, ms__wproc *w, const char *how)
{
    char msg[MS__ERRLEN];
    ms__model *m = w->model;
    m->swap->in[w->inst].w = NULL;
    w->model = NULL;
    if (w->said_failed)
        return; /* its "failed" stopped the swap already */
    snprintf(msg, sizeof msg, "instance %d of the new version: worker %ld %s before it was ready",
             w->inst, (long)w->pid, how);
    load_failed(ml, m, MS_E_LOAD_FAILED, msg);
}

void ms__swap_failed(ms__models *ml, ms__wproc *w, int code, const char *message)
{
    char msg[MS__ERRLEN];
    if (standby_of(w) == NULL)
        return;
    if (code == 0) {
        standby_exit(ml, w, message);
        return;
    }
    snprintf(msg, sizeof msg, "instance %d of the new version: %.900s", w->inst, message);
    load_failed(ml, w->model, code, msg);
}

/* Drain-first: when every old worker is gone, the new version loads (SWAP_LOAD). */
static void load_after_drain(ms__models *ml, ms__model *m)
{
    for (int i = 0; i < m->ninst; i++)
        if (m->swap->in[i].state != IN_DRAINED)
            return;
    ms__inbox_event(ml, m, MS__EV_SWAP_LOAD);
}

void ms__swap_load_new(ms__models *ml, ms__model *m)
{
    char err[MS__ERRLEN];
    m->memory_bytes = 0;
    ms__model_split_memory(m);
    ms__log_info("model \"%s\": the old version drained (%.3f s): loading the new one", m->tag,
                 (double)(ms__registry_now(&ml->reg) - m->swap->t0) / 1e9);
    int rc = spawn_standby(ml, m, m->swap, err, sizeof err);
    if (rc != 0)
        load_failed(ml, m, rc, err);
}

/* Old worker w of instance i is gone from the swap's view (drained, or lost). */
static void old_gone(ms__models *ml, ms__model *m, int i)
{
    ms__swap *sw = m->swap;
    sw->in[i].state = IN_DRAINED;
    if (!sw->loading)
        load_after_drain(ml, m);
    else if (sw->in[i].w != NULL && sw->in[i].w->ready)
        hand_over(ml, m, i);
}

void ms__swap_drained(ms__models *ml, ms__wproc *w, const json_t *msg)
{
    ms__model *m = w->model;
    if (m == NULL || m->swap == NULL || w->inst < 0 || w->inst >= m->ninst ||
        m->inst[w->inst].w != w || m->swap->in[w->inst].state != IN_DRAINING) {
        ms__log_warn("worker %ld said \"drained\" unasked; ignored", (long)w->pid);
        return;
    }
    const json_t *heads = json_object_get(msg, "heads");
    size_t k;
    json_t *e;
    bool ok = json_is_array(heads);
    json_array_foreach(heads, k, e)
    {
        ok &= json_is_array(e) && json_array_size(e) == 2 &&
              json_is_integer(json_array_get(e, 0)) && json_is_integer(json_array_get(e, 1));
    }
    int i = w->inst;
    ms__swap *sw = m->swap;
    if (!ok) {
        /* Nothing to go on: treated as lost (its requests fail, the new worker resumes). */
        ms__log_error("worker %ld: \"drained\" expected heads [[lease, head], ...]; treating it "
                      "as lost",
                      (long)w->pid);
        sw->in[i].old_lost = true;
        ms__door_lost(m->inst[i].door);
    } else {
        json_decref(sw->in[i].heads);
        sw->in[i].heads = json_incref((json_t *)heads);
    }
    ms__log_info("model \"%s\": instance %d: worker %ld drained (%zu ring(s)); it exits", m->tag, i,
                 (long)w->pid, json_is_array(heads) ? json_array_size(heads) : 0);
    ms__worker_detach(w);
    ml->ops->stop(&ml->sup, w, ms__registry_now(&ml->reg));
    old_gone(ml, m, i);
}

bool ms__swap_draining(const ms__model *m, const ms__wproc *w)
{
    const ms__swap *sw = m->swap;
    return sw != NULL && w->inst >= 0 && w->inst < m->ninst && sw->in[w->inst].state == IN_DRAINING;
}

void ms__swap_drain_lost(ms__models *ml, ms__model *m, const ms__wproc *w)
{
    ms__swap *sw = m->swap;
    if (!ms__swap_draining(m, w))
        return;
    /* It died before it drained: its requests in flight are lost, as in a crash (ring.h). */
    ms__instance *in = &m->inst[w->inst];
    ms__door_lost(in->door);
    sw->in[w->inst].old_lost = true;
    ms__log_warn("model \"%s\": instance %d: worker %ld died while it drained for the swap", m->tag,
                 w->inst, (long)w->pid);
    old_gone(ml, m, w->inst);
}

/* The new spec: the loaded one with the fields of patch replaced. 0, or an error (err). */
static int new_spec(const ms__model *m, const json_t *patch, ms__spec *out, char *err,
                    size_t errlen)
{
    char why[MS__ERRLEN];
    if (!json_is_object(patch) || json_object_size(patch) == 0)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "swap: expected the spec fields to change (a JSON object such as "
                        "{\"weights\": \"v2.safetensors\", \"version\": \"2\"}), got %s",
                        json_is_object(patch) ? "an empty object" : "something else");
    json_t *j = json_deep_copy(m->spec_json);
    if (j == NULL || json_object_update(j, (json_t *)patch) != 0) {
        json_decref(j);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory building the new spec");
    }
    int rc = ms__spec_from_json(j, out, why, sizeof why);
    json_decref(j);
    if (rc != 0)
        return ms__fail(err, errlen, rc, "swap: %s", why);
    static const char *const fixed[] = {"backend", "device", "devices", "instances"};
    const char *field = NULL;
    for (size_t i = 0; field == NULL && i < MS__ARRAY_LEN(fixed); i++)
        if (!ms__spec_field_equal(out, &m->spec, fixed[i]))
            field = fixed[i];
    if (field != NULL) {
        ms__spec_free(out);
        return ms__fail(err, errlen, MS_E_SPEC,
                        "swap: expected the same %s as the loaded version (a swap replaces the "
                        "model in place); unload and load to change it",
                        field);
    }
    return 0;
}

/* The new version's need on budget device dev: need split over m's instances as they are
 * placed (a swap keeps each instance's device). */
static uint64_t need_on(const ms__model *m, const char *dev, uint64_t need)
{
    uint64_t sum = 0;
    for (int i = 0; i < m->spec.instances; i++)
        if (strcmp(ms__model_inst_budget(m, i), dev) == 0)
            sum += ms__even_part(need, m->spec.instances, i);
    return sum;
}

/* Both versions at once (or, drain_first, the new one alone) must fit the budget of one device
 * of m. */
static int budget_check_dev(ms__models *ml, const ms__model *m, const char *name, uint64_t total,
                            bool drain_first, char *err, size_t errlen)
{
    ms__budget_dev *dev = ms__budget_find(ml, name);
    uint64_t need = need_on(m, name, total), mine = ms__model_charge(m, name);
    if (dev == NULL || need == 0)
        return 0;
    uint64_t budget = ms__budget_bytes(dev), used = ms__budget_used(ml, dev);
    uint64_t others = used > mine ? used - mine : 0;
    char need_s[32], old_s[32], free_s[32], budget_s[32];
    ms__bytes_str(need, need_s, sizeof need_s);
    ms__bytes_str(mine, old_s, sizeof old_s);
    ms__bytes_str(budget > used ? budget - used : 0, free_s, sizeof free_s);
    ms__bytes_str(budget, budget_s, sizeof budget_s);
    if (budget != 0 && others + need > budget)
        return ms__fail(err, errlen, MS_E_NO_MEMORY,
                        "swap of \"%s\": the new version needs %s, more than the %s budget on %s "
                        "holds even without the old version",
                        m->tag, need_s, budget_s, dev->name);
    if (budget != 0 && !drain_first && used + need > budget)
        return ms__fail(err, errlen, MS_E_NO_MEMORY,
                        "swap of \"%s\": the new version needs %s beside the old version's %s, "
                        "and %s of the %s budget on %s is free: both do not fit at once; swap "
                        "with drain-first (modelshare swap --drain-first) to unload the old "
                        "version before the new one loads (requests wait meanwhile)",
                        m->tag, need_s, old_s, free_s, budget_s, dev->name);
    return 0;
}

/* The same on every device of m. */
static int budget_check(ms__models *ml, const ms__model *m, uint64_t need, bool drain_first,
                        char *err, size_t errlen)
{
    const char *devs[MS__INSTANCES_MAX + 1];
    int n = ms__model_devices(m, devs);
    for (int d = 0; d < n; d++) {
        int rc = budget_check_dev(ml, m, devs[d], need, drain_first, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The constructor memfd of the new version sw->spec, into sw->ctor_fd: *ctor_fd (taken) when the
 * request brought one, checked; else a copy of m's when the new version's constructor is the
 * loaded one's (the same SHA-256: a swap of other fields); none for an inline constructor. */
static int new_ctor(const ms__model *m, ms__swap *sw, int *ctor_fd, char *err, size_t errlen)
{
    if (sw->spec.python_ctor_size == 0) {
        if (*ctor_fd >= 0)
            return ms__fail(err, errlen, MS_E_SPEC,
                            "swap: got a constructor memfd, but the new spec has no "
                            "python.constructor_size (expected none with an inline constructor)");
        return 0;
    }
    if (*ctor_fd >= 0) {
        char why[MS__ERRLEN];
        int rc = ms__ctorfd_check(*ctor_fd, sw->spec.python_ctor_size, why, sizeof why);
        if (rc != 0)
            return ms__fail(err, errlen, rc, "swap: %s", why);
        sw->ctor_fd = *ctor_fd;
        *ctor_fd = -1;
        return 0;
    }
    const json_t *a =
        json_object_get(json_object_get(m->spec_json, "python"), "constructor_sha256");
    const json_t *b =
        json_object_get(json_object_get(sw->spec_json, "python"), "constructor_sha256");
    if (m->ctor_fd < 0 || a == NULL || b == NULL || !json_equal(a, b))
        return ms__fail(err, errlen, MS_E_SPEC,
                        "swap: the new spec's constructor is in a memfd (python.constructor_size "
                        "%llu), expected that memfd with the request, got none",
                        (unsigned long long)sw->spec.python_ctor_size);
    sw->ctor_fd = fcntl(m->ctor_fd, F_DUPFD_CLOEXEC, 0);
    if (sw->ctor_fd < 0)
        return ms__fail(err, errlen, MS_E_LIMIT, "swap: cannot copy the constructor memfd: %s",
                        strerror(errno));
    return 0;
}

/* Whether m can swap now. */
static int swappable(const ms__model *m, char *err, size_t errlen)
{
    if (m->swap != NULL)
        return ms__fail(err, errlen, MS_E_BUSY,
                        "model \"%s\" is swapping already: wait for that swap to end", m->tag);
    if (m->state != MS__MODEL_READY)
        return ms__fail(err, errlen, MS_E_BUSY,
                        "model \"%s\" is %s: expected a ready model to swap", m->tag,
                        ms__model_state_name(m->state));
    return 0;
}

int ms__swap_prepare(ms__models *ml, ms__model *m, const json_t *patch, bool drain_first,
                     int *ctor_fd, ms__swap **out, char *err, size_t errlen)
{
    int rc = swappable(m, err, errlen);
    if (rc != 0)
        return rc;
    ms__swap *sw = calloc(1, sizeof *sw);
    if (sw == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a swap");
    for (int i = 0; i < MS__INSTANCES_MAX; i++)
        sw->in[i].door_fds = (ms__door_fds){-1, -1, -1};
    sw->ctor_fd = -1;
    rc = new_spec(m, patch, &sw->spec, err, errlen);
    if (rc != 0) {
        free(sw);
        return rc;
    }
    sw->spec_json = ms__spec_to_json(&sw->spec);
    sw->need = sw->spec.memory > 0 ? sw->spec.memory : ms__load_backend_estimate(m, &sw->spec);
    rc = sw->spec_json == NULL ? ms__fail(err, errlen, MS_E_NOMEM, "out of memory")
                               : new_ctor(m, sw, ctor_fd, err, errlen);
    if (rc == 0)
        rc = budget_check(ml, m, sw->need, drain_first, err, errlen);
    sw->drain_first = drain_first;
    sw->t0 = ms__registry_now(&ml->reg);
    if (rc == 0)
        ms__log_info("model \"%s\": swap from version %s to %s (%s, %.1f MiB estimated)", m->tag,
                     m->spec.version[0] ? m->spec.version : "(none)",
                     sw->spec.version[0] ? sw->spec.version : "(none)",
                     drain_first ? "drain first" : "both loaded at once", mib(sw->need));
    if (rc == 0 && !drain_first && (rc = spawn_standby(ml, m, sw, err, errlen)) != 0)
        stop_standby(ml, m, sw);
    if (rc != 0) {
        swap_free(sw);
        return rc;
    }
    *out = sw;
    return 0;
}

void ms__swap_drain_old(ms__models *ml, ms__model *m)
{
    for (int i = 0; i < m->ninst; i++)
        send_drain(ml, m, i);
    load_after_drain(ml, m);
}
