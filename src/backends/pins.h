/*
 * Host memory registered for DMA, cached: a GPU backend moves a request's input and output
 * straight between the client's shared-memory arena and the device when the range is registered
 * with the driver (cudaHostRegister), instead of copying through a pinned staging buffer.
 * Registering costs a system call and page pinning, so ranges are kept registered and reused
 * (a client usually sends from the same tensor again), within limits on their number and bytes,
 * least recently used first out. Only ranges inside arenas the worker has said are mapped are
 * ever registered, and every one is unregistered before its arena is unmapped.
 *
 * Pure bookkeeping: registering and unregistering are the caller's functions (the CUDA backend's,
 * or a test's), so the cache is tested without a GPU. Not thread-safe: one per backend state.
 */
#ifndef MS_BACKENDS_PINS_H
#define MS_BACKENDS_PINS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS__PINS_ARENAS_MAX 1024        /* arenas known at once (a worker's clients) */
#define MS__PINS_RANGES_MAX 64          /* ranges registered at once */
#define MS__PINS_BYTES_MAX (2ull << 30) /* bytes registered at once */
#define MS__PINS_MIN_BYTES (256u << 10) /* smaller copies go through the staging buffer */
#define MS__PINS_GRAIN (2u << 20)       /* a range is widened to this grain, inside its arena */
#define MS__PINS_FAILURES_MAX 3         /* failed registrations in a row before giving up */

typedef struct ms__pin_ops {
    /* Registers [base, base + len) (page-aligned): 0, or nonzero when the driver refused. */
    int (*reg)(void *ctx, void *base, size_t len);
    void (*unreg)(void *ctx, void *base);
    void *ctx;
} ms__pin_ops;

typedef struct ms__pins_stats {
    uint64_t hits, registrations, fallbacks, evictions;
    size_t ranges, bytes;
    bool disabled; /* the driver refused MS__PINS_FAILURES_MAX times in a row */
} ms__pins_stats;

typedef struct ms__pins ms__pins;

/* A new, empty cache using ops (copied). NULL when out of memory. */
ms__pins *ms__pins_new(const ms__pin_ops *ops);
/* Unregisters every range and frees p; NULL is a no-op. */
void ms__pins_free(ms__pins *p);

/* The arena [base, base + len) is mapped (attach) / is about to be unmapped (detach: every range
 * in it is unregistered first). An arena beyond MS__PINS_ARENAS_MAX is not known: its copies are
 * staged. */
void ms__pins_arena_mapped(ms__pins *p, void *base, size_t len);
void ms__pins_arena_unmapping(ms__pins *p, void *base, size_t len);

/* Whether [ptr, ptr + len) may be used for DMA in place: true when it lies in a registered range
 * (registering one around it if needed), false when the caller must stage the copy (too small,
 * outside every known arena, or the driver refused). */
bool ms__pins_usable(ms__pins *p, const void *ptr, size_t len);

void ms__pins_get_stats(const ms__pins *p, ms__pins_stats *out);

#endif
