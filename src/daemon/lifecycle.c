/*
 * The owner of every model's life: its state changes here only, by one table (state x event ->
 * next state + actions). The policies (load.c, instances.c, swap.c) decide and post what follows
 * to the inbox (inbox.c); workers.c decodes what workers say and hands it here. An event is acted
 * on once the one before it is done, so no action runs inside another; settled notices are told
 * once the inbox is empty, while their models are still registered. See models_int.h.
 */
#include <stdio.h>
#include <string.h>

#include "../common/exitstatus.h"
#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

/* What a row does, in this order. */
enum {
    A_SWAP_STOP = 1 << 0,    /* a swap in progress stops: SWAPPED told with the event's error */
    A_FAIL = 1 << 1,         /* failed, its workers stopped and forgotten, FAILED told */
    A_BEGIN = 1 << 2,        /* a load begins (loads + 1, its estimate) */
    A_DECIDE = 1 << 3,       /* admission decides (posts ADMIT, WAIT or FAIL) */
    A_SPAWN = 1 << 4,        /* admitted: its instances and workers start */
    A_WAITING = 1 << 5,      /* it waits for memory from now */
    A_READY = 1 << 6,        /* ready (measured), READY told */
    A_UNLOADING = 1 << 7,    /* unloading, its workers stopped; at once done when none */
    A_STOPPING = 1 << 8,     /* unloading (the supervisor stops every worker itself) */
    A_GONE = 1 << 9,         /* a worker reaped while unloading: done at the last */
    A_UNLOADED = 1 << 10,    /* UNLOADED told */
    A_REMOVE = 1 << 11,      /* FAILED (unknown tag from now) told, the record goes */
    A_FORGET = 1 << 12,      /* the record goes, nothing told */
    A_LOST = 1 << 13,        /* instances.c: a crashed instance restarts later, or FAIL */
    A_UP = 1 << 14,          /* instances.c: a restarted instance serves again */
    A_RESTART = 1 << 15,     /* instances.c: an instance's worker starts again */
    A_SWAP_TAKE = 1 << 16,   /* the prepared swap is the model's */
    A_SWAP_DRAIN = 1 << 17,  /* swap.c: the old workers drain */
    A_SWAP_READY = 1 << 18,  /* swap.c: a new worker is ready; at the last, they take over */
    A_SWAP_FAILED = 1 << 19, /* swap.c: a new worker failed: the swap stops or rolls back */
    A_DRAINED = 1 << 20,     /* swap.c: an old worker drained; its instance moves over */
    A_DRAIN_LOST = 1 << 21,  /* swap.c: an old worker died draining; its instance moves over */
    A_SWAP_LOAD = 1 << 22,   /* swap.c: drain-first, the new version loads */
    A_ROLLBACK = 1 << 23,    /* swap.c: drain-first, the old version loads again */
    A_SWAP_END = 1 << 24,    /* the swap record goes, SWAPPED told with the event's code */
    A_HUNG = 1 << 25,        /* instances.c: a hung instance's worker is killed (then LOST) */
};

typedef struct row {
    int state, ev, next, actions;
} row;

/* The life cycle. An event with no row in a state is ignored there (logged at debug level): a
 * worker's news that came after its model moved on, a second unload. Rows that cannot happen are
 * left out (a drain-first swap's draining phase has no instance that is up and not draining, so
 * no crash, restart or end of the swap there; a new model loads before anything else). */
