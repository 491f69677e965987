/* The model life cycle's internals, shared by its files (the layer above sees models.h only).
 * Calls go one way, each file using only those below it (scripts/check-layers.py checks it on the
 * object files):
 *
 *   models.c      the set as the event loop sees it
 *   workers.c     decodes what a worker says and its exit; hands each to the owner
 *   lifecycle.c   the owner: every model's state, changed only here, by one table
 *   load.c, instances.c, swap.c   policies: decide, and tell the owner through its inbox
 *   attach.c, links.c, admission.c, measure.c, inbox.c   below the policies
 *
 * A policy never calls the owner: it posts an event to the owner's inbox (ms__inbox_post), which
 * the owner acts on once the policy has returned. So nothing a policy holds (a swap record, a
 * model) goes away under it. Settled notices are queued the same way (ms__notice_post) and told
 * by the owner once its events are done, while their models are still registered. */
#ifndef MS_DAEMON_MODELS_INT_H
#define MS_DAEMON_MODELS_INT_H

#include "models.h"

/* ---- lifecycle.c: the owner ---- */
/* A model's state as the owner sees it: the registry's state, with a swap's two phases apart
 * from ready (the registry says ready through a swap: the old version serves). */
enum {
    MS__LIFE_NEW = 0,  /* just registered, never loaded (registry: loading, loads 0) */
    MS__LIFE_WAITING,  /* waits for memory in its devices' budgets */
    MS__LIFE_LOADING,  /* its workers load */
    MS__LIFE_READY,    /* it serves */
    MS__LIFE_SWAPPING, /* it serves while a new version loads, or its instances move to it */
    MS__LIFE_DRAINING, /* drain-first swap: the old workers drain before the new ones load */
    MS__LIFE_FAILED,
    MS__LIFE_UNLOADING, /* its workers stop */
    MS__LIFE_NSTATES
};
/* What happens to a model (the owner's input). */
enum {
    MS__EV_LOAD = 0,      /* a load is asked for */
    MS__EV_ADMIT,         /* admission: it fits, its workers start */
    MS__EV_WAIT,          /* admission: it waits for memory */
    MS__EV_RECHECK,       /* waiting: admission looks again */
    MS__EV_FORGET,        /* waiting: nobody waits for it any more */
    MS__EV_FAIL,          /* it fails (code, message) */
    MS__EV_ALL_READY,     /* every worker of its load said ready */
    MS__EV_UNLOAD,        /* unload asked (request, keep-alive, eviction) */
    MS__EV_STOP,          /* the daemon stops */
    MS__EV_WORKER_GONE,   /* a worker of it was reaped while it unloads (w) */
    MS__EV_RELOAD,        /* its last worker is gone, and requests with a spec wait: load again */
    MS__EV_REMOVE,        /* its last worker is gone and nobody waits with a spec: it goes */
    MS__EV_LOST,          /* an instance's worker died (w, status) */
    MS__EV_UP,            /* a restarted instance's worker said ready (w) */
    MS__EV_RESTART,       /* an instance's back-off passed (inst) */
    MS__EV_SWAP,          /* a swap starts: its new workers load (swap.c spawned them) */
    MS__EV_SWAP_DRAIN,    /* a drain-first swap starts: the old workers drain first */
    MS__EV_SWAP_READY,    /* a new version's worker said ready (w) */
    MS__EV_SWAP_FAILED,   /* a new version's worker failed (w, code, msg), or died before ready
                           * (code 0, msg its exit text) */
    MS__EV_DRAINED,       /* an old worker said "drained" (w, msg: its heads) */
    MS__EV_DRAIN_LOST,    /* an old worker died while it drained (w) */
    MS__EV_SWAP_LOAD,     /* drain-first: every old worker is gone, the new version loads */
    MS__EV_SWAP_ROLLBACK, /* drain-first: the new version failed (code, msg): the old loads again */
    MS__EV_SWAP_END,      /* the swap ends: code 0 (the new version serves) or the error (msg;
                           * status 1: it was stopped, logged so) */
    MS__EV_HUNG,          /* the watchdog: instance inst's worker ran a batch (or stopped turning)
                           * past call_timeout (code: for how many ms) */
    MS__EV_N
};
/* "ready", ..., for logs and tests. */
const char *ms__life_state_name(int state);
/* m's state as the owner sees it. */
int ms__life_state(const ms__model *m);
/* The state the table leads to from state on ev (-1: the model goes), -2 when ev is ignored in
 * state. */
