/*
 * The daemon's bookkeeping: models by tag, clients (connections), leases, keep-alive deadlines.
 * Data and its setters: no sockets, no processes (the only system calls are closing and unmapping
 * a lease's arena when the lease goes, an instance's door when its model goes or loads again, and
 * a model's constructor memfd when its spec is replaced or the model goes). Time comes from an
 * injectable clock so that keep-alive is testable. A model's state (ms__model.state) changes only
 * through the setters below, and those are called only by the life-cycle owner
 * (lifecycle.c); the life cycle's policies (load.c, instances.c, swap.c) and measure.c write the
 * other fields of a model they work on (its instances, its charge, a swap's new spec).
 *
 * Ownership: the registry owns its models, clients and leases. A model's workers (ms__wproc) are
 * owned by the supervisor; the registry only links them to the model and counts their leases.
 */
#ifndef MS_DAEMON_REGISTRY_H
#define MS_DAEMON_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "../common/arena.h"
#include "../common/records.h"
#include "../common/ring.h"
#include "../common/spec.h"
#include "../common/util.h"
#include "daemon.h"
#include "owner.h"

/* waiting: admitted to nothing yet, it waits for memory in its device's budget (no worker). */
enum {
    MS__MODEL_LOADING = 0,
    MS__MODEL_READY,
    MS__MODEL_FAILED,
    MS__MODEL_UNLOADING,
    MS__MODEL_WAITING
};
/* "loading", "ready", "failed", "unloading", "waiting". */
const char *ms__model_state_name(int state);

/* An instance: up (its worker serves), starting (a restarted worker loads), down (it crashed and
 * waits for its restart). */
enum { MS__INST_UP = 0, MS__INST_STARTING, MS__INST_DOWN };
/* "up", "starting", "down". */
const char *ms__inst_state_name(int state);

/* One instance of a loaded model, for as long as it is loaded: ring i of every lease and door i
 * of every client; its worker process comes and goes (restarts, instances.c). */
typedef struct ms__instance {
    ms__door_fds door_fds; /* owned, -1 when none: the door (ring.h), kept across restarts */
    ms__door *door;        /* owned mapping: the daemon writes its gen and down */
    ms__wproc *w;          /* its worker (not owned), NULL while down */
    int state;             /* MS__INST_* */
    unsigned restarts;     /* workers started after a crash, this load */
    int64_t backoff_ns;    /* the next restart's delay */
    int64_t restart_at_ns; /* down: when it starts again */
    int64_t up_since_ns;   /* up: since */
    char last_crash[40];   /* "SIGKILL", "exit 3", "OOM kill", "" before any */
} ms__instance;

/* A swap in progress (swap.c; opaque here). */
typedef struct ms__swap ms__swap;

typedef struct ms__client ms__client;
typedef struct ms__lease ms__lease;
LIST_HEAD(ms__lease_list, ms__lease);
LIST_HEAD(ms__client_list, ms__client);

struct ms__model {
    char tag[MS__TAG_MAX + 1];
    ms__spec spec;
    /* Who loaded it (owner.h): set by the request that made the record, kept for its life (zero,
     * root, until then). */
    ms__owner owner;
    json_t *spec_json; /* canonical */
    /* Owned, -1 when none: the sealed memfd holding the python constructor's pickle when spec
     * says python.constructor_size (common/ctorfd.h), checked when it came with the request
     * that made (or replaced) this spec; every worker of the model gets a copy as fd 6. Goes
     * with the spec: replaced with it, closed with the record. */
    int ctor_fd;
    int state;
    unsigned loads;   /* loads started */
    int leases;       /* leases on this model (counted until released or revoked) */
    int waiters;      /* requests (acquire, load) that wait for it: ms__model_waiter_add */
    int spec_waiters; /* those of them that carry a spec (they load it again after an unload) */
    struct ms__lease_list lease_list;      /* its leases */
    ms__wproc *workers[MS__INSTANCES_MAX]; /* its live worker processes, in no order */
    int nworkers;
    ms__instance inst[MS__INSTANCES_MAX]; /* [0, ninst): spec.instances once its workers start */
    int ninst;
    int64_t
        crash_ns[MS__SPEC_RESTARTS_MAX]; /* its crashes within the restart window, oldest first */
    int ncrash;
    json_t *signature; /* of the ready model, NULL before */
    /* What the model is charged in its device's budget: the estimate (spec "memory", else the
     * backend's; after a swap, the new version's) until loaded, then the measured figure (host:
     * the workers' proportional set size; GPU: their memory as NVML reports it, the estimate's
     * share while NVML cannot list a worker), re-measured while loaded. */
    uint64_t memory_bytes;
    uint64_t estimate_bytes;
    bool measured;       /* memory_bytes is a measurement */
    uint64_t host_bytes; /* a GPU model's workers' proportional set size on the host */
    /* Per instance [0, spec.instances): its device ("cpu", "cuda:N"), chosen at admission (the
     * spec's device, or placement.c's answer for device "auto" and devices), kept across
     * restarts and swaps; what it is charged on that device (memory_bytes is their sum: the
     * estimate split evenly until measured); and, on a GPU, its worker's proportional set size
     * on the host (host_bytes is their sum): 0 while the model loads (a GPU load is not checked
     * against the host budget), measured from ready on (measure.c: at ready, every 2 s, at each
     * status) and counted as used on "host", where a model with no instance on the host is never
     * evicted for room (admission.c). */
    char inst_device[MS__INSTANCES_MAX][MS__SPEC_DEVICE_LEN];
    uint64_t inst_bytes[MS__INSTANCES_MAX];
    uint64_t inst_host_bytes[MS__INSTANCES_MAX];
    int64_t wait_since_ns, wait_deadline_ns; /* waiting: since, and until load_timeout */
    int64_t load_since_ns; /* when the last load began: it fails at + load_timeout (watchdog.c) */
    int64_t last_used_ns;
    bool idle_armed; /* keep-alive running: unload at idle_deadline_ns */
    int64_t idle_deadline_ns;
    int error_code; /* of a failed model */
    char error[MS__ERRLEN];
    uint64_t requests_done, batches_done; /* counters of workers that are gone */
    ms__swap *swap;      /* owned by swap.c: the swap in progress, NULL when none */
    uint64_t swap_bytes; /* charged beside memory_bytes while a swap's new version loads */
    /* For metrics, over the life of this record: each instance's counters of workers that are
     * gone, and its restarts. */
    ms__stats_sum inst_gone[MS__INSTANCES_MAX];
    uint64_t inst_restarts[MS__INSTANCES_MAX];
};

