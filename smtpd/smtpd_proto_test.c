/*
 * smtpd_proto_test - unit tests for the SMTP command parser, the session
 * state machine and the DATA content decoder
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "msg.h"
#include "mymalloc.h"
#include "maps.h"
#include "match_list.h"
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
    env->conf.mydestination = match_list_create(
        "mydestination", "mx.example.org, localhost", MATCH_LIST_DOMAIN, why);
    env->conf.relay_domains =
        match_list_create("relay_domains", "relay.test",
                          MATCH_LIST_DOMAIN | MATCH_LIST_PARENT, why);
    env->conf.mynetworks =
        match_list_create("mynetworks", "127.0.0.0/8 [::1]/128",
                          MATCH_LIST_ADDR | MATCH_LIST_PARENT, why);
    if (env->conf.mydestination == NULL || env->conf.relay_domains == NULL ||
        env->conf.mynetworks == NULL)
        return -1;
    env->conf.restrictions[SMTPD_LIST_RELAY] =
        smtpd_check_parse("smtpd_relay_restrictions",
                          "permit_mynetworks, reject_unauth_destination", why);
    env->conf.recipient_delimiter = "+";
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

/* __lsan_default_suppressions - LeakSanitizer (SANITIZE=1): Berkeley DB
   does not free a handle whose file it found corrupt (DB_RUNRECOVERY),
   which test_lookup_failure does on purpose */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libdb-5.3.so\n";
}

/* remove_files - empty the test folder (the log, tables) */
static void remove_files(const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *de;
    char path[512];

    if (dp == NULL)
        return;
    while ((de = readdir(dp)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        (void) unlink(path);
    }
    closedir(dp);
}

/* test_teardown - free it all and remove the folder */
static int test_teardown(void **state)
{
    TEST_ENV *env = *state;

    smtpd_proto_free(env->proto);
    match_list_free(env->conf.mydestination);
    match_list_free(env->conf.relay_domains);
    match_list_free(env->conf.mynetworks);
    for (int i = 0; i < SMTPD_LIST_COUNT; i++)
        smtpd_check_free(env->conf.restrictions[i]);
    smtpd_maps_free(env->conf.local_recipient_maps);
    msg_log_file("");
    remove_files(env->dir);
    if (rmdir(env->dir) < 0)
        return -1;
    myfree(env);
    return 0;
}

static const char *read_log(TEST_ENV *env);

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
    /* A message announced with SIZE= must fit above queue_minfree. */
    env->conf.queue_minfree = 1;
    env->conf.message_size_limit = 0;
    expect(env, "MAIL FROM:<a@example.com> SIZE=100", "250 2.1.0 ",
           SMTPD_ACT_REPLY);
    expect(env, "RSET", "250 ", SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com> SIZE=9000000000000000000",
           "452 4.3.1 Insufficient system storage", SMTPD_ACT_REPLY);
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

    assert_int_equal(smtpd_proto_relay_ok(trusted, "x@elsewhere.example"), 1);
    smtpd_proto_free(trusted);
    trusted = smtpd_proto_alloc(&env->conf, "unknown", "::1");
    assert_int_equal(smtpd_proto_relay_ok(trusted, "x@elsewhere.example"), 1);
    smtpd_proto_free(trusted);
    assert_int_equal(smtpd_proto_relay_ok(env->proto, "x@elsewhere.example"),
                     0);
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
    assert_non_null(strstr(read_log(env), "too many errors after UNKNOWN from"
                                          " unknown[10.0.0.1]"));
}

