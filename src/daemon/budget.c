/* Memory budgets per device and the admission decision. See budget.h. */
#include "budget.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/size.h"
#include "../common/util.h"
#include "modelshare.h"

void ms__budgets_init(ms__budgets *b)
{
    memset(b, 0, sizeof *b);
}

/* "host", "cuda:N" (N 0..63, no leading zero), "cuda" -> "cuda:0"; false for anything else. */
static bool device_name(const char *s, size_t len, char *out, size_t outlen)
{
    if (len == 4 && memcmp(s, "host", 4) == 0) {
        snprintf(out, outlen, "host");
        return true;
    }
    if (len == 4 && memcmp(s, "cuda", 4) == 0) {
        snprintf(out, outlen, "cuda:0");
        return true;
    }
    if (len < 6 || len > 7 || memcmp(s, "cuda:", 5) != 0)
        return false;
    int v = 0;
    for (size_t i = 5; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if ((len == 7 && s[5] == '0') || v > 63 || outlen < 8)
        return false;
    snprintf(out, outlen, "cuda:%u", (unsigned)v % 64u);
    return true;
}

static ms__budget_dev *find(ms__budgets *b, const char *name)
{
    for (int i = 0; i < b->n; i++)
        if (strcmp(b->dev[i].name, name) == 0)
            return &b->dev[i];
    return NULL;
}

static ms__budget_dev *add(ms__budgets *b, const char *name)
{
    if (b->n >= MS__DEVICES_MAX)
        return NULL;
    ms__budget_dev *d = &b->dev[b->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->percent = strcmp(name, "host") == 0 ? MS__HOST_DEFAULT_PERCENT : MS__GPU_DEFAULT_PERCENT;
    return d;
}

int ms__budgets_parse(ms__budgets *b, const char *text, char *err, size_t errlen)
{
    char msg[MS__ERRLEN];
    const char *p = text;
    if (text == NULL || text[0] == '\0')
        return ms__fail(err, errlen, MS_E_INVAL,
                        "--memory: expected DEVICE=SIZE[,DEVICE=SIZE...] like "
                        "host=16GiB,cuda:0=90%%, got nothing");
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char name[MS__DEVICE_NAME_MAX], value[64];
        if (eq == NULL || !device_name(p, (size_t)(eq - p), name, sizeof name))
            return ms__fail(err, errlen, MS_E_INVAL,
                            "--memory: expected DEVICE=SIZE with DEVICE host or cuda:N (N 0 to "
                            "63), got \"%.*s\"",
                            (int)(len > 64 ? 64 : len), p);
        size_t vlen = len - (size_t)(eq + 1 - p);
        if (vlen >= sizeof value)
            vlen = sizeof value - 1;
        memcpy(value, eq + 1, vlen);
        value[vlen] = '\0';
        ms__budget_dev *d = find(b, name);
        if (d != NULL && d->configured)
            return ms__fail(err, errlen, MS_E_INVAL, "--memory: device %s is given twice", name);
        uint64_t bytes;
        double percent;
        if (ms__size_parse(value, &bytes, &percent, msg, sizeof msg) != 0)
            return ms__fail(err, errlen, MS_E_INVAL, "--memory: %s: %s", name, msg);
        if (d == NULL)
            d = add(b, name);
        if (d == NULL)
            return ms__fail(err, errlen, MS_E_LIMIT, "--memory: too many devices");
        d->configured = true;
        d->bytes = bytes;
        d->percent = percent;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

const char *ms__budget_device(const char *spec_device)
{
    return strncmp(spec_device, "cuda", 4) == 0 ? spec_device : "host";
}

ms__budget_dev *ms__budgets_get(ms__budgets *b, const char *name)
{
    char canon[MS__DEVICE_NAME_MAX];
    if (name == NULL || !device_name(name, strlen(name), canon, sizeof canon))
        return NULL;
    ms__budget_dev *d = find(b, canon);
    return d != NULL ? d : add(b, canon);
}

uint64_t ms__budget_bytes(const ms__budget_dev *d)
{
    if (d->percent > 0)
        return (uint64_t)((double)d->total_bytes * d->percent / 100.0);
    return d->bytes;
}

/* The least recently used idle holder not unloading and not yet marked in evict; -1: none. */
static int lru_idle(const ms__holder *h, int n, const bool *evict)
{
    int lru = -1;
    for (int i = 0; i < n; i++)
        if (h[i].idle && !h[i].unloading && !evict[i] &&
            (lru < 0 || h[i].last_used_ns < h[lru].last_used_ns))
            lru = i;
    return lru;
}

int ms__over_plan(uint64_t budget, const ms__holder *h, int n, bool *evict)
{
    uint64_t used = 0;
    int marked = 0;
    for (int i = 0; i < n; i++) {
        evict[i] = false;
        if (!h[i].unloading)
            used += h[i].bytes;
    }
    while (budget > 0 && used > budget) {
        int lru = lru_idle(h, n, evict);
        if (lru < 0)
            break;
        evict[lru] = true;
        used -= h[lru].bytes;
        marked++;
    }
    return marked;
}

int ms__admit_plan(uint64_t budget, uint64_t need, const ms__holder *h, int n, bool *evict,
                   uint64_t *free_out)
{
    uint64_t used = 0, unloading = 0;
    for (int i = 0; i < n; i++) {
        evict[i] = false;
        used += h[i].bytes;
        if (h[i].unloading)
            unloading += h[i].bytes;
    }
    uint64_t free_now = budget > used ? budget - used : 0;
    if (free_out != NULL)
        *free_out = free_now;
    if (budget == 0)
        return MS__ADMIT_FITS;
    if (need > budget)
        return MS__ADMIT_NEVER;
    if (need <= free_now)
        return MS__ADMIT_FITS;
    /* What comes back once the unloads in progress are done. */
    uint64_t soon = free_now + unloading;
    if (need <= soon)
        return MS__ADMIT_WAIT;
    uint64_t idle = 0;
    for (int i = 0; i < n; i++)
        if (h[i].idle && !h[i].unloading)
            idle += h[i].bytes;
    if (need > soon + idle)
        return MS__ADMIT_WAIT; /* evicting would not be enough: keep them until leases drop */
    while (need > soon) {
        int lru = lru_idle(h, n, evict);
        if (lru < 0)
            break; /* cannot happen: idle covered the need */
        evict[lru] = true;
        soon += h[lru].bytes;
    }
    return MS__ADMIT_EVICT;
}

void ms__bytes_str(uint64_t bytes, char *buf, size_t buflen)
{
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < MS__ARRAY_LEN(names)) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, buflen, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, buflen, "%.1f %s", v, names[u]);
}
