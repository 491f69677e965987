/* OOM kills counted by a process's memory cgroup (oomkill.h). */
#include "oomkill.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long long ms__oom_kills_parse(const char *text)
{
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, "oom_kill ", 9) == 0) {
            char *end;
            long long n = strtoll(p + 9, &end, 10);
            return end != p + 9 && n >= 0 ? n : -1;
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

long long ms__oom_kills(const char *path)
{
    char buf[1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return ms__oom_kills_parse(buf);
}

/* The first of mount/cgroup/name and mount/name whose count can be read. */
static int try_file(const char *mount, const char *cgroup, const char *name, char *path, size_t len)
{
    int n = snprintf(path, len, "%s%s/%s", mount, strcmp(cgroup, "/") == 0 ? "" : cgroup, name);
    if (n > 0 && (size_t)n < len && ms__oom_kills(path) >= 0)
        return 0;
    n = snprintf(path, len, "%s/%s", mount, name);
    if (n > 0 && (size_t)n < len && ms__oom_kills(path) >= 0)
        return 0;
    return -1;
}

int ms__oom_file(pid_t pid, char *path, size_t len)
{
    char name[64], line[512];
    snprintf(name, sizeof name, "/proc/%ld/cgroup", (long)pid);
    FILE *f = fopen(name, "re");
    if (f == NULL)
        return -1;
    int rc = -1;
    while (rc != 0 && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *controllers = c1 + 1, *cgroup = c2 + 1;
        if (strcmp(line, "0") == 0 && controllers[0] == '\0')
            rc = try_file("/sys/fs/cgroup", cgroup, "memory.events", path, len);
        else if (strstr(controllers, "memory") != NULL)
            rc = try_file("/sys/fs/cgroup/memory", cgroup, "memory.oom_control", path, len);
    }
    fclose(f);
    return rc;
}
