/* Control requests to the daemon over the client's socket, and their replies: several threads'
 * at once, each reply to the thread that waits for it (call.c). */
#ifndef MS_LIB_CALL_H
#define MS_LIB_CALL_H

#include <jansson.h>

#include "internal.h"

/* Makes client's control-request state (locks, condition, lists) anew: at creation, and in a
 * child of fork() (whose copies of them are the parent's). */
void ms__lib_call_init(ms_client *client);
/* Frees what ms__lib_call_init made. */
void ms__lib_call_destroy(ms_client *client);

/* Sends req (adding "id"; req stays the caller's) with fds, waits for the reply. A reply with
 * "ok": false gives its code and message (recorded for ms_errmsg). On success *reply is the
 * reply (caller owns) and up to maxfds descriptors arrive in rfds (*rnfds; the caller owns
 * them). EOF or a broken socket: MS_E_DAEMON_LOST, and the client stays lost. MS_E_LIMIT with
 * *reply set (caller owns): the daemon said "ok" but the reply's descriptors were lost, this
 * process being at its RLIMIT_NOFILE; the connection is whole, and the caller gives back what
 * the reply granted. Several threads may call at once on one client; each waits for its own
 * reply only. A wait that the thread's wait check (wait.h) ends gives MS_E_TIMEOUT: the request
 * is abandoned, its reply dropped when it comes and a lease it grants given back; the connection
 * stays usable. */
int ms__lib_call(ms_client *client, json_t *req, const int *fds, int nfds, json_t **reply,
                 int *rfds, int *rnfds, int maxfds);

#endif
