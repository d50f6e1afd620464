/*
 * smtp_proto_test - unit tests for the SMTP client's protocol pieces:
 * replies, EHLO keywords, enhanced status codes, next hops, the content
 * encoder, delay formatting
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "smtp_proto.h"
#include "vstr.h"

/* feed - one reply line as a C string */
static int feed(SMTP_REPLY *reply, const char *line)
{
    return smtp_reply_line(reply, line, strlen(line));
}

static void test_reply_lines(void **state)
{
    SMTP_REPLY *reply = smtp_reply_alloc();
    long long size = -1;
    int features;

    assert_int_equal(feed(reply, "250-sink.test\r"), 0);
    assert_int_equal(feed(reply, "250-SIZE 1000"), 0);
    assert_int_equal(feed(reply, "250-pipelining"), 0);
    assert_int_equal(feed(reply, "250-8BITMIME"), 0);
    assert_int_equal(feed(reply, "250-DSNX"), 0);
    assert_int_equal(feed(reply, "250 HELP"), 1);
    assert_int_equal(reply->code, 250);
    features = smtp_ehlo_features(reply, &size);
    assert_int_equal(features, SMTP_FEATURE_SIZE | SMTP_FEATURE_PIPELINING |
                                   SMTP_FEATURE_8BITMIME);
    assert_int_equal(size, 1000);

    /* the next reply starts afresh */
    assert_int_equal(feed(reply, "250-x"), 0);
    assert_int_equal(feed(reply, "250 DSN"), 1);
    assert_int_equal(smtp_ehlo_features(reply, &size), SMTP_FEATURE_DSN);
    assert_int_equal(size, 0);
    assert_string_equal(vstr_str(reply->text), "250-x 250 DSN");

    assert_int_equal(feed(reply, "550"), 1);
    assert_int_equal(reply->code, 550);
    assert_int_equal(feed(reply, "55"), -1);
    assert_int_equal(feed(reply, "hello"), -1);
    assert_int_equal(feed(reply, "250x"), -1);
    assert_int_equal(feed(reply, "199 no"), -1);
    assert_int_equal(feed(reply, "600 no"), -1);
    /* control characters never reach logs */
    assert_int_equal(feed(reply, "550 a\tb"), 1);
    assert_string_equal(vstr_str(reply->text), "550 a?b");
    smtp_reply_free(reply);
}

/* What a test reply comes to: a verdict, or the parser's refusal. */
enum {
    OK = SMTP_VERDICT_OK,
    TEMP = SMTP_VERDICT_TEMP,
    PERM = SMTP_VERDICT_PERM,
    PROTO = SMTP_VERDICT_PROTO,
    MALFORMED, /* smtp_reply_line() said -1: protocol error */
    UNFINISHED, /* no last line yet: the command's timer decides */
};

