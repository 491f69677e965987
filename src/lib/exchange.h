/* One request through a slot of a ring (ring.h): published, the worker's door rung, the
 * response awaited. The data plane's client end. */
#ifndef MS_LIB_EXCHANGE_H
#define MS_LIB_EXCHANGE_H

#include "internal.h"

/* A request in flight: which instance and slot it occupies. */
typedef struct ms__ticket {
    unsigned inst, slot;
    uint32_t gen; /* the door's gen it was submitted in (ring.h) */
    uint64_t id;
    int64_t deadline_ns;
    int64_t timeout_ns; /* what made the deadline: the thread's (wait.h) or the handle's */
    int64_t submit_ns;  /* when it was published */
    bool rang;          /* publishing it woke the worker from its sleep (ms__door_ring) */
    bool beside;        /* rang, and the worker last woke up on our CPU: it likely does again */
} ms__ticket;

/* Publishes req (its id and deadline are filled in here) in a free slot of the least busy
 * instance that is not down and rings that worker's door (model lock held; it is released while
 * waiting for a free slot, or for an instance to be back when every one is down). The deadline
 * (the thread's timeout, wait.h, else the handle's) bounds that wait too: a worker that holds
 * every slot with requests it does not answer makes the next request fail with MS_E_TIMEOUT,
 * never wait forever. Errors: MS_E_WORKER_LOST / MS_E_UNLOADED / MS_E_DAEMON_LOST / MS_E_TIMEOUT
 * (message recorded). */
int ms__submit(ms_model *model, ms__req *req, ms__ticket *tk);
/* Waits for the response to tk without the model lock: spins a bounded time (sized from how
 * long the worker took to answer recent requests, see exchange.c), then sleeps on the slot, looking
 * every 100 ms whether its instance lost its worker (the door's gen), the model failed, or the
 * daemon is gone. Then, with the lock held again, copies the decoded response to *resp and frees
 * the slot. On MS_E_TIMEOUT the slot, out (the request's output room) and held (its nheld inputs:
 * those with room of their own, the tensors and the manifest it names) stay the worker's until it
 * completes (or its worker is replaced): out is freed then, and each input once its owner freed it
 * too (ms__tensor_free_locked), so that no later request's bytes go where the worker may still
 * write; a stuck worker holds at most MS__RING_SLOTS of them per instance. The thread's wait check
 * (wait.h) ends the wait the same way (MS_E_TIMEOUT, "cancelled"). Errors: MS_E_TIMEOUT,
 * MS_E_WORKER_LOST, MS_E_UNLOADED, MS_E_DAEMON_LOST, MS_E_PROTOCOL (message recorded). The
 * response's own status is left for the caller. Returns with the model lock held. */
int ms__await(ms_model *model, const ms__ticket *tk, ms_tensor *out, const ms_tensor *const *held,
              int nheld, ms__resp *resp);
/* After ms__await failed: whether tk's slot and output room stayed the worker's (its deadline
 * passed, or it was cancelled: they are freed once the worker is done), rather than being freed
 * (its worker is gone) (model lock held). */
bool ms__orphaned(const ms_model *model, const ms__ticket *tk);
/* Frees the slots of timed-out requests that the worker has completed since (model lock held). */
void ms__reap_orphans(ms_model *model);

#endif