struct ms__lease {
    uint64_t id;
    ms__client *client;
    ms__model *model;      /* NULL once dead: its model was unloaded */
    ms__wproc *worker;     /* NULL once its worker is gone */
    int arena_fd;          /* owned, -1 when none */
    ms__arena_header *hdr; /* owned mapping of the arena's header page, NULL when none */
    /* Leases of the same client whose arenas this lease's workers map too (links.c): links[k-1]
     * is the id of the lease whose arena is linked arena k (records.h), 0 where none. */
    uint64_t links[MS__ARENA_LINKS];
    LIST_ENTRY(ms__lease) by_client; /* in its client's lease_list */
    LIST_ENTRY(ms__lease) by_model;  /* in its model's lease_list, while it has a model */
};

struct ms__client {
    pid_t pid;
    uid_t uid;
    void *user; /* the server's connection */
    int nleases;
    struct ms__lease_list lease_list; /* its leases */
    LIST_ENTRY(ms__client) link;      /* in the registry's clients */
};

typedef int64_t (*ms__clock_fn)(void *ctx);

typedef struct ms__registry {
    ms__clock_fn clock; /* CLOCK_MONOTONIC ns; NULL: ms__now_ns */
    void *clock_ctx;
    ms__model *models[MS__MODELS_TABLE]; /* in order of creation */
    int nmodels;
    struct ms__client_list clients; /* newest first */
    int nclients;
    int nleases;
    uint64_t next_lease_id;
} ms__registry;

void ms__registry_init(ms__registry *r, ms__clock_fn clock, void *clock_ctx);
/* Frees every client, lease (closing its arena) and model. Workers are left to the supervisor. */
void ms__registry_destroy(ms__registry *r);
int64_t ms__registry_now(const ms__registry *r);

/* ---- clients ---- */
/* New client record for a connection. MS_E_LIMIT beyond MS__CLIENTS_MAX. */
int ms__client_add(ms__registry *r, pid_t pid, uid_t uid, void *user, ms__client **out, char *err,
                   size_t errlen);
/* Releases every lease of c and frees c. For each lease still served by a worker, on_release
 * (when non-NULL) is called first, so that the caller can tell the worker. */
void ms__client_remove(ms__registry *r, ms__client *c, void (*on_release)(ms__lease *, void *),
                       void *ctx);
/* The lease with this id held by c, or NULL. */
ms__lease *ms__client_lease(const ms__client *c, uint64_t id);

/* ---- models ---- */
ms__model *ms__registry_find(const ms__registry *r, const char *tag);
/* New model in state loading (loads 0: call ms__model_begin_load). The spec is copied; the
 * model has no constructor memfd yet (ms__model_ctor_set).
 * At MS__MODELS_MAX models that count (ms__registry_counted) it first frees the least recently
 * used failed model without leases or workers, if there is one. MS_E_INVAL for a bad tag,
 * MS_E_LIMIT beyond MS__MODELS_MAX (the caller evicts idle models first: ms__life_make_room) or
 * a table full of unloading ones, MS_E_NOMEM. */
int ms__registry_add(ms__registry *r, const char *tag, const ms__spec *spec, ms__model **out,
                     char *err, size_t errlen);
/* By how many bytes m's measured memory exceeds the memory its spec gave (0: within it, not
 * measured yet, or no memory in the spec). */
uint64_t ms__model_over_memory(const ms__model *m);
/* The models that count toward MS__MODELS_MAX: every registered one but those unloading. */
int ms__registry_counted(const ms__registry *r);
/* The least recently used model that is ready, not swapping, with no lease and no request
 * waiting for it (one that can be evicted), or NULL. */
