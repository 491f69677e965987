/* Memory a process holds, as the kernel counts it, read from /proc. */
#include "procmem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"

static void proc_path(pid_t pid, const char *file, char *buf, size_t buflen)
{
    if (pid == 0)
        snprintf(buf, buflen, "/proc/self/%s", file);
    else
        snprintf(buf, buflen, "/proc/%ld/%s", (long)pid, file);
}

/* Sums (or, with first_only, finds) the "key  N kB" lines of a /proc file, in bytes. */
static int sum_kb(const char *path, const char *key, int first_only, uint64_t *bytes)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return MS_E_IO;
    size_t klen = strlen(key);
    char line[512];
    uint64_t total = 0;
    int found = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, klen) != 0)
            continue;
        char *end;
        unsigned long long kb = strtoull(line + klen, &end, 10);
        if (end == line + klen)
            continue;
        total += (uint64_t)kb * 1024u;
        found = 1;
        if (first_only)
            break;
    }
    fclose(f);
    if (!found)
        return MS_E_IO;
    *bytes = total;
    return 0;
}

int ms__proc_pss(pid_t pid, uint64_t *bytes)
{
    char path[64];
    proc_path(pid, "smaps_rollup", path, sizeof path);
    if (sum_kb(path, "Pss:", 1, bytes) == 0)
        return 0;
    proc_path(pid, "smaps", path, sizeof path);
    return sum_kb(path, "Pss:", 0, bytes);
}

int ms__proc_rss(pid_t pid, uint64_t *bytes)
{
    char path[64];
    proc_path(pid, "status", path, sizeof path);
    return sum_kb(path, "VmRSS:", 1, bytes);
}

int ms__sys_mem(uint64_t *total, uint64_t *available)
{
    uint64_t t, a;
    int rc = sum_kb("/proc/meminfo", "MemTotal:", 1, &t);
    if (rc != 0)
        return rc;
    rc = sum_kb("/proc/meminfo", "MemAvailable:", 1, &a);
    if (rc != 0)
        return rc;
    if (total != NULL)
        *total = t;
    if (available != NULL)
        *available = a;
    return 0;
}
