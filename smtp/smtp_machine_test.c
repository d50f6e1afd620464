/*
 * smtp_machine_test - unit tests for the SMTP client's conversation
 * (smtp_proto_reply() and friends): scripted server replies go in, and
 * the commands it writes, the recipients each reply decides and what it
 * says about the session come out. No socket: the session's I/O is
 * smtp_session.c, tested by tests/test_smtp_agent.py and
 * tests/test_smtp_hostile.py against real servers.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "smtp_proto.h"
#include "vstr.h"

/* reply - one complete reply from lines separated by '\n' */
static SMTP_REPLY *reply_of(const char *text)
{
    SMTP_REPLY *reply = smtp_reply_alloc();
    const char *cp = text;
    int ret = 0;

    while (*cp) {
        size_t len = strcspn(cp, "\n");

        ret = smtp_reply_line(reply, cp, len);
        assert_true(ret >= 0);
        cp += len;
        if (*cp == '\n')
            cp++;
    }
    assert_int_equal(ret, 1);
    return reply;
}

/* feed - the server says text; the conversation's event */
static SMTP_PROTO_EVENT feed(SMTP_PROTO *proto, const char *text)
{
    SMTP_REPLY *reply = reply_of(text);
    SMTP_PROTO_EVENT event = smtp_proto_reply(proto, reply);

    smtp_reply_free(reply);
    return event;
}

/* sent - the commands written since the last look are exactly want */
static void sent(SMTP_PROTO *proto, const char *want)
{
    assert_string_equal(vstr_str(proto->out), want);
    vstr_reset(proto->out);
}

/* decided - the last reply decided exactly these recipients ("0,2") */
static void decided(const SMTP_PROTO *proto, const char *want)
{
    VSTR *got = vstr_alloc(32);

    for (size_t i = 0; i < proto->decided_count; i++)
        vstr_sprintf_append(got, "%s%zu", i ? "," : "", proto->decided[i]);
    assert_string_equal(vstr_str(got), want);
    vstr_free(got);
}

static const char ehlo_all[] = "250-sink.test greets client.test\n"
                               "250-PIPELINING\n"
                               "250-SIZE 1000000\n"
                               "250-8BITMIME\n"
                               "250-DSN\n"
                               "250 HELP";
static const char ehlo_plain[] = "250-sink.test\n250 HELP";

static const SMTP_PROTO_RCPT two_rcpts[] = {
    {"a@y.test", "SUCCESS,FAILURE", "rfc822;a@y.test", false},
    {"b@y.test", "", "", false},
};

static const SMTP_PROTO_TXN two_txn = {
    .sender = "s@x.test",
    .size = 1234,
    .ret = "HDRS",
    .envid = "id+1",
    .rcpts = two_rcpts,
    .rcpt_count = 2,
};

/* greeted - a conversation past EHLO (with ehlo as the reply) */
static SMTP_PROTO *greeted(const char *ehlo)
{
    SMTP_PROTO *proto = smtp_proto_alloc("client.test");

    assert_int_equal(smtp_proto_waiting(proto, 0), -1);
    smtp_proto_connected(proto);
    assert_int_equal(smtp_proto_waiting(proto, 0), SMTP_CMD_GREETING);
    assert_int_equal(feed(proto, "220 sink.test ESMTP"), SMTP_PROTO_EV_NONE);
    sent(proto, "EHLO client.test\r\n");
    assert_int_equal(feed(proto, ehlo), SMTP_PROTO_EV_GREETED);
    sent(proto, "");
    assert_int_equal(proto->state, SMTP_PROTO_ST_READY);
    assert_true(proto->greeted);
    return proto;
}

/* A multi-line EHLO reply becomes the capability set; with PIPELINING
   MAIL, every RCPT and DATA go out as one group, their replies are
   matched in order, and each recipient is decided by its own reply or by
   the end of data. */
