/*
 * Per-tag counters that outlive a model's record, for metrics: a tag's loads and evictions since
 * the daemon started, kept after the model is unloaded or evicted for good, so that
 * modelshare_loads_total and modelshare_evictions_total only ever go up; and a python model's
 * last measured memory, for its next load's estimate. Pure data.
 *
 * Tags are what clients send: at most MS__TALLY_MAX are kept; a new one then replaces the tag
 * touched least recently among those that have no model now (is_loaded says which).
 */
#ifndef MS_DAEMON_TALLY_H
#define MS_DAEMON_TALLY_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/util.h"

#define MS__TALLY_MAX 1024

typedef struct ms__tally_entry {
    char tag[MS__TAG_MAX + 1];
    uint64_t loads;
    uint64_t evictions;
    uint64_t touched; /* the tally's clock at the last count */
    /* A python model's last measured memory, one instance's, and a hash of the constructor it
     * was measured with: its next load's estimate when its spec gives no memory (load.c). */
    uint64_t measured_bytes;
    uint64_t measured_key;
} ms__tally_entry;

typedef struct ms__tally {
    ms__tally_entry e[MS__TALLY_MAX]; /* [0, n) */
    int n;
    uint64_t clock;
} ms__tally;

/* The entry of tag, added (all zero) when missing; NULL only when the tally is full and every
 * tag in it has a model now (is_loaded(ctx, tag) true). Touches it. */
ms__tally_entry *ms__tally_get(ms__tally *t, const char *tag,
                               bool (*is_loaded)(void *, const char *), void *ctx);

#endif
