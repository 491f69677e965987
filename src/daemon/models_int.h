/* The model life cycle's internals, shared by models.c, load.c, workers.c, instances.c,
 * admission.c and measure.c (the layer above sees models.h only). Calls go one way: models.c and
 * workers.c use instances.c and load.c; instances.c uses load.c, which uses admission.c and
 * measure.c. swap.c is told of its workers' events by workers.c and of unloads by load.c, and
 * uses load.c and measure.c. */
#ifndef MS_DAEMON_MODELS_INT_H
#define MS_DAEMON_MODELS_INT_H

#include "models.h"

/* ---- load.c ---- */
/* m failed: its workers are stopped (and forgotten by it), FAILED is told with code and
 * message. */
void ms__model_fail(ms__models *ml, ms__model *m, int code, const char *message);
/* Every worker of loading m said ready: m is ready (measured), READY is told. */
void ms__model_ready(ms__models *ml, ms__model *m);
/* m's last worker is gone while unloading: UNLOADED is told; then m loads again for requests
 * with a spec that wait for it, or is removed (FAILED told first). */
void ms__unload_done(ms__models *ml, ms__model *m);
/* Unlinks w from its model, keeping its counters in the model's totals. */
void ms__worker_detach(ms__wproc *w);

/* ---- instances.c: per-instance supervision ---- */
/* Makes m's instance records, each with a new door (a load begins: m->spec.instances). */
int ms__instances_open(ms__model *m, char *err, size_t errlen);
/* Worker w (instance w->inst, already detached) of ready m ended with wait status status: its
 * clients' requests in flight on it are lost (the door's gen), nothing more goes to it (down),
 * and it restarts after its back-off; or m fails after too many crashes, quoting w's stderr. */
void ms__instance_lost(ms__models *ml, ms__model *m, const ms__wproc *w, int status);
/* The restarted worker w of ready m said ready: every lease is attached to it again ("resume")
 * and its door opened. */
void ms__instance_up(ms__models *ml, ms__model *m, ms__wproc *w);
/* Starts the instances whose back-off has passed; returns when the next one is due, or
 * INT64_MAX. */
int64_t ms__instances_due(ms__models *ml, int64_t now);

/* ---- workers.c (used by instances.c) ---- */
/* Attaches every lease of w's model to w again on ring w->inst, with "resume" (the ring goes on
 * from its tail), then tells w to open its door. MS_E_WORKER_LOST when w cannot take them. */
int ms__workers_reattach(ms__wproc *w, char *err, size_t errlen);

/* ---- swap.c: a swap's events (workers.c and load.c call these) ---- */
/* Standby worker w (a swap's new version) said ready / failed / exited (how: its exit text). */
void ms__swap_ready(ms__models *ml, ms__wproc *w);
void ms__swap_failed(ms__models *ml, ms__wproc *w, int code, const char *message);
void ms__swap_standby_exit(ms__models *ml, ms__wproc *w, const char *how);
/* The old worker w said "drained" (msg: its heads). */
void ms__swap_drained(ms__models *ml, ms__wproc *w, const json_t *msg);
/* The old worker w of m (already detached) died while it drained: true when the swap takes it
 * (its requests in flight are lost, its instance goes to the new worker), false when it was not
 * draining (an ordinary crash: ms__instance_lost). */
bool ms__swap_old_exit(ms__models *ml, ms__model *m, const ms__wproc *w);
/* m fails or unloads: a swap in progress stops (its new workers are stopped), its caller gets
 * code and message. Nothing when m has no swap. */
void ms__swap_abort(ms__models *ml, ms__model *m, int code, const char *message);

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
    ms__model *who[MS__MODELS_MAX];
    ms__holder h[MS__MODELS_MAX];
    bool evict[MS__MODELS_MAX]; /* plan EVICT: evict who[i] */
    char need_s[32], free_s[32], budget_s[32];
} ms__admission;

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

/* ---- measure.c ---- */
/* Measures every loaded model when the period has passed; returns the next time to. */
int64_t ms__measure_due(ms__models *ml, int64_t now);
/* w of model m was reaped: confirms its process is gone (and, on a GPU, that NVML no longer
 * lists it), logging what it returned. */
void ms__verify_release(const ms__model *m, const ms__wproc *w);

#endif
