/*
 * The life cycle of the daemon's models: a load admitted to its device's memory budget (or
 * waiting for memory), its workers spawned and watched, ready, failed, keep-alive, unload. It
 * sits on the registry, the supervisor and the budgets, and knows nothing of connections: the
 * requests that wait for a model are counted on the model (ms__model_waiter_add, registry.h),
 * and what becomes of a model is told upward through the settled callback.
 *
 * Files (models_int.h has their internals and the order of their calls): models.c (this set as
 * the event loop sees it), lifecycle.c (the owner of every model's state: one table of states,
 * events and actions), workers.c (what workers say, decoded and handed to the owner), the
 * policies load.c, instances.c and swap.c (what to do, told to the owner through its inbox,
 * inbox.c), attach.c and links.c (leases' arenas sent to workers), admission.c (the budget
 * decision), measure.c.
 */
#ifndef MS_DAEMON_MODELS_H
#define MS_DAEMON_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "daemon.h"
#include "launch.h"
#include "registry.h"
#include "supervisor.h"
#include "tally.h"

/* What became of a model, told to the layer above (which answers whoever waits for it). */
enum {
    MS__SETTLED_READY,    /* ready: waiting acquires get a lease, waiting loads their answer */
    MS__SETTLED_FAILED,   /* failed, or gone: waiting acquires and loads get code and message */
    MS__SETTLED_UNLOADED, /* its workers are gone: waiting unloads get their answer */
    MS__SETTLED_SWAPPED,  /* its swap ended: code 0 (the new version serves) or the error */
};
/* Called with m still registered; it must not unload or free m. message: NULL unless FAILED or
 * a failed swap. */
typedef void (*ms__settled_fn)(void *ctx, ms__model *m, int what, int code, const char *message);

/* The life-cycle owner's inbox (inbox.c): the events it has still to act on, and the settled
 * notices it has still to tell, each in order. */
typedef struct ms__life_event ms__life_event;
typedef struct ms__notice ms__notice;
typedef struct ms__inbox {
    ms__life_event *head, *tail;
    ms__notice *nhead, *ntail;
    bool running; /* the owner is acting on its events (lifecycle.c) */
} ms__inbox;

typedef struct ms__models {
    ms__registry reg;        /* owns models, clients, leases */
    ms__supervisor sup;      /* owns the workers */
    ms__budgets budgets;     /* per device */
    bool stopping;           /* the daemon stops: no load starts any more */
    int64_t next_measure_ns; /* next periodic measurement of loaded models */
    uint64_t evictions;      /* models evicted since the daemon started (metrics) */
    ms__tally tally;         /* loads and evictions per tag, kept after a model goes (metrics) */
    ms__settled_fn settled;  /* not NULL */
    void *settled_ctx;
    const ms__sup_ops *ops; /* spawn and stop (ms__launch_ops; a unit test's own) */
    ms__inbox inbox;        /* lifecycle.c's */
} ms__models;

/* ---- the set (models.c) ---- */
/* Empty set; cannot fail. settled is called for every settled model. */
void ms__models_init(ms__models *ml, ms__settled_fn settled, void *ctx);
/* Reads the budgets (--memory text, NULL for the defaults) and finds the worker program; workers
 * are watched in epfd (not owned). MS_E_INVAL with a message. */
int ms__models_start(ms__models *ml, int epfd, const char *memory, const char *log_level, char *err,
                     size_t errlen);
/* Kills and reaps the workers still there (only when the loop failed), then frees everything. */
void ms__models_free(ms__models *ml);
/* The daemon stops: no load starts any more, every model unloads, every worker gets SIGTERM. */
void ms__models_shutdown(ms__models *ml);
/* Measurement, keep-alive expiries (those models unload), restarts of crashed instances, SIGKILL
 * after the grace. Returns the next time to call again, or INT64_MAX. */
int64_t ms__models_timers(ms__models *ml, int64_t now);
/* True when nothing is loaded (failed models aside), no client is connected, no worker runs. */
bool ms__models_idle(const ms__models *ml);

/* ---- one model (lifecycle.c, the owner) ---- */
/* Starts a load of m (loads + 1): admission to its device's budget, then its instances workers.
 * m may wait for memory (state waiting) instead. On failure m is failed (FAILED told) and the
 * code is returned. */
int ms__start_load(ms__models *ml, ms__model *m);
/* Before a new tag is registered: at the model-count limit (MS__MODELS_MAX), the least recently
 * used idle model is evicted, so that registering tag does not fail with MS_E_LIMIT while an
 * idle model could make room. */
void ms__life_make_room(ms__models *ml, const char *tag);
/* Stops m's workers; once they are reaped UNLOADED is told, then m is loaded again when requests
 * with a spec wait for it, else FAILED is told and m removed. m may be gone when this returns. */