static void test_pipelining(void **state)
{
    SMTP_PROTO *proto = greeted(ehlo_all);

    assert_int_equal(proto->caps, SMTP_FEATURE_PIPELINING | SMTP_FEATURE_SIZE |
                                      SMTP_FEATURE_8BITMIME | SMTP_FEATURE_DSN);
    assert_int_equal(proto->size_limit, 1000000);
    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test> SIZE=1234 RET=HDRS ENVID=id+2B1\r\n"
                "RCPT TO:<a@y.test> NOTIFY=SUCCESS,FAILURE "
                "ORCPT=rfc822;a@y.test\r\n"
                "RCPT TO:<b@y.test>\r\n"
                "DATA\r\n");
    assert_int_equal(smtp_proto_waiting(proto, 0), SMTP_CMD_MAIL);
    assert_int_equal(smtp_proto_waiting(proto, 3), SMTP_CMD_DATA);
    assert_int_equal(smtp_proto_waiting(proto, 4), -1);
    assert_false(proto->txn_reply);

    assert_int_equal(feed(proto, "250 2.1.0 ok"), SMTP_PROTO_EV_NONE);
    assert_true(proto->txn_reply);
    decided(proto, "");
    assert_int_equal(feed(proto, "250 2.1.5 ok"), SMTP_PROTO_EV_NONE);
    decided(proto, "");
    assert_int_equal(feed(proto, "550 5.1.1 no such user"), SMTP_PROTO_EV_NONE);
    decided(proto, "1");
    assert_int_equal(proto->code, 550);
    assert_int_equal(proto->cmd, SMTP_CMD_RCPT);
    assert_int_equal(feed(proto, "354 go ahead"), SMTP_PROTO_EV_CONTENT);
    assert_int_equal(smtp_proto_waiting(proto, 0), -1);
    sent(proto, "");

    smtp_proto_data_end(proto);
    sent(proto, ""); /* the encoder writes the final dot */
    assert_int_equal(smtp_proto_waiting(proto, 0), SMTP_CMD_DOT);
    assert_int_equal(feed(proto, "250 2.0.0 queued as X"),
                     SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "0");
    assert_int_equal(proto->code, 250);
    assert_int_equal(proto->cmd, SMTP_CMD_DOT);
    assert_true(proto->reusable);
    assert_int_equal(proto->state, SMTP_PROTO_ST_READY);
    smtp_proto_free(proto);
}

/* Without PIPELINING each command waits for the reply before it; no DSN
   or SIZE parameters where the server did not offer them. */
static void test_no_pipelining(void **state)
{
    SMTP_PROTO *proto = greeted(ehlo_plain);

    assert_int_equal(proto->caps, 0);
    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test>\r\n");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    sent(proto, "RCPT TO:<a@y.test>\r\n");
    assert_int_equal(feed(proto, "450 4.2.0 try later"), SMTP_PROTO_EV_NONE);
    decided(proto, "0");
    sent(proto, "RCPT TO:<b@y.test>\r\n");
    assert_int_equal(feed(proto, "251 forwarded"), SMTP_PROTO_EV_NONE);
    sent(proto, "DATA\r\n");
    assert_int_equal(feed(proto, "354 go"), SMTP_PROTO_EV_CONTENT);
    smtp_proto_data_end(proto);
    assert_int_equal(feed(proto, "451 4.3.0 disk full"),
                     SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "1");
    assert_true(proto->reusable);
    smtp_proto_free(proto);
}

/* A transaction that ended with a 2xx to the end of data leaves none
   open: the next MAIL follows without RSET (RFC 5321 4.1.4) and starts
   afresh (no recipient state carried over). One whose end of data was
   refused is RSET; a refused RSET makes the connection unusable. */
