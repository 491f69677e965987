/* /metrics over HTTP on the event loop's thread (metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/hostport.h"
#include "../common/log.h"
#include "../common/util.h"
#include "exposition.h"
#include "modelshare.h"

struct ms__metrics {
    struct MHD_Daemon *http;
    ms__models *ml; /* not owned */
    int epfd;       /* not owned */
    int http_epfd;  /* the HTTP server's own epoll set (its), watched in epfd */
    ms__evsrc ev;
    char where[80]; /* "127.0.0.1:9464" */
};

static const char not_found[] = "not found: this server has /metrics only\n";
static const char not_allowed[] = "method not allowed: /metrics answers GET and HEAD\n";

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             struct MHD_Response *r)
{
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result static_reply(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    return reply(conn, status, "text/plain; charset=utf-8", r);
}

/* One request: GET or HEAD /metrics, else 404 or 405. Answered at the first call (a GET has no
 * body to wait for); the later calls of a request that had a body only read it away. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    static int answered;
    (void)version;
    (void)upload_data;
    ms__metrics *mx = cls;
    if (*con_cls == &answered) {
        *upload_size = 0;
        return MHD_YES;
    }
    *con_cls = &answered;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return static_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed);
    if (strcmp(url, "/metrics") != 0)
        return static_reply(conn, MHD_HTTP_NOT_FOUND, not_found);
    char *text = NULL;
    size_t len = 0;
    if (ms__exposition(mx->ml, &text, &len) != 0)
        return static_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL)
        free(text);
    return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", r);
}

static void http_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    ms__log_warn("metrics: %s", msg);
}

/* The listening socket, ours to make so that a taken port is a clear error. */
static int listen_on(const ms__hostport *hp, const char *where, int *out, char *err, size_t errlen)
{
    int fd = socket(hp->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return ms__fail(err, errlen, MS_E_IO, "--metrics %s: socket: %s", where, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (hp->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&hp->addr, hp->len) != 0 || listen(fd, 16) != 0) {
        int e = errno;
        close(fd);
        return ms__fail(err, errlen,
                        e == EADDRINUSE ? MS_E_BUSY
                        : e == EACCES   ? MS_E_PERMISSION
                                        : MS_E_IO,
                        "--metrics %s: cannot listen there: %s%s", where, strerror(e),
                        e == EADDRINUSE ? " (another program has the port: pick another)" : "");
    }
    *out = fd;
    return 0;
}

/* The HTTP server on listening socket fd (taken, also on failure), its epoll set watched. */
static int start_http(ms__metrics *mx, int fd, char *err, size_t errlen)
{
    mx->http =
        MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, mx,
                         MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)MS__METRICS_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)MS__METRICS_IDLE_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)65536, MHD_OPTION_EXTERNAL_LOGGER, http_log, NULL, MHD_OPTION_END);
    if (mx->http == NULL) /* fd: left to the HTTP library, which may have closed it */
        return ms__fail(err, errlen, MS_E_IO, "--metrics %s: cannot start the HTTP server",
                        mx->where);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(mx->http, MHD_DAEMON_INFO_EPOLL_FD);
    if (info == NULL || info->epoll_fd < 0)
        return ms__fail(err, errlen, MS_E_IO, "--metrics %s: the HTTP server has no epoll set",
                        mx->where);
    mx->http_epfd = info->epoll_fd;
    fcntl(mx->http_epfd, F_SETFD, FD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &mx->ev};
    if (epoll_ctl(mx->epfd, EPOLL_CTL_ADD, mx->http_epfd, &ev) != 0) {
        mx->http_epfd = -1;
        return ms__fail(err, errlen, MS_E_IO, "--metrics %s: epoll_ctl: %s", mx->where,
                        strerror(errno));
    }
    return 0;
}

int ms__metrics_open(const char *addr, ms__models *ml, int epfd, ms__metrics **out, char *err,
                     size_t errlen)
{
    char why[MS__ERRLEN];
    ms__hostport hp;
    if (ms__hostport_parse(addr, &hp, why, sizeof why) != 0)
        return ms__fail(err, errlen, MS_E_INVAL, "--metrics: %s", why);
    ms__metrics *mx = calloc(1, sizeof *mx);
    if (mx == NULL)
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory");
    mx->ml = ml;
    mx->epfd = epfd;
    mx->http_epfd = -1;
    mx->ev.kind = MS__EV_METRICS;
    mx->ev.obj = mx;
    ms__hostport_str(&hp, mx->where, sizeof mx->where);
    int fd = -1;
    int rc = listen_on(&hp, mx->where, &fd, err, errlen);
    if (rc == 0)
        rc = start_http(mx, fd, err, errlen);
    if (rc != 0) {
        ms__metrics_close(mx);
        return rc;
    }
    if (!ms__hostport_loopback(&hp))
        ms__log_warn("metrics on %s: reachable from other machines, without authentication",
                     mx->where);
    ms__log_info("metrics on http://%s/metrics", mx->where);
    *out = mx;
    return 0;
}

void ms__metrics_run(ms__metrics *mx)
{
    if (mx != NULL && mx->http != NULL)
        MHD_run(mx->http);
}

int ms__metrics_timeout_ms(ms__metrics *mx)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (mx == NULL || mx->http == NULL || MHD_get_timeout(mx->http, &t) != MHD_YES)
        return -1;
    return t > 60000 ? 60000 : (int)t;
}

void ms__metrics_close(ms__metrics *mx)
{
    if (mx == NULL)
        return;
    if (mx->http_epfd >= 0)
        epoll_ctl(mx->epfd, EPOLL_CTL_DEL, mx->http_epfd, NULL);
    if (mx->http != NULL)
        MHD_stop_daemon(mx->http); /* closes its connections, its epoll set and the socket */
    free(mx);
}