ms__model *ms__registry_lru_idle(const ms__registry *r);
/* Frees m. Its leases become dead (their holders can still release them). Its workers must have
 * been detached before. */
void ms__registry_remove(ms__registry *r, ms__model *m);

/* 0 when spec equals m's; else MS_E_SPEC_CONFLICT, the message naming each field (or constructor
 * part) that differs with both values. */
int ms__model_spec_check(const ms__model *m, const ms__spec *spec, char *err, size_t errlen);
/* Replaces m's spec (a failed model retried with another spec). */
int ms__model_spec_replace(ms__model *m, const ms__spec *spec, char *err, size_t errlen);
/* Gives m the constructor memfd of its spec (taken; -1: none), closing the one it had. */
void ms__model_ctor_set(ms__model *m, int ctor_fd);

/* State changes. */
void ms__model_begin_load(ms__registry *r, ms__model *m); /* loading, loads + 1, error cleared */
/* Links w to m as the worker of its instance w->inst (state starting). MS_E_LIMIT past
 * MS__INSTANCES_MAX. */
int ms__model_add_worker(ms__model *m, ms__wproc *w);
/* Closes and unmaps the doors of m's instances; ninst 0. */
void ms__model_instances_free(ms__model *m);
/* Unlinks w from m (and from its instance): leases served by w lose their worker. */
void ms__model_detach_worker(ms__model *m, ms__wproc *w);
/* True when m has workers and every one said ready. */
bool ms__model_all_ready(const ms__model *m);
/* ready: memory and signature from the workers, every instance up; keep-alive starts when there
 * is no lease. */
void ms__model_set_ready(ms__registry *r, ms__model *m);
void ms__model_set_failed(ms__model *m, int code, const char *message);
void ms__model_set_unloading(ms__model *m);
/* Admitted to its device's budget (it may have waited): loading, its workers start now. */
void ms__model_set_admitted(ms__model *m);
/* Waits for memory from now, until now + its load_timeout. */
void ms__model_set_waiting(ms__model *m, int64_t now);
/* What m is charged until it is measured: its estimate (a load begins). */
void ms__model_set_estimate(ms__model *m, uint64_t bytes);
/* A swap's new version serves: its estimate is m's from now (what a GPU instance NVML cannot
 * measure is charged); what m is charged now is left as it is. */
void ms__model_new_estimate(ms__model *m, uint64_t bytes);
/* memory_bytes split evenly over m's instances (inst_bytes): an estimate, or a total the
 * workers said. */
void ms__model_split_memory(ms__model *m);
/* memory_bytes and inst_bytes from what each worker said in "ready". */
void ms__model_memory_from_workers(ms__model *m);
/* The bytes m is charged on budget device dev ("host", "cuda:N"), whatever its state: each of
 * its instances on dev (with its share of swap_bytes), and on "host" the host memory of its GPU
 * instances too. */
uint64_t ms__model_charge(const ms__model *m, const char *dev);
/* The device of instance i as the budgets name it: "host" or "cuda:N". */
const char *ms__model_inst_budget(const ms__model *m, int i);
/* A request starts or stops waiting for m (the protocol layer counts them here, so that the
 * model life cycle knows whether anyone waits without knowing connections). */
void ms__model_waiter_add(ms__model *m, bool with_spec);
void ms__model_waiter_drop(ms__model *m, bool with_spec);
/* A load of a model already there: last used now, and a running keep-alive starts again. */
void ms__model_touch(ms__registry *r, ms__model *m);

/* ---- leases ---- */
/* A lease of client c on the ready model m (every instance serves it: the worker counted is the
 * live one with the fewest leases, NULL when none is up). Takes
 * ownership of arena_fd and hdr on success only. MS_E_LIMIT past MS__CLIENT_LEASES_MAX per client
 * or MS__LEASES_MAX in all; MS_E_INVAL when m is not ready. */
int ms__lease_add(ms__registry *r, ms__client *c, ms__model *m, int arena_fd, ms__arena_header *hdr,
                  ms__lease **out, char *err, size_t errlen);
/* Frees l (closing its arena); its model's keep-alive starts at its last lease. */
void ms__lease_release(ms__registry *r, ms__lease *l);
/* Force-unload: every lease of m gets its arena marked MS__ARENA_UNLOADED and becomes dead. */
void ms__model_revoke_leases(ms__registry *r, ms__model *m);
/* "12, 34": the distinct pids of the clients holding leases on m. */
void ms__model_lease_pids(const ms__model *m, char *buf, size_t buflen);

/* ---- keep-alive ---- */
/* Earliest keep-alive deadline; false when none runs. */
bool ms__registry_next_deadline(const ms__registry *r, int64_t *deadline_ns);
/* A ready model without leases whose keep-alive has passed (its keep-alive is disarmed), or
 * NULL. Call until NULL. */
ms__model *ms__registry_expired(ms__registry *r);

#endif
