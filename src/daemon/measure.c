/* Measured memory of loaded models, and the check that an unloaded worker gave everything back. */
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/nvml.h"
#include "../common/procmem.h"
#include "models_int.h"

/* Loaded models are measured again this often. */
#define MEASURE_PERIOD_NS (2 * 1000000000LL)

static bool on_gpu(const ms__model *m, unsigned *index)
{
    if (strncmp(m->spec.device, "cuda:", 5) != 0)
        return false;
    *index = (unsigned)strtoul(m->spec.device + 5, NULL, 10);
    return true;
}

void ms__measure_model(ms__model *m)
{
    if (m->state != MS__MODEL_READY)
        return;
    uint64_t pss_sum = 0, gpu_sum = 0;
    bool pss_ok = m->nworkers > 0, gpu_ok = m->nworkers > 0;
    unsigned index = 0;
    bool gpu = on_gpu(m, &index);
    for (int i = 0; i < m->nworkers; i++) {
        const ms__wproc *w = m->workers[i];
        uint64_t pss = 0, bytes = 0;
        bool listed = false;
        if (ms__proc_pss(w->pid, &pss) == 0 && pss > 0)
            pss_sum += pss;
        else
            pss_ok = false;
        if (gpu && ms__nvml_process_memory(index, w->pid, &bytes, &listed) == 0 && listed)
            gpu_sum += bytes;
        else
            gpu_ok = false;
    }
    if (!gpu) {
        if (pss_ok) {
            m->memory_bytes = pss_sum;
            m->measured = true;
        }
        return;
    }
    if (pss_ok)
        m->host_bytes = pss_sum;
    if (gpu_ok) {
        m->memory_bytes = gpu_sum;
        m->measured = true;
    } else if (!m->measured) {
        m->memory_bytes = m->estimate_bytes; /* NVML cannot say: the estimate stands */
    }
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
    if (!on_gpu(m, &index))
        return;
    uint64_t bytes = 0;
    bool listed = false;
    if (ms__nvml_process_memory(index, w->pid, &bytes, &listed) != 0) {
        ms__log_info("model \"%s\": worker %ld gone; NVML cannot confirm %s is free", m->tag,
                     (long)w->pid, m->spec.device);
        return;
    }
    if (listed)
        ms__log_warn("model \"%s\": worker %ld was reaped but NVML still lists it on %s with "
                     "%llu bytes",
                     m->tag, (long)w->pid, m->spec.device, (unsigned long long)bytes);
    else
        ms__log_info("model \"%s\": worker %ld gone; NVML no longer lists it on %s", m->tag,
                     (long)w->pid, m->spec.device);
}