#define FAILS (A_SWAP_STOP | A_FAIL)
static const row table[] = {
    /* load, admission */
    {MS__LIFE_NEW, MS__EV_LOAD, MS__LIFE_LOADING, A_BEGIN | A_DECIDE},
    {MS__LIFE_FAILED, MS__EV_LOAD, MS__LIFE_LOADING, A_BEGIN | A_DECIDE},
    {MS__LIFE_LOADING, MS__EV_ADMIT, MS__LIFE_LOADING, A_SPAWN},
    {MS__LIFE_LOADING, MS__EV_WAIT, MS__LIFE_WAITING, A_WAITING},
    {MS__LIFE_WAITING, MS__EV_RECHECK, MS__LIFE_WAITING, A_DECIDE},
    {MS__LIFE_WAITING, MS__EV_ADMIT, MS__LIFE_LOADING, A_SPAWN},
    {MS__LIFE_WAITING, MS__EV_FORGET, -1, A_FORGET},
    {MS__LIFE_LOADING, MS__EV_ALL_READY, MS__LIFE_READY, A_READY},
    /* failure */
    {MS__LIFE_LOADING, MS__EV_FAIL, MS__LIFE_FAILED, FAILS},
    {MS__LIFE_WAITING, MS__EV_FAIL, MS__LIFE_FAILED, FAILS},
    {MS__LIFE_READY, MS__EV_FAIL, MS__LIFE_FAILED, FAILS},
    {MS__LIFE_SWAPPING, MS__EV_FAIL, MS__LIFE_FAILED, FAILS},
    {MS__LIFE_DRAINING, MS__EV_FAIL, MS__LIFE_FAILED, FAILS},
    /* instances of a serving model */
    {MS__LIFE_READY, MS__EV_LOST, MS__LIFE_READY, A_LOST},
    {MS__LIFE_SWAPPING, MS__EV_LOST, MS__LIFE_SWAPPING, A_LOST},
    {MS__LIFE_READY, MS__EV_UP, MS__LIFE_READY, A_UP},
    {MS__LIFE_SWAPPING, MS__EV_UP, MS__LIFE_SWAPPING, A_UP},
    {MS__LIFE_READY, MS__EV_RESTART, MS__LIFE_READY, A_RESTART},
    {MS__LIFE_SWAPPING, MS__EV_RESTART, MS__LIFE_SWAPPING, A_RESTART},
    {MS__LIFE_READY, MS__EV_HUNG, MS__LIFE_READY, A_HUNG},
    {MS__LIFE_SWAPPING, MS__EV_HUNG, MS__LIFE_SWAPPING, A_HUNG},
    /* a swap */
    {MS__LIFE_READY, MS__EV_SWAP, MS__LIFE_SWAPPING, A_SWAP_TAKE},
    {MS__LIFE_READY, MS__EV_SWAP_DRAIN, MS__LIFE_DRAINING, A_SWAP_TAKE | A_SWAP_DRAIN},
    {MS__LIFE_SWAPPING, MS__EV_SWAP_READY, MS__LIFE_SWAPPING, A_SWAP_READY},
    {MS__LIFE_SWAPPING, MS__EV_SWAP_FAILED, MS__LIFE_SWAPPING, A_SWAP_FAILED},
    {MS__LIFE_READY, MS__EV_DRAINED, MS__LIFE_READY, A_DRAINED}, /* unasked: logged */
    {MS__LIFE_SWAPPING, MS__EV_DRAINED, MS__LIFE_SWAPPING, A_DRAINED},
    {MS__LIFE_DRAINING, MS__EV_DRAINED, MS__LIFE_DRAINING, A_DRAINED},
    {MS__LIFE_SWAPPING, MS__EV_DRAIN_LOST, MS__LIFE_SWAPPING, A_DRAIN_LOST},
    {MS__LIFE_DRAINING, MS__EV_DRAIN_LOST, MS__LIFE_DRAINING, A_DRAIN_LOST},
    {MS__LIFE_DRAINING, MS__EV_SWAP_LOAD, MS__LIFE_SWAPPING, A_SWAP_LOAD},
    {MS__LIFE_DRAINING, MS__EV_SWAP_ROLLBACK, MS__LIFE_SWAPPING, A_ROLLBACK},
    {MS__LIFE_SWAPPING, MS__EV_SWAP_ROLLBACK, MS__LIFE_SWAPPING, A_ROLLBACK},
    {MS__LIFE_SWAPPING, MS__EV_SWAP_END, MS__LIFE_READY, A_SWAP_END},
    /* unload */
    {MS__LIFE_WAITING, MS__EV_UNLOAD, MS__LIFE_UNLOADING, A_UNLOADING},
    {MS__LIFE_LOADING, MS__EV_UNLOAD, MS__LIFE_UNLOADING, A_UNLOADING},
    {MS__LIFE_READY, MS__EV_UNLOAD, MS__LIFE_UNLOADING, A_UNLOADING},
    {MS__LIFE_SWAPPING, MS__EV_UNLOAD, MS__LIFE_UNLOADING, A_SWAP_STOP | A_UNLOADING},
    {MS__LIFE_DRAINING, MS__EV_UNLOAD, MS__LIFE_UNLOADING, A_SWAP_STOP | A_UNLOADING},
    {MS__LIFE_FAILED, MS__EV_UNLOAD, MS__LIFE_UNLOADING, A_UNLOADING},
    {MS__LIFE_UNLOADING, MS__EV_WORKER_GONE, MS__LIFE_UNLOADING, A_GONE},
    {MS__LIFE_UNLOADING, MS__EV_RELOAD, MS__LIFE_LOADING, A_UNLOADED | A_BEGIN | A_DECIDE},
    {MS__LIFE_UNLOADING, MS__EV_REMOVE, -1, A_UNLOADED | A_REMOVE},
    /* the daemon stops */
    {MS__LIFE_WAITING, MS__EV_STOP, MS__LIFE_UNLOADING, A_STOPPING},
    {MS__LIFE_LOADING, MS__EV_STOP, MS__LIFE_UNLOADING, A_STOPPING},
    {MS__LIFE_READY, MS__EV_STOP, MS__LIFE_UNLOADING, A_STOPPING},
    {MS__LIFE_SWAPPING, MS__EV_STOP, MS__LIFE_UNLOADING, A_SWAP_STOP | A_STOPPING},
    {MS__LIFE_DRAINING, MS__EV_STOP, MS__LIFE_UNLOADING, A_SWAP_STOP | A_STOPPING},
    {MS__LIFE_FAILED, MS__EV_STOP, MS__LIFE_UNLOADING, A_STOPPING},
    {MS__LIFE_UNLOADING, MS__EV_STOP, MS__LIFE_UNLOADING, A_STOPPING},
};

