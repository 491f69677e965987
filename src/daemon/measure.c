/* Measured memory of loaded models, and the check that an unloaded worker gave everything back. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../common/log.h"
#include "../common/nvml.h"
#include "../common/oomkill.h"
#include "../common/procmem.h"
#include "models_int.h"

/* Loaded models are measured again this often. */
#define MEASURE_PERIOD_NS (2 * 1000000000LL)

/* Instance inst of m on a GPU: its NVML index. */
static bool on_gpu(const ms__model *m, int inst, unsigned *index)
{
    if (inst < 0 || inst >= MS__INSTANCES_MAX || strncmp(m->inst_device[inst], "cuda:", 5) != 0)
        return false;
    *index = (unsigned)strtoul(m->inst_device[inst] + 5, NULL, 10);
    return true;
}

/* Worker w's instance: on the host its PSS; on a GPU what NVML says it holds there (the
 * estimate's share while NVML cannot say and nothing was measured), and its PSS as its host
 * memory. False when nothing could be read. */
static bool measure_worker(ms__model *m, const ms__wproc *w)
{
    int i = w->inst;
    unsigned index = 0;
    uint64_t pss = 0, bytes = 0;
    bool listed = false, pss_ok = ms__proc_pss(w->pid, &pss) == 0 && pss > 0;
    if (i < 0 || i >= MS__INSTANCES_MAX)
        return false;
    if (!on_gpu(m, i, &index)) {
        if (pss_ok)
            m->inst_bytes[i] = pss;
        return pss_ok;
    }
    if (pss_ok)
        m->inst_host_bytes[i] = pss;
    bool gpu_ok = ms__nvml_process_memory(index, w->pid, &bytes, &listed) == 0 && listed;
    if (gpu_ok)
        m->inst_bytes[i] = bytes;
    else if (!m->measured)
        m->inst_bytes[i] = ms__even_part(m->estimate_bytes, m->spec.instances, i);
    return gpu_ok;
}

void ms__measure_model(ms__model *m)
{
    if (m->state != MS__MODEL_READY)
        return;
    bool all = m->nworkers > 0;
    for (int i = 0; i < m->nworkers; i++)
        all &= measure_worker(m, m->workers[i]);
    m->memory_bytes = m->host_bytes = 0;
    for (int i = 0; i < m->spec.instances && i < MS__INSTANCES_MAX; i++) {
        m->memory_bytes += m->inst_bytes[i];
        m->host_bytes += m->inst_host_bytes[i];
    }
    m->measured |= all;
}

int64_t ms__measure_due(ms__models *ml, int64_t now)
{
    bool any = false;
    if (now >= ml->next_measure_ns) {
        for (int i = 0; i < ml->reg.nmodels; i++)
            ms__measure_model(ml->reg.models[i]);
        ml->next_measure_ns = now + MEASURE_PERIOD_NS;
    }
    for (int i = 0; i < ml->reg.nmodels && !any; i++)
        any = ml->reg.models[i]->state == MS__MODEL_READY;
    return any ? ml->next_measure_ns : INT64_MAX;
}

void ms__verify_release(const ms__model *m, const ms__wproc *w)
{
    /* Reaped: the kernel has taken back its host memory. Say so only if /proc disagrees. */
    uint64_t rss;
    if (ms__proc_rss(w->pid, &rss) == 0)
        ms__log_warn("model \"%s\": pid %ld still exists after worker %ld was reaped (pid reused)",
                     m->tag, (long)w->pid, (long)w->pid);
    unsigned index;
    if (!on_gpu(m, w->inst, &index))
        return;
    const char *dev = m->inst_device[w->inst];
    uint64_t bytes = 0;
    bool listed = false;
    if (ms__nvml_process_memory(index, w->pid, &bytes, &listed) != 0) {
        ms__log_info("model \"%s\": worker %ld gone; NVML cannot confirm %s is free", m->tag,
                     (long)w->pid, dev);
        return;
    }
    if (listed)
        ms__log_warn("model \"%s\": worker %ld was reaped but NVML still lists it on %s with "
                     "%llu bytes",
                     m->tag, (long)w->pid, dev, (unsigned long long)bytes);
    else
        ms__log_info("model \"%s\": worker %ld gone; NVML no longer lists it on %s", m->tag,
                     (long)w->pid, dev);
}

/* What killed a worker that died of a SIGKILL the daemon did not send, said in how (replaced):
 * the OOM killer when its memory cgroup's count went up since it started; else, with no count
 * to read, the likely causes. Either way with its last measured memory and its budget. */
void ms__measure_exit(ms__models *ml, const ms__model *m, const ms__wproc *w, int status, char *how,
                      size_t howlen)
{
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL || w->killed || m == NULL)
        return;
    long long now = w->oom_file[0] != '\0' && w->oom_kills >= 0 ? ms__oom_kills(w->oom_file) : -1;
    if (now >= 0 && now <= w->oom_kills)
        return; /* counted, and not by the OOM killer: someone else's SIGKILL */
    int i = w->inst >= 0 && w->inst < MS__INSTANCES_MAX ? w->inst : 0;
    const char *dev = ms__model_inst_budget(m, i);
    ms__budget_dev *d = ms__budgets_get(&ml->budgets, dev);
    char had[32], budget[32] = "none", used[32] = "?";
    ms__bytes_str(m->inst_bytes[i], had, sizeof had);
    if (d != NULL) {
        ms__bytes_str(ms__budget_bytes(d), budget, sizeof budget);
        ms__bytes_str(ms__budget_used(ml, d), used, sizeof used);
    }
    if (now >= 0)
        snprintf(how, howlen,
                 "was killed by the kernel's OOM killer (oom_kill in %s went from %lld to %lld); "
                 "it had %s%s on %s, whose budget is %s (%s used)",
                 w->oom_file, w->oom_kills, now, had, m->measured ? " measured" : " estimated", dev,
                 budget, used);
    else
        snprintf(how, howlen,
                 "was killed by SIGKILL, not sent by modelshared: most likely the kernel's OOM "
                 "killer (no memory cgroup count to confirm it); it had %s%s on %s, whose budget "
                 "is %s (%s used)",
                 had, m->measured ? " measured" : " estimated", dev, budget, used);
}
