/*
 * fuzz_spf_proto - the spf protocol codec (global/spf_proto.h)
 *
 * The input is a stream of lists as the spf daemon (or something
 * pretending to be it) would send smtpd: HELLO, then a REPLY; each list
 * also goes through the REQUEST reader, as the daemon reads smtpd. A REPLY
 * the reader accepts has a known result and texts that are printable
 * ASCII without CR or LF (smtpd puts them in a header and a reply line)
 * of at most SPF_TEXT_MAX bytes, and comes back unchanged through
 * spf_reply_encode; so does an accepted REQUEST through
 * spf_request_encode. spf_proto_clean turns any text into one the reader
 * accepts. The same socket carries DKIM requests and replies
 * (global/dkim_proto.h): each list goes through their readers too, and
 * an accepted one (domains and selectors DNS tokens, at most DKIM_SIG_MAX
 * signatures) comes back unchanged through its encoder.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "attr.h"
#include "dkim_proto.h"
#include "fuzz_common.h"
#include "spf_proto.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_text_ok - what smtpd may put in a header */
static bool fuzz_text_ok(const char *text)
{
    size_t len = strlen(text);

    for (size_t i = 0; i < len; i++)
        if ((unsigned char) text[i] < 0x20 || (unsigned char) text[i] >= 0x7f)
            return false;
    return len <= SPF_TEXT_MAX;
}

/* fuzz_reply - a REPLY as smtpd takes it */
static void fuzz_reply(const ATTR_LIST *list, VSTR *why)
{
    SPF_REPLY reply, again;
    ATTR_LIST *back;
    VSTR *clean = vstr_alloc(64);

    if (spf_reply_decode(list, &reply, why) < 0) {
        vstr_free(clean);
        return;
    }
    if (reply.ok) {
        if (spf_proto_result_code(spf_proto_result_name(reply.result)) !=
                (int) reply.result ||
            !fuzz_text_ok(reply.explanation) ||
            !fuzz_text_ok(reply.received_spf))
            abort();
    } else if (!fuzz_text_ok(reply.reason)) {
        abort();
    }
    back = spf_reply_encode(&reply);
    if (spf_reply_decode(back, &again, why) < 0 || again.ok != reply.ok ||
        (reply.ok && (again.result != reply.result ||
                      again.helo_result != reply.helo_result ||
                      strcmp(again.explanation, reply.explanation) != 0 ||
                      strcmp(again.received_spf, reply.received_spf) != 0)) ||
        (!reply.ok && strcmp(again.reason, reply.reason) != 0))
        abort();
    attr_list_free(back);
    vstr_free(clean);
}

/* fuzz_request - a REQUEST as the daemon takes it, and every value of
   the list through spf_proto_clean */
static void fuzz_request(const ATTR_LIST *list, VSTR *why)
{
    SPF_REQUEST req, again;
    ATTR_LIST *back;
    VSTR *clean = vstr_alloc(64);

    for (size_t i = 0; i < attr_list_count(list); i++) {
        size_t len;
        const char *value = attr_value_at(list, i, &len);

        spf_proto_clean(value, clean);
        if (!fuzz_text_ok(vstr_str(clean)))
            abort();
    }
    vstr_free(clean);
    if (spf_request_decode(list, &req, why) < 0)
        return;
    back = spf_request_encode(&req);
    if (spf_request_decode(back, &again, why) < 0 ||
        strcmp(again.client_address, req.client_address) != 0 ||
        strcmp(again.helo_name, req.helo_name) != 0 ||
        strcmp(again.sender, req.sender) != 0 ||
        again.helo_check != req.helo_check)
        abort();
    attr_list_free(back);
}

/* fuzz_dkim - a list through the DKIM request and reply readers */
static void fuzz_dkim(const ATTR_LIST *list, VSTR *why)
{
    DKIM_REQUEST req;
    DKIM_REPLY reply, again;
    ATTR_LIST *back;

    if (dkim_request_take(list, &req, why) == 0 && req.kind == DKIM_KIND_DATA &&
        req.len > DKIM_CHUNK_MAX)
        abort();
    if (dkim_reply_take(list, &reply, why) < 0)
        return;
    if (reply.count > DKIM_SIG_MAX)
        abort();
    for (size_t i = 0; i < reply.count; i++)
        if (!dkim_proto_token_ok(reply.sigs[i].domain) ||
            !dkim_proto_token_ok(reply.sigs[i].selector) ||
            strcmp(dkim_proto_result_name(reply.sigs[i].result), "none") == 0)
            abort();
    back = dkim_reply_list(&reply);
    if (dkim_reply_take(back, &again, why) < 0 || again.ok != reply.ok ||
        again.count != reply.count)
        abort();
    for (size_t i = 0; i < reply.count; i++)
        if (again.sigs[i].result != reply.sigs[i].result ||
            strcmp(again.sigs[i].domain, reply.sigs[i].domain) != 0 ||
            strcmp(again.sigs[i].selector, reply.sigs[i].selector) != 0)
            abort();
    attr_list_free(back);
}

/* LLVMFuzzerTestOneInput - a stream of lists */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *) data;
    VSTR *why = vstr_alloc(64);
    bool greeted = false;

    fuzz_init("fuzz_spf_proto");
    while (size > 0) {
        ATTR_LIST *list = NULL;
        size_t used = 0;
        bool stop = false;

        if (attr_list_decode(buf, size, SPF_REPLY_MAX, &used, &list, why) <= 0)
            break;
        buf += used;
        size -= used;
        fuzz_request(list, why);
        fuzz_dkim(list, why);
        if (!greeted) {
            /* as spf_proto_check: no reply before a good HELLO */
            greeted = spf_hello_take(list, why) == 0;
            stop = !greeted;
        } else {
            fuzz_reply(list, why);
        }
        attr_list_free(list);
        if (stop)
            break;
    }
    vstr_free(why);
    return 0;
}
