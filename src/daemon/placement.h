/*
 * Placement: which device each instance of a model goes to. Pure: no processes, no clock, no
 * daemon state; admission.c builds the table of candidate devices from the budgets and acts on
 * the answer. Unit-tested over fake device tables (tests/unit/test_placement.c).
 */
#ifndef MS_DAEMON_PLACEMENT_H
#define MS_DAEMON_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One candidate device. */
typedef struct ms__place_dev {
    const char *name; /* "cpu", "cuda:1": for messages (not owned) */
    uint64_t budget;  /* 0: not enforced (unlimited) */
    /* What other models hold on it that counts against budget: admission.c gives what they hold
     * now, and, when that leaves no room anywhere, what no eviction frees. */
    uint64_t used;
} ms__place_dev;

/* Places n instances (1..64) of need bytes each on devs[0..ndev):
 *   spread false: every instance on one device, the one with the most free budget among those
 *   that hold n * need; spread true: instance after instance, round-robin: each on the device
 *   with the fewest of the instances placed before it, among those that hold need, the one
 *   with the most free budget left (the instances before it counted) first.
 * Remaining ties go to the earlier device in devs. A device with budget 0 holds anything (and is
 * freer than any with a budget).
 * out[i] gets the index in devs of instance i. Returns 0; MS_E_NO_MEMORY when some instance fits
 * on no device, with a message naming each device's free bytes; MS_E_INVAL when ndev < 1 or n is
 * out of range. out is written only on success. */
int ms__place(const ms__place_dev *devs, int ndev, uint64_t need, int n, bool spread, int *out,
              char *err, size_t errlen);

#endif