int ms__life_next(int state, int ev);
/* The table, for tests and docs: how many rows; row i's state, event and next state, and how
 * often it was taken since the program started. */
int ms__life_rows(void);
uint64_t ms__life_row(int i, int *state, int *ev, int *next);
/* A worker's news, decoded by workers.c: w said ready / failed; w was reaped (status, how: its
 * text); w said "drained" (msg). The owner routes each to the model's state. */
void ms__life_worker_ready(ms__models *ml, ms__wproc *w);
void ms__life_worker_failed(ms__models *ml, ms__wproc *w, int code, const char *message);
void ms__life_worker_exit(ms__models *ml, ms__wproc *w, int status);
void ms__life_worker_drained(ms__models *ml, ms__wproc *w, const json_t *msg);
/* Keep-alive expiries and due restarts; returns the next time, or INT64_MAX. */
int64_t ms__life_timers(ms__models *ml, int64_t now);
/* The daemon stops: every model unloads. */
void ms__life_shutdown(ms__models *ml);

/* ---- inbox.c: the owner's inbox ---- */
/* One event for the owner: m (NULL never), ev (MS__EV_*), its worker w (or NULL), an instance, a
 * code with its message (copied), a wait status, a JSON payload (a reference taken). */
struct ms__life_event {
    ms__model *m;
    int ev;
    ms__wproc *w;
    int inst;
    int code;
    int status;
    json_t *msg;
    char *message;  /* owned, NULL when none */
    ms__swap *swap; /* SWAP, SWAP_DRAIN: the swap prepared (swap.c), taken by the model */
    ms__life_event *next;
};
/* "load", "admit", ...: an event's name, for logs and tests. */
const char *ms__life_event_name(int ev);
/* Queues an event (policies: their decision; workers.c through the owner). False when out of
 * memory (logged). */
bool ms__inbox_post(ms__models *ml, const ms__life_event *e);
/* The same for an event with only a model / with a code and message (FAIL, SWAP_END, ...). */
void ms__inbox_event(ms__models *ml, ms__model *m, int ev);
void ms__inbox_error(ms__models *ml, ms__model *m, int ev, int code, const char *message);
/* The oldest event (the caller frees it with ms__inbox_free), or NULL. */
ms__life_event *ms__inbox_take(ms__models *ml);
void ms__inbox_free(ms__life_event *e);
/* Drops the events and notices of m (it goes). */
void ms__inbox_forget(ms__models *ml, const ms__model *m);
/* Queues a settled notice (models.h) / tells every queued one, in order. */
void ms__notice_post(ms__models *ml, ms__model *m, int what, int code, const char *message);
void ms__notice_flush(ms__models *ml);
/* Frees what is queued (the set goes). */
void ms__inbox_clear(ms__models *ml);

/* ---- load.c: a load's policy ---- */
/* Unlinks w from its model, keeping its counters in the model's totals. */
void ms__worker_detach(ms__wproc *w);
/* A load of m begins (its counters, its estimate, logged). */
void ms__load_begin(ms__models *ml, ms__model *m);
/* The backend's estimate of spec (ms__backend_estimate), its files opened with the rights of m's
 * owner (owner.h): 0 when they cannot be read that way. */
uint64_t ms__load_backend_estimate(const ms__model *m, const ms__spec *spec);
/* The model-count limit: when MS__MODELS_MAX models count (registry.h), the least recently used
 * idle one is evicted (UNLOAD posted, logged, tallied) to make room for tag. */
void ms__load_make_room(ms__models *ml, const char *tag);
/* After a measurement: each python model's figure is kept for its tag's next load (its estimate
 * when its spec has no memory), and each device over its budget evicts idle models, least
 * recently used first, until it is not (UNLOAD posted for each, logged, tallied). */
