/* Who may talk to this daemon (access.h). */
#include "access.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"
#include "modelshare.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

/* The most supplementary groups a peer's list is read for (the kernel's NGROUPS_MAX). */
#define PEER_GROUPS_MAX 65536

int ms__access_parse_group(const char *arg, gid_t *gid, char *err, size_t errlen)
{
    if (arg == NULL || arg[0] == '\0')
        return ms__fail(err, errlen, MS_E_INVAL,
                        "--group: expected a group name or a gid, got nothing");
    char *end;
    errno = 0;
    unsigned long long n = strtoull(arg, &end, 10);
    if (arg[0] >= '0' && arg[0] <= '9' && *end == '\0') {
        if (errno != 0 || n >= (gid_t)-1)
            return ms__fail(err, errlen, MS_E_INVAL, "--group: gid %.40s is out of range", arg);
        *gid = (gid_t)n;
        return 0;
    }
    struct group gr, *found = NULL;
    char buf[16384];
    int r = getgrnam_r(arg, &gr, buf, sizeof buf, &found);
    if (r != 0 || found == NULL)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "--group: expected a group name known to this system or a gid, got "
                        "\"%.100s\"%s%s",
                        arg, r != 0 ? ": " : "", r != 0 ? strerror(r) : "");
    *gid = found->gr_gid;
    return 0;
}

/* Whether gid is among the supplementary groups of fd's peer. */
static bool peer_in_group(int fd, gid_t gid)
{
    gid_t small[64];
    gid_t *groups = small;
    socklen_t len = sizeof small;
    bool found = false;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
        if (errno != ERANGE || len > PEER_GROUPS_MAX * sizeof(gid_t))
            return false;
        groups = malloc(len);
        if (groups == NULL || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
            free(groups);
            return false;
        }
    }
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        found = found || groups[i] == gid;
    if (groups != small)
        free(groups);
    return found;
}

int ms__access_check(const ms__access *a, int fd, struct ucred *cred, char *err, size_t errlen)
{
    socklen_t len = sizeof *cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) != 0)
        return ms__fail(err, errlen, MS_E_IO, "SO_PEERCRED: %s", strerror(errno));
    if (cred->uid == a->uid)
        return 0;
    if (a->has_group && (cred->gid == a->gid || peer_in_group(fd, a->gid)))
        return 0;
    if (a->has_group)
        return ms__fail(err, errlen, MS_E_PERMISSION,
                        "modelshared of uid %lu serves its own user and group %lu; refused a "
                        "client of uid %lu outside that group",
                        (unsigned long)a->uid, (unsigned long)a->gid, (unsigned long)cred->uid);
    return ms__fail(err, errlen, MS_E_PERMISSION,
                    "modelshared of uid %lu refuses a client of uid %lu (a daemon started with "
                    "--group serves the processes of that group too)",
                    (unsigned long)a->uid, (unsigned long)cred->uid);
}
