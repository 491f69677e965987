/* Socket activation (activation.h). */
#include "activation.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/util.h"
#include "modelshare.h"

static int parse_count(const char *name, const char *s, long long max, long long *out, char *err,
                       size_t errlen)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "$%s: expected a number from 0 to %lld, got \"%.40s\"", name, max, s);
    *out = v;
    return 0;
}

int ms__activation_parse(const char *listen_pid, const char *listen_fds, pid_t self, int *nfds,
                         char *err, size_t errlen)
{
    *nfds = 0;
    if (listen_pid == NULL || listen_fds == NULL)
        return 0;
    long long pid, n;
    int r = parse_count("LISTEN_PID", listen_pid, 4194304, &pid, err, errlen);
    if (r != 0)
        return r;
    if (pid != (long long)self)
        return 0; /* meant for the process that started us */
    r = parse_count("LISTEN_FDS", listen_fds, 1024, &n, err, errlen);
    if (r == 0)
        *nfds = (int)n;
    return r;
}

/* Descriptor fd: a listening Unix stream socket bound to a path, which goes in path. */
static int check_socket(int fd, char *path, size_t pathlen, char *err, size_t errlen)
{
    int domain = 0, type = 0, listening = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &(socklen_t){sizeof type}) != 0 ||
        type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &(socklen_t){sizeof listening}) !=
            0 ||
        !listening)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "socket activation: expected descriptor %d to be a listening Unix stream "
                        "socket (systemd: ListenStream=/path), got %s",
                        fd, errno == ENOTSOCK || errno == EBADF ? strerror(errno) : "another kind");
    struct sockaddr_un addr;
    socklen_t alen = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &alen) != 0 ||
        alen <= offsetof(struct sockaddr_un, sun_path) || addr.sun_path[0] == '\0')
        return ms__fail(err, errlen, MS_E_INVAL,
                        "socket activation: expected descriptor %d to be bound to a path, got an "
                        "unnamed or abstract socket",
                        fd);
    addr.sun_path[sizeof addr.sun_path - 1] = '\0';
    if (strlen(addr.sun_path) >= pathlen)
        return ms__fail(err, errlen, MS_E_INVAL, "socket activation: the socket path is too long");
    snprintf(path, pathlen, "%s", addr.sun_path);
    return 0;
}

int ms__activation_take(int *fd, char *path, size_t pathlen, char *err, size_t errlen)
{
    *fd = -1;
    int n = 0;
    int r =
        ms__activation_parse(getenv("LISTEN_PID"), getenv("LISTEN_FDS"), getpid(), &n, err, errlen);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (r != 0 || n == 0)
        return r;
    if (n != 1)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "socket activation: expected one inherited socket, got %d (one "
                        "ListenStream= in the .socket unit)",
                        n);
    r = check_socket(MS__ACTIVATION_FD, path, pathlen, err, errlen);
    if (r != 0)
        return r;
    int fl = fcntl(MS__ACTIVATION_FD, F_GETFL);
    if (fcntl(MS__ACTIVATION_FD, F_SETFD, FD_CLOEXEC) != 0 || fl < 0 ||
        fcntl(MS__ACTIVATION_FD, F_SETFL, fl | O_NONBLOCK) != 0)
        return ms__fail(err, errlen, MS_E_IO, "socket activation: fcntl: %s", strerror(errno));
    *fd = MS__ACTIVATION_FD;
    return 0;
}