static void test_rset_reuse(void **state)
{
    static const SMTP_PROTO_RCPT one[] = {{"c@y.test", "", "", false}};
    static const SMTP_PROTO_TXN one_txn = {
        .sender = "", .size = 10, .rcpts = one, .rcpt_count = 1};
    SMTP_PROTO *proto = greeted(ehlo_all);

    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test> SIZE=1234 RET=HDRS ENVID=id+2B1\r\n"
                "RCPT TO:<a@y.test> NOTIFY=SUCCESS,FAILURE "
                "ORCPT=rfc822;a@y.test\r\n"
                "RCPT TO:<b@y.test>\r\n"
                "DATA\r\n");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "354 go"), SMTP_PROTO_EV_CONTENT);
    smtp_proto_data_end(proto);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "0,1");
    assert_true(smtp_proto_txn_closed(proto));
    assert_int_equal(proto->state, SMTP_PROTO_ST_READY);

    assert_int_equal(smtp_proto_mail(proto, &one_txn), SMTP_PROTO_EV_NONE);
    assert_false(proto->txn_reply);
    sent(proto, "MAIL FROM:<> SIZE=10\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "354 go"), SMTP_PROTO_EV_CONTENT);
    smtp_proto_data_end(proto);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "0");
    assert_true(smtp_proto_txn_closed(proto));

    assert_int_equal(smtp_proto_mail(proto, &one_txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<> SIZE=10\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "354 go"), SMTP_PROTO_EV_CONTENT);
    smtp_proto_data_end(proto);
    assert_int_equal(feed(proto, "451 4.3.0 later"), SMTP_PROTO_EV_TXN_DONE);
    assert_false(smtp_proto_txn_closed(proto));

    smtp_proto_rset(proto);
    sent(proto, "RSET\r\n");
    assert_int_equal(proto->state, SMTP_PROTO_ST_RSET);
    assert_int_equal(feed(proto, "421 4.4.2 bye"), SMTP_PROTO_EV_RSET_FAILED);
    assert_false(proto->reusable);
    smtp_proto_quit(proto);
    sent(proto, "QUIT\r\n");
    assert_int_equal(feed(proto, "221 bye"), SMTP_PROTO_EV_CLOSED);
    smtp_proto_free(proto);
}

/* Nobody accepted: without pipelining no DATA is sent; pipelined, the
   DATA already sent is refused (the connection stays usable) or, if the
   server says 354 anyway, the data cannot be ended and the connection is
   not reused. */
static void test_zero_accepted(void **state)
{
    SMTP_PROTO *proto = greeted(ehlo_plain);

    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test>\r\n");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    sent(proto, "RCPT TO:<a@y.test>\r\n");
    assert_int_equal(feed(proto, "550 5.1.1 no"), SMTP_PROTO_EV_NONE);
    sent(proto, "RCPT TO:<b@y.test>\r\n");
    assert_int_equal(feed(proto, "550 5.1.1 no"), SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "1");
    sent(proto, ""); /* no DATA */
    assert_true(proto->reusable);
    smtp_proto_free(proto);

    proto = greeted(ehlo_all);
    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    vstr_reset(proto->out);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "550 5.1.1 no"), SMTP_PROTO_EV_NONE);
    decided(proto, "0");
    assert_int_equal(feed(proto, "550 5.1.1 no"), SMTP_PROTO_EV_NONE);
    decided(proto, "1");
    assert_int_equal(feed(proto, "554 5.5.1 no valid recipients"),
                     SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "");
    assert_true(proto->reusable);
    smtp_proto_free(proto);

    proto = greeted(ehlo_all);
    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "550 no"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "550 no"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "354 go"), SMTP_PROTO_EV_TXN_DONE);
    assert_false(proto->reusable);
    smtp_proto_free(proto);
}

/* MAIL refused: every recipient gets its reply; the pipelined RCPT
   replies that follow decide nothing more. */
