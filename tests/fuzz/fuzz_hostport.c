/* Fuzzes the --metrics address parser (ms__hostport_parse). The input is the text. An accepted
 * address is IPv4 or IPv6 with a port from 1 to 65535 and prints back as one that parses to the
 * same address; a refusal is MS_E_INVAL with a message and leaves the output untouched. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/hostport.h"
#include "../../src/common/util.h"
#include "fuzz_text.h"

static void check(const char *text)
{
    char err[MS__ERRLEN] = "", buf[96];
    ms__hostport hp, again;
    memset(&hp, 0x5a, sizeof hp);
    int rc = ms__hostport_parse(text, &hp, err, sizeof err);
    if (rc != 0) {
        if (rc != MS_E_INVAL || err[0] == '\0' || ((unsigned char *)&hp)[0] != 0x5a)
            abort();
        return;
    }
    if (hp.addr.ss_family != AF_INET && hp.addr.ss_family != AF_INET6)
        abort();
    ms__hostport_str(&hp, buf, sizeof buf);
    memset(&again, 0, sizeof again);
    if (ms__hostport_parse(buf, &again, err, sizeof err) != 0 || again.len != hp.len ||
        memcmp(&again.addr, &hp.addr, hp.len) != 0)
        abort();
    (void)ms__hostport_loopback(&hp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    if (text == NULL)
        return 0;
    check(text);
    free(text);
    return 0;
}
