/*
 * NVIDIA Management Library, opened with dlopen (libnvidia-ml.so.1, or $MODELSHARE_NVML), so that
 * programs built with it run on machines without an NVIDIA driver. Only what modelshare asks of
 * it: device count, a device's memory, and the memory a process uses on a device.
 *
 * Device indices are NVML's (PCI bus order); workers set CUDA_DEVICE_ORDER=PCI_BUS_ID so that
 * "cuda:N" names the same card in both.
 */
#ifndef MS_NVML_H
#define MS_NVML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Opens and initialises NVML once per process; later calls return the first call's result (and
 * message). MS_E_DEVICE with the reason ("libnvidia-ml.so.1 not found: ...") when unavailable. */
int ms__nvml_open(char *err, size_t errlen);
/* Number of devices; 0 when NVML is unavailable. */
unsigned ms__nvml_device_count(void);
/* Total and used memory of device index. MS_E_DEVICE when unavailable or no such device. */
int ms__nvml_device_memory(unsigned index, uint64_t *total, uint64_t *used);
/* Memory process pid uses on device index (*listed false and *bytes 0 when NVML does not list
 * it as a compute process there). MS_E_DEVICE when NVML cannot say. */
int ms__nvml_process_memory(unsigned index, pid_t pid, uint64_t *bytes, bool *listed);

#endif