/* Hostile and ordinary replies, per command; lines split at "\n". */
static const struct {
    SMTP_CMD cmd;
    const char *reply;
    int want;
} reply_table[] = {
    /* the greeting: 2xx, 220 expected */
    {SMTP_CMD_GREETING, "220 mx.test ESMTP", OK},
    {SMTP_CMD_GREETING, "220-mx.test\n220 ESMTP", OK},
    {SMTP_CMD_GREETING, "421 4.3.2 busy", TEMP},
    {SMTP_CMD_GREETING, "554 go away", PERM},
    {SMTP_CMD_GREETING, "354 go ahead", PROTO},
    {SMTP_CMD_GREETING, "ESMTP ready", MALFORMED},
    {SMTP_CMD_GREETING, "", MALFORMED},
    {SMTP_CMD_GREETING, "220-mx.test", UNFINISHED},
    /* EHLO and HELO: 2xx */
    {SMTP_CMD_EHLO, "250-mx.test\n250 PIPELINING", OK},
    {SMTP_CMD_EHLO, "502 5.5.2 no", PERM},
    {SMTP_CMD_EHLO, "354 what", PROTO},
    {SMTP_CMD_EHLO, "250-mx.test\n550 PIPELINING", MALFORMED},
    {SMTP_CMD_HELO, "250 mx.test", OK},
    {SMTP_CMD_HELO, "334 VXNlcm5hbWU6", PROTO},
    /* MAIL: 2xx */
    {SMTP_CMD_MAIL, "250 2.1.0 Ok", OK},
    {SMTP_CMD_MAIL, "452 4.3.1 full", TEMP},
    {SMTP_CMD_MAIL, "553 5.1.8 bad sender", PERM},
    {SMTP_CMD_MAIL, "354 go ahead", PROTO},
    {SMTP_CMD_MAIL, "334 x", PROTO},
    {SMTP_CMD_MAIL, "2x0 ok", MALFORMED},
    {SMTP_CMD_MAIL, "199 ok", MALFORMED},
    {SMTP_CMD_MAIL, "600 ok", MALFORMED},
    {SMTP_CMD_MAIL, "25", MALFORMED},
    {SMTP_CMD_MAIL, "250ok", MALFORMED},
    {SMTP_CMD_MAIL, "250\tok", MALFORMED},
    {SMTP_CMD_MAIL, " 250 ok", MALFORMED},
    /* RCPT: 2xx accepts, 4xx/5xx per recipient */
    {SMTP_CMD_RCPT, "250 2.1.5 Ok", OK},
    {SMTP_CMD_RCPT, "251 2.1.5 will forward", OK},
    {SMTP_CMD_RCPT, "252 2.1.5 cannot verify", OK},
    {SMTP_CMD_RCPT, "450 4.2.0 greylisted", TEMP},
    {SMTP_CMD_RCPT, "550 5.1.1 no such user", PERM},
    {SMTP_CMD_RCPT, "354 go ahead", PROTO},
    {SMTP_CMD_RCPT, "300 what", PROTO},
    {SMTP_CMD_RCPT, "250-ok\n450 later", MALFORMED},
    /* DATA: 354 and nothing else */
    {SMTP_CMD_DATA, "354 End data with <CR><LF>.<CR><LF>", OK},
    {SMTP_CMD_DATA, "354", OK},
    {SMTP_CMD_DATA, "250 2.0.0 Ok: queued", PROTO},
    {SMTP_CMD_DATA, "220 hello again", PROTO},
    {SMTP_CMD_DATA, "235 ok", PROTO},
    {SMTP_CMD_DATA, "350 almost", PROTO},
    {SMTP_CMD_DATA, "399 x", PROTO},
    {SMTP_CMD_DATA, "451 4.3.0 not now", TEMP},
    {SMTP_CMD_DATA, "554 5.5.1 no valid recipients", PERM},
    {SMTP_CMD_DATA, "354-go\n250 ahead", MALFORMED},
    /* end of data: 2xx */
    {SMTP_CMD_DOT, "250 2.0.0 Ok: queued as X", OK},
    {SMTP_CMD_DOT, "354 more", PROTO},
    {SMTP_CMD_DOT, "451 4.3.0 try later", TEMP},
    {SMTP_CMD_DOT, "552 5.3.4 too big", PERM},
    {SMTP_CMD_DOT, "250-2.0.0 Ok\n550 5.7.1 no", MALFORMED},
    {SMTP_CMD_DOT, "550-5.7.1 no\n250 2.0.0 Ok", MALFORMED},
    {SMTP_CMD_DOT, "250-2.0.0 Ok", UNFINISHED},
    /* RSET and QUIT */
    {SMTP_CMD_RSET, "250 2.0.0 Ok", OK},
    {SMTP_CMD_RSET, "354 go", PROTO},
    {SMTP_CMD_RSET, "421 4.4.2 bye", TEMP},
    {SMTP_CMD_QUIT, "221 2.0.0 Bye", OK},
    {SMTP_CMD_QUIT, "354 no", PROTO},
};

/* reply_outcome - feed the lines of text, then the verdict */
static int reply_outcome(SMTP_REPLY *reply, SMTP_CMD cmd, const char *text)
{
    const char *cp = text;
    int ret = 0;

    smtp_reply_reset(reply);
    for (;;) {
        size_t len = strcspn(cp, "\n");

        ret = smtp_reply_line(reply, cp, len);
        if (ret < 0)
            return MALFORMED;
        if (cp[len] == 0)
            break;
        assert_int_equal(ret, 0); /* a last line before the end of text */
        cp += len + 1;
    }
    if (ret == 0)
        return UNFINISHED;
    return (int) smtp_reply_verdict(cmd, reply->code);
}

static void test_reply_table(void **state)
{
    SMTP_REPLY *reply = smtp_reply_alloc();

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(reply_table); i++) {
        int got =
            reply_outcome(reply, reply_table[i].cmd, reply_table[i].reply);

        if (got != reply_table[i].want)
            fail_msg("command %d, reply \"%s\": got %d, want %d",
                     (int) reply_table[i].cmd, reply_table[i].reply, got,
                     reply_table[i].want);
    }
    smtp_reply_free(reply);
}

