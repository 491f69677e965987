/*
 * A model's worker launched: the supervisor's exec context made from the model and the spec
 * (the program, a Python worker's interpreter, working directory and sys.path, the instance's
 * spec with its device, a GPU instance's CUDA_VISIBLE_DEVICES), then the supervisor starts it.
 * The life cycle reaches workers through ms__sup_ops (ms__launch_ops), which a unit test
 * replaces.
 */
#ifndef MS_DAEMON_LAUNCH_H
#define MS_DAEMON_LAUNCH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"
#include "supervisor.h"

/* What the life cycle asks of worker processes: spawn one for instance inst of m, of spec
 * (canonical spec_json: m's own, or a swap's new version's) on door (its read-write page 0 and its
 * bell page) with the constructor memfd ctor_fd (-1: none; both stay the caller's), *out the worker
 * record, linked to no model; stop one (SIGTERM, SIGKILL after the grace). */
typedef struct ms__sup_ops {
    int (*spawn)(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                 const json_t *spec_json, const ms__door_fds *door, int ctor_fd, ms__wproc **out,
                 char *err, size_t errlen);
    void (*stop)(ms__supervisor *s, ms__wproc *w, int64_t now);
    void (*kill)(ms__supervisor *s, ms__wproc *w); /* SIGKILL now (the watchdog) */
} ms__sup_ops;

/* The real ones: ms__launch_spawn, ms__sup_stop and ms__sup_kill. */
extern const ms__sup_ops ms__launch_ops;

/* ms__sup_ops.spawn: the exec context of m's worker (python or not, its device), then
 * ms__sup_exec. MS_E_LOAD_FAILED / MS_E_IO / MS_E_LIMIT / MS_E_NOMEM with a message. */
int ms__launch_spawn(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                     const json_t *spec_json, const ms__door_fds *door, int ctor_fd,
                     ms__wproc **out, char *err, size_t errlen);

#endif