const char *ms__life_state_name(int state)
{
    static const char *const names[MS__LIFE_NSTATES] = {
        "new", "waiting", "loading", "ready", "swapping", "draining", "failed", "unloading"};
    return state >= 0 && state < MS__LIFE_NSTATES ? names[state] : "gone";
}

int ms__life_state(const ms__model *m)
{
    switch (m->state) {
    case MS__MODEL_LOADING:
        return m->loads == 0 ? MS__LIFE_NEW : MS__LIFE_LOADING;
    case MS__MODEL_READY:
        if (m->swap == NULL)
            return MS__LIFE_READY;
        return ms__swap_drain_phase(m) ? MS__LIFE_DRAINING : MS__LIFE_SWAPPING;
    case MS__MODEL_FAILED:
        return MS__LIFE_FAILED;
    case MS__MODEL_UNLOADING:
        return MS__LIFE_UNLOADING;
    default:
        return MS__LIFE_WAITING;
    }
}

#define NROWS ((int)(sizeof table / sizeof table[0]))

/* How often each row was taken since the program started. */
static uint64_t hits[NROWS];

static const row *find_row(int state, int ev)
{
    for (int i = 0; i < NROWS; i++)
        if (table[i].state == state && table[i].ev == ev)
            return &table[i];
    return NULL;
}

int ms__life_next(int state, int ev)
{
    const row *r = find_row(state, ev);
    return r != NULL ? r->next : -2;
}

int ms__life_rows(void)
{
    return NROWS;
}

uint64_t ms__life_row(int i, int *state, int *ev, int *next)
{
    *state = table[i].state;
    *ev = table[i].ev;
    *next = table[i].next;
    return hits[i];
}

static void post(ms__models *ml, ms__model *m, int ev)
{
    ms__inbox_post(ml, &(ms__life_event){.m = m, .ev = ev, .inst = -1});
}

/* Its last worker is gone (or it had none) while it unloads: loaded again or removed. */
static void post_unloaded(ms__models *ml, ms__model *m)
{
    if (m->nworkers == 0)
        post(ml, m, m->spec_waiters > 0 && !ml->stopping ? MS__EV_RELOAD : MS__EV_REMOVE);
}

