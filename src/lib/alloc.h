/*
 * The arena allocator: places tensors in a model's arena. First fit over [start, end),
 * MS__ARENA_ALIGN aligned, free blocks kept sorted by offset and coalesced on free. Freed memory
 * stays resident up to MS__ALLOC_RETAIN_MAX bytes, so that a loop of large requests reuses pages
 * that both processes have already mapped (no page faults, no zeroing); beyond that, freed blocks
 * of MS__ALLOC_PUNCH_MIN bytes or more are handed back to the kernel with a hole punch.
 *
 * The bookkeeping is in this process's private memory only: the worker, which maps the same
 * arena, can neither read nor corrupt it. Not thread-safe: the model's lock guards it.
 */
#ifndef MS_LIB_ALLOC_H
#define MS_LIB_ALLOC_H

#include <stdint.h>

#define MS__ALLOC_PUNCH_MIN (1ull << 20)
#define MS__ALLOC_RETAIN_MAX (64ull << 20)

/* A free block of an arena; blocks are never adjacent (coalesced on free). */
typedef struct ms__free_block {
    uint64_t off, len;
    struct ms__free_block *next;
} ms__free_block;

typedef struct ms__alloc {
    int fd;               /* the arena memfd, for punching holes (-1: none); not owned */
    uint64_t start;       /* first byte to place tensors at (MS__ARENA_DATA) */
    uint64_t end;         /* the arena's capacity */
    uint64_t retained;    /* about how many free bytes are still resident (not punched) */
    ms__free_block *free; /* owned */
} ms__alloc;

/* Makes a with one free block [start, end) (none when end <= start). fd stays the caller's.
 * Errors: MS_E_NOMEM. */
int ms__alloc_init(ms__alloc *a, int fd, uint64_t start, uint64_t end);
/* Frees a's bookkeeping (the arena itself is the caller's). Harmless on a zeroed a. */
void ms__alloc_destroy(ms__alloc *a);
/* First fit of size bytes (rounded up to MS__ARENA_ALIGN, at least MS__ARENA_ALIGN). Returns 0
 * with *off and *got (bytes reserved), or MS_E_TOO_LARGE when no free block is large enough. */
int ms__alloc_get(ms__alloc *a, uint64_t size, uint64_t *off, uint64_t *got);
/* Returns [off, off + len) to the free list, coalescing; punches a hole when MS__ALLOC_PUNCH_MIN
 * or more and more than MS__ALLOC_RETAIN_MAX would stay resident. Out of memory for a new block:
 * the range is lost until the arena is closed. */
void ms__alloc_put(ms__alloc *a, uint64_t off, uint64_t len);
/* Gives back the tail of the reservation [off, off + *size) beyond keep bytes (rounded up to
 * MS__ARENA_ALIGN); *size becomes what stays reserved. */
void ms__alloc_shrink(ms__alloc *a, uint64_t off, uint64_t *size, uint64_t keep);
/* Largest free block, for messages. */
uint64_t ms__alloc_largest(const ms__alloc *a);

#endif
