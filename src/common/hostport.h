/*
 * A TCP listening address given by the operator (`modelshared --metrics ADDR`): untrusted text
 * turned into a socket address, or a specific error. Loopback unless the text names another
 * address:
 *
 *   "9464"             127.0.0.1:9464
 *   "localhost:9464"   127.0.0.1:9464
 *   "127.0.0.1:9464"   as given (any IPv4 address: "0.0.0.0:9464" is every interface)
 *   "[::1]:9464"       an IPv6 address in brackets ("[::]:9464": every interface)
 *
 * Host names other than localhost are refused (no resolver behind a daemon's start), and so is an
 * empty host (":9464"), which elsewhere means every interface: that must be said outright.
 */
#ifndef MS_HOSTPORT_H
#define MS_HOSTPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Longest text accepted ("[ffff:...]:65535" fits). */
#define MS__HOSTPORT_MAX 64

typedef struct ms__hostport {
    struct sockaddr_storage addr; /* AF_INET or AF_INET6 */
    socklen_t len;
} ms__hostport;

/* Parses text into *out (written only on success). MS_E_INVAL with a message saying what was
 * expected and what came: empty, too long, no port, a port that is not 1 to 65535, an empty host,
 * a host that is not an IP address or localhost, unbalanced brackets. Pure; fuzzed. */
int ms__hostport_parse(const char *text, ms__hostport *out, char *err, size_t errlen);

/* True for 127.0.0.0/8 and ::1 (and IPv4-mapped loopback). */
bool ms__hostport_loopback(const ms__hostport *hp);

/* "127.0.0.1:9464", "[::1]:9464" into buf (always NUL-terminated). */
void ms__hostport_str(const ms__hostport *hp, char *buf, size_t buflen);

#endif
