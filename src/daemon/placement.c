/* Which device each instance of a model goes to. See placement.h. */
#include "placement.h"

#include <stdio.h>
#include <string.h>

#include "../common/util.h"
#include "budget.h"
#include "daemon.h"
#include "modelshare.h"

/* Free bytes of d once extra more are placed on it; UINT64_MAX less extra when unlimited. */
static uint64_t free_of(const ms__place_dev *d, uint64_t extra)
{
    if (d->budget == 0)
        return UINT64_MAX - extra;
    uint64_t held = d->used + extra;
    return d->budget > held ? d->budget - held : 0;
}

/* The device that holds want more (extra[i] placed already) with the fewest of the model's
 * instances (count; NULL: ignored), then the most free bytes, then listed first; -1 when none. */
static int freest(const ms__place_dev *devs, int ndev, const uint64_t *extra, const int *count,
                  uint64_t want)
{
    int best = -1;
    uint64_t best_free = 0;
    for (int i = 0; i < ndev; i++) {
        uint64_t f = free_of(&devs[i], extra[i]);
        if (devs[i].budget != 0 && f < want)
            continue;
        bool fewer = best >= 0 && count != NULL && count[i] < count[best];
        bool same = best < 0 || count == NULL || count[i] == count[best];
        if (best < 0 || fewer || (same && f > best_free)) {
            best = i;
            best_free = f;
        }
    }
    return best;
}

/* "cuda:0 0.5 GiB free of 1.0 GiB, cuda:1 ..." */
static void free_text(const ms__place_dev *devs, int ndev, const uint64_t *extra, char *buf,
                      size_t buflen)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndev && pos + 1 < buflen; i++) {
        char f[32], b[32];
        ms__bytes_str(free_of(&devs[i], extra[i]), f, sizeof f);
        ms__bytes_str(devs[i].budget, b, sizeof b);
        int k = snprintf(buf + pos, buflen - pos, "%s%s %s free of %s", i > 0 ? ", " : "",
                         devs[i].name, f, b);
        if (k < 0)
            break;
        pos += (size_t)k;
    }
}

int ms__place(const ms__place_dev *devs, int ndev, uint64_t need, int n, bool spread, int *out,
              char *err, size_t errlen)
{
    if (devs == NULL || ndev < 1 || ndev > MS__DEVICES_MAX || n < 1 || n > MS__INSTANCES_MAX ||
        out == NULL)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "placement: expected 1 to %d devices and 1 to %d instances",
                        MS__DEVICES_MAX, MS__INSTANCES_MAX);
    uint64_t extra[MS__DEVICES_MAX] = {0};
    int count[MS__DEVICES_MAX] = {0};
    int where[MS__INSTANCES_MAX];
    char need_s[32], list[512];
    for (int i = 0; i < n; i++) {
        uint64_t want = spread ? need : need * (uint64_t)n;
        int d =
            spread || i == 0 ? freest(devs, ndev, extra, spread ? count : NULL, want) : where[0];
        if (d < 0) {
            ms__bytes_str(want, need_s, sizeof need_s);
            free_text(devs, ndev, extra, list, sizeof list);
            if (spread)
                return ms__fail(err, errlen, MS_E_NO_MEMORY,
                                "no device has room for instance %d (%s): %s", i, need_s, list);
            return ms__fail(err, errlen, MS_E_NO_MEMORY,
                            "no device has room for the model's %s: %s", need_s, list);
        }
        where[i] = d;
        extra[d] += spread ? need : 0;
        count[d]++;
    }
    memcpy(out, where, (size_t)n * sizeof *out);
    return 0;
}