static void test_junk_limit_and_soft_limit(void **state)
{
    TEST_ENV *env = *state;
    SMTPD_ACT act;
    const char *reply;

    env->conf.junk_command_limit = 3;
    env->conf.soft_error_limit = 1;
    env->conf.error_sleep_ms = 200;
    env->conf.hard_error_limit = 4;
    /* Three junk commands are free; from the fourth on each is an error. */
    for (int i = 0; i < 3; i++)
        expect(env, i == 1 ? "RSET" : "NOOP", "250 ", SMTPD_ACT_REPLY);
    assert_int_equal(env->proto->error_count, 0);
    expect(env, "VRFY <a@b.test>", "252 ", SMTPD_ACT_REPLY);
    assert_int_equal(env->proto->error_count, 1);
    assert_false(smtpd_proto_slow(env->proto)); /* not more than soft */
    expect(env, "NOOP", "250 ", SMTPD_ACT_REPLY);
    assert_true(smtpd_proto_slow(env->proto));
    /* A delivered message starts the counts again. */
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<b@localhost>");
    expect(env, "DATA", "354 ", SMTPD_ACT_DATA);
    assert_int_equal(
        smtpd_proto_data_done(env->proto, SMTPD_DATA_OK, "Q1", 0, NULL),
        SMTPD_ACT_REPLY);
    vstr_reset(env->proto->reply);
    assert_int_equal(env->proto->error_count, 0);
    assert_false(smtpd_proto_slow(env->proto));
    for (int i = 0; i < 3; i++)
        expect(env, "NOOP", "250 ", SMTPD_ACT_REPLY);
    assert_int_equal(env->proto->error_count, 0);
    /* Junk alone reaches the hard limit. */
    for (int i = 0; i < 3; i++)
        expect(env, "NOOP", "250 ", SMTPD_ACT_REPLY);
    reply = cmd(env, "NOOP", &act);
    assert_int_equal(act, SMTPD_ACT_CLOSE);
    assert_string_equal(reply, "250 2.0.0 Ok\r\n421 4.7.0 mx.example.org"
                               " Error: too many errors\r\n");
    assert_non_null(strstr(read_log(env), "too many errors after NOOP from"));
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

/* test_starttls - STARTTLS offered and answered; encrypt requires it;
   the session starts over after the handshake; Received: and protocol */
static void test_starttls(void **state)
{
    TEST_ENV *env = *state;
    VSTR *out = vstr_alloc(10);
    const char *reply;

    /* Not offered without a certificate (tls_offer false). */
    reply = cmd(env, "EHLO client.test", NULL);
    assert_null(strstr(reply, "STARTTLS"));
    expect(env, "STARTTLS", "502 5.5.1 Error: command not implemented\r\n",
           SMTPD_ACT_REPLY);
    env->conf.tls_offer = true;
    env->conf.tls_level = SMTPD_TLS_ENCRYPT;
    reply = cmd(env, "EHLO client.test", NULL);
    assert_non_null(strstr(reply, "250-STARTTLS\r\n"));
    expect(env, "MAIL FROM:<a@example.com>",
           "530 5.7.0 Must issue a STARTTLS command first\r\n",
           SMTPD_ACT_REPLY);
    expect(env, "STARTTLS now", "501 5.5.4 Syntax: STARTTLS\r\n",
           SMTPD_ACT_REPLY);
    expect(env, "STARTTLS", "220 2.0.0 Ready to start TLS\r\n",
           SMTPD_ACT_STARTTLS);
    smtpd_proto_tls(
        env->proto,
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)");
    assert_null(env->proto->helo_name);
    assert_string_equal(smtpd_proto_protocol(env->proto), "SMTP");
    reply = cmd(env, "EHLO client.test", NULL);
    assert_null(strstr(reply, "STARTTLS"));
    expect(env, "STARTTLS", "554 5.5.1 Error: TLS already active\r\n",
           SMTPD_ACT_REPLY);
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    rcpt_ok(env, "RCPT TO:<b@localhost>");
    assert_string_equal(smtpd_proto_protocol(env->proto), "ESMTPS");
    env->conf.tls_received_header = true;
    smtpd_proto_received(env->proto, "QID1", 100000000, out);
    assert_true(strncmp(vstr_str(out),
                        "Received: from client.test (unknown [10.0.0.1])\n"
                        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"
                        " (256/256 bits))\n"
                        "\t(No client certificate requested)\n"
                        "\tby mx.example.org (sluice) with ESMTPS id QID1\n",
                        strlen("Received: from client.test (unknown "
                               "[10.0.0.1])\n\t(using TLSv1.3 with cipher "
                               "TLS_AES_256_GCM_SHA384 (256/256 bits))\n\t(No "
                               "client certificate requested)\n\tby "
                               "mx.example.org (sluice) with ESMTPS id "
                               "QID1\n")) == 0);
    /* AUTH is not enabled here. */
    expect(env, "AUTH PLAIN", "503 5.5.1 Error: authentication not enabled",
           SMTPD_ACT_REPLY);
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
    assert_true(
        strncmp(vstr_str(out),
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

/* ref_emit, ref_newline, ref_feed - the decoder one byte at a time, as
   it was before runs of plain bytes were appended at once: the oracle of
   test_data_runs_match_bytes */
static void ref_emit(SMTPD_DATA *data, VSTR *out, int ch)
{
    if (data->too_big)
        return;
    if (data->limit > 0 && data->size >= data->limit) {
        data->too_big = true;
        return;
    }
    data->size++;
    vstr_addch(out, ch);
}

static void ref_newline(SMTPD_DATA *data, VSTR *out, bool crlf)
{
    ref_emit(data, out, '\n');
    if (!crlf)
        data->bare_lf = true;
    data->bol = true;
    data->last_crlf = crlf;
}

static size_t ref_feed(SMTPD_DATA *data, const char *buf, size_t len, VSTR *out,
                       size_t max)
{
    size_t i;

    for (i = 0; i < len && !data->done && vstr_len(out) < max; i++) {
        int ch = (unsigned char) buf[i];

        if (data->pending_cr) {
            data->pending_cr = false;
            if (ch == '\n') {
                ref_newline(data, out, true);
                continue;
            }
            ref_emit(data, out, '\r');
        } else if (data->dot_cr) {
            data->dot_cr = false;
            data->after_dot = false;
            if (ch == '\n') {
                if (data->last_crlf)
                    data->done = true;
                else
                    ref_newline(data, out, true);
                continue;
            }
            ref_emit(data, out, '\r');
        } else if (data->after_dot) {
            if (ch == '\r') {
                data->dot_cr = true;
                continue;
            }
            data->after_dot = false;
            if (ch == '\n') {
                ref_newline(data, out, false);
                continue;
            }
        } else if (data->bol && ch == '.') {
            data->bol = false;
            data->after_dot = true;
            continue;
        }
        data->bol = false;
        if (ch == '\r')
            data->pending_cr = true;
        else if (ch == '\n')
            ref_newline(data, out, false);
        else
            ref_emit(data, out, ch);
    }
    return i;
}

/* test_data_runs_match_bytes - random content (mostly CR, LF, dots and a
   few letters), cut in random pieces, with random size limits and chunk
   sizes: the decoder consumes, emits and ends exactly as the byte-at-a-
   time oracle does */
static void test_data_runs_match_bytes(void **state)
{
    static const char alphabet[] = "\r\n..abc\r\n\0\xff";
    unsigned seed = 14;
    char in[600];
    VSTR *got = vstr_alloc(10);
    VSTR *want = vstr_alloc(10);

    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t) rand_r(&seed) % sizeof(in);
        long long limit = rand_r(&seed) % 3 ? 0 : rand_r(&seed) % 300;
        size_t max = 1 + (size_t) rand_r(&seed) % 400;
        SMTPD_DATA a, b;
        size_t pos = 0;

        for (size_t k = 0; k < len; k++)
            in[k] =
                rand_r(&seed) % 4
                    ? alphabet[(size_t) rand_r(&seed) % (sizeof(alphabet) - 1)]
                    : (char) ('d' + rand_r(&seed) % 20);
        smtpd_data_init(&a, limit);
        smtpd_data_init(&b, limit);
        vstr_reset(got);
        vstr_reset(want);
        while (pos < len && !a.done) {
            size_t n = 1 + (size_t) rand_r(&seed) % 64;
            size_t used_a, used_b;

            if (n > len - pos)
                n = len - pos;
            used_a = smtpd_data_feed(&a, in + pos, n, got, vstr_len(got) + max);
            used_b = ref_feed(&b, in + pos, n, want, vstr_len(want) + max);
            if (used_a != used_b)
                fail_msg("round %d: consumed %zu, the oracle %zu", round,
                         used_a, used_b);
            pos += used_a;
        }
        assert_int_equal(vstr_len(got), vstr_len(want));
        assert_memory_equal(vstr_str(got), vstr_str(want), vstr_len(want));
        assert_int_equal(a.done, b.done);
        assert_int_equal(a.bare_lf, b.bare_lf);
        assert_int_equal(a.too_big, b.too_big);
        assert_int_equal(a.size, b.size);
        assert_int_equal(a.bol, b.bol);
        assert_int_equal(a.pending_cr, b.pending_cr);
        assert_int_equal(a.after_dot, b.after_dot);
        assert_int_equal(a.dot_cr, b.dot_cr);
        assert_int_equal(a.last_crlf, b.last_crlf);
    }
    vstr_free(got);
    vstr_free(want);
}

/* set_list - compile one restriction list into the configuration */
static void set_list(TEST_ENV *env, SMTPD_LIST list, const char *value)
{
    VSTR *why = vstr_alloc(64);

    smtpd_check_free(env->conf.restrictions[list]);
    env->conf.restrictions[list] = smtpd_check_parse("test_list", value, why);
    if (vstr_len(why) > 0)
        fail_msg("%s: %s", value, vstr_str(why));
    vstr_free(why);
}

/* session - a new session from client addr, EHLO helo (unless NULL) and
   MAIL FROM:<sender> */
static void session(TEST_ENV *env, const char *addr, const char *helo,
                    const char *sender)
{
    char line[512];

    smtpd_proto_free(env->proto);
    env->proto = smtpd_proto_alloc(&env->conf, "unknown", addr);
    if (helo != NULL) {
        snprintf(line, sizeof(line), "EHLO %s", helo);
        expect(env, line, "250-", SMTPD_ACT_REPLY);
    }
    snprintf(line, sizeof(line), "MAIL FROM:<%s>", sender);
    expect(env, line, "250 2.1.0 Ok\r\n", SMTPD_ACT_REPLY);
}

/* expect_rcpt - RCPT TO:<rcpt> gets exactly reply (CR LF added), or is
   accepted (handed to cleanup) when reply is NULL */
static void expect_rcpt(TEST_ENV *env, const char *rcpt, const char *reply)
{
    char line[512];
    char want[512];
    SMTPD_ACT act;
    const char *got;

    snprintf(line, sizeof(line), "RCPT TO:<%s>", rcpt);
    got = cmd(env, line, &act);
    if (reply == NULL) {
        if (act != SMTPD_ACT_RCPT || *got != 0)
            fail_msg("%s: got \"%s\", want acceptance", line, got);
        return;
    }
    snprintf(want, sizeof(want), "%s\r\n", reply);
    if (act != SMTPD_ACT_REPLY || strcmp(got, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", line, got, reply);
}

/* write_file - a table's text in the test folder; returns its path */
static const char *write_file(TEST_ENV *env, const char *name, const char *text)
{
    static char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", env->dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    return path;
}

/* read_log - the maillog so far */
static const char *read_log(TEST_ENV *env)
{
    static char log[16384];
    ssize_t got;
    int fd = open(env->log, O_RDONLY);

    assert_true(fd >= 0);
    got = read(fd, log, sizeof(log) - 1);
    close(fd);
    log[got > 0 ? got : 0] = 0;
    return log;
}

static void test_check_parse(void **state)
{
    VSTR *why = vstr_alloc(10);
    SMTPD_RESTRICTIONS *list;
    static const struct {
        const char *value;
        const char *why;
    } bad[] = {
        {"permit_mynetworks, reject_bogus",
         "test_list: unknown restriction \"reject_bogus\""},
        {"check_sender_access", "test_list: check_sender_access needs a"
                                " type:table argument"},
        {"check_client_access permit", "test_list: check_client_access needs"
                                       " a type:table argument"},
        {"check_helo_access inline:{ a=b", "test_list: unbalanced braces"},
        {"permit }", "test_list: unbalanced braces"},
        {"check_recipient_access hash:/nonexistent/table", "test_list: "},
        {"check_recipient_access nosuchtype:x", "test_list: "},
    };

    (void) state;
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        vstr_reset(why);
        list = smtpd_check_parse("test_list", bad[i].value, why);
        /* Logged by the caller; smtpd goes on (451 where it matters). */
        assert_non_null(list);
        smtpd_check_free(list);
        if (strncmp(vstr_str(why), bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("\"%s\": got \"%s\", want \"%s...\"", bad[i].value,
                     vstr_str(why), bad[i].why);
    }
    /* An unopenable table names itself. */
    list = smtpd_check_parse(
        "test_list", "check_recipient_access hash:/nonexistent/table", why);
    assert_non_null(list);
    smtpd_check_free(list);
    assert_non_null(strstr(vstr_str(why), "/nonexistent/table"));
    /* Commas, white space, a table with braces, an empty list. */
    list = smtpd_check_parse(
        "test_list",
        " permit_mynetworks,check_client_access inline:{ a=OK, { b = REJECT"
        " x, y } }\n\treject_unauth_destination , permit ",
        why);
    assert_non_null(list);
    smtpd_check_free(list);
    assert_int_equal(vstr_len(why), 0);
    list = smtpd_check_parse("test_list", "", why);
    assert_non_null(list);
    assert_int_equal(vstr_len(why), 0);
    smtpd_check_free(list);
    vstr_free(why);
}

static void test_sender_access(void **state)
{
    TEST_ENV *env = *state;

    set_list(env, SMTPD_LIST_SENDER,
             "check_sender_access inline:{ { spam@bad.test = REJECT Go away },"
             " bad.test=REJECT, { defer.test = DEFER busy now },"
             " ok@bad.test=OK, dunno@bad.test=DUNNO,"
             " { <> = 550 5.7.9 no bounces here }, { user@ = 451 try later },"
             " odd.test=FROBNICATE, num.test=12345,"
             " { nodsn.test = 553 no dsn here }, { ext@ext.test = REJECT ext },"
             " { code.test = 450 } }");
    session(env, "10.0.0.1", "c.test", "spam@bad.test");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <spam@bad.test>: Sender address rejected: Go away");
    /* The reject is logged as Postfix logs it. */
    assert_non_null(strstr(read_log(env),
                           "NOQUEUE: reject: RCPT from unknown[10.0.0.1]: 554"
                           " 5.7.1 <spam@bad.test>: Sender address rejected:"
                           " Go away; from=<spam@bad.test> to=<b@localhost>"
                           " proto=ESMTP helo=<c.test>"));
    /* The domain, its parents; the case of the address does not matter. */
    session(env, "10.0.0.1", "c.test", "Someone@Sub.BAD.test");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <Someone@Sub.BAD.test>: Sender address rejected:"
                " Access denied");
    /* OK ends the sender list only: relay control still applies. */
    session(env, "10.0.0.1", "c.test", "ok@bad.test");
    expect_rcpt(env, "b@localhost", NULL);
    expect_rcpt(env, "b@elsewhere.test",
                "554 5.7.1 <b@elsewhere.test>: Relay access denied");
    /* DUNNO stops the search: bad.test does not apply. */
    session(env, "10.0.0.1", "c.test", "dunno@bad.test");
    expect_rcpt(env, "b@localhost", NULL);
    session(env, "10.0.0.1", "c.test", "");
    expect_rcpt(env, "b@localhost",
                "550 5.7.9 <>: Sender address rejected: no bounces here");
    session(env, "10.0.0.1", "c.test", "user@other.test");
    expect_rcpt(env, "b@localhost",
                "451 4.7.1 <user@other.test>: Sender address rejected: try"
                " later");
    session(env, "10.0.0.1", "c.test", "a@defer.test");
    expect_rcpt(env, "b@localhost",
                "450 4.7.1 <a@defer.test>: Sender address rejected: busy now");
    session(env, "10.0.0.1", "c.test", "a@nodsn.test");
    expect_rcpt(env, "b@localhost",
                "553 5.7.1 <a@nodsn.test>: Sender address rejected: no dsn"
                " here");
    session(env, "10.0.0.1", "c.test", "a@code.test");
    expect_rcpt(env, "b@localhost",
                "450 4.7.1 <a@code.test>: Sender address rejected: Access"
                " denied");
    /* recipient_delimiter: ext+tag@ext.test finds ext@ext.test */
    session(env, "10.0.0.1", "c.test", "ext+tag@ext.test");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <ext+tag@ext.test>: Sender address rejected: ext");
    /* An all-numerical value is OK; an unknown one is logged and ignored. */
    session(env, "10.0.0.1", "c.test", "a@num.test");
    expect_rcpt(env, "b@localhost", NULL);
    session(env, "10.0.0.1", "c.test", "a@odd.test");
    expect_rcpt(env, "b@localhost", NULL);
    assert_non_null(strstr(read_log(env), "unknown access table result"
                                          " \"FROBNICATE\""));
    session(env, "10.0.0.1", "c.test", "a@fine.test");
    expect_rcpt(env, "b@localhost", NULL);
}

static void test_recipient_access(void **state)
{
    TEST_ENV *env = *state;

    /* OK before reject_unauth_destination lets a foreign domain through. */
    set_list(env, SMTPD_LIST_RELAY,
             "permit_mynetworks, check_recipient_access"
             " inline:{ outside.test=OK }, reject_unauth_destination");
    set_list(env, SMTPD_LIST_RECIPIENT,
             "check_recipient_access inline:{ { bad@localhost = REJECT no such"
             " mailbox }, { outside.test = 521 5.7.0 second list } }");
    session(env, "10.0.0.1", NULL, "a@example.com");
    expect_rcpt(env, "x@other.test",
                "554 5.7.1 <x@other.test>: Relay access denied");
    expect_rcpt(env, "bad@localhost",
                "554 5.7.1 <bad@localhost>: Recipient address rejected: no"
                " such mailbox");
    expect_rcpt(env, "good@localhost", NULL);
    /* A permit in the relay list does not skip the recipient list. */
    expect_rcpt(env, "x@sub.outside.test",
                "521 5.7.0 <x@sub.outside.test>: Recipient address rejected:"
                " second list");
    set_list(env, SMTPD_LIST_RECIPIENT, "");
    expect_rcpt(env, "x@sub.outside.test", NULL);
    expect_rcpt(env, "x@outside.test", NULL);
}

static void test_client_access(void **state)
{
    TEST_ENV *env = *state;

    set_list(env, SMTPD_LIST_CLIENT,
             "check_client_access inline:{ 10.0.0.1=REJECT, 10.0.1=DEFER,"
             " { 10.1 = 521 go away }, 10.2.0.3=DUNNO, 10.2=REJECT }");
    session(env, "10.0.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <unknown[10.0.0.1]>: Client host rejected: Access"
                " denied");
    session(env, "10.0.1.7", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "450 4.7.1 <unknown[10.0.1.7]>: Client host rejected: Access"
                " denied");
    session(env, "10.1.2.3", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "521 5.7.1 <unknown[10.1.2.3]>: Client host rejected: go away");
    session(env, "10.2.0.3", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost", NULL);
    session(env, "10.2.0.4", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <unknown[10.2.0.4]>: Client"
                " host rejected: Access denied");
    session(env, "10.3.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost", NULL);
    session(env, "::2", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost", NULL);
    /* A permit ends the client list; a plain reject names the client. */
    set_list(env, SMTPD_LIST_CLIENT,
             "check_client_access inline:{ 192.168.1.1=OK }, reject");
    session(env, "192.168.1.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost", NULL);
    expect_rcpt(env, "b@elsewhere.test",
                "554 5.7.1 <b@elsewhere.test>: Relay access denied");
    session(env, "192.168.1.2", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <unknown[192.168.1.2]>: Client"
                " host rejected: Access denied");
}

static void test_helo_and_plain_words(void **state)
{
    TEST_ENV *env = *state;

    set_list(env, SMTPD_LIST_HELO,
             "check_helo_access inline:{ { bad.test = REJECT fake name } }");
    session(env, "10.0.0.1", "X.Bad.Test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <X.Bad.Test>: Helo command"
                " rejected: fake name");
    session(env, "10.0.0.1", "good.test", "a@example.com");
    expect_rcpt(env, "b@localhost", NULL);
    session(env, "10.0.0.1", NULL, "a@example.com"); /* no HELO: no check */
    expect_rcpt(env, "b@localhost", NULL);
    set_list(env, SMTPD_LIST_HELO, "");
    /* Each list's reject and defer name what the list is about. */
    set_list(env, SMTPD_LIST_SENDER, "reject");
    session(env, "10.0.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "554 5.7.1 <a@example.com>: Sender address"
                " rejected: Access denied");
    set_list(env, SMTPD_LIST_SENDER, "permit_mynetworks, defer");
    expect_rcpt(env, "b@localhost",
                "450 4.7.1 <a@example.com>: Sender address"
                " rejected: Access denied");
    session(env, "127.0.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost", NULL);
    set_list(env, SMTPD_LIST_SENDER, "");
    set_list(env, SMTPD_LIST_RECIPIENT, "defer");
    expect_rcpt(env, "b@localhost",
                "450 4.7.1 <b@localhost>: Recipient address"
                " rejected: Access denied");
    /* permit in the relay list: an open relay, as configured */
    set_list(env, SMTPD_LIST_RECIPIENT, "");
    set_list(env, SMTPD_LIST_RELAY, "permit");
    session(env, "10.0.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@elsewhere.test", NULL);
    /* The end of all lists accepts. */
    set_list(env, SMTPD_LIST_RELAY, "");
    expect_rcpt(env, "b@elsewhere.test", NULL);
    set_list(env, SMTPD_LIST_RELAY, "permit_auth_destination, reject");
    expect_rcpt(env, "b@relay.test", NULL);
    expect_rcpt(env, "b@elsewhere.test",
                "554 5.7.1 <b@elsewhere.test>:"
                " Recipient address rejected:"
                " Access denied");
    /* A local submission (sendmail -bs) is not subject to the lists. */
    set_list(env, SMTPD_LIST_CLIENT, "reject");
    smtpd_proto_free(env->proto);
    env->proto = smtpd_proto_alloc(&env->conf, "localhost", "local");
    smtpd_proto_set_local(env->proto, 1234);
    expect(env, "MAIL FROM:<a@example.com>", "250 ", SMTPD_ACT_REPLY);
    expect_rcpt(env, "b@elsewhere.test", NULL);
}

static void test_local_recipient_maps(void **state)
{
    TEST_ENV *env = *state;
    VSTR *why = vstr_alloc(10);

    env->conf.local_recipient_maps = smtpd_maps_create(
        "local_recipient_maps",
        "inline:{ alice=yes } inline:{ bob@localhost=yes }", why);
    assert_non_null(env->conf.local_recipient_maps);
    session(env, "10.0.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "nobody@localhost",
                "550 5.1.1 <nobody@localhost>: Recipient address rejected:"
                " User unknown in local recipient table");
    expect_rcpt(env, "alice@localhost", NULL);
    expect_rcpt(env, "Alice+tag@MX.Example.org", NULL);
    expect_rcpt(env, "bob@localhost", NULL);
    expect_rcpt(env, "bob@mx.example.org",
                "550 5.1.1 <bob@mx.example.org>: Recipient address rejected:"
                " User unknown in local recipient table");
    expect_rcpt(env, "postmaster",
                "550 5.1.1 <postmaster>: Recipient address rejected: User"
                " unknown in local recipient table");
    /* Not a local domain: not this table's business. */
    expect_rcpt(env, "nobody@relay.test", NULL);
    /* Done even when a list said OK; reject_unlisted_recipient as a word. */
    set_list(env, SMTPD_LIST_RELAY,
             "check_recipient_access inline:{ localhost=OK }"
             " reject_unauth_destination");
    expect_rcpt(env, "nobody@localhost",
                "550 5.1.1 <nobody@localhost>: Recipient address rejected:"
                " User unknown in local recipient table");
    set_list(env, SMTPD_LIST_RELAY,
             "reject_unlisted_recipient, reject_unauth_destination");
    expect_rcpt(env, "nobody@localhost",
                "550 5.1.1 <nobody@localhost>: Recipient address rejected:"
                " User unknown in local recipient table");
    expect_rcpt(env, "alice@localhost", NULL);
    /* An empty list accepts every local user. */
    smtpd_maps_free(env->conf.local_recipient_maps);
    env->conf.local_recipient_maps =
        smtpd_maps_create("local_recipient_maps", "", why);
    assert_non_null(env->conf.local_recipient_maps);
    expect_rcpt(env, "nobody@localhost", NULL);
    vstr_free(why);
}

static void test_lists_with_tables(void **state)
{
    TEST_ENV *env = *state;
    VSTR *why = vstr_alloc(10);
    VSTR *spec = vstr_alloc(10);

    /* mynetworks and relay_domains from tables */
    match_list_free(env->conf.mynetworks);
    vstr_sprintf(spec, "127.0.0.0/8 texthash:%s",
                 write_file(env, "nets", "10.9 ok\n192.168.7.7 yes\n"));
    env->conf.mynetworks = match_list_create(
        "mynetworks", vstr_str(spec), MATCH_LIST_ADDR | MATCH_LIST_PARENT, why);
    if (env->conf.mynetworks == NULL)
        fail_msg("mynetworks: %s", vstr_str(why));
    match_list_free(env->conf.relay_domains);
    vstr_sprintf(spec, "texthash:%s",
                 write_file(env, "relay", "tablerelay.test OK\n"));
    env->conf.relay_domains =
        match_list_create("relay_domains", vstr_str(spec),
                          MATCH_LIST_DOMAIN | MATCH_LIST_PARENT, why);
    if (env->conf.relay_domains == NULL)
        fail_msg("relay_domains: %s", vstr_str(why));
    session(env, "10.9.1.2", "c.test", "a@example.com");
    expect_rcpt(env, "b@elsewhere.test", NULL);
    session(env, "192.168.7.7", "c.test", "a@example.com");
    expect_rcpt(env, "b@elsewhere.test", NULL);
    session(env, "10.8.1.2", "c.test", "a@example.com");
    expect_rcpt(env, "b@elsewhere.test",
                "554 5.7.1 <b@elsewhere.test>: Relay access denied");
    expect_rcpt(env, "b@tablerelay.test", NULL);
    expect_rcpt(env, "b@sub.tablerelay.test", NULL);
    expect_rcpt(env, "b@relay.test",
                "554 5.7.1 <b@relay.test>: Relay access denied");
    /* Debian's stock list: the same test, answered 450 (defer_code). */
    set_list(env, SMTPD_LIST_RELAY,
             "permit_mynetworks permit_sasl_authenticated"
             " defer_unauth_destination");
    expect_rcpt(env, "b@relay.test",
                "450 4.7.1 <b@relay.test>: Relay access denied");
    expect_rcpt(env, "b@tablerelay.test", NULL);
    expect_rcpt(env, "b@localhost", NULL);
    vstr_free(spec);
    vstr_free(why);
}

/* corrupt_db - overwrite every page of path but the first (the meta page):
   the table opens, and every lookup fails */
static void corrupt_db(const char *path)
{
    char junk[4096];
    struct stat st;
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(st.st_size > 4096);
    memset(junk, 0xa5, sizeof(junk));
    for (off_t off = 4096; off < st.st_size; off += sizeof(junk))
        assert_int_equal(pwrite(fd, junk, sizeof(junk), off), sizeof(junk));
    assert_int_equal(close(fd), 0);
}

static void test_lookup_failure(void **state)
{
    TEST_ENV *env = *state;
    VSTR *why = vstr_alloc(10);
    VSTR *spec = vstr_alloc(10);
    VSTR *list = vstr_alloc(10);
    char db[256];

    vstr_sprintf(spec, "hash:%s",
                 write_file(env, "table",
                            "a@example.com OK\nlocalhost OK\n"
                            "10.0.0.1 OK\n"));
    if (map_build(vstr_str(spec), MAP_FLAG_NONE, why) < 0)
        fail_msg("%s: %s", vstr_str(spec), vstr_str(why));
    snprintf(db, sizeof(db), "%s/table.db", env->dir);
    corrupt_db(db);
    /* Every kind of lookup answers 451 and never lets the client pass. */
    vstr_sprintf(list, "check_sender_access %s, permit", vstr_str(spec));
    set_list(env, SMTPD_LIST_SENDER, vstr_str(list));
    session(env, "10.0.0.1", "c.test", "a@example.com");
    expect_rcpt(env, "b@localhost",
                "451 4.3.0 <a@example.com>: Temporary lookup failure");
    assert_non_null(strstr(read_log(env), "lookup of \"a@example.com\""
                                          " failed"));
    set_list(env, SMTPD_LIST_SENDER, "");
    vstr_sprintf(list, "check_client_access %s", vstr_str(spec));
    set_list(env, SMTPD_LIST_CLIENT, vstr_str(list));
    expect_rcpt(env, "b@localhost",
                "451 4.3.0 <unknown[10.0.0.1]>: Temporary lookup failure");
    set_list(env, SMTPD_LIST_CLIENT, "");
    env->conf.local_recipient_maps =
        smtpd_maps_create("local_recipient_maps", vstr_str(spec), why);
    assert_non_null(env->conf.local_recipient_maps);
    expect_rcpt(env, "b@localhost",
                "451 4.3.0 <b@localhost>: Temporary lookup failure");
    env->conf.local_recipient_maps =
        smtpd_maps_free(env->conf.local_recipient_maps);
    /* A failing relay_domains table: neither relayed nor refused for good */
    match_list_free(env->conf.relay_domains);
    env->conf.relay_domains = match_list_create("relay_domains", vstr_str(spec),
                                                MATCH_LIST_DOMAIN, why);
    assert_non_null(env->conf.relay_domains);
    expect_rcpt(env, "b@elsewhere.test",
                "451 4.3.0 <b@elsewhere.test>: Temporary lookup failure");
    expect_rcpt(env, "b@localhost", NULL); /* mydestination decided */
    vstr_free(list);
    vstr_free(spec);
    vstr_free(why);
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
        cmocka_unit_test_setup_teardown(test_junk_limit_and_soft_limit,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_hard_error_limit, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_counts, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_data_done_replies, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_received_header, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_starttls, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_local_session, test_setup,
                                        test_teardown),
        cmocka_unit_test(test_check_parse),
        cmocka_unit_test_setup_teardown(test_sender_access, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_recipient_access, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_client_access, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_helo_and_plain_words, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_local_recipient_maps, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_lists_with_tables, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_lookup_failure, test_setup,
                                        test_teardown),
        cmocka_unit_test(test_data_decode),
        cmocka_unit_test(test_data_smuggling),
        cmocka_unit_test(test_data_limit_and_chunks),
        cmocka_unit_test(test_data_runs_match_bytes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
