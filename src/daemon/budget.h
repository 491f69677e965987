/*
 * Memory budgets per device ("host", "cuda:N") and the admission decision for one load. Pure:
 * no processes, no sockets, no clock. The daemon (admission.c) feeds it the models that hold
 * memory on a device and acts on the plan it returns.
 *
 * A budget is given in bytes or as a percentage of the device's total memory:
 *   --memory host=16GiB,cuda:0=90%
 * Sizes and percentages as src/common/size.h reads them (KB 1000, KiB 1024). Defaults: 80% of host
 * RAM, 90% of each GPU.
 */
#ifndef MS_DAEMON_BUDGET_H
#define MS_DAEMON_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS__DEVICES_MAX 65 /* host and cuda:0 .. cuda:63 */
#define MS__DEVICE_NAME_MAX 16
#define MS__HOST_DEFAULT_PERCENT 80.0
#define MS__GPU_DEFAULT_PERCENT 90.0

typedef struct ms__budget_dev {
    char name[MS__DEVICE_NAME_MAX]; /* "host", "cuda:0" */
    bool configured;                /* named in --memory */
    double percent;                 /* > 0: budget is this share of total_bytes */
    uint64_t bytes;                 /* percent == 0: the budget in bytes */
    uint64_t total_bytes;           /* the device's memory; 0 while unknown */
} ms__budget_dev;

typedef struct ms__budgets {
    ms__budget_dev dev[MS__DEVICES_MAX];
    int n;
} ms__budgets;

/* Empty set: every device gets its default when first asked for. */
void ms__budgets_init(ms__budgets *b);
/* Parses "host=16GiB,cuda:0=90%" into b (after ms__budgets_init). Device names: host, cuda:N
 * (N 0..63; "cuda" is cuda:0). MS_E_INVAL with a message naming the bad part. */
int ms__budgets_parse(ms__budgets *b, const char *text, char *err, size_t errlen);

/* The budget device a spec's device charges: "cpu" -> "host", "cuda:N" -> "cuda:N". */
const char *ms__budget_device(const char *spec_device);

/* The record for device name, added with its default when missing (NULL when the table is
 * full or the name is not a device). */
ms__budget_dev *ms__budgets_get(ms__budgets *b, const char *name);
/* The device's budget in bytes; 0 when unknown (percent of an unknown total): not enforced. */
uint64_t ms__budget_bytes(const ms__budget_dev *d);

/* One model that holds (or will soon return) memory on the device. */
typedef struct ms__holder {
    uint64_t bytes;       /* its charge: the estimate, or the measured figure once loaded */
    int64_t last_used_ns; /* for LRU */
    bool idle;            /* ready without leases: may be evicted */
    bool unloading;       /* its workers are being stopped: its bytes come back soon */
} ms__holder;

enum {
    MS__ADMIT_FITS = 0, /* start the load now */
    MS__ADMIT_EVICT,    /* evict the holders marked in evict[], then wait for their bytes */
    MS__ADMIT_WAIT,     /* wait: for unloads in progress, or for leases to drop */
    MS__ADMIT_NEVER,    /* the model is larger than the whole budget */
};

/* Decides how a load of need bytes gets into budget bytes (0: unlimited) held by h[0..n).
 * Idle holders are evicted in least-recently-used order, and only as many as make the load fit;
 * when evicting every idle holder would still not be enough, none is evicted (WAIT): their
 * memory stays useful until leases drop. *free_out (may be NULL) gets the bytes free now.
 * evict must have n entries; all are written. */
/* A device over its budget once its models are measured (a python model's estimate was low):
 * marks in evict[] the idle holders to evict, least recently used first, until what is used
 * (but what unloads already) is within budget, or no idle holder is left. Returns how many. */
int ms__over_plan(uint64_t budget, const ms__holder *h, int n, bool *evict);

int ms__admit_plan(uint64_t budget, uint64_t need, const ms__holder *h, int n, bool *evict,
                   uint64_t *free_out);

/* "1.5 GiB" style rendering (binary units) into buf. */
void ms__bytes_str(uint64_t bytes, char *buf, size_t buflen);

#endif
