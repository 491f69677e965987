/* Where things live: the socket, its directory, lock files, and the sibling binaries. */
#ifndef MS_PATHS_H
#define MS_PATHS_H

#include <stddef.h>

/* Longest socket path (sizeof sun_path - 1). */
#define MS__SOCKET_PATH_MAX 107

/* The default socket path: $MODELSHARE_SOCKET, else $XDG_RUNTIME_DIR/modelshare/modelshared.sock,
 * else /tmp/modelshare-$UID/modelshared.sock. Returns 0, or MS_E_INVAL with a message when the
 * path does not fit in a sockaddr_un. */
int ms__socket_path_default(char *buf, size_t buflen, char *err, size_t errlen);

/* Creates the directory that holds path (one level: the parent directory itself) with mode 0700
 * if it is missing. If it exists it must belong to the caller's uid and must not be writable by
 * group or others (else MS_E_PERMISSION with a message saying why). */
int ms__socket_dir_prepare(const char *socket_path, char *err, size_t errlen);

/* path + suffix into buf ("…/modelshared.sock" + ".lock"). MS_E_INVAL if it does not fit. */
int ms__path_with_suffix(const char *path, const char *suffix, char *buf, size_t buflen);

/* Absolute path of a program that comes with modelshare, e.g. ms__sibling_binary("modelshared",
 * "MODELSHARE_DAEMON"). The environment variable env_override, when set and non-empty, wins.
 * Otherwise the first executable found of: beside the object that contains this function
 * (libmodelshare.so or the running program, found with dladdr), ../bin/ and ../../bin/ from there
 * (an installed tree), the configured install bindir. When none exists, the path beside the
 * object, for the caller's error message. Returns 0, or MS_E_INVAL when it does not fit. */
int ms__sibling_binary(const char *name, const char *env_override, char *buf, size_t buflen);

#endif
