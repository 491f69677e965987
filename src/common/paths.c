/* Where things live: the socket, its directory, lock files and the sibling binaries. */
#include "paths.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"
#include "modelshare.h"
#include "util.h"

static int path_fits(const char *path, char *buf, size_t buflen, char *err, size_t errlen)
{
    size_t len = strlen(path);
    size_t max = buflen > 0 ? buflen - 1 : 0;
    if (max > MS__SOCKET_PATH_MAX)
        max = MS__SOCKET_PATH_MAX;
    if (len == 0 || len > max)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "socket path must be 1 to %zu bytes long, got %zu bytes: %.200s", max, len,
                        path);
    memcpy(buf, path, len + 1);
    return 0;
}

int ms__socket_path_default(char *buf, size_t buflen, char *err, size_t errlen)
{
    char tmp[PATH_MAX + 64];
    const char *env = ms__env_str("MODELSHARE_SOCKET", NULL);
    if (env != NULL)
        return path_fits(env, buf, buflen, err, errlen);
    const char *xdg = ms__env_str("XDG_RUNTIME_DIR", NULL);
    if (xdg != NULL) {
        int n = snprintf(tmp, sizeof tmp, "%s/modelshare/modelshared.sock", xdg);
        if (n < 0 || (size_t)n >= sizeof tmp)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "XDG_RUNTIME_DIR is too long for a socket path (%zu bytes)",
                            strlen(xdg));
        return path_fits(tmp, buf, buflen, err, errlen);
    }
    snprintf(tmp, sizeof tmp, "/tmp/modelshare-%lu/modelshared.sock", (unsigned long)geteuid());
    return path_fits(tmp, buf, buflen, err, errlen);
}

int ms__socket_dir_prepare(const char *socket_path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    if (socket_path == NULL)
        return ms__fail(err, errlen, MS_E_INVAL, "expected a socket path, got NULL");
    size_t len = strlen(socket_path);
    if (len >= sizeof dir)
        return ms__fail(err, errlen, MS_E_INVAL, "socket path too long (%zu bytes)", len);
    memcpy(dir, socket_path, len + 1);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        /* Relative name in the current directory. */
        dir[0] = '.';
        dir[1] = '\0';
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }

    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ms__fail(err, errlen, errno == EACCES ? MS_E_PERMISSION : MS_E_IO,
                        "cannot create socket directory %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0)
        return ms__fail(err, errlen, MS_E_IO, "cannot stat socket directory %s: %s", dir,
                        strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ms__fail(err, errlen, MS_E_PERMISSION,
                        "socket directory %s is not a directory (mode %o)", dir,
                        (unsigned)st.st_mode);
    if (st.st_uid != geteuid())
        return ms__fail(err, errlen, MS_E_PERMISSION,
                        "socket directory %s belongs to uid %lu, expected uid %lu (this user)", dir,
                        (unsigned long)st.st_uid, (unsigned long)geteuid());
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return ms__fail(err, errlen, MS_E_PERMISSION,
                        "socket directory %s has mode %03o: expected no write permission for "
                        "group or others (e.g. 0700)",
                        dir, (unsigned)(st.st_mode & 0777));
    return 0;
}

int ms__path_with_suffix(const char *path, const char *suffix, char *buf, size_t buflen)
{
    if (path == NULL || suffix == NULL || buf == NULL)
        return MS_E_INVAL;
    int n = snprintf(buf, buflen, "%s%s", path, suffix);
    if (n < 0 || (size_t)n >= buflen)
        return MS_E_INVAL;
    return 0;
}

/* The folder of the object this code is linked into, into self (PATH_MAX bytes). */
static int self_dir(char *self, size_t selflen)
{
    Dl_info info;
    struct link_map *map = NULL;
    if (dladdr1((void *)&ms__sibling_binary, &info, (void **)&map, RTLD_DL_LINKMAP) != 0 &&
        map != NULL && map->l_name != NULL && map->l_name[0] != '\0') {
        /* A shared object (libmodelshare.so): its name as the loader opened it. */
        if (map->l_name[0] == '/') {
            snprintf(self, selflen, "%s", map->l_name);
        } else if (realpath(map->l_name, self) == NULL) {
            return MS_E_INVAL;
        }
    } else {
        /* The main program (ms_common linked statically): dladdr would give argv[0], which may
         * be relative or made up, so ask the kernel. */
        ssize_t n = readlink("/proc/self/exe", self, selflen - 1);
        if (n <= 0)
            return MS_E_INVAL;
        self[n] = '\0';
    }
    char *slash = strrchr(self, '/');
    if (slash == NULL)
        return MS_E_INVAL;
    *slash = '\0';
    return 0;
}

/* name's path in the folder self, else where an install puts it; the first place looked when it
 * is in none. */
static int beside(const char *self, const char *name, char *buf, size_t buflen)
{
    /* Beside this object (the build folder, a bin/ folder, the Python package); else in the
     * bin/ folder of an installed tree whose library lies in lib/ or lib/<multiarch>/. */
    const char *const rel[] = {"", "/../bin", "/../../bin"};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        int n = snprintf(buf, buflen, "%s%s/%s", self, rel[i], name);
        if (n > 0 && (size_t)n < buflen && access(buf, X_OK) == 0)
            return 0;
    }
#ifdef MS_INSTALL_BINDIR
    int m = snprintf(buf, buflen, "%s/%s", MS_INSTALL_BINDIR, name);
    if (m > 0 && (size_t)m < buflen && access(buf, X_OK) == 0)
        return 0;
#endif
    /* None there: name the first place looked, for the caller's error message. */
    int n = snprintf(buf, buflen, "%s/%s", self, name);
    if (n < 0 || (size_t)n >= buflen)
        return MS_E_INVAL;
    return 0;
}

int ms__sibling_binary(const char *name, const char *env_override, char *buf, size_t buflen)
{
    if (name == NULL || buf == NULL || buflen == 0)
        return MS_E_INVAL;
    if (env_override != NULL) {
        const char *env = ms__env_str(env_override, NULL);
        if (env != NULL) {
            int n = snprintf(buf, buflen, "%s", env);
            return (n < 0 || (size_t)n >= buflen) ? MS_E_INVAL : 0;
        }
    }
    char self[PATH_MAX];
    if (self_dir(self, sizeof self) != 0)
        return MS_E_INVAL;
    return beside(self, name, buf, buflen);
}