/* FAIL: its workers stopped and forgotten, FAILED told. */
static void act_fail(ms__models *ml, ms__model *m, int code, const char *message)
{
    ms__model_set_failed(m, code, message);
    int64_t now = ms__registry_now(&ml->reg);
    while (m->nworkers > 0) {
        ms__wproc *w = m->workers[0];
        ms__worker_detach(w);
        ml->ops->stop(&ml->sup, w, now);
    }
    ms__notice_post(ml, m, MS__SETTLED_FAILED, code, m->error);
}

static void act_unloading(ms__models *ml, ms__model *m)
{
    ms__model_set_unloading(m);
    int64_t now = ms__registry_now(&ml->reg);
    for (int i = 0; i < m->nworkers; i++)
        ml->ops->stop(&ml->sup, m->workers[i], now);
    post_unloaded(ml, m);
}

/* REMOVE: nothing is loaded under its tag any more; FAILED told, the record goes. */
static void act_remove(ms__models *ml, ms__model *m)
{
    char msg[MS__ERRLEN];
    snprintf(msg, sizeof msg,
             "model \"%s\" was unloaded and nothing is loaded under that tag now (acquire it "
             "with a spec to load it)",
             m->tag);
    ms__notice_post(ml, m, MS__SETTLED_FAILED, MS_E_UNKNOWN_TAG, msg);
    ms__notice_flush(ml);
    ms__inbox_forget(ml, m);
    ms__registry_remove(&ml->reg, m);
}

/* The swap's text when something else stops it. */
static const char *swap_stop_text(const ms__model *m, const ms__life_event *e, char *buf,
                                  size_t buflen)
{
    if (e->ev == MS__EV_UNLOAD)
        snprintf(buf, buflen, "model \"%s\" was unloaded during its swap", m->tag);
    else if (e->ev == MS__EV_STOP)
        snprintf(buf, buflen, "the daemon is stopping");
    else
        snprintf(buf, buflen, "%s", e->message != NULL ? e->message : "the model failed");
    return buf;
}

static void act_swap_end(ms__models *ml, ms__model *m, int code, const char *message, bool stopped)
{
    if (stopped)
        ms__log_warn("model \"%s\": swap stopped: %s", m->tag, message);
    ms__swap_end(ml, m);
    ms__notice_post(ml, m, MS__SETTLED_SWAPPED, code, message);
}

/* The actions of a load, admission, ready and unload. Returns false when m went. */
static bool act_load(ms__models *ml, ms__model *m, const ms__life_event *e, int a)
{
    int64_t now = ms__registry_now(&ml->reg);
    if (a & A_FAIL)
        act_fail(ml, m, e->code, e->message);
    if (a & A_UNLOADED) {
        ms__load_log_unloaded(m);
        ms__notice_post(ml, m, MS__SETTLED_UNLOADED, 0, NULL);
    }
    if (a & A_REMOVE) {
        act_remove(ml, m);
        return false;
    }
    if (a & A_FORGET) {
        ms__log_info("model \"%s\": nobody waits for its load any more: forgotten", m->tag);
        ms__inbox_forget(ml, m);
        ms__registry_remove(&ml->reg, m);
        return false;
    }
    if (a & A_BEGIN) {
        ms__model_begin_load(&ml->reg, m);
        ms__load_begin(ml, m);
    }
    if (a & A_DECIDE)
        ms__load_decide(ml, m, now);
    if (a & A_SPAWN) {
        ms__model_set_admitted(m);
        ms__load_spawn(ml, m);
    }
    if (a & A_WAITING)
        ms__model_set_waiting(m, now);
    if (a & A_READY) {
        ms__model_set_ready(&ml->reg, m);
        ms__measure_model(m);
        ms__load_log_ready(m);
        ms__notice_post(ml, m, MS__SETTLED_READY, 0, NULL);
    }
    if (a & A_UNLOADING)
        act_unloading(ml, m);
    if (a & A_STOPPING)
        ms__model_set_unloading(m);
    if (a & A_GONE) {
        ms__verify_release(m, e->w);
        post_unloaded(ml, m);
    }
    return true;
}

