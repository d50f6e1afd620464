/*
 * smtpd_proto_test - unit tests for the SMTP command parser, the session
 * state machine and the DATA content decoder
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "msg.h"
#include "mymalloc.h"
#include "mynetworks.h"
#include "smtpd.h"
#include "vstr.h"

/* A session on a private queue directory, with its configuration. */
typedef struct TEST_ENV {
    char dir[64];
    char log[128];
    SMTPD_CONF conf;
    SMTPD_PROTO *proto;
} TEST_ENV;

/* test_setup - a configuration like main.cf's defaults, client 10.0.0.1 */
static int test_setup(void **state)
{
    TEST_ENV *env = mycalloc(1, sizeof(*env));
    VSTR *why = vstr_alloc(10);

    snprintf(env->dir, sizeof(env->dir), "/tmp/smtpd_proto_test.XXXXXX");
    if (mkdtemp(env->dir) == NULL)
        return -1;
    snprintf(env->log, sizeof(env->log), "%s/maillog", env->dir);
    msg_init("sluice", "smtpd_proto_test");
    if (msg_log_file(env->log) < 0)
        return -1;
    msg_log_stderr(false);
    env->conf.myhostname = "mx.example.org";
    env->conf.mail_name = "sluice";
    env->conf.banner = "mx.example.org ESMTP sluice";
    env->conf.queue_dir = env->dir;
    env->conf.mydestination = argv_split("mx.example.org, localhost", ", ");
    env->conf.relay_domains = argv_split("relay.test", ", ");
    env->conf.mynetworks = mynetworks_parse("127.0.0.0/8 [::1]/128", why);
    env->conf.message_size_limit = 1000;
    env->conf.queue_minfree = 0;
    env->conf.line_length_limit = 2048;
    env->conf.timeout = 300;
    env->conf.recipient_limit = 3;
    env->conf.hard_error_limit = 20;
    env->conf.process_connection_limit = 10;
    env->conf.forbid_bare_newline = true;
    env->conf.disable_vrfy = true;
    env->proto = smtpd_proto_alloc(&env->conf, "unknown", "10.0.0.1");
    vstr_free(why);
    *state = env;
    return 0;
}

/* test_teardown - free it all and remove the folder */
static int test_teardown(void **state)
{
    TEST_ENV *env = *state;

    smtpd_proto_free(env->proto);
    argv_free(env->conf.mydestination);
    argv_free(env->conf.relay_domains);
    mynetworks_free(env->conf.mynetworks);
    msg_log_file("");
    (void) unlink(env->log);
    if (rmdir(env->dir) < 0)
        return -1;
    myfree(env);
    return 0;
}

/* cmd - run one command, return the reply text (and reset it) */
static const char *cmd(TEST_ENV *env, const char *line, SMTPD_ACT *act)
{
    static char buf[4096];
    SMTPD_ACT got;

    vstr_reset(env->proto->reply);
    got = smtpd_proto_command(env->proto, line, strlen(line));
    if (act)
        *act = got;
    snprintf(buf, sizeof(buf), "%s", vstr_str(env->proto->reply));
    vstr_reset(env->proto->reply);
    return buf;
}

/* expect - a command's reply starts with prefix and has this action */
static void expect(TEST_ENV *env, const char *line, const char *prefix,
                   SMTPD_ACT want)
{
    SMTPD_ACT act;
    const char *reply = cmd(env, line, &act);

    if (strncmp(reply, prefix, strlen(prefix)) != 0)
        fail_msg("%s: got \"%s\", want \"%s...\"", line, reply, prefix);
    assert_int_equal(act, want);
}

/* rcpt_ok - a RCPT the protocol accepts, confirmed as cleanup would */
static void rcpt_ok(TEST_ENV *env, const char *line)
{
    expect(env, line, "", SMTPD_ACT_RCPT);
    assert_int_equal(smtpd_proto_rcpt_done(env->proto, true), SMTPD_ACT_REPLY);
    assert_string_equal(vstr_str(env->proto->reply), "250 2.1.5 Ok\r\n");
    vstr_reset(env->proto->reply);
}