/* A reply can never take more lines than SMTP_REPLY_LINES_MAX. */
static void test_reply_endless(void **state)
{
    SMTP_REPLY *reply = smtp_reply_alloc();
    int ret = 0;
    int lines = 0;

    while (lines < 10 * SMTP_REPLY_LINES_MAX &&
           (ret = smtp_reply_line(reply, "250-more", 8)) == 0)
        lines++;
    assert_int_equal(ret, -1);
    assert_int_equal(lines, SMTP_REPLY_LINES_MAX);
    smtp_reply_free(reply);
}

static void test_reply_dsn(void **state)
{
    char dsn[16];

    smtp_reply_dsn(550, "550 5.1.1 no such user", dsn, sizeof(dsn));
    assert_string_equal(dsn, "5.1.1");
    smtp_reply_dsn(451, "451 4.3.0 try later", dsn, sizeof(dsn));
    assert_string_equal(dsn, "4.3.0");
    smtp_reply_dsn(550, "550-5.7.1 multi", dsn, sizeof(dsn));
    assert_string_equal(dsn, "5.7.1");
    smtp_reply_dsn(250, "250 2.0.0 Ok: queued", dsn, sizeof(dsn));
    assert_string_equal(dsn, "2.0.0");
    /* no code, a class that disagrees, malformed: derived */
    smtp_reply_dsn(550, "550 no such user", dsn, sizeof(dsn));
    assert_string_equal(dsn, "5.0.0");
    smtp_reply_dsn(451, "451 5.1.1 mixed up", dsn, sizeof(dsn));
    assert_string_equal(dsn, "4.0.0");
    smtp_reply_dsn(550, "550 5.1 short", dsn, sizeof(dsn));
    assert_string_equal(dsn, "5.0.0");
    smtp_reply_dsn(550, "550 5..1 empty", dsn, sizeof(dsn));
    assert_string_equal(dsn, "5.0.0");
    smtp_reply_dsn(421, "421", dsn, sizeof(dsn));
    assert_string_equal(dsn, "4.0.0");
    smtp_reply_dsn(250, "250 ok", dsn, sizeof(dsn));
    assert_string_equal(dsn, "2.0.0");
}

/* check_nexthop - parse and compare */
static void check_nexthop(const char *nexthop, const char *host, int port,
                          bool mx)
{
    VSTR *out = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);
    int got_port = 0;
    bool got_mx = !mx;

    if (host == NULL) {
        assert_int_equal(
            smtp_nexthop_parse(nexthop, 25, out, &got_port, &got_mx, why), -1);
        assert_non_null(strstr(vstr_str(why), "bad next hop"));
    } else {
        assert_int_equal(
            smtp_nexthop_parse(nexthop, 25, out, &got_port, &got_mx, why), 0);
        assert_string_equal(vstr_str(out), host);
        assert_int_equal(got_port, port);
        assert_int_equal(got_mx, mx);
    }
    vstr_free(out);
    vstr_free(why);
}

static void test_nexthop(void **state)
{
    check_nexthop("example.test", "example.test", 25, true);
    check_nexthop("mx.example.test:2525", "mx.example.test", 2525, true);
    check_nexthop("[127.0.0.1]:2526", "127.0.0.1", 2526, false);
    check_nexthop("[relay.test]", "relay.test", 25, false);
    check_nexthop("[ipv6:::1]:26", "::1", 26, false);
    check_nexthop("[::1]:26", "::1", 26, false);
    check_nexthop("[]:25", NULL, 0, false);
    check_nexthop("[127.0.0.1", NULL, 0, false);
    check_nexthop("[127.0.0.1]x", NULL, 0, false);
    check_nexthop("host:0", NULL, 0, false);
    check_nexthop("host:99999", NULL, 0, false);
    check_nexthop("host:", NULL, 0, false);
    check_nexthop("", NULL, 0, false);
    check_nexthop("a b", NULL, 0, false);
}

/* encode - run the encoder over chunks (NULL-terminated) */
static void encode(const char *const *chunks, const char *want, size_t want_len)
{
    SMTP_ENC enc;
    VSTR *out = vstr_alloc(10);

    smtp_enc_init(&enc);
    for (; *chunks; chunks++)
        smtp_enc_feed(&enc, *chunks, strlen(*chunks), out);
    smtp_enc_finish(&enc, out);
    assert_int_equal(vstr_len(out), want_len);
    assert_memory_equal(vstr_str(out), want, want_len);
    vstr_free(out);
}

#define ENCODE(want, ...)                                                      \
    do {                                                                       \
        static const char *const chunks[] = {__VA_ARGS__, NULL};               \
        encode(chunks, want, sizeof(want) - 1);                                \
    } while (0)