/* The actions of instances and swaps. */
static void act_serve(ms__models *ml, ms__model *m, const ms__life_event *e, int a)
{
    if (a & A_LOST)
        ms__instance_lost(ml, m, e->w, e->status, e->message);
    if (a & A_UP)
        ms__instance_up(ml, m, e->w);
    if (a & A_RESTART)
        ms__instance_restart(ml, m, e->inst, ms__registry_now(&ml->reg));
    if (a & A_HUNG)
        ms__instance_hung(ml, m, e->inst, e->code);
    if (a & A_SWAP_TAKE)
        ms__swap_attach(m, e->swap);
    if (a & A_SWAP_DRAIN)
        ms__swap_drain_old(ml, m);
    if (a & A_SWAP_READY)
        ms__swap_ready(ml, e->w);
    if (a & A_SWAP_FAILED)
        ms__swap_failed(ml, e->w, e->code, e->message);
    if (a & A_DRAINED)
        ms__swap_drained(ml, e->w, e->msg);
    if (a & A_DRAIN_LOST)
        ms__swap_drain_lost(ml, m, e->w);
    if (a & A_SWAP_LOAD)
        ms__swap_load_new(ml, m);
    if (a & A_ROLLBACK)
        ms__swap_rollback(ml, m, e->code, e->message);
    if (a & A_SWAP_END)
        act_swap_end(ml, m, e->code, e->message, e->status != 0);
}

/* One event: its row's actions, or nothing when its state has none. */
static void act(ms__models *ml, ms__life_event *e)
{
    ms__model *m = e->m;
    int state = ms__life_state(m);
    const row *r = find_row(state, e->ev);
    if (r == NULL) {
        ms__log_debug("model \"%s\": %s ignored while %s", m->tag, ms__life_event_name(e->ev),
                      ms__life_state_name(state));
        return;
    }
    ms__log_debug("model \"%s\": %s: %s -> %s", m->tag, ms__life_event_name(e->ev),
                  ms__life_state_name(state), ms__life_state_name(r->next));
    hits[r - table]++;
    if (r->actions & A_FAIL)
        ms__log_error("model \"%s\": %s (%s)", m->tag, e->message, ms_errname(e->code));
    if ((r->actions & A_SWAP_STOP) && m->swap != NULL) {
        char text[MS__ERRLEN];
        int code = e->ev == MS__EV_FAIL ? e->code : MS_E_UNLOADED;
        act_swap_end(ml, m, code, swap_stop_text(m, e, text, sizeof text), true);
    }
    if (!act_load(ml, m, e, r->actions))
        return;
    act_serve(ml, m, e, r->actions);
}

/* Acts on the inbox until it is empty, then tells the settled notices. Re-entered (an action
 * that posts), it only queues: the outer call goes on with it. */
static void run(ms__models *ml)
{
    if (ml->inbox.running)
        return;
    ml->inbox.running = true;
    ms__life_event *e;
    while ((e = ms__inbox_take(ml)) != NULL) {
        act(ml, e);
        ms__inbox_free(e);
    }
    ml->inbox.running = false;
    ms__notice_flush(ml);
}

/* Posts e and acts on the inbox. */
static void life_do(ms__models *ml, const ms__life_event *e)
{
    ms__inbox_post(ml, e);
    run(ml);
}

static void life_do_ev(ms__models *ml, ms__model *m, int ev)
{
    life_do(ml, &(ms__life_event){.m = m, .ev = ev, .inst = -1});
}

int ms__start_load(ms__models *ml, ms__model *m)
{
    life_do_ev(ml, m, MS__EV_LOAD);
    return m->state == MS__MODEL_FAILED ? m->error_code : 0;
}

void ms__life_make_room(ms__models *ml, const char *tag)
{
    ms__load_make_room(ml, tag);
    run(ml);
}

void ms__begin_unload(ms__models *ml, ms__model *m)
{
    life_do_ev(ml, m, MS__EV_UNLOAD);
}

