/*
 * The data plane in shared memory: how a client hands a request to a worker and gets the answer
 * back without a system call when both are busy.
 *
 * Two kinds of shared memory:
 *
 *  - A worker's door (two pages per instance, memfds the daemon creates and gives to the worker
 *    and to every client of its model: page 0 read-write to the worker, read-only to clients;
 *    the bell page read-write to all, see ms__door). `bell` is the futex the worker sleeps on: a
 * client bumps it after it publishes a request and makes the futex call only when `sleeping` says
 * the worker sleeps. `inflight` counts requests submitted to the worker and not yet completed; a
 *    client sends each request to the instance with the fewest. `hints` has a bit per attached
 *    client, set by the client when it publishes: the worker looks at the rings of those clients
 *    only, so that hundreds of idle clients cost it nothing. The worker tells each client its bit
 *    (ring.hint, 1-based; 0 until the worker has attached it: the client then sets `scan_all`).
 *
 *  - In each client's arena (arena.h), after the header page, one ring set per instance of the
 *    model: a submission ring of slot numbers and MS__RING_SLOTS slots. A slot holds one request
 *    record (records.h), its response record, and a state word the client sleeps on:
 *        FREE --client fills req--> SUBMITTED --worker writes resp--> DONE --client reads--> FREE
 *    The client publishes a slot number at ring.entries[tail % SLOTS] and then bumps tail. The
 *    worker keeps its own head in private memory and never trusts anything in the arena: it copies
 *    a record out before it decodes it, and a tail that runs more than SLOTS ahead is an error.
 *
 * One door serves one instance of a model for as long as the model is loaded: when the instance's
 * worker dies the daemon keeps the door, sets `down` and then bumps `gen`, and starts another
 * worker on the same door. A client reads gen, then down (acquire), and submits only when down is
 * 0, stamping the slot with the gen it read; a request whose gen is no longer the door's was lost
 * with its worker (the client looks every 100 ms while it waits, and frees the slot itself). The
 * restarted worker is attached to every lease again with "resume" (its head starts at the ring's
 * tail: what was published before belongs to the dead worker), never touches a slot stamped with
 * another gen than its own, and clears `inflight` and then `down` (release) once the daemon says
 * "open", after the attaches: a client that sees down == 0 publishes after that worker's head.
 *
 * A swap (src/daemon/swap.c) replaces a door's worker without touching gen or down: the old worker
 * stops between two batches and reports its head in each ring ("drained"), the new one takes the
 * door over and starts each ring at that head, so every slot is served exactly once.
 *
 * Wake-ups. Each side spins a bounded time on its word (ms__spin_step: pause, then sched_yield),
 * then says it sleeps (door.sleeping, slot.waiting), looks once more and futex-waits; whoever
 * changes the word makes the futex call only when the other said it sleeps (sequentially
 * consistent: either the waker sees the flag or the sleeper sees the change). So a busy model
 * costs no system call, and a call to an idle one pays one wake-up, the client's to the worker:
 *  - The client spins for its answer only when the worker's recent answers (slot.done_ns,
 *    stamped by the worker, minus submit_ns; an average per model handle, kept apart for requests
 *    that had to wake the worker) say it comes within about two wake-ups (50 us): then for what
 *    they took, half as long again plus 20 us, at most 100 us. A longer call sleeps at once and
 *    the worker wakes it: with more processes than cores, a spinning client would take the CPU
 *    the worker and the other clients need (bench/waiting.py measures it).
 *  - The scheduler tends to run a woken task on its waker's CPU. When the worker last woke up on
 *    the client's CPU (door.cpu), a spinning client would keep it from running (sched_yield does
 *    not reliably hand the CPU over): the client sleeps at once instead. The worker asks for a
 *    short time slice (serve.c), so that on EEVDF its wake-up usually preempts the client there
 *    and then, and the answer is done by the time the client looks.
 *  - After a call that came after a quiet spell, a worker whose clients all sent from its own
 *    CPU (slot.cpu) sleeps again at once instead of spinning on the CPU they need. A request that
 *    comes soon after means a busy model: the worker spins again, as before.
 * Every one of these hints (cpu, done_ns) is a figure only: a wrong one costs time, never an
 * answer.
 */
