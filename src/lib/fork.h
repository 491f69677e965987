/* The process's clients, made harmless in a child of fork(). Calls no other file of the library. */
#ifndef MS_LIB_FORK_H
#define MS_LIB_FORK_H

#include "internal.h"

/* Adds a client to, or removes it from, the process's list. In a child that fork() made, every
 * listed client loses its copies of the daemon connection and the arena descriptors (so that the
 * parent's leases end when the parent does, whatever its children do) and answers
 * MS_E_DAEMON_LOST from then on; mappings stay, so that outputs read in place stay readable. */
void ms__lib_fork_track(ms_client *client);
void ms__lib_fork_untrack(ms_client *client);
/* One client this process got through fork() (forked_from set), removed from the list; NULL when
 * none is left. The caller frees it. */
ms_client *ms__lib_fork_take_inherited(void);

#endif