static void test_mail_refused(void **state)
{
    SMTP_PROTO *proto = greeted(ehlo_all);

    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "553 5.1.8 bad sender"), SMTP_PROTO_EV_NONE);
    decided(proto, "0,1");
    assert_int_equal(proto->cmd, SMTP_CMD_MAIL);
    assert_int_equal(feed(proto, "503 need MAIL"), SMTP_PROTO_EV_NONE);
    decided(proto, "");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    decided(proto, "");
    assert_int_equal(feed(proto, "503 need RCPT"), SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "");
    assert_true(proto->reusable);
    smtp_proto_free(proto);

    proto = greeted(ehlo_plain);
    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "451 later"), SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "0,1");
    smtp_proto_free(proto);
}

/* EHLO refused with 5xx: HELO, and no extensions; a 4xx to EHLO, or any
   refusal of HELO or of the greeting, means this server will not do. */
static void test_helo_fallback(void **state)
{
    SMTP_PROTO *proto = smtp_proto_alloc("client.test");

    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "220-sink.test\n220 welcome"),
                     SMTP_PROTO_EV_NONE);
    sent(proto, "EHLO client.test\r\n");
    assert_int_equal(feed(proto, "502 5.5.1 EHLO not implemented"),
                     SMTP_PROTO_EV_NONE);
    sent(proto, "HELO client.test\r\n");
    assert_int_equal(proto->state, SMTP_PROTO_ST_HELO);
    assert_int_equal(feed(proto, "250 sink.test"), SMTP_PROTO_EV_GREETED);
    assert_int_equal(proto->caps, 0);
    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test>\r\n");
    smtp_proto_free(proto);

    proto = smtp_proto_alloc("client.test");
    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "220 hi"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "500 what"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "550 go away"), SMTP_PROTO_EV_REFUSED);
    assert_int_equal(proto->cmd, SMTP_CMD_HELO);
    assert_false(proto->greeted);
    smtp_proto_free(proto);

    proto = smtp_proto_alloc("client.test");
    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "220 hi"), SMTP_PROTO_EV_NONE);
    vstr_reset(proto->out);
    assert_int_equal(feed(proto, "421 4.3.2 busy"), SMTP_PROTO_EV_REFUSED);
    assert_int_equal(proto->cmd, SMTP_CMD_EHLO);
    sent(proto, ""); /* no HELO after a 4xx */
    smtp_proto_free(proto);

    proto = smtp_proto_alloc("client.test");
    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "554 5.7.1 not you"), SMTP_PROTO_EV_REFUSED);
    assert_int_equal(proto->cmd, SMTP_CMD_GREETING);
    assert_int_equal(proto->code, 554);
    sent(proto, "");
    smtp_proto_free(proto);
}

/* A 421 in the transaction: the server is closing. Whoever is undecided,
   accepted or not, is decided by it, nothing more is awaited, and the
   connection is not reused. */
static void test_421_mid_transaction(void **state)
{
    static const SMTP_PROTO_RCPT three[] = {
        {"a@y.test", "", "", false},
        {"b@y.test", "", "", false},
        {"c@y.test", "", "", false},
    };
    static const SMTP_PROTO_TXN three_txn = {
        .sender = "s@x.test", .rcpts = three, .rcpt_count = 3};
    SMTP_PROTO *proto = greeted(ehlo_all);

    assert_int_equal(smtp_proto_mail(proto, &three_txn), SMTP_PROTO_EV_NONE);
    assert_int_equal(smtp_proto_waiting(proto, 4), SMTP_CMD_DATA);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "550 5.1.1 no"), SMTP_PROTO_EV_NONE);
    decided(proto, "1");
    assert_int_equal(feed(proto, "421 4.3.0 shutting down"),
                     SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "0,2");
    assert_int_equal(proto->code, 421);
    assert_int_equal(smtp_proto_waiting(proto, 0), -1);
    assert_false(proto->reusable);
    smtp_proto_free(proto);

    /* Without pipelining, at the end of data. */
    proto = greeted(ehlo_plain);
    assert_int_equal(smtp_proto_mail(proto, &three_txn), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    assert_int_equal(feed(proto, "421 4.3.0 going"), SMTP_PROTO_EV_TXN_DONE);
    decided(proto, "0,1,2");
    sent(proto, "MAIL FROM:<s@x.test>\r\nRCPT TO:<a@y.test>\r\n"
                "RCPT TO:<b@y.test>\r\n");
    assert_false(proto->reusable);
    smtp_proto_free(proto);
}

