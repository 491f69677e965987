/* A model's owner and what it allows (owner.h). */
#include "owner.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../common/util.h"
#include "modelshare.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

int ms__owner_of_peer(int fd, ms__owner *out, char *err, size_t errlen)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    memset(out, 0, sizeof *out);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return ms__fail(err, errlen, MS_E_IO, "SO_PEERCRED: %s", strerror(errno));
    out->uid = cred.uid;
    out->gid = cred.gid;
    /* A peer of more groups than the record keeps (ERANGE) keeps only its primary group: fewer
     * rights, never more. */
    len = sizeof out->groups;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, out->groups, &len) == 0)
        out->ngroups = (int)(len / sizeof(gid_t));
    return 0;
}

bool ms__owner_switches(const ms__owner *o)
{
    return geteuid() == 0 && o->uid != 0;
}

/* The thread's own groups call: glibc's setgroups() changes every thread's, and would be
 * refused by the kernel's per-thread credentials only here. */
static int thread_setgroups(int n, const gid_t *groups)
{
    return (int)syscall(SYS_setgroups, (size_t)n, groups);
}

int ms__owner_enter(const ms__owner *o, ms__owner_fs *saved, char *err, size_t errlen)
{
    memset(saved, 0, sizeof *saved);
    if (!ms__owner_switches(o))
        return 0;
    int n = getgroups(MS__OWNER_GROUPS_MAX, saved->groups);
    if (n < 0 || thread_setgroups(o->ngroups, o->groups) != 0)
        return ms__fail(err, errlen, MS_E_PERMISSION,
                        "cannot take the groups of uid %lu to open its files: %s",
                        (unsigned long)o->uid, strerror(errno));
    saved->ngroups = n;
    saved->fsgid = (gid_t)setfsgid(o->gid);
    saved->fsuid = (uid_t)setfsuid(o->uid);
    saved->entered = true;
    if ((uid_t)setfsuid((uid_t)-1) != o->uid || (gid_t)setfsgid((gid_t)-1) != o->gid) {
        ms__owner_leave(saved);
        return ms__fail(err, errlen, MS_E_PERMISSION,
                        "cannot take the rights of uid %lu to open its files",
                        (unsigned long)o->uid);
    }
    return 0;
}

void ms__owner_leave(ms__owner_fs *saved)
{
    if (!saved->entered)
        return;
    setfsuid(saved->fsuid);
    setfsgid(saved->fsgid);
    thread_setgroups(saved->ngroups, saved->groups);
    saved->entered = false;
}

bool ms__owner_admin(const ms__access *a, uid_t uid)
{
    return !a->has_group || uid == 0 || uid == a->uid;
}

bool ms__owner_manages(const ms__access *a, const ms__owner *o, uid_t uid)
{
    return ms__owner_admin(a, uid) || uid == o->uid;
}

bool ms__owner_may_use(const ms__access *a, const ms__owner *o, const ms__spec *s, uid_t uid)
{
    return ms__owner_manages(a, o, uid) || s->shared_group;
}

void ms__owner_name(const ms__owner *o, char *buf, size_t len)
{
    struct passwd pw, *found = NULL;
    char pwbuf[1024];
    if (getpwuid_r(o->uid, &pw, pwbuf, sizeof pwbuf, &found) != 0)
        found = NULL;
    if (found != NULL)
        snprintf(buf, len, "uid %lu (%.64s)", (unsigned long)o->uid, found->pw_name);
    else
        snprintf(buf, len, "uid %lu", (unsigned long)o->uid);
}

int ms__owner_refuse(const ms__owner *o, const char *tag, const char *what, char *err,
                     size_t errlen)
{
    char who[96];
    ms__owner_name(o, who, sizeof who);
    return ms__fail(err, errlen, MS_E_PERMISSION,
                    "model \"%s\" belongs to %s: only its owner or root may %s it", tag, who, what);
}

int ms__owner_spec_allowed(const ms__access *a, const ms__owner *o, const ms__spec *s, char *err,
                           size_t errlen)
{
    if (!a->has_group || o->uid == a->uid || ms__owner_switches(o))
        return 0;
    const char *what = s->python != NULL    ? "python models (they run your code)"
                       : s->weights != NULL ? "a weights file"
                                            : NULL;
    if (what == NULL)
        return 0;
    return ms__fail(err, errlen, MS_E_PERMISSION,
                    "this group daemon runs as uid %lu, not root, so it cannot run or open files "
                    "with the rights of uid %lu: it refuses %s of group members. Run the group "
                    "daemon as root (contrib/systemd), use a model the service shares "
                    "(shared_with \"group\"), or run your own daemon: unset MODELSHARE_SOCKET "
                    "(each user's processes start their own)",
                    (unsigned long)a->uid, (unsigned long)o->uid, what);
}