/* The models waiting for memory, first come first served. Returns how many. */
static int waiting_models(const ms__models *ml, ms__model **waiting)
{
    int n = 0;
    for (int i = 0; i < ml->reg.nmodels; i++)
        if (ml->reg.models[i]->state == MS__MODEL_WAITING)
            waiting[n++] = ml->reg.models[i];
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && waiting[j]->wait_since_ns < waiting[j - 1]->wait_since_ns; j--) {
            ms__model *t = waiting[j];
            waiting[j] = waiting[j - 1];
            waiting[j - 1] = t;
        }
    return n;
}

int64_t ms__admission_run(ms__models *ml)
{
    ms__model *waiting[MS__MODELS_TABLE];
    int64_t next = INT64_MAX;
    int n = waiting_models(ml, waiting);
    if (n == 0)
        return next;
    int64_t now = ms__registry_now(&ml->reg);
    for (int i = 0; i < n; i++) {
        ms__model *m = waiting[i];
        if (m->waiters == 0) {
            life_do_ev(ml, m, MS__EV_FORGET);
            continue;
        }
        life_do_ev(ml, m, MS__EV_RECHECK);
        /* Past its deadline it only waits for unloads in progress: look again soon. */
        int64_t due = m->wait_deadline_ns > now ? m->wait_deadline_ns : now + 100000000;
        if (m->state == MS__MODEL_WAITING && due < next)
            next = due;
    }
    return next;
}

int ms__swap_start(ms__models *ml, ms__model *m, const json_t *patch, bool drain_first,
                   int *ctor_fd, char *err, size_t errlen)
{
    ms__swap *sw;
    int rc = ms__swap_prepare(ml, m, patch, drain_first, ctor_fd, &sw, err, errlen);
    if (rc != 0)
        return rc;
    life_do(ml, &(ms__life_event){.m = m,
                                  .ev = drain_first ? MS__EV_SWAP_DRAIN : MS__EV_SWAP,
                                  .inst = -1,
                                  .swap = sw});
    return 0;
}

void ms__life_shutdown(ms__models *ml)
{
    for (int i = 0; i < ml->reg.nmodels; i++)
        ms__inbox_post(ml, &(ms__life_event){.m = ml->reg.models[i], .ev = MS__EV_STOP});
    run(ml);
}

int64_t ms__life_timers(ms__models *ml, int64_t now)
{
    int64_t measured = ml->next_measure_ns;
    int64_t next = ms__measure_due(ml, now), t;
    if (ml->next_measure_ns != measured) {
        /* Measured: a device over its budget evicts idle models until it is not. */
        ms__load_measured(ml);
        run(ml);
    }
    /* The watchdog posts what it finds (HUNG, FAIL): acted on here. */
    t = ms__watchdog_run(ml, now);
    run(ml);
    if (t < next)
        next = t;
    ms__model *m;
    while ((m = ms__registry_expired(&ml->reg)) != NULL) {
        ms__log_info("model \"%s\": idle for its keep-alive of %g s: unloading", m->tag,
                     m->spec.keep_alive);
        life_do_ev(ml, m, MS__EV_UNLOAD);
    }
    if (ms__registry_next_deadline(&ml->reg, &t) && t < next)
        next = t;
    for (int k = 0; k < ml->reg.nmodels; k++) {
        int due[MS__INSTANCES_MAX];
        m = ml->reg.models[k];
        int n = ms__instances_due(m, now, due, &next);
        /* One at a time: a restart that fails the model ends the others' (no row in failed). */
        for (int i = 0; i < n; i++)
            life_do(ml, &(ms__life_event){.m = m, .ev = MS__EV_RESTART, .inst = due[i]});
        if (n > 0)
            ms__instances_due(m, now, due, &next);
    }
    return next;
}

/* ---- a worker's news (workers.c) ---- */