void ms__begin_unload(ms__models *ml, ms__model *m);
/* Re-checks every waiting model (after leases dropped, models unloaded, or time passed): admits,
 * evicts, times out with MS_E_NO_MEMORY, or forgets a load nobody waits for any more. Returns the
 * earliest load_timeout deadline still running, or INT64_MAX. */
int64_t ms__admission_run(ms__models *ml);

/* ---- a swap (lifecycle.c: swap.c prepares it) ---- */
/* Starts a swap of ready m to its spec with the fields of patch (a JSON object) replaced: the new
 * version loads beside the old (or, drain_first, after the old drained), then each instance
 * moves to it without a request lost; SWAPPED is told when it ends. *ctor_fd: the constructor
 * memfd that came with the request (-1: none), taken (set to -1) when the swap starts with it;
 * a new spec whose constructor is in a memfd needs one, unless it is the loaded version's
 * constructor (same python.constructor_sha256): then the loaded one's is used. Errors at once
 * (nothing started): MS_E_BUSY (not ready, or swapping), MS_E_SPEC (a bad patch; backend,
 * device and instances cannot change; a constructor memfd missing, refused, or not asked for),
 * MS_E_NO_MEMORY (both versions do not fit the budget: drain_first makes room; or the new one
 * alone does not). */
int ms__swap_start(ms__models *ml, ms__model *m, const json_t *patch, bool drain_first,
                   int *ctor_fd, char *err, size_t errlen);

/* ---- workers (workers.c) ---- */
/* Events on a worker's control socket (MS__EV_WCTRL: events, EPOLLOUT when what was queued for
 * it can go on) and pidfd (MS__EV_WPID). */
void ms__worker_on_ctrl(ms__models *ml, ms__wproc *w, uint32_t events);
void ms__worker_on_pid(ms__models *ml, ms__wproc *w);
/* Its stderr pipe (MS__EV_WERR): written through to the log, the last bytes kept. */
void ms__worker_on_stderr(ms__models *ml, ms__wproc *w);
/* After SIGCHLD: reaps the workers that have no pidfd. */
void ms__workers_reap_unwatched(ms__models *ml);

/* ---- leases' arenas to workers (attach.c) ---- */
/* Sends lease l's arena (l->arena_fd, which stays l's) to the worker of every instance of its
 * model that is up, ring i to instance i, and gives the instances' doors in doors[0..2 ninst):
 * instance i's page 0 read-only at 2i, its bell page at 2i + 1 (not owned: they stay the
 * instances'). MS_E_WORKER_LOST with a message when a worker cannot
 * take it. */
int ms__workers_attach(ms__lease *l, int *doors, char *err, size_t errlen);
/* Tells every worker of l's model that l is gone (nothing when l has no worker), after the links
 * to l's arena are dropped (ms__links_drop). */
void ms__workers_detach(ms__lease *l);

/* ---- links (links.c): another lease's arena mapped by a lease's workers ---- */
/* Links the arena of lease from to lease to (both of one client, to with a model): *arena is its
 * index for to's requests (records.h: in_arena), the same as before when it is linked already.
 * Every worker of to's model that is up maps it now; one that comes later, with its attaches.
 * MS_E_INVAL (the same lease, from without an arena), MS_E_UNLOADED (to's model is gone),
 * MS_E_LIMIT (MS__ARENA_LINKS linked already). */
int ms__links_add(ms__lease *to, ms__lease *from, int *arena, char *err, size_t errlen);
/* Every link to l's arena dropped: the workers that map it are told to unmap it ("unlink", read
 * between batches). Called before l goes. */
void ms__links_drop(ms__lease *l);
/* Sends w the links of lease l (after l's attach: a restart, a swap's new worker). */
int ms__links_send(ms__wproc *w, const ms__lease *l, char *err, size_t errlen);

/* ---- memory (admission.c, measure.c) ---- */
/* The budget record of device name ("host", "cuda:N"; "cpu" is not one), added with its default
 * when missing, its total memory looked up when still unknown; NULL when not a device. */
ms__budget_dev *ms__budget_find(ms__models *ml, const char *name);
/* The distinct budget devices m's instances are charged on ("host" for the host memory of GPU
 * instances only once measured), into names (room for MS__INSTANCES_MAX + 1). Returns how many. */
int ms__model_devices(const ms__model *m, const char **names);
/* Bytes charged on device dev by the models that hold memory there (ms__model_charge). */
uint64_t ms__budget_used(const ms__models *ml, const ms__budget_dev *dev);
/* True when m is charged in its devices' budgets (loading, ready or unloading). */
bool ms__model_charges_memory(const ms__model *m);
/* Replaces a ready m's charge with what its workers hold now (PSS on the host, NVML on a GPU). */
void ms__measure_model(ms__model *m);

#endif
