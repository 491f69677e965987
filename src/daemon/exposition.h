/*
 * The daemon's figures in the Prometheus text format (version 0.0.4), for `--metrics`: per model
 * and instance the counters and histograms its workers keep in their stats pages (stats.h), added
 * to those of its workers that are gone; per model its loads, evictions, restarts, memory and
 * leases; per device its budget, used and free bytes. Read on the event loop's thread: nothing
 * changes while it is built. Names: modelshare_ prefix, base units, _total counters; labels tag,
 * instance, device, code.
 */
#ifndef MS_DAEMON_EXPOSITION_H
#define MS_DAEMON_EXPOSITION_H

#include <stddef.h>

#include "models.h"

/* The exposition text in *text (malloc'd, NUL-terminated, the caller frees) and its length in
 * *len. MS_E_NOMEM. */
int ms__exposition(ms__models *ml, char **text, size_t *len);

#endif