static void test_ehlo_lists_extensions(void **state)
{
    TEST_ENV *env = *state;
    const char *reply = cmd(env, "EHLO client.test", NULL);

    assert_string_equal(reply, "250-mx.example.org\r\n"
                               "250-PIPELINING\r\n"
                               "250-SIZE 1000\r\n"
                               "250-ENHANCEDSTATUSCODES\r\n"
                               "250-8BITMIME\r\n"
                               "250 DSN\r\n");
    assert_true(env->proto->esmtp);
    assert_string_equal(env->proto->helo_name, "client.test");
    expect(env, "helo other.test", "250 mx.example.org\r\n", SMTPD_ACT_REPLY);
    assert_false(env->proto->esmtp);
    expect(env, "EHLO", "501 5.5.4 Syntax: EHLO hostname", SMTPD_ACT_REPLY);
    expect(env, "HELO   ", "501 5.5.4 Syntax: HELO hostname", SMTPD_ACT_REPLY);
}

static void test_simple_commands(void **state)
{
    TEST_ENV *env = *state;

    expect(env, "NOOP", "250 2.0.0 Ok\r\n", SMTPD_ACT_REPLY);
    expect(env, "noop whatever", "250 2.0.0 Ok\r\n", SMTPD_ACT_REPLY);
    expect(env, "RSET", "250 2.0.0 Ok\r\n", SMTPD_ACT_REPLY);
    expect(env, "RSET x", "501 5.5.4 ", SMTPD_ACT_REPLY);
    expect(env, "HELP", "214 2.0.0 ", SMTPD_ACT_REPLY);
    expect(env, "VRFY postmaster", "252 2.0.0 ", SMTPD_ACT_REPLY);
    expect(env, "VRFY", "501 5.5.4 ", SMTPD_ACT_REPLY);
    expect(env, "BDAT 10 LAST", "500 5.5.2 Error: command not recognized",
           SMTPD_ACT_REPLY);
    expect(env, "", "500 5.5.2 ", SMTPD_ACT_REPLY);
    expect(env, "QuIt", "221 2.0.0 Bye\r\n", SMTPD_ACT_CLOSE);
}

static void test_vrfy_enabled(void **state)
{
    TEST_ENV *env = *state;

    env->conf.disable_vrfy = false;
    expect(env, "VRFY <bob@example.com>", "252 2.0.0 <bob@example.com>\r\n",
           SMTPD_ACT_REPLY);
    expect(env, "VRFY <bad address@x>", "501 5.1.3 ", SMTPD_ACT_REPLY);
    assert_non_null(strstr(cmd(env, "EHLO c", NULL), "250-VRFY\r\n"));
}

