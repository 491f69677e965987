/*
 * Who owns a model, and what that lets a client do (docs/SECURITY.md).
 *
 * Every model records its owner: the uid, gid and supplementary groups of the client that loaded
 * it, from the kernel's word (SO_PEERCRED, SO_PEERGROUPS). A single-user daemon serves one uid,
 * and nothing here limits it. In group mode (--group) a member may use its own models and those
 * whose spec says shared_with "group"; only the owner, root and the daemon's own uid (the
 * service) may unload, swap or re-spec a model. Where modelshared runs as root, what it does for
 * a model (opening its weights to estimate them, running its workers) it does with the owner's
 * rights; where it does not, a member other than the service may not name files or run python
 * code in it (ms__owner_spec_allowed).
 */
#ifndef MS_DAEMON_OWNER_H
#define MS_DAEMON_OWNER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "../common/spec.h"
#include "access.h"

/* The most supplementary groups an owner keeps (those past it are dropped: fewer rights). */
#define MS__OWNER_GROUPS_MAX 64

typedef struct ms__owner {
    uid_t uid;
    gid_t gid;
    int ngroups;
    gid_t groups[MS__OWNER_GROUPS_MAX];
} ms__owner;

/* The peer of the connected Unix socket fd: 0 with *out, or MS_E_IO with a message. */
int ms__owner_of_peer(int fd, ms__owner *out, char *err, size_t errlen);

/* Whether this daemon takes an owner's rights for its work: it runs as root and o is another
 * uid. */
bool ms__owner_switches(const ms__owner *o);

/* The daemon's file-system rights while it acts for an owner (ms__owner_enter). */
typedef struct ms__owner_fs {
    bool entered;
    uid_t fsuid;
    gid_t fsgid;
    int ngroups;
    gid_t groups[MS__OWNER_GROUPS_MAX];
} ms__owner_fs;

/* Files opened until ms__owner_leave are opened with o's rights (the calling thread's fsuid,
 * fsgid and supplementary groups; modelshared has one thread), where ms__owner_switches(o);
 * otherwise nothing changes. Returns 0, or MS_E_PERMISSION when the rights cannot be taken
 * (nothing changed then: the caller must not open anything for o). */
int ms__owner_enter(const ms__owner *o, ms__owner_fs *saved, char *err, size_t errlen);
/* Back to the daemon's own rights. */
void ms__owner_leave(ms__owner_fs *saved);

/* Whether uid is trusted with every model: any uid of a single-user daemon; root and the
 * daemon's own uid in group mode. */
bool ms__owner_admin(const ms__access *a, uid_t uid);
/* Whether uid may unload, swap or re-spec a model of owner o. */
bool ms__owner_manages(const ms__access *a, const ms__owner *o, uid_t uid);
/* Whether uid may acquire (and see) a model of owner o with spec s. */
bool ms__owner_may_use(const ms__access *a, const ms__owner *o, const ms__spec *s, uid_t uid);
/* "uid 1001 (alice)" (the name when the system knows one) into buf. */
void ms__owner_name(const ms__owner *o, char *buf, size_t len);
/* MS_E_PERMISSION: "model \"tag\" belongs to uid 1001 (alice): only its owner or root may
 * <what>" into err. */
int ms__owner_refuse(const ms__owner *o, const char *tag, const char *what, char *err,
                     size_t errlen);
/* Whether a model of spec s may be loaded for (or swapped to by) owner o: 0, or MS_E_PERMISSION
 * when the daemon, in group mode, cannot act as o (not root, o not its uid) and s names a file
 * (weights) or python code, with a message that says how to run it instead. */
int ms__owner_spec_allowed(const ms__access *a, const ms__owner *o, const ms__spec *s, char *err,
                           size_t errlen);

#endif