void ms__life_worker_ready(ms__models *ml, ms__wproc *w)
{
    ms__model *m = w->model;
    if (m == NULL)
        return; /* a worker of a load that already failed: it is being stopped */
    if (w->standby) {
        life_do(ml, &(ms__life_event){.m = m, .ev = MS__EV_SWAP_READY, .w = w, .inst = -1});
        return;
    }
    ms__log_info("model \"%s\": worker %ld ready (%.1f MiB)", m->tag, (long)w->pid,
                 (double)w->memory_bytes / (1024.0 * 1024.0));
    if (m->state == MS__MODEL_READY && w->inst >= 0 && w->inst < m->ninst &&
        m->inst[w->inst].w == w && m->inst[w->inst].state == MS__INST_STARTING) {
        life_do(ml, &(ms__life_event){.m = m, .ev = MS__EV_UP, .w = w, .inst = -1});
        return;
    }
    if (m->state == MS__MODEL_LOADING && ms__model_all_ready(m))
        life_do_ev(ml, m, MS__EV_ALL_READY);
}

void ms__life_worker_failed(ms__models *ml, ms__wproc *w, int code, const char *message)
{
    ms__model *m = w->model;
    if (m != NULL && w->standby) {
        life_do(ml, &(ms__life_event){.m = m,
                                      .ev = MS__EV_SWAP_FAILED,
                                      .w = w,
                                      .inst = -1,
                                      .code = code,
                                      .message = (char *)message});
        return;
    }
    if (m == NULL || m->state != MS__MODEL_LOADING) {
        ms__log_warn("worker %ld: %s", (long)w->pid, message);
        return;
    }
    life_do(ml,
            &(ms__life_event){
                .m = m, .ev = MS__EV_FAIL, .inst = -1, .code = code, .message = (char *)message});
}

void ms__life_worker_drained(ms__models *ml, ms__wproc *w, const json_t *msg)
{
    if (w->model == NULL) {
        ms__log_warn("worker %ld said \"drained\" unasked; ignored", (long)w->pid);
        return;
    }
    life_do(ml, &(ms__life_event){
                    .m = w->model, .ev = MS__EV_DRAINED, .w = w, .inst = -1, .msg = (json_t *)msg});
}

/* A worker of loading m died: m fails. */
static void loading_worker_exit(ms__models *ml, ms__model *m, const ms__wproc *w, bool was_ready,
                                const char *how)
{
    char msg[MS__ERRLEN];
    if (was_ready)
        snprintf(msg, sizeof msg, "worker %ld %s while the other instances were loading",
                 (long)w->pid, how);
    else
        snprintf(msg, sizeof msg, "worker %s before the model was ready", how);
    life_do(ml,
            &(ms__life_event){
                .m = m, .ev = MS__EV_FAIL, .inst = -1, .code = MS_E_LOAD_FAILED, .message = msg});
}

void ms__life_worker_exit(ms__models *ml, ms__wproc *w, int status)
{
    char how[512];
    ms__exit_text(status, how, sizeof how);
    ms__model *m = w->model;
    ms__measure_exit(ml, m, w, status, how, sizeof how);
    if (m == NULL) {
        ms__log_info("worker %ld %s", (long)w->pid, how);
        return;
    }
    if (w->standby) {
        ms__log_info("model \"%s\": worker %ld of the new version %s", m->tag, (long)w->pid, how);
        life_do(ml, &(ms__life_event){
                        .m = m, .ev = MS__EV_SWAP_FAILED, .w = w, .inst = -1, .message = how});
        return;
    }
    bool was_ready = w->ready;
    ms__worker_detach(w);
    ms__life_event e = {.m = m, .w = w, .inst = -1, .status = status, .message = how};
    if (m->state == MS__MODEL_READY) {
        e.ev = ms__swap_draining(m, w) ? MS__EV_DRAIN_LOST : MS__EV_LOST;
        life_do(ml, &e);
        return;
    }
    ms__log_info("model \"%s\": worker %ld %s", m->tag, (long)w->pid, how);
    if (m->state == MS__MODEL_LOADING) {
        loading_worker_exit(ml, m, w, was_ready, how);
    } else if (m->state == MS__MODEL_UNLOADING) {
        e.ev = MS__EV_WORKER_GONE;
        life_do(ml, &e);
    }
}
