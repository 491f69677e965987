/* One control request to the daemon over the client's socket, and its reply. */
#ifndef MS_LIB_CALL_H
#define MS_LIB_CALL_H

#include <jansson.h>

#include "internal.h"

/* Sends req (adding "id"; req stays the caller's) with fds, waits for the reply. A reply with
 * "ok": false gives its code and message (recorded for ms_errmsg). On success *reply is the
 * reply (caller owns) and up to maxfds descriptors arrive in rfds (*rnfds; the caller owns
 * them). EOF or a broken socket: MS_E_DAEMON_LOST, and the client stays lost. MS_E_LIMIT with
 * *reply set (caller owns): the daemon said "ok" but the reply's descriptors were lost, this
 * process being at its RLIMIT_NOFILE; the connection is whole, and the caller gives back what
 * the reply granted. */
int ms__lib_call(ms_client *client, json_t *req, const int *fds, int nfds, json_t **reply,
                 int *rfds, int *rnfds, int maxfds);

#endif