#ifndef MS_RING_H
#define MS_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "records.h"

/* MS__RING_SLOTS, MS__SLOT_BYTES, MS__RINGSET_BYTES, MS__RINGS_MAX: see arena.h (the layout). */

enum { MS__SLOT_FREE = 0, MS__SLOT_SUBMITTED = 1, MS__SLOT_DONE = 2 };

typedef struct ms__ring {
    _Atomic uint32_t tail; /* client: slot numbers published */
    uint32_t pad0[15];
    _Atomic uint32_t hint; /* worker: 1 + this client's bit in door.hints; 0 before attach */
    uint32_t pad1[15];
    _Atomic uint32_t entries[MS__RING_SLOTS];
} ms__ring;

typedef struct ms__slot {
    _Atomic uint32_t state;    /* MS__SLOT_*: the futex the client waits on */
    _Atomic uint32_t waiting;  /* the client sleeps (or is about to) on state */
    _Atomic uint32_t gen;      /* client: the door's gen it saw when it submitted (see ms__door) */
    _Atomic uint32_t cpu;      /* client: 1 + the CPU it submitted from, 0 unknown (a figure) */
    _Atomic int64_t submit_ns; /* client: CLOCK_MONOTONIC at submit, for the queue-wait histogram
                                  (a figure the worker clamps, never trusts) */
    _Atomic int64_t done_ns;   /* worker: CLOCK_MONOTONIC at completion, written before state:
                                  the client learns how long a wait to spin (a figure only) */
    uint32_t pad[8];
    ms__req req;
    ms__resp resp;
} ms__slot;

#define MS__DOOR_MAGIC 0x4d53444fu /* "MSDO" */
#define MS__DOOR_PAGE 4096u
#define MS__DOOR_BYTES (2u * MS__DOOR_PAGE) /* the trusted page, then the bell page */
#define MS__DOOR_HINTS 4096u /* clients a worker can tell apart: MS__WORKER_CLIENTS_MAX */

/* A door is two pages in two memfds, mapped side by side (ms__door_map). Page 0 holds what only
 * the daemon and the worker write and what both trust: clients get it through a descriptor
 * opened read-only, so that they can neither map it writable nor make their mapping writable
 * (mmap and mprotect answer EACCES). Page 1, the bell page, holds what every client of the
 * worker writes: each word there is a figure that the worker never trusts (a wrong one costs
 * time, never an answer, and every SLEEP_SLICE_NS the worker looks at every ring whatever the
 * hints say: serve.c). */
typedef struct ms__door {
    /* Page 0: the daemon and the worker write; clients map it read-only. */
    uint32_t magic;
    uint32_t pad0;
    _Atomic uint32_t sleeping; /* worker: it sleeps (or is about to) on bell */
    _Atomic uint32_t cpu;      /* worker: 1 + the CPU it last woke up on, 0 unknown (a figure) */
    uint32_t pad1[12];
    _Atomic uint32_t gen;  /* daemon: bumped each time the instance's worker is lost */
    _Atomic uint32_t down; /* daemon sets, the restarted worker clears: send nothing */
    /* daemon, before it kills a worker that ran one batch (or stopped turning) past the spec's
     * call_timeout: 1 + the gen of that worker (0: none yet), how long it was stuck and the limit
     * (ms), so that its callers fail with MS_E_TIMEOUT saying so rather than MS_E_WORKER_LOST */
    _Atomic uint32_t hung_gen;
    _Atomic uint32_t hung_ms;
    _Atomic uint32_t hung_limit_ms;
    /* Page 1, the bell page: every client writes. */
    _Alignas(MS__DOOR_PAGE) _Atomic uint32_t bell; /* bumped by whoever has work; its futex */
    uint32_t pad2[15];
    _Atomic uint32_t inflight; /* requests submitted and not yet completed (a figure) */
    _Atomic uint32_t scan_all; /* a client published before it knew its hint bit */
    uint32_t pad3[14];
    _Atomic uint64_t hints[MS__DOOR_HINTS / 64]; /* bit i: client i published */
} ms__door;