/* Before a word is sent: 8-bit content for a server without 8BITMIME,
   or a message over the server's SIZE. Recipients already done are not
   sent again. */
static void test_refusals(void **state)
{
    static const SMTP_PROTO_RCPT rcpts[] = {
        {"a@y.test", "", "", true},
        {"b@y.test", "", "", false},
    };
    SMTP_PROTO_TXN txn = {
        .sender = "s@x.test", .rcpts = rcpts, .rcpt_count = 2};
    SMTP_PROTO *proto = greeted(ehlo_plain);

    txn.content_8bit = true;
    assert_int_equal(smtp_proto_mail(proto, &txn), SMTP_PROTO_EV_TXN_DONE);
    assert_int_equal(proto->refusal, SMTP_PROTO_REFUSE_8BIT);
    decided(proto, "1");
    sent(proto, "");
    assert_int_equal(proto->state, SMTP_PROTO_ST_READY);
    txn.content_8bit = false;
    assert_int_equal(smtp_proto_mail(proto, &txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test>\r\n");
    assert_int_equal(feed(proto, "250 ok"), SMTP_PROTO_EV_NONE);
    sent(proto, "RCPT TO:<b@y.test>\r\n");
    smtp_proto_free(proto);

    proto = greeted(ehlo_all);
    txn.size = 1000001;
    txn.body_8bit = true;
    assert_int_equal(smtp_proto_mail(proto, &txn), SMTP_PROTO_EV_TXN_DONE);
    assert_int_equal(proto->refusal, SMTP_PROTO_REFUSE_SIZE);
    txn.size = 1000000;
    assert_int_equal(smtp_proto_mail(proto, &txn), SMTP_PROTO_EV_NONE);
    sent(proto, "MAIL FROM:<s@x.test> SIZE=1000000 BODY=8BITMIME\r\n"
                "RCPT TO:<b@y.test>\r\nDATA\r\n");
    smtp_proto_free(proto);
}

/* Replies a command cannot get are protocol errors: the conversation is
   over, nothing more is awaited, and the connection is not reused. */
static void check_hostile(const char *ehlo, int replies_before, const char *bad,
                          const char *what)
{
    static const char *const good[] = {"250 ok", "250 ok", "250 ok", "354 go"};
    SMTP_PROTO *proto = greeted(ehlo);

    assert_int_equal(smtp_proto_mail(proto, &two_txn), SMTP_PROTO_EV_NONE);
    for (int i = 0; i < replies_before; i++)
        (void) feed(proto, good[i]);
    if (proto->state == SMTP_PROTO_ST_CONTENT)
        smtp_proto_data_end(proto);
    assert_int_equal(feed(proto, bad), SMTP_PROTO_EV_ERROR);
    assert_string_equal(vstr_str(proto->error), what);
    decided(proto, "");
    assert_int_equal(proto->state, SMTP_PROTO_ST_CLOSED);
    assert_int_equal(smtp_proto_waiting(proto, 0), -1);
    assert_false(proto->reusable);
    smtp_proto_free(proto);
}

static void test_hostile(void **state)
{
    SMTP_PROTO *proto;

    check_hostile(ehlo_all, 0, "354 go",
                  "unexpected reply to MAIL FROM command");
    check_hostile(ehlo_all, 1, "354 go", "unexpected reply to RCPT TO command");
    check_hostile(ehlo_all, 3, "250 2.0.0 queued",
                  "unexpected reply to DATA command");
    check_hostile(ehlo_all, 3, "221 bye", "unexpected reply to DATA command");
    check_hostile(ehlo_all, 4, "354 more?",
                  "unexpected reply to end of DATA command");
    check_hostile(ehlo_plain, 0, "334 what",
                  "unexpected reply to MAIL FROM command");

    /* a reply nobody asked for */
    proto = greeted(ehlo_plain);
    assert_int_equal(feed(proto, "250 surprise"), SMTP_PROTO_EV_ERROR);
    assert_string_equal(vstr_str(proto->error), "reply without a command");
    smtp_proto_free(proto);

    /* a 3xx greeting or EHLO reply */
    proto = smtp_proto_alloc("client.test");
    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "354 hi"), SMTP_PROTO_EV_ERROR);
    assert_string_equal(vstr_str(proto->error),
                        "unexpected reply to initial greeting command");
    smtp_proto_free(proto);

    /* after QUIT anything goes */
    proto = greeted(ehlo_plain);
    smtp_proto_quit(proto);
    sent(proto, "QUIT\r\n");
    assert_int_equal(feed(proto, "354 what"), SMTP_PROTO_EV_CLOSED);
    smtp_proto_free(proto);
}