void ms__load_measured(ms__models *ml);
/* Admission's decision for m now, posted: ADMIT, WAIT, FAIL, or nothing (it waits on); the idle
 * models it evicts get UNLOAD first. */
void ms__load_decide(ms__models *ml, ms__model *m, int64_t now);
/* Makes m's instances and spawns their workers (m admitted): FAIL posted when one cannot. */
void ms__load_spawn(ms__models *ml, ms__model *m);
/* Logs of ready and unloaded. */
void ms__load_log_ready(const ms__model *m);
void ms__load_log_unloaded(const ms__model *m);

/* ---- instances.c: per-instance supervision's policy ---- */
/* Makes m's instance records, each with a new door (a load begins: m->spec.instances). */
int ms__instances_open(ms__model *m, char *err, size_t errlen);
/* Links w, just spawned for instance w->inst, to m as that instance's worker. */
int ms__instance_adopt(ms__model *m, ms__wproc *w, char *err, size_t errlen);
/* Worker w (instance w->inst, already detached) of ready m ended with wait status status: its
 * clients' requests in flight on it are lost (the door's gen), nothing more goes to it (down),
 * and it restarts after its back-off; or FAIL is posted after too many crashes, quoting w's
 * stderr. */
void ms__instance_lost(ms__models *ml, ms__model *m, const ms__wproc *w, int status,
                       const char *how);
/* The restarted worker w of ready m said ready: every lease is attached to it again ("resume")
 * and its door opened (else it is stopped: one more crash). */
void ms__instance_up(ms__models *ml, ms__model *m, ms__wproc *w);
/* Instance i of m starts again (its back-off passed); FAIL posted when it cannot, too often. */
void ms__instance_restart(ms__models *ml, ms__model *m, int i, int64_t now);
/* The watchdog found instance i of m stuck for stuck_ms (past call_timeout): its door says so
 * (hung_gen, for its callers) and its worker is killed; its exit is LOST as any crash. */
void ms__instance_hung(ms__models *ml, ms__model *m, int i, int stuck_ms);
/* The instances of m whose back-off has passed, into due (room for MS__INSTANCES_MAX); returns
 * how many, and the next time one is due after them in *next (unchanged when none). */
int ms__instances_due(const ms__model *m, int64_t now, int *due, int64_t *next);

/* ---- attach.c (below instances.c and swap.c) ---- */
/* Attaches every lease of w's model to w again on ring w->inst, with "resume" (the ring goes on
 * from its tail), then tells w to open its door. MS_E_WORKER_LOST when w cannot take them. */
int ms__workers_reattach(ms__wproc *w, char *err, size_t errlen);

/* ---- swap.c: a swap's policy (each step posts what follows to the owner) ---- */
/* ms__swap_start's checks (models.h) and a new swap record in *out, not yet m's; unless
 * drain_first, its new workers are spawned (standby). Nothing left started on error. */
int ms__swap_prepare(ms__models *ml, ms__model *m, const json_t *patch, bool drain_first,
                     int *ctor_fd, ms__swap **out, char *err, size_t errlen);
/* m takes the prepared swap sw (m->swap, charged beside the old version). */
void ms__swap_attach(ms__model *m, ms__swap *sw);
/* Drain-first: every old worker is told to drain. */
void ms__swap_drain_old(ms__models *ml, ms__model *m);
/* True while a drain-first swap's old workers drain (no new worker spawned yet). */
bool ms__swap_drain_phase(const ms__model *m);
/* A standby worker w said ready / failed or died before ready (code, message). */
void ms__swap_ready(ms__models *ml, ms__wproc *w);
void ms__swap_failed(ms__models *ml, ms__wproc *w, int code, const char *message);
/* The old worker w said "drained" (msg: its heads); died while it drained. */
void ms__swap_drained(ms__models *ml, ms__wproc *w, const json_t *msg);
void ms__swap_drain_lost(ms__models *ml, ms__model *m, const ms__wproc *w);
/* True when the old worker w of m (exited) was draining for m's swap. */
bool ms__swap_draining(const ms__model *m, const ms__wproc *w);
/* Drain-first, every old worker gone: the new version loads. */
void ms__swap_load_new(ms__models *ml, ms__model *m);
/* Drain-first, the new version failed (code, message): the old one loads again. */
void ms__swap_rollback(ms__models *ml, ms__model *m, int code, const char *message);
/* The swap ends: its standby workers stop, the new version becomes m's when code is 0 and the
 * swap completed, its record goes. Nothing when m has no swap. */
