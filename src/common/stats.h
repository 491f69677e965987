/* Counters a worker keeps in a page of shared memory that the daemon created and reads for
 * status and metrics, so that the daemon is never on the request path: totals, errors by code,
 * three histograms with fixed buckets (rows per backend run, queue wait, run time) and, while
 * the model loads, the load's phase and bytes read so far.
 *
 * The worker is the only writer (relaxed atomic adds, so that its runner threads may add at
 * once: busy_ns is then the sum of their times in the backend); the daemon only reads. A
 * histogram's count is the sum of its buckets (read them, then add up), so a reader never sees a
 * count that its buckets do not explain; its sum may lag a bucket by one observation. */
#ifndef MS_STATS_H
#define MS_STATS_H

#include <stdint.h>

#define MS__STATS_MAGIC 0x4d535332u /* "MSS2": the page with histograms and the load's phase */

/* Errors by code: slot -code for MS_E_* codes 1..MS__STATS_CODES-1; slot 0 for any other. */
#define MS__STATS_CODES 32

/* Rows per backend run: upper bounds 1, 2, 4, ..., 1024, then +Inf. */
#define MS__HIST_ROWS_BUCKETS 12
/* Queue wait and run time in ns: upper bounds 10 us, 25 us, 50 us, 100 us, ..., 10 s, then +Inf. */
#define MS__HIST_NS_BUCKETS 20

typedef struct ms__hist_rows {
    _Atomic uint64_t bucket[MS__HIST_ROWS_BUCKETS]; /* not cumulative: each bucket's own count */
    _Atomic uint64_t sum;
} ms__hist_rows;

typedef struct ms__hist_ns {
    _Atomic uint64_t bucket[MS__HIST_NS_BUCKETS];
    _Atomic uint64_t sum; /* ns */
} ms__hist_ns;

/* Batches that can run at once: one per runner thread (spec threads, at most 64) and the
 * loop's own. */
#define MS__STATS_RUNS 65
/* A loop that has not stamped its heartbeat for this long is not turning (stopped, or stuck in
 * something other than a batch): it stamps at least every 100 ms while idle. */
#define MS__STATS_HEARTBEAT_GRACE_NS 1000000000LL

/* The load's phases, in order. */
enum {
    MS__PHASE_STARTING = 0, /* the process started, nothing loaded yet */
    MS__PHASE_READING,      /* reading weights (load_bytes of load_total_bytes so far) */
    MS__PHASE_CONSTRUCTING, /* running the model's constructor (python) */
    MS__PHASE_WARMING,      /* measuring and getting ready to serve */
    MS__PHASE_READY,        /* serving */
    MS__PHASE_COUNT
};

typedef struct ms__stats {
    uint32_t magic;
    _Atomic uint32_t phase;            /* MS__PHASE_* */
    _Atomic uint64_t requests;         /* requests completed (success or error) */
    _Atomic uint64_t batches;          /* backend runs */
    _Atomic uint64_t rows;             /* rows (first dimension) run */
    _Atomic uint64_t errors;           /* requests that failed */
    _Atomic uint64_t busy_ns;          /* time spent in the backend */
    _Atomic uint64_t memory_bytes;     /* last measured memory of the worker */
    _Atomic uint64_t load_bytes;       /* bytes of weights read so far */
    _Atomic uint64_t load_total_bytes; /* bytes of weights to read (0: unknown) */
    _Atomic uint64_t errors_by_code[MS__STATS_CODES];
    ms__hist_rows batch_rows; /* rows per backend run */
    ms__hist_ns queue_ns;     /* from the client's submit to the worker taking the request */
    ms__hist_ns run_ns;       /* one backend run */
    /* For the daemon's watchdog (call_timeout), status and metrics, CLOCK_MONOTONIC ns: the
     * serving loop stamps heartbeat_ns at each turn (0 before it serves); a batch stamps its
     * start in run_since_ns[its runner's index + 1, or 0 for the loop's own] while it runs
     * (0: none there). */
    _Atomic int64_t heartbeat_ns;
    _Atomic int64_t run_since_ns[MS__STATS_RUNS];
} ms__stats;

/* A plain copy of a stats page's counters (histogram buckets not cumulative), to add up pages
 * of workers that are gone and of those that are live. */
typedef struct ms__stats_sum {
    uint64_t requests, batches, rows, errors, busy_ns;
    uint64_t errors_by_code[MS__STATS_CODES];
    uint64_t rows_bucket[MS__HIST_ROWS_BUCKETS], rows_sum;
    uint64_t queue_bucket[MS__HIST_NS_BUCKETS], queue_sum_ns;
    uint64_t run_bucket[MS__HIST_NS_BUCKETS], run_sum_ns;
} ms__stats_sum;

/* Creates a memfd of one page holding an initialised ms__stats, maps it (*stats) and returns its
 * descriptor in *fd (O_CLOEXEC). Used by the daemon. */
int ms__stats_create(int *fd, ms__stats **stats);
/* Maps an existing stats memfd (the worker). */
int ms__stats_map(int fd, ms__stats **stats);
void ms__stats_unmap(ms__stats *stats);

/* The bucket bounds: rows (1, 2, ..., 1024) and ns (10000, ..., 1e10); index i < *_BUCKETS - 1
 * (the last bucket is +Inf). */
uint64_t ms__hist_rows_bound(int i);
uint64_t ms__hist_ns_bound(int i);

/* The worker's side: one observation each (s may be NULL: nothing). */
void ms__stats_error(ms__stats *s, int code);
void ms__stats_batch(ms__stats *s, uint64_t rows, uint64_t run_ns);
void ms__stats_queued(ms__stats *s, uint64_t wait_ns);

/* The serving loop's heartbeat (s may be NULL: nothing). */
void ms__stats_beat(ms__stats *s, int64_t now_ns);
/* A batch begins (since_ns: now) or ends (since_ns 0) on run slot `run` (< MS__STATS_RUNS). */
void ms__stats_running(ms__stats *s, int run, int64_t since_ns);
/* How long the worker of page s has been stuck at now_ns (0: not stuck): the longest a batch
 * has run so far, or, when its loop stopped turning (no heartbeat for
 * MS__STATS_HEARTBEAT_GRACE_NS), since its last heartbeat, whichever is longer. 0 before the
 * worker serves (a load is bounded by load_timeout). The daemon reads it. */
int64_t ms__stats_stuck_ns(const ms__stats *s, int64_t now_ns);

/* Adds the counters of page s (NULL: nothing) to *sum. */
void ms__stats_add(ms__stats_sum *sum, const ms__stats *s);
/* Adds b to *a. */
void ms__stats_sum_add(ms__stats_sum *a, const ms__stats_sum *b);

/* The load's progress, for the backend that loads (dense: bytes of weights read; python: the
 * constructor runs). The worker points it at its stats page once (ms__progress_attach, NULL:
 * off); the calls go nowhere before that. */
void ms__progress_attach(ms__stats *s);
void ms__progress_phase(int phase);
void ms__progress_bytes(uint64_t done, uint64_t total);
/* "starting", "reading weights", "constructing", "warming up", "ready"; "unknown" else. */
const char *ms__phase_name(int phase);

#endif