static void test_encoder(void **state)
{
    ENCODE("a\r\nb\r\n.\r\n", "a\nb\n");
    /* no final newline: one is added */
    ENCODE("a\r\nb\r\n.\r\n", "a\nb");
    /* dots at line starts doubled, also across chunks */
    ENCODE("..\r\n..x\r\nx.\r\n..\r\n.\r\n", ".\n.x\nx.\n", ".");
    ENCODE("ab\r\nc.d\r\n.\r\n", "a", "b\nc", ".d\n");
    ENCODE("x\r\n..y\r\n.\r\n", "x\n", ".y\n");
    /* empty lines and an empty message */
    ENCODE("\r\n\r\n.\r\n", "\n\n");
    ENCODE(".\r\n", "");
    /* 8-bit bytes pass untouched */
    ENCODE("caf\xc3\xa9\r\n.\r\n", "caf\xc3\xa9\n");
}

/* encode_split - the input in two chunks, split at every place, always
   gives want; the counts of removed NULs and rewritten CRs too */
static void encode_split(const char *in, size_t in_len, const char *want,
                         size_t want_len, size_t nuls, size_t crs)
{
    for (size_t cut = 0; cut <= in_len; cut++) {
        SMTP_ENC enc;
        VSTR *out = vstr_alloc(10);

        smtp_enc_init(&enc);
        smtp_enc_feed(&enc, in, cut, out);
        smtp_enc_feed(&enc, in + cut, in_len - cut, out);
        smtp_enc_finish(&enc, out);
        if (vstr_len(out) != want_len ||
            memcmp(vstr_str(out), want, want_len) != 0)
            fail_msg("input split at %zu: got \"%s\"", cut, vstr_str(out));
        assert_int_equal(enc.nul_count, nuls);
        assert_int_equal(enc.cr_count, crs);
        vstr_free(out);
    }
}

#define ENCODE_BIN(in, want, nuls, crs)                                        \
    encode_split(in, sizeof(in) - 1, want, sizeof(want) - 1, nuls, crs)

/* No CR or LF leaves the encoder but as CRLF, no NUL at all. */
static void test_encoder_cr_nul(void **state)
{
    /* CR LF in the queue file is one line end */
    ENCODE_BIN("S: a\r\n\r\nb\r\n", "S: a\r\n\r\nb\r\n.\r\n", 0, 0);
    /* a bare CR in the body is a line break, and the line after it is
       dot-stuffed: <CR>.<CR> cannot end the data early */
    ENCODE_BIN("S: a\n\nx\r.\rMAIL FROM:<e@vil>\n",
               "S: a\r\n\r\nx\r\n..\r\nMAIL FROM:<e@vil>\r\n.\r\n", 0, 2);
    ENCODE_BIN("S: a\n\nx\r\r\ny\n", "S: a\r\n\r\nx\r\n\r\ny\r\n.\r\n", 0, 1);
    /* in the headers a space: no header line that cleanup did not see */
    ENCODE_BIN("Subject: a\rBcc: b@x\n\nbody\n",
               "Subject: a Bcc: b@x\r\n\r\nbody\r\n.\r\n", 0, 1);
    ENCODE_BIN("Subject: a\r\r\n\r.\r\n", "Subject: a \r\n .\r\n.\r\n", 0, 2);
    /* NUL goes, the line stays; a line of NULs is an empty line */
    ENCODE_BIN("From: a\0@b\n\0\nb\0o\0dy\n\0.\n",
               "From: a@b\r\n\r\nbody\r\n..\r\n.\r\n", 5, 0);
    /* a CR at the very end ends the last line */
    ENCODE_BIN("S: a\n\nend\r", "S: a\r\n\r\nend\r\n.\r\n", 0, 0);
    ENCODE_BIN("S: a\n\n\r", "S: a\r\n\r\n\r\n.\r\n", 0, 0);
}

static void test_8bit_soft(void **state)
{
    char dsn[16] = "5.1.1";

    assert_false(smtp_has_8bit("plain\n", 6));
    assert_true(smtp_has_8bit("caf\xc3\xa9", 5));
    assert_true(smtp_has_8bit("\x80", 1));
    smtp_soft_dsn(dsn);
    assert_string_equal(dsn, "4.1.1");
    smtp_soft_dsn(dsn);
    assert_string_equal(dsn, "4.1.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_lines),
        cmocka_unit_test(test_reply_table),
        cmocka_unit_test(test_reply_endless),
        cmocka_unit_test(test_reply_dsn),
        cmocka_unit_test(test_nexthop),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_encoder_cr_nul),
        cmocka_unit_test(test_8bit_soft),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
