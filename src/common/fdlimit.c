/* RLIMIT_NOFILE: read, checked against what is open, named in messages (fdlimit.h). */
#include "fdlimit.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "modelshare.h"
#include "util.h"

long ms__fd_limit(pid_t pid)
{
    struct rlimit rl;
    if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) != 0)
        return -1;
    return rl.rlim_cur == RLIM_INFINITY ? (long)1 << 30 : (long)rl.rlim_cur;
}

int ms__fd_limit_fail(char *err, size_t errlen, const char *what, const char *who, long limit)
{
    char lim[32] = "unknown";
    if (limit >= 0)
        snprintf(lim, sizeof lim, "%ld", limit);
    return ms__fail(err, errlen, MS_E_LIMIT,
                    "%s: %s is at its limit of open files (RLIMIT_NOFILE = %s); raise it: "
                    "`ulimit -n N` in the shell that starts it, LimitNOFILE=N in its systemd unit, "
                    "--ulimit nofile=N for a container",
                    what, who, lim);
}

int ms__fd_room(int reserve, const char *what, const char *who, char *err, size_t errlen)
{
    long limit = ms__fd_limit(0);
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (probe < 0)
        return ms__fd_limit_fail(err, errlen, what, who, limit);
    close(probe);
    if (limit >= 0 && (long)probe + reserve >= limit)
        return ms__fd_limit_fail(err, errlen, what, who, limit);
    return 0;
}

int ms__fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid == 0 ? (long)getpid() : (long)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    /* The directory's own descriptor is listed when pid is this process. */
    return pid == 0 || pid == getpid() ? n - 1 : n;
}
