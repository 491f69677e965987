/*
 * Who may talk to this daemon: its own user always; with --group, also every process whose
 * primary or supplementary groups include that group (a machine-wide daemon shared by the
 * processes of one Unix group). Checked on each accepted connection from the kernel's word
 * (SO_PEERCRED, SO_PEERGROUPS), never from anything the client says.
 */
#ifndef MS_DAEMON_ACCESS_H
#define MS_DAEMON_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct ms__access {
    uid_t uid;      /* the daemon's effective uid */
    bool has_group; /* --group was given */
    gid_t gid;      /* its gid */
} ms__access;

/* Parses a --group argument: a group name known to the system, or a number (a gid). Returns 0
 * with *gid, or MS_E_INVAL with a message in err saying what was expected. */
int ms__access_parse_group(const char *arg, gid_t *gid, char *err, size_t errlen);

/* Whether the peer of the connected socket fd may use the daemon: 0 with *cred filled, or
 * MS_E_PERMISSION (another user, outside the group) or MS_E_IO (the kernel would not say), with
 * a message in err. */
int ms__access_check(const ms__access *a, int fd, struct ucred *cred, char *err, size_t errlen);

#endif