/* A door's descriptors as the daemon keeps them (-1: none): page 0 read-write (the daemon's and
 * its workers'), page 0 again opened read-only (what clients get) and the bell page. */
typedef struct ms__door_fds {
    int rw, ro, bell;
} ms__door_fds;

/* The ring set of instance i (< MS__RINGS_MAX) in an arena mapped at base. */
static inline ms__ring *ms__ring_of(void *base, unsigned i)
{
    return (ms__ring *)((char *)base + MS__ARENA_HEADER + (size_t)i * MS__RINGSET_BYTES);
}
static inline ms__slot *ms__slot_of(void *base, unsigned i, unsigned slot)
{
    return (ms__slot *)((char *)ms__ring_of(base, i) + 4096u + (size_t)slot * MS__SLOT_BYTES);
}

/* The daemon makes a door: two sealed one-page memfds (O_CLOEXEC), page 0 initialised, and the
 * read-only descriptor of page 0 (see ms__door). On success *fds owns three descriptors. */
int ms__door_create(ms__door_fds *fds, char *err, size_t errlen);
/* Closes the descriptors of fds that are open and sets them to -1. */
void ms__door_fds_close(ms__door_fds *fds);
/* Maps a door: page 0 from fd (read-write when trusted: the daemon and the worker; read-only for
 * clients), the bell page from bell_fd, side by side, after checking their sizes and the magic.
 * Neither descriptor is taken. */
int ms__door_map(int fd, int bell_fd, bool trusted, ms__door **door, char *err, size_t errlen);
void ms__door_unmap(ms__door *door);

/* Tells the worker behind door that there is work: bumps bell, and wakes it only if it sleeps.
 * Returns true when it made the futex call (the worker slept, or was about to). */
bool ms__door_ring(ms__door *door);
/* The door's worker is lost: down, then gen bumped (a client that reads the new gen then sees
 * down), so its requests in flight fail with MS_E_WORKER_LOST and new ones wait. */
void ms__door_lost(ms__door *door);
/* One request less in flight (door->inflight), never below zero whatever clients did to it. */
void ms__door_done(ms__door *door);
/* Marks the client of ring as having published (its hint bit, or scan_all), then rings. Returns
 * what ms__door_ring returned. */
bool ms__door_publish(ms__door *door, const ms__ring *ring);

/* How many entries the worker may take from a ring whose published tail is tail, having taken
 * head: tail - head (mod 2^32), or -1 when that is more than MS__RING_SLOTS (a corrupt ring).
 * Pure; fuzzed with the request decoder. */
int ms__ring_pending(uint32_t head, uint32_t tail);

/* Futex calls on a 32-bit word in shared memory (not FUTEX_PRIVATE: other processes wake it). */
/* Sleeps while *word == expected, at most timeout_ns (< 0: no limit). Returns 0 when woken or
 * the word differs, 1 on timeout. */
int ms__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns);
void ms__futex_wake(_Atomic uint32_t *word, int n);

/* How long a waiter spins before it sleeps, in ns: $MODELSHARE_SPIN_US (0..100000 µs) else
 * def_us. Callers read it once and keep it. */
int64_t ms__spin_ns(int64_t def_us);

/* One step of a spin loop that started at t0_ns (ms__now_ns): a CPU pause for the first
 * microsecond, then sched_yield. Yielding matters when the process being waited for was woken
 * onto this CPU (the scheduler likes to put a wakee beside its waker): a pure spin would keep it
 * from running until the spin gives up. With nothing else to run, sched_yield returns at once. */
void ms__spin_step(int64_t t0_ns, int64_t now_ns);

/* A CPU pause for spin loops. */
static inline void ms__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