/* STARTTLS: offered and wanted, it comes before anything else; its 220
   hands over to the caller's handshake, after which EHLO goes again and
   the plain text capabilities are forgotten. Not wanted, or not offered:
   no STARTTLS. Refused: READY in plain text, the caller decides. */
static void test_starttls(void **state)
{
    static const char ehlo_tls[] = "250-sink.test\n250-STARTTLS\n"
                                   "250-AUTH PLAIN\n250 8BITMIME";
    SMTP_PROTO *proto = smtp_proto_alloc("client.test");

    proto->tls_wanted = true;
    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "220 sink.test"), SMTP_PROTO_EV_NONE);
    sent(proto, "EHLO client.test\r\n");
    assert_int_equal(feed(proto, ehlo_tls), SMTP_PROTO_EV_NONE);
    sent(proto, "STARTTLS\r\n");
    assert_int_equal(proto->state, SMTP_PROTO_ST_STARTTLS);
    assert_int_equal(smtp_proto_waiting(proto, 0), SMTP_CMD_STARTTLS);
    assert_int_equal(feed(proto, "220 2.0.0 go ahead"), SMTP_PROTO_EV_STARTTLS);
    sent(proto, "");
    assert_int_equal(smtp_proto_waiting(proto, 0), -1);
    smtp_proto_tls_started(proto);
    assert_true(proto->tls_active);
    assert_int_equal(proto->caps, 0);
    assert_string_equal(vstr_str(proto->auth_mechs), "");
    sent(proto, "EHLO client.test\r\n");
    assert_int_equal(feed(proto, "250-sink.test\n250-STARTTLS\n"
                                 "250 AUTH LOGIN plain"),
                     SMTP_PROTO_EV_GREETED);
    sent(proto, ""); /* no second STARTTLS */
    assert_true(proto->caps & SMTP_FEATURE_AUTH);
    assert_string_equal(vstr_str(proto->auth_mechs), "LOGIN PLAIN");
    smtp_proto_free(proto);

    /* not wanted: offered in vain */
    proto = greeted(ehlo_tls);
    assert_true(proto->caps & SMTP_FEATURE_STARTTLS);
    smtp_proto_free(proto);

    /* refused */
    proto = smtp_proto_alloc("client.test");
    proto->tls_wanted = true;
    smtp_proto_connected(proto);
    assert_int_equal(feed(proto, "220 sink.test"), SMTP_PROTO_EV_NONE);
    sent(proto, "EHLO client.test\r\n");
    assert_int_equal(feed(proto, ehlo_tls), SMTP_PROTO_EV_NONE);
    sent(proto, "STARTTLS\r\n");
    assert_int_equal(feed(proto, "454 4.7.0 TLS not available"),
                     SMTP_PROTO_EV_STARTTLS_REFUSED);
    assert_int_equal(proto->state, SMTP_PROTO_ST_READY);
    assert_false(proto->tls_active);
    assert_true(proto->caps & SMTP_FEATURE_8BITMIME);
    smtp_proto_free(proto);
}

