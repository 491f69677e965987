/* The kernel's OOM killer, as a process's memory cgroup counts it: cgroup v2's memory.events or
 * cgroup v1's memory.oom_control, whose "oom_kill N" line counts the processes of that cgroup
 * (and those under it) the OOM killer has killed, whether the cgroup's limit or the machine ran
 * out. The daemon reads the count when it starts a worker and again when the worker dies of
 * SIGKILL that it did not send: a count that went up says the OOM killer did it. */
#ifndef MS_OOMKILL_H
#define MS_OOMKILL_H

#include <stddef.h>
#include <sys/types.h>

/* The file that counts the OOM kills of pid's memory cgroup (written into path, at most len
 * bytes): 0, or -1 when there is none to read (no memory controller, /proc or /sys not
 * readable). Inside a container the cgroup's own directory is the mount's root: tried too. */
int ms__oom_file(pid_t pid, char *path, size_t len);
/* The "oom_kill N" count in text (a memory.events or memory.oom_control), or -1 without one. */
long long ms__oom_kills_parse(const char *text);
/* The count in file path, or -1 when it cannot be read. */
long long ms__oom_kills(const char *path);

#endif
