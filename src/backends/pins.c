/* Host memory registered for DMA, cached (pins.h). */
#include "pins.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct span {
    uintptr_t lo, hi; /* [lo, hi) */
} span;

typedef struct range {
    span s;
    uint64_t used; /* the cache's clock at its last use */
} range;

struct ms__pins {
    ms__pin_ops ops;
    span arenas[MS__PINS_ARENAS_MAX];
    size_t narenas;
    range ranges[MS__PINS_RANGES_MAX];
    size_t nranges;
    uint64_t clock;
    unsigned failures; /* in a row */
    ms__pins_stats st;
};

ms__pins *ms__pins_new(const ms__pin_ops *ops)
{
    ms__pins *p = calloc(1, sizeof *p);
    if (p != NULL)
        p->ops = *ops;
    return p;
}

static void drop_range(ms__pins *p, size_t i)
{
    p->ops.unreg(p->ops.ctx, (void *)p->ranges[i].s.lo);
    p->st.bytes -= p->ranges[i].s.hi - p->ranges[i].s.lo;
    p->ranges[i] = p->ranges[--p->nranges];
}

void ms__pins_free(ms__pins *p)
{
    if (p == NULL)
        return;
    while (p->nranges > 0)
        drop_range(p, p->nranges - 1);
    free(p);
}

void ms__pins_arena_mapped(ms__pins *p, void *base, size_t len)
{
    if (p->narenas < MS__PINS_ARENAS_MAX && len > 0)
        p->arenas[p->narenas++] = (span){(uintptr_t)base, (uintptr_t)base + len};
}

static bool overlaps(span a, span b)
{
    return a.lo < b.hi && b.lo < a.hi;
}

void ms__pins_arena_unmapping(ms__pins *p, void *base, size_t len)
{
    span a = {(uintptr_t)base, (uintptr_t)base + len};
    for (size_t i = p->nranges; i-- > 0;)
        if (overlaps(p->ranges[i].s, a))
            drop_range(p, i);
    for (size_t i = p->narenas; i-- > 0;)
        if (p->arenas[i].lo == a.lo && p->arenas[i].hi == a.hi)
            p->arenas[i] = p->arenas[--p->narenas];
}

/* The known arena holding all of want, or NULL. */
static const span *arena_of(const ms__pins *p, span want)
{
    for (size_t i = 0; i < p->narenas; i++)
        if (p->arenas[i].lo <= want.lo && want.hi <= p->arenas[i].hi)
            return &p->arenas[i];
    return NULL;
}

/* want widened to the grain (and to pages), clamped to its arena. */
static span widen(span want, span arena)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    span w = {want.lo & ~(uintptr_t)(MS__PINS_GRAIN - 1),
              (want.hi + MS__PINS_GRAIN - 1) & ~(uintptr_t)(MS__PINS_GRAIN - 1)};
    if (w.lo < arena.lo)
        w.lo = arena.lo & ~(page - 1);
    if (w.hi > arena.hi)
        w.hi = (arena.hi + page - 1) & ~(page - 1);
    return w;
}

/* Makes room for a range of len bytes that must not overlap w: drops the ranges overlapping w
 * (the driver refuses to register memory twice), then the least recently used ones. */
static void make_room(ms__pins *p, span w)
{
    size_t len = w.hi - w.lo;
    for (size_t i = p->nranges; i-- > 0;)
        if (overlaps(p->ranges[i].s, w)) {
            drop_range(p, i);
            p->st.evictions++;
        }
    while (p->nranges > 0 &&
           (p->nranges >= MS__PINS_RANGES_MAX || p->st.bytes + len > MS__PINS_BYTES_MAX)) {
        size_t lru = 0;
        for (size_t i = 1; i < p->nranges; i++)
            if (p->ranges[i].used < p->ranges[lru].used)
                lru = i;
        drop_range(p, lru);
        p->st.evictions++;
    }
}

bool ms__pins_usable(ms__pins *p, const void *ptr, size_t len)
{
    span want = {(uintptr_t)ptr, (uintptr_t)ptr + len};
    p->clock++;
    for (size_t i = 0; i < p->nranges; i++)
        if (p->ranges[i].s.lo <= want.lo && want.hi <= p->ranges[i].s.hi) {
            p->ranges[i].used = p->clock;
            p->st.hits++;
            return true;
        }
    const span *arena = len >= MS__PINS_MIN_BYTES && !p->st.disabled ? arena_of(p, want) : NULL;
    span w = arena != NULL ? widen(want, *arena) : want;
    if (arena == NULL || w.hi - w.lo > MS__PINS_BYTES_MAX) {
        p->st.fallbacks++;
        return false;
    }
    make_room(p, w);
    if (p->ops.reg(p->ops.ctx, (void *)w.lo, w.hi - w.lo) != 0) {
        p->st.fallbacks++;
        p->st.disabled = ++p->failures >= MS__PINS_FAILURES_MAX;
        return false;
    }
    p->failures = 0;
    p->ranges[p->nranges++] = (range){w, p->clock};
    p->st.bytes += w.hi - w.lo;
    p->st.registrations++;
    return true;
}

void ms__pins_get_stats(const ms__pins *p, ms__pins_stats *out)
{
    *out = p->st;
    out->ranges = p->nranges;
}
