/*
 * fuzz_milter - the milter reply decoder (global/milter.h)
 *
 * The input is a byte stream as a milter (or something pretending to be
 * one) would send smtpd: packets, each a 4-byte length and that many
 * bytes. Each packet the length check accepts goes through
 * milter_reply_parse. A reply it accepts keeps its promises: a reply
 * code is a 4xx or 5xx reply that milter_replycode_ok accepts and holds
 * no bare CR or LF (smtpd sends it to the client), a header name is
 * printable without a colon, a header value has no bare CR and every LF
 * is followed by white space (smtpd writes it into the message), and
 * every pointer lies inside the packet. The whole input is also tried
 * as a milter address (main.cf's smtpd_milters).
 */
#include "sys_defs.h"

#include <stdint.h>

#include "fuzz_common.h"
#include "milter.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_inside - [p, p + strlen(p)] lies in buf[0..len) */
static void fuzz_inside(const char *p, const char *buf, size_t len)
{
    if (p == NULL)
        return;
    if (p < buf || p >= buf + len || p + strlen(p) >= buf + len)
        abort();
}

/* fuzz_reply - one packet */
static void fuzz_reply(const char *buf, size_t len, VSTR *why)
{
    MILTER_REPLY rep;

    if (milter_reply_parse(buf, len, &rep, why) < 0) {
        if (vstr_len(why) == 0)
            abort(); /* a refusal always says why */
        return;
    }
    fuzz_inside(rep.text, buf, len);
    fuzz_inside(rep.name, buf, len);
    fuzz_inside(rep.value, buf, len);
    if (rep.cmd == MILTER_REP_REPLYCODE) {
        const char *t = rep.text;

        if (!milter_replycode_ok(t) || (t[0] != '4' && t[0] != '5'))
            abort();
        for (const char *cp = t; *cp; cp++)
            if ((*cp == '\r' && cp[1] != '\n') ||
                (*cp == '\n' && (cp == t || cp[-1] != '\r')))
                abort();
    }
    if (rep.name != NULL) {
        if (*rep.name == 0 || strchr(rep.name, ':') != NULL)
            abort();
        for (const char *cp = rep.value; *cp; cp++)
            if ((*cp == '\r' && cp[1] != '\n') ||
                (*cp == '\n' && cp[1] != ' ' && cp[1] != '\t'))
                abort();
    }
    if (rep.cmd == MILTER_REP_REPLBODY &&
        (rep.data != buf + 1 || rep.len != len - 1))
        abort();
}

/* LLVMFuzzerTestOneInput - a stream of packets; the input as an address */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *why = vstr_alloc(64);
    size_t pos = 0;
    char *spec;
    MILTER_ADDR addr;

    fuzz_init("fuzz_milter");
    while (size - pos >= 4) {
        long len = milter_packet_length(data + pos);
        char *copy;

        if (len < 0 || (size_t) len > size - pos - 4)
            break;
        /* A copy of exactly the packet: ASan sees any read past it. */
        copy = mymalloc((size_t) len);
        memcpy(copy, data + pos + 4, (size_t) len);
        vstr_reset(why);
        fuzz_reply(copy, (size_t) len, why);
        myfree(copy);
        pos += 4 + (size_t) len;
    }
    spec = mystrndup((const char *) data, size);
    if (milter_addr_parse(spec, &addr, why) == 0) {
        if (addr.is_unix ? addr.path == NULL || addr.path[0] != '/'
                         : addr.host == NULL || addr.port == NULL)
            abort();
        milter_addr_free(&addr);
    }
    myfree(spec);
    vstr_free(why);
    return 0;
}
