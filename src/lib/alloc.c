/* The arena allocator: see alloc.h. */
#include "alloc.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modelshare.h"
#include "../common/arena.h"

int ms__alloc_init(ms__alloc *a, int fd, uint64_t start, uint64_t end)
{
    memset(a, 0, sizeof *a);
    a->fd = fd;
    a->start = start;
    a->end = end;
    if (end <= start)
        return 0;
    a->free = malloc(sizeof *a->free);
    if (a->free == NULL)
        return MS_E_NOMEM;
    a->free->off = start;
    a->free->len = end - start;
    a->free->next = NULL;
    return 0;
}

void ms__alloc_destroy(ms__alloc *a)
{
    ms__free_block *b = a->free;
    while (b) {
        ms__free_block *next = b->next;
        free(b);
        b = next;
    }
    a->free = NULL;
}

static uint64_t round_up(uint64_t n)
{
    if (n == 0)
        return MS__ARENA_ALIGN;
    if (n > UINT64_MAX - (MS__ARENA_ALIGN - 1))
        return 0;
    return (n + MS__ARENA_ALIGN - 1) & ~(uint64_t)(MS__ARENA_ALIGN - 1);
}

int ms__alloc_get(ms__alloc *a, uint64_t size, uint64_t *off, uint64_t *got)
{
    uint64_t want = round_up(size);
    if (want == 0)
        return MS_E_TOO_LARGE;
    ms__free_block **link = &a->free;
    for (ms__free_block *b = a->free; b; link = &b->next, b = b->next) {
        if (b->len < want)
            continue;
        *off = b->off;
        *got = want;
        /* First fit reuses the lowest free blocks, where retained pages are: count them used. */
        a->retained -= a->retained < want ? a->retained : want;
        if (b->len == want) {
            *link = b->next;
            free(b);
        } else {
            b->off += want;
            b->len -= want;
        }
        return 0;
    }
    return MS_E_TOO_LARGE;
}

static void punch(const ms__alloc *a, uint64_t off, uint64_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    uint64_t p = page > 0 ? (uint64_t)page : 4096;
    uint64_t begin = (off + p - 1) / p * p;
    uint64_t end = (off + len) / p * p;
    if (a->fd < 0 || end <= begin)
        return;
    /* Best effort: on failure the pages just stay in use until the arena is closed. */
    (void)fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)begin,
                    (off_t)(end - begin));
}

void ms__alloc_put(ms__alloc *a, uint64_t off, uint64_t len)
{
    if (len == 0)
        return;
    if (len >= MS__ALLOC_PUNCH_MIN && a->retained + len > MS__ALLOC_RETAIN_MAX)
        punch(a, off, len);
    else
        a->retained += len;
    ms__free_block *prev = NULL, *next = a->free;
    while (next && next->off < off) {
        prev = next;
        next = next->next;
    }
    bool join_prev = prev && prev->off + prev->len == off;
    bool join_next = next && off + len == next->off;
    if (join_prev && join_next) {
        prev->len += len + next->len;
        prev->next = next->next;
        free(next);
    } else if (join_prev) {
        prev->len += len;
    } else if (join_next) {
        next->off = off;
        next->len += len;
    } else {
        ms__free_block *b = malloc(sizeof *b);
        if (b == NULL)
            return; /* out of memory: this range is lost until the arena is closed */
        b->off = off;
        b->len = len;
        b->next = next;
        if (prev)
            prev->next = b;
        else
            a->free = b;
    }
}

void ms__alloc_shrink(ms__alloc *a, uint64_t off, uint64_t *size, uint64_t keep)
{
    uint64_t k = round_up(keep);
    if (k == 0 || k >= *size)
        return;
    ms__alloc_put(a, off + k, *size - k);
    *size = k;
}

uint64_t ms__alloc_largest(const ms__alloc *a)
{
    uint64_t best = 0;
    for (const ms__free_block *b = a->free; b; b = b->next)
        if (b->len > best)
            best = b->len;
    return best;
}