void ms__swap_end(ms__models *ml, ms__model *m);

/* ---- admission.c ---- */
/* Reads the budgets (--memory text, NULL for the defaults) and the devices' total memory. */
int ms__admission_init(ms__budgets *b, const char *memory, char *err, size_t errlen);

/* The budget decision for one load on one of its devices, and what the messages about it say. */
typedef struct ms__admission {
    ms__budget_dev *dev; /* NULL: no budget applies (plan FITS) */
    int plan;            /* MS__ADMIT_* (budget.h) */
    uint64_t need;       /* what m needs on dev: ms__model_charge */
    uint64_t budget, free_now;
    int n; /* the other models holding memory on dev */
    ms__model *who[MS__MODELS_TABLE];
    ms__holder h[MS__MODELS_TABLE];
    bool evict[MS__MODELS_TABLE]; /* plan EVICT: evict who[i] */
    char need_s[32], free_s[32], budget_s[32];
} ms__admission;

/* Device dev over its budget (after a measurement): a->who, a->h and a->budget filled, a->evict
 * marking the idle models to evict (LRU first) until it is not. Returns how many are marked. */
int ms__admission_over(ms__models *ml, ms__budget_dev *dev, ms__admission *a);

/* Chooses the device of each instance of m (m->inst_device) from its spec: the spec's device,
 * or, for device "auto" and devices, placement.c's answer over the budgets (by free bytes now;
 * when nothing fits now, by what evicting idle models would free, so that admission then evicts
 * there; when even that is not enough, by budget alone, so that admission waits there). A
 * "cuda:N" that NVML says does not exist is MS_E_DEVICE; a model no budget can ever hold,
 * MS_E_NO_MEMORY; with the message in err. */
int ms__admission_place(ms__models *ml, ms__model *m, char *err, size_t errlen);
/* Plans the load of m (its estimate set, its instances placed) against device dev's budget. */
void ms__admission_plan(ms__models *ml, const ms__model *m, const char *dev, ms__admission *a);
/* True when the unloads in progress on a's device will free enough: the load waits on. */
bool ms__admission_unloads_cover(const ms__admission *a);
/* Messages: m is larger than the whole budget; m waits (logged); m timed out waiting. */
void ms__admission_never_text(const ms__admission *a, const ms__model *m, char *buf, size_t buflen);
void ms__admission_log_wait(const ms__admission *a, const ms__model *m);
void ms__admission_timeout_text(const ms__admission *a, const ms__model *m, char *buf,
                                size_t buflen);

/* ---- watchdog.c: a policy over every model ---- */
/* Posts HUNG for each instance whose worker ran one batch, or stopped turning, past its model's
 * call_timeout (stats.h: ms__stats_stuck_ns), and FAIL (MS_E_TIMEOUT, naming the phase) for a
 * model loading past its load_timeout, after killing its workers. Returns when to look again. */
int64_t ms__watchdog_run(ms__models *ml, int64_t now);

/* ---- measure.c ---- */
/* Measures every loaded model when the period has passed; returns the next time to. */
int64_t ms__measure_due(ms__models *ml, int64_t now);
/* w of model m was reaped: confirms its process is gone (and, on a GPU, that NVML no longer
 * lists it), logging what it returned. */
void ms__verify_release(const ms__model *m, const ms__wproc *w);
/* w of m died with status: when of a SIGKILL the daemon did not send, how (what
 * ms__exit_text said) is replaced by the verdict: the kernel's OOM killer (its memory
 * cgroup's oom_kill count went up, oomkill.h) or, with no count to read, most likely it; with
 * its last measured memory and its device's budget. Else how is left as it is. */
void ms__measure_exit(ms__models *ml, const ms__model *m, const ms__wproc *w, int status, char *how,
                      size_t howlen);

#endif
