/* Another model's arena linked to a model's workers, for inputs passed by reference from one
 * model to the next (a pipeline). */
#ifndef MS_LIB_LINK_H
#define MS_LIB_LINK_H

#include "internal.h"

/* The index (1..MS__ARENA_LINKS, *arena) under which model's workers map the arena of the lease
 * src_lease of the same client: from the model's cache, else asked of the daemon once ("link",
 * proto.h) and cached. Takes the model lock and the client's control lock, neither held by the
 * caller. Errors (message recorded): MS_E_LIMIT (MS__ARENA_LINKS linked already), MS_E_INVAL,
 * MS_E_UNLOADED, MS_E_DAEMON_LOST, MS_E_PROTOCOL. */
int ms__link_get(ms_model *model, int64_t src_lease, int *arena);
/* The model gone was released: the other models of its client forget their links to its arena
 * (the daemon drops them itself). gone is out of the client's list already. */
void ms__link_forget(ms_model *gone);

#endif