/* AUTH PLAIN sends everything at once (RFC 4616: NUL user NUL password);
   LOGIN answers two challenges; a third challenge, or one to PLAIN, is a
   protocol loop; 535 is a failure with the server's code. */
static void test_auth(void **state)
{
    SMTP_PROTO *proto = greeted("250-sink.test\n250 AUTH PLAIN LOGIN");
    VSTR *dec = vstr_alloc(16);

    smtp_proto_auth(proto, "PLAIN", "user", "pass");
    sent(proto, "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
    assert_int_equal(feed(proto, "235 2.7.0 ok"), SMTP_PROTO_EV_AUTH_OK);
    assert_int_equal(proto->state, SMTP_PROTO_ST_READY);
    smtp_proto_free(proto);

    proto = greeted("250-sink.test\n250 AUTH=LOGIN");
    assert_string_equal(vstr_str(proto->auth_mechs), "LOGIN");
    smtp_proto_auth(proto, "LOGIN", "user", "pass");
    sent(proto, "AUTH LOGIN\r\n");
    assert_int_equal(feed(proto, "334 VXNlcm5hbWU6"), SMTP_PROTO_EV_NONE);
    sent(proto, "dXNlcg==\r\n");
    assert_int_equal(feed(proto, "334 UGFzc3dvcmQ6"), SMTP_PROTO_EV_NONE);
    sent(proto, "cGFzcw==\r\n");
    assert_int_equal(feed(proto, "334 again?"), SMTP_PROTO_EV_AUTH_FAILED);
    assert_string_equal(vstr_str(proto->error), "authentication protocol loop");
    assert_false(proto->reusable);
    smtp_proto_free(proto);

    proto = greeted("250-sink.test\n250 AUTH PLAIN");
    smtp_proto_auth(proto, "PLAIN", "user", "bad");
    vstr_reset(proto->out);
    assert_int_equal(feed(proto, "535 5.7.8 no"), SMTP_PROTO_EV_AUTH_FAILED);
    assert_int_equal(proto->code, 535);
    assert_string_equal(vstr_str(proto->error), "");
    smtp_proto_free(proto);

    proto = greeted("250-sink.test\n250 AUTH PLAIN");
    smtp_proto_auth(proto, "PLAIN", "user", "pass");
    vstr_reset(proto->out);
    assert_int_equal(feed(proto, "334 "), SMTP_PROTO_EV_AUTH_FAILED);
    smtp_proto_free(proto);

    /* base64 both ways, RFC 4648 test vectors */
    {
        static const char *const vec[][2] = {
            {"", ""},
            {"f", "Zg=="},
            {"fo", "Zm8="},
            {"foo", "Zm9v"},
            {"foob", "Zm9vYg=="},
            {"fooba", "Zm9vYmE="},
            {"foobar", "Zm9vYmFy"},
        };
        VSTR *enc = vstr_alloc(16);

        for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
            vstr_reset(enc);
            smtp_base64_encode(enc, vec[i][0], strlen(vec[i][0]));
            assert_string_equal(vstr_str(enc), vec[i][1]);
            assert_int_equal(
                smtp_base64_decode(dec, vec[i][1], strlen(vec[i][1])), 0);
            assert_string_equal(vstr_str(dec), vec[i][0]);
        }
        assert_int_equal(smtp_base64_decode(dec, "Zm9", 3), -1);
        assert_int_equal(smtp_base64_decode(dec, "Z=9v", 4), -1);
        assert_int_equal(smtp_base64_decode(dec, "Zm9*", 4), -1);
        vstr_free(enc);
    }
    vstr_free(dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_no_pipelining),
        cmocka_unit_test(test_rset_reuse),
        cmocka_unit_test(test_zero_accepted),
        cmocka_unit_test(test_mail_refused),
        cmocka_unit_test(test_helo_fallback),
        cmocka_unit_test(test_421_mid_transaction),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_starttls),
        cmocka_unit_test(test_auth),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
