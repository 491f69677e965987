/* Counters a worker keeps in a page of shared memory that the daemon created and reads for
 * status, so that the daemon is never on the request path. */
#ifndef MS_STATS_H
#define MS_STATS_H

#include <stdint.h>

#define MS__STATS_MAGIC 0x4d535354u /* "MSST" */

typedef struct ms__stats {
    uint32_t magic;
    uint32_t pad;
    _Atomic uint64_t requests;     /* requests completed (success or error) */
    _Atomic uint64_t batches;      /* backend runs */
    _Atomic uint64_t rows;         /* rows (first dimension) run */
    _Atomic uint64_t errors;       /* requests that failed */
    _Atomic uint64_t busy_ns;      /* time spent in the backend */
    _Atomic uint64_t memory_bytes; /* last measured memory of the worker */
} ms__stats;

/* Creates a memfd of one page holding an initialised ms__stats, maps it (*stats) and returns its
 * descriptor in *fd (O_CLOEXEC). Used by the daemon. */
int ms__stats_create(int *fd, ms__stats **stats);
/* Maps an existing stats memfd (the worker). */
int ms__stats_map(int fd, ms__stats **stats);
void ms__stats_unmap(ms__stats *stats);

#endif
