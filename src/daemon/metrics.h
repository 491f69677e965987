/*
 * `modelshared --metrics ADDR`: /metrics in the Prometheus text format over HTTP
 * (libmicrohttpd), served on the event loop's own thread. The HTTP library runs without a thread
 * of its own: its epoll descriptor is watched in the daemon's epoll set (MS__EV_METRICS), and
 * ms__metrics_run() lets it accept, read and answer there. So the handler reads the models, the
 * registry and the stats pages exactly as status does, with no lock and no snapshot: nothing
 * changes while it builds the text (exposition.h).
 */
#ifndef MS_DAEMON_METRICS_H
#define MS_DAEMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "models.h"

/* Connections served at once, and how long an idle one stays open. */
#define MS__METRICS_CONNECTIONS_MAX 16
#define MS__METRICS_IDLE_S 10

typedef struct ms__metrics ms__metrics;

/* Listens on addr (hostport.h: "9464", "127.0.0.1:9464", "0.0.0.0:9464", "[::1]:9464") and
 * watches the HTTP server in epfd (not owned) with an event source of kind MS__EV_METRICS; reads
 * ml (not owned) when scraped. A non-loopback address is logged as a warning. Errors: MS_E_INVAL
 * (addr malformed), MS_E_BUSY (the port is taken), MS_E_PERMISSION, MS_E_IO, MS_E_NOMEM, with a
 * message naming the address. *out is freed with ms__metrics_close(). */
int ms__metrics_open(const char *addr, ms__models *ml, int epfd, ms__metrics **out, char *err,
                     size_t errlen);
/* The HTTP server's descriptors are ready (or its timeout passed): accept, read, answer. */
void ms__metrics_run(ms__metrics *mx);
/* Milliseconds until the HTTP server needs ms__metrics_run() again (idle connections to close);
 * -1 when it waits only for its descriptors. */
int ms__metrics_timeout_ms(ms__metrics *mx);
/* Closes every connection and the listening socket; NULL is a no-op. */
void ms__metrics_close(ms__metrics *mx);

#endif