static void test_bad_sequence(void **state)
{
    TEST_ENV *env = *state;

    expect(env, "RCPT TO:<a@localhost>", "503 5.5.1 Error: need MAIL command",
           SMTPD_ACT_REPLY);
    expect(env, "DATA", "503 5.5.1 Error: need MAIL command", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>", "250 2.1.0 Ok\r\n",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>",
           "503 5.5.1 Error: nested MAIL command", SMTPD_ACT_REPLY);
    expect(env, "DATA", "503 5.5.1 Error: need RCPT command", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<a@localhost>");
    expect(env, "DATA x", "501 5.5.4 Syntax: DATA", SMTPD_ACT_REPLY);
    expect(env, "DATA", "354 End data with <CR><LF>.<CR><LF>\r\n",
           SMTPD_ACT_DATA);
}

static void test_mail_syntax(void **state)
{
    TEST_ENV *env = *state;

    expect(env, "MAIL <a@example.com>", "501 5.5.4 Syntax: MAIL FROM:<address>",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a b@example.com>",
           "501 5.1.7 Bad sender address syntax", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@exa_mple..com>", "501 5.1.7 ", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> FOO=bar",
           "555 5.5.4 Unsupported option: FOO", SMTPD_ACT_REPLY);
    assert_false(env->proto->have_sender);
    expect(env, "MAIL FROM:<a@example.com> SIZE=12x", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> SIZE=99999999999999999999999",
           "501 5.5.4 ", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> BODY=9BIT", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> RET=ALL", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> ENVID=a+ZZ", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> SIZE=1 SIZE=2", "555 5.5.4 ",
           SMTPD_ACT_REPLY);
    assert_false(env->proto->have_sender);
    /* The null sender, lower case, a space after the colon. */
    expect(env, "mail from: <>", "250 2.1.0 Ok", SMTPD_ACT_REPLY);
    assert_true(env->proto->have_sender);
    assert_string_equal(vstr_str(env->proto->sender), "");
}

static void test_mail_params(void **state)
{
    TEST_ENV *env = *state;

    expect(env,
           "MAIL FROM:<a@example.com> size=1000 BODY=8bitmime RET=hdrs"
           " ENVID=id+2Bone",
           "250 2.1.0 Ok", SMTPD_ACT_REPLY);
    assert_int_equal(env->proto->size, 1000);
    assert_true(env->proto->body_8bit);
    assert_string_equal(env->proto->ret, "HDRS");
    assert_string_equal(env->proto->envid, "id+one");
    expect(env, "RSET", "250 2.0.0 Ok", SMTPD_ACT_REPLY);
    assert_false(env->proto->have_sender);
    assert_null(env->proto->envid);
    assert_int_equal(env->proto->size, -1);
}

static void test_size_over_limit(void **state)
{
    TEST_ENV *env = *state;

    expect(env, "MAIL FROM:<a@example.com> SIZE=1001",
           "552 5.3.4 Message size exceeds fixed limit", SMTPD_ACT_REPLY);
    assert_false(env->proto->have_sender);
    env->conf.message_size_limit = 0;
    expect(env, "MAIL FROM:<a@example.com> SIZE=999999999", "250 2.1.0 ",
           SMTPD_ACT_REPLY);
    assert_non_null(strstr(cmd(env, "EHLO c", NULL), "250-SIZE\r\n"));
}

static void test_queue_minfree(void **state)
{
    TEST_ENV *env = *state;

    env->conf.queue_minfree = 1;
    expect(env, "MAIL FROM:<a@example.com>", "250 2.1.0 ", SMTPD_ACT_REPLY);
    expect(env, "RSET", "250 ", SMTPD_ACT_REPLY);
    env->conf.queue_minfree = 1LL << 60;
    expect(env, "MAIL FROM:<a@example.com>",
           "452 4.3.1 Insufficient system storage", SMTPD_ACT_REPLY);
    assert_false(env->proto->have_sender);
}

static void test_rcpt_params_and_syntax(void **state)
{
    TEST_ENV *env = *state;

    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    expect(env, "RCPT <b@localhost>", "501 5.5.4 Syntax: RCPT TO:<address>",
           SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<>", "501 5.1.3 Bad recipient address syntax",
           SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@localhost> NOTIFY=SOMETIMES", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@localhost> NOTIFY=SUCCESS,", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@localhost> ORCPT=b@localhost", "501 5.5.4 ",
           SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@localhost> XYZ", "555 5.5.4 ", SMTPD_ACT_REPLY);
    expect(env,
           "rcpt to:<b@localhost> notify=success,delay "
           "ORCPT=rfc822;b+40localhost",
           "", SMTPD_ACT_RCPT);
    assert_string_equal(vstr_str(env->proto->rcpt), "b@localhost");
    assert_string_equal(vstr_str(env->proto->notify), "SUCCESS,DELAY");
    assert_string_equal(vstr_str(env->proto->orcpt), "rfc822;b+40localhost");
    assert_int_equal(smtpd_proto_rcpt_done(env->proto, false), SMTPD_ACT_REPLY);
    assert_string_equal(vstr_str(env->proto->reply),
                        "451 4.3.0 Error: queue file write error\r\n");
    vstr_reset(env->proto->reply);
    assert_int_equal(env->proto->rcpt_count, 0);
    rcpt_ok(env, "RCPT TO:<b@localhost> NOTIFY=NEVER");
    assert_int_equal(env->proto->rcpt_count, 1);
    assert_string_equal(env->proto->first_rcpt, "b@localhost");
}

static void test_recipient_limit(void **state)
{
    TEST_ENV *env = *state;

    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<b1@localhost>");
    rcpt_ok(env, "RCPT TO:<b2@localhost>");
    rcpt_ok(env, "RCPT TO:<b3@localhost>");
    expect(env, "RCPT TO:<b4@localhost>",
           "452 4.5.3 Error: too many recipients", SMTPD_ACT_REPLY);
}

static void test_relay_control(void **state)
{
    TEST_ENV *env = *state;
    char log[4096];
    ssize_t got;
    int fd;

    expect(env, "EHLO c.test", "250-", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<victim@elsewhere.example>",
           "554 5.7.1 <victim@elsewhere.example>: Relay access denied\r\n",
           SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@MX.Example.ORG>", "", SMTPD_ACT_RCPT);
    expect(env, "RCPT TO:<b@relay.test>", "", SMTPD_ACT_RCPT);
    expect(env, "RCPT TO:<b@sub.relay.test>", "", SMTPD_ACT_RCPT);
    expect(env, "RCPT TO:<b@notrelay.test>", "554 5.7.1 ", SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@sub.localhost>", "554 5.7.1 ", SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<b@[10.0.0.2]>", "554 5.7.1 ", SMTPD_ACT_REPLY);
    expect(env, "RCPT TO:<postmaster>", "", SMTPD_ACT_RCPT);
    /* The reject is logged as Postfix logs it. */
    fd = open(env->log, O_RDONLY);
    assert_true(fd >= 0);
    got = read(fd, log, sizeof(log) - 1);
    close(fd);
    assert_true(got > 0);
    log[got] = 0;
    assert_non_null(strstr(log, "NOQUEUE: reject: RCPT from unknown[10.0.0.1]:"
                                " 554 5.7.1 <victim@elsewhere.example>: Relay"
                                " access denied; from=<a@example.com>"
                                " to=<victim@elsewhere.example> proto=ESMTP"
                                " helo=<c.test>"));

    /* A client in mynetworks may send anywhere. */
    SMTPD_PROTO *trusted =
        smtpd_proto_alloc(&env->conf, "unknown", "127.0.0.2");

    assert_true(smtpd_proto_relay_ok(trusted, "x@elsewhere.example"));
    smtpd_proto_free(trusted);
    trusted = smtpd_proto_alloc(&env->conf, "unknown", "::1");
    assert_true(smtpd_proto_relay_ok(trusted, "x@elsewhere.example"));
    smtpd_proto_free(trusted);
    assert_false(smtpd_proto_relay_ok(env->proto, "x@elsewhere.example"));
}

static void test_nul_and_long_line(void **state)
{
    TEST_ENV *env = *state;
    SMTPD_ACT act;

    act = smtpd_proto_command(env->proto, "NOOP\0x", 6);
    assert_int_equal(act, SMTPD_ACT_REPLY);
    assert_string_equal(vstr_str(env->proto->reply),
                        "500 5.5.2 Error: NUL character in command\r\n");
    vstr_reset(env->proto->reply);
    act = smtpd_proto_command(env->proto, "MAIL FROM:<a\0@b>", 17);
    assert_int_equal(act, SMTPD_ACT_REPLY);
    assert_false(env->proto->have_sender);
    vstr_reset(env->proto->reply);
    assert_int_equal(smtpd_proto_line_too_long(env->proto), SMTPD_ACT_REPLY);
    assert_string_equal(vstr_str(env->proto->reply),
                        "500 5.5.0 Error: line too long\r\n");
    vstr_reset(env->proto->reply);
    /* The session goes on. */
    expect(env, "NOOP", "250 2.0.0 Ok", SMTPD_ACT_REPLY);
}

static void test_control_bytes_not_echoed(void **state)
{
    TEST_ENV *env = *state;
    const char *reply;

    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    reply = cmd(env, "RCPT TO:<b@localhost> X\001\033Y", NULL);
    assert_string_equal(reply, "555 5.5.4 Unsupported option: X??Y\r\n");
}

static void test_hard_error_limit(void **state)
{
    TEST_ENV *env = *state;
    SMTPD_ACT act = SMTPD_ACT_REPLY;
    int i;

    env->conf.hard_error_limit = 3;
    expect(env, "bogus", "500 ", SMTPD_ACT_REPLY);
    expect(env, "NOOP", "250 ", SMTPD_ACT_REPLY);
    expect(env, "bogus", "500 ", SMTPD_ACT_REPLY);
    for (i = 0; i < 5 && act != SMTPD_ACT_CLOSE; i++) {
        const char *reply = cmd(env, "bogus", &act);

        if (act == SMTPD_ACT_CLOSE)
            assert_string_equal(reply,
                                "500 5.5.2 Error: command not recognized\r\n"
                                "421 4.7.0 mx.example.org Error: too many"
                                " errors\r\n");
    }
    assert_int_equal(act, SMTPD_ACT_CLOSE);
    assert_int_equal(i, 1);
}

static void test_counts(void **state)
{
    TEST_ENV *env = *state;
    VSTR *out = vstr_alloc(10);

    expect(env, "EHLO c", "250-", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<b@localhost>");
    expect(env, "DATA", "354 ", SMTPD_ACT_DATA);
    smtpd_proto_data_done(env->proto, SMTPD_DATA_OK, "QID1", 0, NULL);
    assert_string_equal(vstr_str(env->proto->reply),
                        "250 2.0.0 Ok: queued as QID1\r\n");
    vstr_reset(env->proto->reply);
    expect(env, "QUIT", "221 ", SMTPD_ACT_CLOSE);
    smtpd_proto_counts(env->proto, out);
    assert_string_equal(vstr_str(out),
                        " ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5");
    vstr_reset(out);
    expect(env, "RCPT TO:<b@localhost>", "503 ", SMTPD_ACT_REPLY);
    expect(env, "junk", "500 ", SMTPD_ACT_REPLY);
    smtpd_proto_counts(env->proto, out);
    assert_string_equal(vstr_str(out), " ehlo=1 mail=1 rcpt=1/2 data=1 quit=1"
                                       " unknown=0/1 commands=5/7");
    vstr_free(out);
}

static void test_data_done_replies(void **state)
{
    TEST_ENV *env = *state;
    static const struct {
        SMTPD_DATA_STATUS status;
        int code;
        const char *reason;
        const char *reply;
    } cases[] = {
        {SMTPD_DATA_TOO_BIG, 0, NULL,
         "552 5.3.4 Error: message file too big\r\n"},
        {SMTPD_DATA_BARE_LF, 0, NULL,
         "550 5.5.2 Error: bare <LF> received\r\n"},
        {SMTPD_DATA_CLEANUP, 0, NULL,
         "451 4.3.0 Error: queue file write error\r\n"},
        {SMTPD_DATA_REJECT, 554, "5.7.1 message content rejected",
         "554 5.7.1 message content rejected\r\n"},
        {SMTPD_DATA_REJECT, 250, "2.0.0 nonsense",
         "451 4.3.0 Error: queue file write error\r\n"},
        {SMTPD_DATA_REJECT, 451, "junk\r\n250 x",
         "451 4.3.0 Error: queue file write error\r\n"},
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
        rcpt_ok(env, "RCPT TO:<b@localhost>");
        expect(env, "DATA", "354 ", SMTPD_ACT_DATA);
        smtpd_proto_data_done(env->proto, cases[i].status, NULL, cases[i].code,
                              cases[i].reason);
        assert_string_equal(vstr_str(env->proto->reply), cases[i].reply);
        vstr_reset(env->proto->reply);
        assert_false(env->proto->have_sender);
        assert_int_equal(env->proto->rcpt_count, 0);
    }
}

static void test_received_header(void **state)
{
    TEST_ENV *env = *state;
    VSTR *out = vstr_alloc(10);

    expect(env, "EHLO client.test", "250-", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<b@localhost>");
    smtpd_proto_received(env->proto, "QID1", 100000000, out);
    assert_true(strncmp(vstr_str(out),
                        "Received: from client.test (unknown [10.0.0.1])\n"
                        "\tby mx.example.org (sluice) with ESMTP id QID1\n"
                        "\tfor <b@localhost>; ",
                        strlen("Received: from client.test (unknown "
                               "[10.0.0.1])\n\tby mx.example.org (sluice) "
                               "with ESMTP id QID1\n\tfor <b@localhost>; ")) ==
                0);
    assert_non_null(strstr(vstr_str(out), " 1973 "));
    assert_int_equal(vstr_str(out)[vstr_len(out) - 1], '\n');
    /* Two recipients: no "for". */
    rcpt_ok(env, "RCPT TO:<c@localhost>");
    vstr_reset(out);
    smtpd_proto_received(env->proto, "QID1", 100000000, out);
    assert_null(strstr(vstr_str(out), "for <"));
    vstr_free(out);
}

/* test_local_session - sendmail -bs: trusted, relays, Received: by uid */
static void test_local_session(void **state)
{
    TEST_ENV *env = *state;
    VSTR *out = vstr_alloc(10);

    smtpd_proto_free(env->proto);
    env->proto = smtpd_proto_alloc(&env->conf, "localhost", "local");
    assert_false(env->proto->client_trusted);
    smtpd_proto_set_local(env->proto, 1234);
    assert_true(env->proto->local && env->proto->client_trusted);
    expect(env, "EHLO me", "250-", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<far@elsewhere.test>"); /* may relay */
    smtpd_proto_received(env->proto, "QID1", 100000000, out);
    assert_true(strncmp(vstr_str(out),
                        "Received: by mx.example.org (sluice, from userid 1234)\n"
                        "\twith ESMTP id QID1\n\tfor <far@elsewhere.test>; ",
                        strlen("Received: by mx.example.org (sluice, from userid"
                               " 1234)\n\twith ESMTP id QID1\n\tfor "
                               "<far@elsewhere.test>; ")) == 0);
    assert_null(strstr(vstr_str(out), "local]"));
    vstr_free(out);
}

/* decode - feed text to a fresh decoder in pieces of step bytes */
static void decode(const char *in, size_t len, size_t step, long long limit,
                   SMTPD_DATA *data, VSTR *out)
{
    size_t pos = 0;

    smtpd_data_init(data, limit);
    vstr_reset(out);
    while (pos < len && !data->done) {
        size_t n = len - pos < step ? len - pos : step;

        pos += smtpd_data_feed(data, in + pos, n, out, 1 << 20);
    }
}

#define DECODE(lit, step, limit, data, out)                                    \
    decode(lit, sizeof(lit) - 1, step, limit, data, out)

static void test_data_decode(void **state)
{
    static const char msg[] = "Subject: x\r\n\r\n..dot\r\n.\r\n";
    SMTPD_DATA data;
    VSTR *out = vstr_alloc(10);

    for (size_t step = 1; step <= sizeof(msg); step++) {
        DECODE("Subject: x\r\n\r\n..dot\r\n.\r\nMAIL FROM:<x>\r\n", step, 0,
               &data, out);
        assert_true(data.done);
        assert_false(data.bare_lf);
        assert_int_equal(vstr_len(out), 17);
        assert_memory_equal(vstr_str(out), "Subject: x\n\n.dot\n", 17);
    }
    /* The end marker right after DATA: an empty message. */
    DECODE(".\r\n", 1, 0, &data, out);
    assert_true(data.done);
    assert_int_equal(vstr_len(out), 0);
    /* 8-bit bytes, NUL, bare CR and a lone dot in a line survive. */
    DECODE("a\xe9\xff\0b\rc\r\n x.\r\n.a.\r\n.\r\n", 3, 0, &data, out);
    assert_true(data.done);
    assert_int_equal(vstr_len(out), 15);
    assert_memory_equal(vstr_str(out), "a\xe9\xff\0b\rc\n x.\na.\n", 15);
    vstr_free(out);
}

static void test_data_smuggling(void **state)
{
    static const char *const smuggle[] = {
        "a\n.\nMAIL FROM:<x@y>\r\n",
        "a\n.\r\nMAIL FROM:<x@y>\r\n",
        "a\r.\rMAIL FROM:<x@y>\r\n",
        "a\r\n.\nMAIL FROM:<x@y>\r\n",
        "a\r\n.\r.\r\n",
        "a\r\n .\r\n",
        "a\r\n.\r\r\n",
    };
    SMTPD_DATA data;
    VSTR *out = vstr_alloc(10);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(smuggle); i++) {
        for (size_t step = 1; step < 4; step++) {
            decode(smuggle[i], strlen(smuggle[i]), step, 0, &data, out);
            if (data.done)
                fail_msg("sequence %zu ended the data", i);
        }
    }
    decode(smuggle[0], strlen(smuggle[0]), 1, 0, &data, out);
    assert_true(data.bare_lf);
    decode(smuggle[2], strlen(smuggle[2]), 1, 0, &data, out);
    assert_false(data.bare_lf);
    /* Only CR LF . CR LF ends it, even after the smuggling attempt. */
    DECODE("a\n.\r\nb\r\n.\r\n", 1, 0, &data, out);
    assert_true(data.done);
    assert_true(data.bare_lf);
    vstr_free(out);
}

static void test_data_limit_and_chunks(void **state)
{
    SMTPD_DATA data;
    VSTR *out = vstr_alloc(10);
    char big[3000];
    size_t used;

    memset(big, 'x', sizeof(big));
    memcpy(big + sizeof(big) - 5, "\r\n.\r\n", 5);
    decode(big, sizeof(big), 7, 100, &data, out);
    assert_true(data.done);
    assert_true(data.too_big);
    assert_int_equal(vstr_len(out), 100);
    decode(big, sizeof(big), 7, 2996, &data, out);
    assert_true(data.done);
    assert_false(data.too_big);
    assert_int_equal(vstr_len(out), 2996);
    /* The decoder stops when the chunk is full. */
    smtpd_data_init(&data, 0);
    vstr_reset(out);
    used = smtpd_data_feed(&data, big, sizeof(big), out, 1000);
    assert_int_equal(used, 1000);
    assert_int_equal(vstr_len(out), 1000);
    assert_false(data.done);
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ehlo_lists_extensions, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_simple_commands, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_vrfy_enabled, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_sequence, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_mail_syntax, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_mail_params, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_size_over_limit, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_queue_minfree, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_rcpt_params_and_syntax, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_recipient_limit, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_relay_control, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_nul_and_long_line, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_control_bytes_not_echoed,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_hard_error_limit, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_counts, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_data_done_replies, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_received_header, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_local_session, test_setup,
                                        test_teardown),
        cmocka_unit_test(test_data_decode),
        cmocka_unit_test(test_data_smuggling),
        cmocka_unit_test(test_data_limit_and_chunks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
