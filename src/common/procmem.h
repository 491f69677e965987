/* Memory a process holds, as the kernel counts it. */
#ifndef MS_PROCMEM_H
#define MS_PROCMEM_H

#include <stdint.h>
#include <sys/types.h>

/* Proportional set size of process pid (0: this process) in bytes, from /proc/PID/smaps_rollup
 * (falls back to summing /proc/PID/smaps). Returns 0 and *bytes, or MS_E_IO. */
int ms__proc_pss(pid_t pid, uint64_t *bytes);
/* Resident set size (VmRSS) of process pid (0: this process). */
int ms__proc_rss(pid_t pid, uint64_t *bytes);
/* MemTotal and MemAvailable of the machine. */
int ms__sys_mem(uint64_t *total, uint64_t *available);

#endif
