/* NVML through dlopen. See nvml.h. The few declarations below follow NVML's public ABI
 * (nvml.h of the CUDA toolkit's driver package), which is stable across driver versions. */
#include "nvml.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "modelshare.h"
#include "util.h"

typedef int nvml_return; /* nvmlReturn_t: 0 success */
typedef void *nvml_device;
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_PROCS_MAX 256

typedef struct nvml_memory {
    unsigned long long total, free, used;
} nvml_memory;

/* nvmlProcessInfo_t of the _v2 and _v3 calls. */
typedef struct nvml_process {
    unsigned int pid;
    unsigned long long used_gpu_memory;
    unsigned int gpu_instance_id, compute_instance_id;
} nvml_process;

/* nvmlProcessInfo_v1_t of the unversioned call (old drivers). */
typedef struct nvml_process_v1 {
    unsigned int pid;
    unsigned long long used_gpu_memory;
} nvml_process_v1;

static struct {
    pthread_once_t once;
    int rc;
    char err[MS__ERRLEN];
    nvml_return (*device_count)(unsigned *);
    nvml_return (*device_by_index)(unsigned, nvml_device *);
    nvml_return (*memory_info)(nvml_device, nvml_memory *);
    nvml_return (*procs)(nvml_device, unsigned *, nvml_process *);
    nvml_return (*procs_v1)(nvml_device, unsigned *, nvml_process_v1 *);
} nv = {.once = PTHREAD_ONCE_INIT};

static void *sym(void *h, const char *name)
{
    return dlsym(h, name);
}

static void open_once(void)
{
    const char *path = ms__env_str("MODELSHARE_NVML", "libnvidia-ml.so.1");
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        nv.rc = ms__fail(nv.err, sizeof nv.err, MS_E_DEVICE,
                         "NVML is not available: %s not found (%s); is the NVIDIA driver "
                         "installed?",
                         path, why != NULL ? why : "dlopen failed");
        return;
    }
    nvml_return (*init)(void) = (nvml_return(*)(void))sym(h, "nvmlInit_v2");
    *(void **)&nv.device_count = sym(h, "nvmlDeviceGetCount_v2");
    *(void **)&nv.device_by_index = sym(h, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&nv.memory_info = sym(h, "nvmlDeviceGetMemoryInfo");
    *(void **)&nv.procs = sym(h, "nvmlDeviceGetComputeRunningProcesses_v3");
    if (nv.procs == NULL)
        *(void **)&nv.procs = sym(h, "nvmlDeviceGetComputeRunningProcesses_v2");
    if (nv.procs == NULL)
        *(void **)&nv.procs_v1 = sym(h, "nvmlDeviceGetComputeRunningProcesses");
    if (init == NULL || nv.device_count == NULL || nv.device_by_index == NULL ||
        nv.memory_info == NULL || (nv.procs == NULL && nv.procs_v1 == NULL)) {
        nv.rc = ms__fail(nv.err, sizeof nv.err, MS_E_DEVICE,
                         "NVML is not available: %s lacks the functions modelshare needs", path);
        return;
    }
    nvml_return r = init();
    if (r != 0) {
        nv.rc = ms__fail(nv.err, sizeof nv.err, MS_E_DEVICE,
                         "NVML is not available: nvmlInit failed with NVML error %d", r);
        return;
    }
    nv.rc = 0;
}

int ms__nvml_open(char *err, size_t errlen)
{
    pthread_once(&nv.once, open_once);
    if (nv.rc != 0 && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", nv.err);
    return nv.rc;
}

unsigned ms__nvml_device_count(void)
{
    unsigned n = 0;
    if (ms__nvml_open(NULL, 0) != 0 || nv.device_count(&n) != 0)
        return 0;
    return n;
}

static int device(unsigned index, nvml_device *d)
{
    if (ms__nvml_open(NULL, 0) != 0 || nv.device_by_index(index, d) != 0)
        return MS_E_DEVICE;
    return 0;
}

int ms__nvml_device_memory(unsigned index, uint64_t *total, uint64_t *used)
{
    nvml_device d;
    nvml_memory m;
    if (device(index, &d) != 0 || nv.memory_info(d, &m) != 0)
        return MS_E_DEVICE;
    *total = m.total;
    *used = m.used;
    return 0;
}

int ms__nvml_process_memory(unsigned index, pid_t pid, uint64_t *bytes, bool *listed)
{
    nvml_device d;
    if (device(index, &d) != 0)
        return MS_E_DEVICE;
    unsigned n = NVML_PROCS_MAX;
    *bytes = 0;
    *listed = false;
    if (nv.procs != NULL) {
        nvml_process *p = calloc(NVML_PROCS_MAX, sizeof *p);
        if (p == NULL)
            return MS_E_NOMEM;
        nvml_return r = nv.procs(d, &n, p);
        for (unsigned i = 0; r == 0 && i < n && i < NVML_PROCS_MAX; i++)
            if (p[i].pid == (unsigned)pid) {
                *listed = true;
                if (p[i].used_gpu_memory != ~0ull) /* NVML_VALUE_NOT_AVAILABLE */
                    *bytes += p[i].used_gpu_memory;
            }
        free(p);
        return r == 0 ? 0 : MS_E_DEVICE;
    }
    nvml_process_v1 *p = calloc(NVML_PROCS_MAX, sizeof *p);
    if (p == NULL)
        return MS_E_NOMEM;
    nvml_return r = nv.procs_v1(d, &n, p);
    for (unsigned i = 0; r == 0 && i < n && i < NVML_PROCS_MAX; i++)
        if (p[i].pid == (unsigned)pid) {
            *listed = true;
            if (p[i].used_gpu_memory != ~0ull)
                *bytes += p[i].used_gpu_memory;
        }
    free(p);
    return r == 0 ? 0 : MS_E_DEVICE;
}
