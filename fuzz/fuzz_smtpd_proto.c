/*
 * fuzz_smtpd_proto - the SMTP command parser and session state machine,
 * and the DATA content decoder
 *
 * The input is a client's byte stream: it is cut into lines at LF (as
 * smtpd.c does, CR before LF dropped) and each line goes to
 * smtpd_proto_command(). A recipient is accepted or refused by the input's
 * own bits, DATA switches to the content decoder until the end marker, and
 * the reply is always checked to be complete SMTP reply lines.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "argv.h"
#include "fuzz_common.h"
#include "maps.h"
#include "match_list.h"
#include "smtpd.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static SMTPD_CONF fuzz_conf;

/* fuzz_conf_init - a configuration like main.cf's defaults */
static void fuzz_conf_init(void)
{
    VSTR *why = vstr_alloc(10);

    fuzz_conf.myhostname = "mx.example.test";
    fuzz_conf.mail_name = "sluice";
    fuzz_conf.banner = "mx.example.test ESMTP sluice";
    fuzz_conf.queue_dir = "/nonexistent";
    fuzz_conf.mydestination = match_list_create(
        "mydestination", "mx.example.test, localhost", MATCH_LIST_DOMAIN, why);
    fuzz_conf.relay_domains =
        match_list_create("relay_domains", "relay.test",
                          MATCH_LIST_DOMAIN | MATCH_LIST_PARENT, why);
    fuzz_conf.mynetworks =
        match_list_create("mynetworks", "127.0.0.0/8 [::1]/128",
                          MATCH_LIST_ADDR | MATCH_LIST_PARENT, why);
    /* Access restrictions with inline tables, so the checks run too. */
    fuzz_conf.restrictions[SMTPD_LIST_SENDER] = smtpd_check_parse(
        "smtpd_sender_restrictions",
        "check_sender_access inline:{ bad.test=REJECT,"
        " { x@y.test = 553 5.7.9 no }, { <> = DEFER later }, user@=OK }",
        why);
    fuzz_conf.restrictions[SMTPD_LIST_RELAY] = smtpd_check_parse(
        "smtpd_relay_restrictions",
        "permit_mynetworks, check_recipient_access inline:{ ok.test=OK },"
        " reject_unauth_destination",
        why);
    fuzz_conf.restrictions[SMTPD_LIST_RECIPIENT] = smtpd_check_parse(
        "smtpd_recipient_restrictions",
        "check_recipient_access inline:{ { d.test = 450 4.1.1 later } },"
        " check_helo_access inline:{ evil.test=REJECT }",
        why);
    fuzz_conf.local_recipient_maps = smtpd_maps_create(
        "local_recipient_maps", "inline:{ alice=yes, postmaster=yes }", why);
    fuzz_conf.recipient_delimiter = "+";
    for (int i = 0; i < SMTPD_LIST_COUNT; i++)
        if (i != SMTPD_LIST_CLIENT && i != SMTPD_LIST_HELO &&
            fuzz_conf.restrictions[i] == NULL)
            abort();
    if (fuzz_conf.local_recipient_maps == NULL)
        abort();
    fuzz_conf.message_size_limit = 1000;
    fuzz_conf.queue_minfree = 0; /* no statvfs */
    fuzz_conf.line_length_limit = 2048;
    fuzz_conf.timeout = 300;
    fuzz_conf.recipient_limit = 5;
    fuzz_conf.hard_error_limit = 50;
    fuzz_conf.process_connection_limit = 10;
    fuzz_conf.forbid_bare_newline = true;
    fuzz_conf.disable_vrfy = false;
    vstr_free(why);
}

/* fuzz_check_reply - every reply is "DDD[ -]text\r\n" lines */
static void fuzz_check_reply(const VSTR *reply)
{
    const char *cp = vstr_str(reply);
    const char *end = cp + vstr_len(reply);

    while (cp < end) {
        const char *eol = memchr(cp, '\n', (size_t) (end - cp));

        if (eol == NULL || eol - cp < 5 || eol[-1] != '\r')
            abort();
        if (cp[0] < '2' || cp[0] > '5' || cp[1] < '0' || cp[1] > '9' ||
            cp[2] < '0' || cp[2] > '9' || (cp[3] != ' ' && cp[3] != '-'))
            abort();
        for (const char *p = cp; p < eol - 1; p++)
            if (*p == '\r' || *p == 0)
                abort();
        cp = eol + 1;
    }
}

/* LLVMFuzzerTestOneInput - one client session */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *cp = (const char *) data;
    const char *end = cp + size;
    SMTPD_PROTO *proto;
    VSTR *content = vstr_alloc(1024);
    VSTR *received = vstr_alloc(256);
    bool closed = false;
    unsigned turn = 0;

    fuzz_init("fuzz_smtpd_proto");
    if (fuzz_conf.mynetworks == NULL)
        fuzz_conf_init();
    /* The first byte picks a trusted or an outside client. */
    proto = smtpd_proto_alloc(&fuzz_conf, "unknown",
                              size > 0 && (data[0] & 1) ? "127.0.0.1"
                                                        : "192.0.2.1");
    while (cp < end && !closed) {
        const char *nl = memchr(cp, '\n', (size_t) (end - cp));
        size_t len = nl ? (size_t) (nl - cp) : (size_t) (end - cp);
        SMTPD_ACT act;

        if (len > (size_t) fuzz_conf.line_length_limit) {
            act = smtpd_proto_line_too_long(proto);
        } else {
            size_t cmd_len = len > 0 && cp[len - 1] == '\r' ? len - 1 : len;

            act = smtpd_proto_command(proto, cp, cmd_len);
        }
        cp += len + (nl != NULL);
        turn++;
        if (act == SMTPD_ACT_RCPT) {
            fuzz_check_reply(proto->reply);
            vstr_reset(proto->reply);
            act = smtpd_proto_rcpt_done(proto, (turn & 3) != 0);
        } else if (act == SMTPD_ACT_DATA) {
            SMTPD_DATA dec;

            fuzz_check_reply(proto->reply);
            vstr_reset(proto->reply);
            vstr_reset(received);
            smtpd_proto_received(proto, "1ABCDEF", 0, received);
            smtpd_data_init(&dec, fuzz_conf.message_size_limit);
            vstr_reset(content);
            while (cp < end && !dec.done) {
                size_t used = smtpd_data_feed(&dec, cp, (size_t) (end - cp),
                                              content, 4096);

                if (used == 0 && !dec.done && vstr_len(content) < 4096)
                    abort(); /* no progress */
                cp += used;
                if (vstr_len(content) >= 4096)
                    vstr_reset(content);
            }
            if (dec.done) {
                act = smtpd_proto_data_done(proto,
                                            dec.too_big   ? SMTPD_DATA_TOO_BIG
                                            : dec.bare_lf ? SMTPD_DATA_BARE_LF
                                            : (turn & 1)  ? SMTPD_DATA_OK
                                                          : SMTPD_DATA_REJECT,
                                            "1ABCDEF", 554, "5.7.1 rejected");
            }
        }
        fuzz_check_reply(proto->reply);
        vstr_reset(proto->reply);
        if (act == SMTPD_ACT_CLOSE)
            closed = true;
    }
    vstr_reset(content);
    smtpd_proto_counts(proto, content);
    smtpd_proto_free(proto);
    vstr_free(content);
    vstr_free(received);
    return 0;
}
