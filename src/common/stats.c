/* Worker counters in one page of shared memory, created by the daemon; the load's progress. */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelshare.h"

#define STATS_SIZE 4096u

_Static_assert(sizeof(ms__stats) <= STATS_SIZE, "stats must fit in one page");

int ms__stats_create(int *fd, ms__stats **stats)
{
    int f = memfd_create("modelshare-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0)
        return errno == ENOMEM ? MS_E_NOMEM : MS_E_IO;
    /* Sealed at one page: whoever holds the fd cannot truncate it under the daemon's reads. */
    if (ftruncate(f, STATS_SIZE) != 0 ||
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(f);
        return MS_E_IO;
    }
    void *p = mmap(NULL, STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        close(f);
        return MS_E_NOMEM;
    }
    /* A new memfd reads as zeros: every counter 0, phase starting. */
    ms__stats *s = p;
    s->magic = MS__STATS_MAGIC;
    *fd = f;
    *stats = s;
    return 0;
}

int ms__stats_map(int fd, ms__stats **stats)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return MS_E_IO;
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)STATS_SIZE)
        return MS_E_PROTOCOL;
    void *p = mmap(NULL, STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return MS_E_NOMEM;
    ms__stats *s = p;
    if (s->magic != MS__STATS_MAGIC) {
        munmap(p, STATS_SIZE);
        return MS_E_PROTOCOL;
    }
    *stats = s;
    return 0;
}

void ms__stats_unmap(ms__stats *stats)
{
    if (stats != NULL)
        munmap(stats, STATS_SIZE);
}

/* ---- histograms ---- */

uint64_t ms__hist_rows_bound(int i)
{
    return (uint64_t)1 << i;
}

uint64_t ms__hist_ns_bound(int i)
{
    /* 1, 2.5, 5 per decade from 10 us: 10, 25, 50, 100, 250, 500 us, 1 ms, ... 10 s. */
    static const uint64_t steps[3] = {10, 25, 50};
    uint64_t b = steps[i % 3];
    for (int d = 0; d < i / 3; d++)
        b *= 10;
    return b * 1000;
}

#define ADD(field, v) atomic_fetch_add_explicit(&(field), (v), memory_order_relaxed)

void ms__stats_error(ms__stats *s, int code)
{
    if (s == NULL)
        return;
    unsigned slot = code < 0 && code > -MS__STATS_CODES ? (unsigned)-code : 0;
    ADD(s->errors, 1);
    ADD(s->errors_by_code[slot], 1);
}

void ms__stats_batch(ms__stats *s, uint64_t rows, uint64_t run_ns)
{
    if (s == NULL)
        return;
    int r = 0;
    while (r < MS__HIST_ROWS_BUCKETS - 1 && rows > ms__hist_rows_bound(r))
        r++;
    int t = 0;
    while (t < MS__HIST_NS_BUCKETS - 1 && run_ns > ms__hist_ns_bound(t))
        t++;
    ADD(s->batch_rows.bucket[r], 1);
    ADD(s->batch_rows.sum, rows);
    ADD(s->run_ns.bucket[t], 1);
    ADD(s->run_ns.sum, run_ns);
}

void ms__stats_queued(ms__stats *s, uint64_t wait_ns)
{
    if (s == NULL)
        return;
    int t = 0;
    while (t < MS__HIST_NS_BUCKETS - 1 && wait_ns > ms__hist_ns_bound(t))
        t++;
    ADD(s->queue_ns.bucket[t], 1);
    ADD(s->queue_ns.sum, wait_ns);
}

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

void ms__stats_add(ms__stats_sum *sum, const ms__stats *s)
{
    if (s == NULL)
        return;
    ms__stats *m = (ms__stats *)s; /* atomic loads take a non-const pointer in C11 */
    sum->requests += LOAD(m->requests);
    sum->batches += LOAD(m->batches);
    sum->rows += LOAD(m->rows);
    sum->errors += LOAD(m->errors);
    sum->busy_ns += LOAD(m->busy_ns);
    for (int i = 0; i < MS__STATS_CODES; i++)
        sum->errors_by_code[i] += LOAD(m->errors_by_code[i]);
    for (int i = 0; i < MS__HIST_ROWS_BUCKETS; i++)
        sum->rows_bucket[i] += LOAD(m->batch_rows.bucket[i]);
    sum->rows_sum += LOAD(m->batch_rows.sum);
    for (int i = 0; i < MS__HIST_NS_BUCKETS; i++) {
        sum->queue_bucket[i] += LOAD(m->queue_ns.bucket[i]);
        sum->run_bucket[i] += LOAD(m->run_ns.bucket[i]);
    }
    sum->queue_sum_ns += LOAD(m->queue_ns.sum);
    sum->run_sum_ns += LOAD(m->run_ns.sum);
}

void ms__stats_sum_add(ms__stats_sum *a, const ms__stats_sum *b)
{
    /* Every field is a uint64_t. */
    uint64_t *x = (uint64_t *)a;
    const uint64_t *y = (const uint64_t *)b;
    for (size_t i = 0; i < sizeof *a / sizeof(uint64_t); i++)
        x[i] += y[i];
}

/* ---- the load's progress ---- */

static ms__stats *progress_page;

void ms__progress_attach(ms__stats *s)
{
    progress_page = s;
}

void ms__progress_phase(int phase)
{
    if (progress_page != NULL)
        atomic_store_explicit(&progress_page->phase, (uint32_t)phase, memory_order_relaxed);
}

void ms__progress_bytes(uint64_t done, uint64_t total)
{
    if (progress_page == NULL)
        return;
    atomic_store_explicit(&progress_page->load_total_bytes, total, memory_order_relaxed);
    atomic_store_explicit(&progress_page->load_bytes, done, memory_order_relaxed);
}

const char *ms__phase_name(int phase)
{
    static const char *const names[MS__PHASE_COUNT] = {"starting", "reading weights",
                                                       "constructing", "warming up", "ready"};
    return phase >= 0 && phase < MS__PHASE_COUNT ? names[phase] : "unknown";
}

/* ---- the watchdog's view ---- */

void ms__stats_beat(ms__stats *s, int64_t now_ns)
{
    if (s != NULL)
        atomic_store_explicit(&s->heartbeat_ns, now_ns, memory_order_relaxed);
}

void ms__stats_running(ms__stats *s, int run, int64_t since_ns)
{
    if (s != NULL && run >= 0 && run < MS__STATS_RUNS)
        atomic_store_explicit(&s->run_since_ns[run], since_ns, memory_order_relaxed);
}

int64_t ms__stats_stuck_ns(const ms__stats *s, int64_t now_ns)
{
    if (s == NULL)
        return 0;
    int64_t beat = atomic_load_explicit(&s->heartbeat_ns, memory_order_relaxed);
    if (beat == 0)
        return 0;
    int64_t stuck = now_ns - beat >= MS__STATS_HEARTBEAT_GRACE_NS ? now_ns - beat : 0;
    for (int i = 0; i < MS__STATS_RUNS; i++) {
        int64_t since = atomic_load_explicit(&s->run_since_ns[i], memory_order_relaxed);
        if (since != 0 && now_ns - since > stuck)
            stuck = now_ns - since;
    }
    return stuck;
}
