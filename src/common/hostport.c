/* Operator-given TCP listening addresses (hostport.h). */
#include "hostport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "modelshare.h"
#include "util.h"

/* "1".."65535", digits only. Returns the port, or 0. */
static unsigned parse_port(const char *p)
{
    unsigned v = 0;
    if (*p == '\0' || strlen(p) > 5)
        return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (unsigned)(*p - '0');
    }
    return v <= 65535 ? v : 0;
}

/* Splits text into host and port (both into the caller's buffers of MS__HOSTPORT_MAX + 1). */
static int split(const char *text, char *host, char *port, bool *bracketed, char *err,
                 size_t errlen)
{
    const char *colon;
    *bracketed = text[0] == '[';
    if (*bracketed) {
        const char *close = strchr(text, ']');
        if (close == NULL)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "expected [IPV6]:PORT, got \"%s\" (no closing bracket)", text);
        if (close[1] != ':')
            return ms__fail(err, errlen, MS_E_INVAL,
                            "expected [IPV6]:PORT, got \"%s\" (no :PORT after the bracket)", text);
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL) {
            host[0] = '\0';
            snprintf(port, MS__HOSTPORT_MAX + 1, "%s", text);
            return 1; /* a port alone */
        }
        if (strchr(text, ':') != colon)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "expected HOST:PORT, got \"%s\" (an IPv6 address goes in brackets: "
                            "[::1]:9464)",
                            text);
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
    }
    snprintf(port, MS__HOSTPORT_MAX + 1, "%s", colon + 1);
    return 0;
}

/* host (a port given) into out. */
static int set_host(const char *text, const char *host, bool bracketed, unsigned port,
                    ms__hostport *out, char *err, size_t errlen)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    if (host[0] == '\0')
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected HOST:PORT, got \"%s\" (no host: say 127.0.0.1:%u for this "
                        "machine only, or 0.0.0.0:%u for every interface)",
                        text, port, port);
    if (bracketed) {
        if (inet_pton(AF_INET6, host, &v6.sin6_addr) != 1)
            return ms__fail(err, errlen, MS_E_INVAL,
                            "expected an IPv6 address in the brackets of \"%s\", got \"%s\"", text,
                            host);
        memset(out, 0, sizeof *out);
        memcpy(&out->addr, &v6, sizeof v6);
        out->len = sizeof v6;
        return 0;
    }
    if (strcmp(host, "localhost") == 0)
        v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &v4.sin_addr) != 1)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected an IPv4 address (like 127.0.0.1), [IPV6] or localhost before "
                        ":%u in \"%s\", got \"%s\"",
                        port, text, host);
    memset(out, 0, sizeof *out);
    memcpy(&out->addr, &v4, sizeof v4);
    out->len = sizeof v4;
    return 0;
}

int ms__hostport_parse(const char *text, ms__hostport *out, char *err, size_t errlen)
{
    char host[MS__HOSTPORT_MAX + 1], port[MS__HOSTPORT_MAX + 1];
    bool bracketed;
    if (text == NULL || text[0] == '\0')
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected PORT or HOST:PORT (like 127.0.0.1:9464), got nothing");
    size_t n = strnlen(text, MS__HOSTPORT_MAX + 1);
    if (n > MS__HOSTPORT_MAX)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected PORT or HOST:PORT of at most %d characters, got %zu or more",
                        MS__HOSTPORT_MAX, n);
    int r = split(text, host, port, &bracketed, err, errlen);
    if (r < 0)
        return r;
    unsigned p = parse_port(port);
    if (p == 0)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "expected a port from 1 to 65535 in \"%s\", got \"%s\"", text, port);
    return set_host(text, r == 1 ? "127.0.0.1" : host, bracketed, p, out, err, errlen);
}

bool ms__hostport_loopback(const ms__hostport *hp)
{
    if (hp->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&hp->addr;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&hp->addr;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
        return a->sin6_addr.s6_addr[12] == 127;
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
}

void ms__hostport_str(const ms__hostport *hp, char *buf, size_t buflen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (hp->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&hp->addr;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(buf, buflen, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
        return;
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&hp->addr;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(buf, buflen, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
}
