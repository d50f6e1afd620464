/*
 * mail_conf_test - unit tests for main.cf reading, expansion and editing
 *
 * Every test writes a real main.cf into a fresh directory under /tmp and
 * removes it afterwards.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <limits.h>
#include <pwd.h>
#include <setjmp.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "argv.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "testlib.h"
#include "vstr.h"

#ifndef DEF_QUEUE_DIR
#define DEF_QUEUE_DIR "/var/spool/sluice"
#endif

typedef struct TEST_DIR {
    TESTLIB_DIR *tmp;
    const char *dir; /* tmp->path */
    char path[128]; /* dir/main.cf */
    VSTR *why;
} TEST_DIR;

/* test_setup - a fresh directory */
static int test_setup(void **state)
{
    TEST_DIR *td = mymalloc(sizeof(*td));

    if ((td->tmp = testlib_dir_create("mail_conf_test")) == NULL) {
        myfree(td);
        return -1;
    }
    td->dir = td->tmp->path;
    snprintf(td->path, sizeof(td->path), "%s/main.cf", td->dir);
    td->why = vstr_alloc(100);
    *state = td;
    return 0;
}

/* test_teardown - remove the directory and what is in it */
static int test_teardown(void **state)
{
    TEST_DIR *td = *state;
    int ret = testlib_dir_remove(td->tmp);

    vstr_free(td->why);
    myfree(td);
    return ret;
}

/* write_main_cf - replace main.cf with text */
static void write_main_cf(TEST_DIR *td, const char *text)
{
    (void) testlib_write(td->tmp, "main.cf", text);
}

/* read_main_cf - the whole of main.cf (caller frees) */
static char *read_main_cf(TEST_DIR *td)
{
    char *text = testlib_read(td->path, NULL);

    assert_non_null(text);
    return text;
}

/* read_ok - read main.cf that must be good */
static MAIL_CONF *read_ok(TEST_DIR *td, const char *text)
{
    MAIL_CONF *conf;

    write_main_cf(td, text);
    conf = mail_conf_read(td->dir, td->why);
    if (conf == NULL)
        fail_msg("unexpected error: %s", vstr_str(td->why));
    return conf;
}

/* expect_error - read main.cf that must fail with "DIR/main.cf" + rest */
static void expect_error(TEST_DIR *td, const char *text, const char *rest)
{
    char want[512];

    write_main_cf(td, text);
    vstr_reset(td->why);
    assert_null(mail_conf_read(td->dir, td->why));
    snprintf(want, sizeof(want), "%s%s", td->path, rest);
    assert_string_equal(vstr_str(td->why), want);
}

static void test_parse(void **state)
{
    TEST_DIR *td = *state;
    MAIL_CONF *conf = read_ok(td, "# comment line\n"
                                  "   # indented comment\n"
                                  "relayhost = [mail.example.com]:587\n"
                                  "\n"
                                  "smtpd_banner = hello # not a comment\n"
                                  "mydestination = a,\n"
                                  "    b,\n"
                                  "# comment inside\n"
                                  "\n"
                                  "\tc\n"
                                  "my_own=x   \n"
                                  "relayhost =   later.example.com  \n"
                                  "empty_one =\n"
                                  "no_newline = last");
    const ARGV *names;
    ARGV *list;

    assert_string_equal(mail_conf_str(conf, "relayhost"), "later.example.com");
    assert_string_equal(mail_conf_raw(conf, "relayhost"), "later.example.com");
    assert_string_equal(mail_conf_str(conf, "smtpd_banner"),
                        "hello # not a comment");
    assert_string_equal(mail_conf_raw(conf, "mydestination"), "a, b, c");
    assert_string_equal(mail_conf_str(conf, "my_own"), "x");
    assert_string_equal(mail_conf_str(conf, "empty_one"), "");
    assert_string_equal(mail_conf_str(conf, "no_newline"), "last");
    assert_string_equal(mail_conf_str(conf, "not_anywhere"), "");
    assert_null(mail_conf_raw(conf, "not_anywhere"));
    assert_null(mail_conf_raw(conf, "queue_directory"));
    list = mail_conf_list(conf, "mydestination");
    assert_int_equal(list->argc, 3);
    assert_string_equal(list->argv[0], "a");
    assert_string_equal(list->argv[2], "c");
    argv_free(list);

    /* File order of first setting, each name once. */
    names = mail_conf_names(conf);
    assert_int_equal(names->argc, 6);
    assert_string_equal(names->argv[0], "relayhost");
    assert_string_equal(names->argv[1], "smtpd_banner");
    assert_string_equal(names->argv[2], "mydestination");
    assert_string_equal(names->argv[3], "my_own");
    assert_string_equal(names->argv[4], "empty_one");
    assert_string_equal(names->argv[5], "no_newline");
    mail_conf_free(conf);
}

static void test_expansion(void **state)
{
    TEST_DIR *td = *state;
    MAIL_CONF *conf = read_ok(
        td, "myhostname = mx.example.org\n"
            "a = [$b] [${b}] $$b $$${b} $ ${unknown_name}$unknown_too.\n"
            "b = $c-x\n"
            "c = deep\n"
            "mail_name = Sluice\n");

    assert_string_equal(mail_conf_str(conf, "a"),
                        "[deep-x] [deep-x] $b $deep-x $ .");
    assert_string_equal(mail_conf_raw(conf, "b"), "$c-x");
    /* Defaults expand with main.cf values. */
    assert_string_equal(mail_conf_str(conf, "smtpd_banner"),
                        "mx.example.org ESMTP Sluice");
    assert_string_equal(mail_conf_str(conf, "myorigin"), "mx.example.org");
    assert_string_equal(mail_conf_str(conf, "mydomain"), "example.org");
    assert_string_equal(mail_conf_str(conf, "mydestination"),
                        "mx.example.org, localhost.example.org, localhost");
    mail_conf_free(conf);

    /* mydomain follows a configured myhostname, unless set itself. */
    conf = read_ok(td, "myhostname = nodots\n");
    assert_string_equal(mail_conf_str(conf, "mydomain"), "localdomain");
    mail_conf_free(conf);
    conf = read_ok(td, "myhostname = a.b.c\nmydomain = x.y\n");
    assert_string_equal(mail_conf_str(conf, "mydomain"), "x.y");
    assert_string_equal(mail_conf_str(conf, "mydestination"),
                        "a.b.c, localhost.x.y, localhost");
    mail_conf_free(conf);

    /* Typed values are checked after expansion. */
    conf = read_ok(td, "big = 64\nmessage_size_limit = ${big}m\n");
    assert_int_equal(mail_conf_size(conf, "message_size_limit"),
                     64LL * 1024 * 1024);
    mail_conf_free(conf);
}

/* test_overrides - master.cf's -o name=value win over main.cf, expand
   like it, and are checked like it */
static void test_overrides(void **state)
{
    TEST_DIR *td = *state;
    ARGV *over = argv_alloc(4);
    MAIL_CONF *conf;

    write_main_cf(td, "myhostname = mx.example.org\n"
                      "smtpd_tls_security_level = may\n"
                      "syslog_name = sluice\n");
    argv_add(over, "smtpd_tls_security_level=encrypt");
    argv_add(over, "smtpd_banner = $myhostname submission");
    argv_add(over, "smtpd_recipient_restrictions=");
    conf = mail_conf_read_overrides(td->dir, over, td->why);
    assert_non_null(conf);
    assert_string_equal(mail_conf_str(conf, "smtpd_tls_security_level"),
                        "encrypt");
    assert_string_equal(mail_conf_str(conf, "smtpd_banner"),
                        "mx.example.org submission");
    assert_string_equal(mail_conf_str(conf, "smtpd_recipient_restrictions"),
                        "");
    mail_conf_free(conf);
    argv_free(over);

    /* A bad value names the -o; no '=' is refused. */
    over = argv_alloc(1);
    argv_add(over, "smtpd_timeout=soon");
    assert_null(mail_conf_read_overrides(td->dir, over, td->why));
    assert_non_null(strstr(vstr_str(td->why), "-o smtpd_timeout: "));
    argv_free(over);
    over = argv_alloc(1);
    argv_add(over, "smtpd_timeout");
    assert_null(mail_conf_read_overrides(td->dir, over, td->why));
    assert_string_equal(vstr_str(td->why),
                        "-o smtpd_timeout: missing '=' (use -o name=value)");
    argv_free(over);
}

static void test_loops(void **state)
{
    TEST_DIR *td = *state;

    expect_error(td, "# loop\nx = 1\na = $b\nb = ${c}\nc = $a\n",
                 " line 3: a: parameter expansion loop: $a -> $b -> $c -> $a");
    expect_error(td, "self = x$self\n",
                 " line 1: self: parameter expansion loop: $self -> $self");
    /* Through a default: smtpd_banner's default uses $myhostname. */
    expect_error(td, "myhostname = $smtpd_banner\n",
                 " line 1: myhostname: parameter expansion loop: "
                 "$myhostname -> $smtpd_banner -> $myhostname");
    expect_error(td, "myhostname = mx.$mydomain\n",
                 " line 1: myhostname: parameter expansion loop: "
                 "$myhostname -> $mydomain -> $myhostname");
    expect_error(td, "a = ${b\n",
                 " line 1: a: bad parameter reference \"${b\"");
    expect_error(td, "a = ok\n\nb = ${b:x}\n",
                 " line 3: b: bad parameter reference \"${b:x}\"");
    /* Doubling twenty-five times: refused, not a gigabyte. */
    {
        VSTR *text = vstr_alloc(1000);

        vstr_cat(text, "p0 = xxxxxxxx\n");
        for (int i = 1; i <= 25; i++)
            vstr_sprintf_append(text, "p%d = $p%d$p%d\n", i, i - 1, i - 1);
        write_main_cf(td, vstr_str(text));
        assert_null(mail_conf_read(td->dir, td->why));
        assert_non_null(strstr(vstr_str(td->why), "after expansion"));
        vstr_free(text);
    }
}

static void test_units(void **state)
{
    static const struct {
        const char *text;
        bool ok;
        long long value;
    } times[] =
        {
            {"0", true, 0},
            {"90", true, 90},
            {"90s", true, 90},
            {"5m", true, 300},
            {"1h", true, 3600},
            {"2d", true, 172800},
            {"1w", true, 604800},
            {"18000s", true, 18000},
            {"", false, 0},
            {"h", false, 0},
            {"1x", false, 0},
            {"1hh", false, 0},
            {"-1", false, 0},
            {" 1", false, 0},
            {"1 h", false, 0},
            {"1.5h", false, 0},
            {"9223372036854775807", true, LLONG_MAX},
            {"9223372036854775808", false, 0},
            {"99999999999999999999w", false, 0},
            {"15250284452471w", true, 15250284452471LL * 604800},
            {"15250284452472w", false, 0},
        },
      sizes[] = {
          {"0", true, 0},
          {"10240000", true, 10240000},
          {"1k", true, 1024},
          {"64k", true, 65536},
          {"10m", true, 10485760},
          {"1g", true, 1073741824LL},
          {"8589934591g", true, 8589934591LL << 30},
          {"8589934592g", false, 0},
          {"99999999999999g", false, 0},
          {"lots", false, 0},
          {"1K", false, 0},
          {"1kb", false, 0},
          {"", false, 0},
          {"-5", false, 0},
      };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(times); i++) {
        bool ok = !times[i].ok;
        long long value = mail_conf_parse_time(times[i].text, &ok);

        if (ok != times[i].ok || (ok && value != times[i].value))
            fail_msg("time \"%s\": ok %d value %lld", times[i].text, ok, value);
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sizes); i++) {
        bool ok = !sizes[i].ok;
        long long value = mail_conf_parse_size(sizes[i].text, &ok);

        if (ok != sizes[i].ok || (ok && value != sizes[i].value))
            fail_msg("size \"%s\": ok %d value %lld", sizes[i].text, ok, value);
    }
}

static void test_errors(void **state)
{
    TEST_DIR *td = *state;
    char want[256];

    expect_error(td,
                 "# a\n\nmyhostname = x.y\n\n"
                 "message_size_limit = lots\n",
                 " line 5: message_size_limit: bad size \"lots\"");
    expect_error(td,
                 "smtpd_recipient_limit = 10\n"
                 "smtpd_recipient_limit = 1e3\n",
                 " line 2: smtpd_recipient_limit: bad number \"1e3\"");
    expect_error(td, "soft_bounce = maybe\n",
                 " line 1: soft_bounce: bad boolean (use yes or no) "
                 "\"maybe\"");
    expect_error(td, "x = 1\nsmtpd_timeout =\n  5 minutes\n",
                 " line 2: smtpd_timeout: bad time \"5 minutes\"");
    expect_error(td, "queue_minfree = 99999999999999g\n",
                 " line 1: queue_minfree: bad size \"99999999999999g\"");
    expect_error(td, "a = 1\njust words\n",
                 " line 2: missing '=' in \"just words\"");
    expect_error(td, "bad-name = 1\n",
                 " line 1: bad parameter name \"bad-name\"");
    expect_error(td, " = 1\n",
                 " line 1: continuation line without a setting before it");
    expect_error(td, "= 1\n", " line 1: bad parameter name \"\"");
    /* A typed value is checked after expansion. */
    expect_error(td, "n = x\ndefault_process_limit = $n\n",
                 " line 2: default_process_limit: bad number \"x\"");

    /* Good typed values in all spellings. */
    {
        MAIL_CONF *conf =
            read_ok(td, "soft_bounce = TRUE\ndisable_vrfy_command = No\n"
                        "smtpd_timeout = 2m\nmessage_size_limit = 1g\n"
                        "default_process_limit = 7\n");

        assert_true(mail_conf_bool(conf, "soft_bounce"));
        assert_false(mail_conf_bool(conf, "disable_vrfy_command"));
        assert_int_equal(mail_conf_time(conf, "smtpd_timeout"), 120);
        assert_int_equal(mail_conf_size(conf, "message_size_limit"),
                         1073741824LL);
        assert_int_equal(mail_conf_int(conf, "default_process_limit"), 7);
        mail_conf_free(conf);
    }

    /* A missing main.cf is an error that names it. */
    unlink(td->path);
    assert_null(mail_conf_read(td->dir, td->why));
    snprintf(want, sizeof(want), "open %s: %s", td->path, strerror(ENOENT));
    assert_string_equal(vstr_str(td->why), want);
}

static void test_defaults(void **state)
{
    TEST_DIR *td = *state;
    MAIL_CONF *conf = read_ok(td, "config_directory = /elsewhere\n");
    char host[300];
    char want_host[320];
    struct passwd *pw = getpwuid(geteuid());
    ARGV *list;
    long long *times;
    size_t n_times;
    size_t count;
    const MAIL_PARAM *table = mail_param_table(&count);

    /* config_directory is always the directory read. */
    assert_string_equal(mail_conf_str(conf, "config_directory"), td->dir);
    assert_string_equal(mail_conf_str(conf, "queue_directory"), DEF_QUEUE_DIR);

    assert_int_equal(gethostname(host, sizeof(host)), 0);
    snprintf(want_host, sizeof(want_host), "%s%s", host,
             strchr(host, '.') ? "" : ".localdomain");
    assert_string_equal(mail_conf_str(conf, "myhostname"), want_host);
    assert_string_equal(mail_conf_str(conf, "mydomain"),
                        strchr(want_host, '.') + 1);
    assert_non_null(pw);
    /* root's default is the dedicated user: no daemon runs as root */
    assert_string_equal(mail_conf_str(conf, "mail_owner"),
                        geteuid() == 0 ? MAIL_OWNER_SYSTEM : pw->pw_name);

    assert_int_equal(mail_conf_size(conf, "message_size_limit"), 10240000);
    assert_int_equal(mail_conf_time(conf, "daemon_timeout"), 18000);
    assert_int_equal(mail_conf_time(conf, "maximal_queue_lifetime"), 86400);
    assert_int_equal(mail_conf_time(conf, "delay_warning_time"), 0);
    assert_int_equal(mail_conf_int(conf, "default_process_limit"), 100);
    assert_int_equal(mail_conf_int(conf, "smtpd_process_connection_limit"),
                     1000);
    assert_true(mail_conf_bool(conf, "smtpd_forbid_bare_newline"));
    assert_false(mail_conf_bool(conf, "soft_bounce"));
    assert_string_equal(mail_conf_str(conf, "maillog_file"), "");
    assert_string_equal(mail_conf_str(conf, "2bounce_notice_recipient"),
                        "postmaster");
    times = mail_conf_time_list(conf, "retry_schedule", &n_times);
    assert_int_equal(n_times, 4);
    assert_int_equal(times[0], 60);
    assert_int_equal(times[3], 3600);
    myfree(times);
    list = mail_conf_list(conf, "dns_servers");
    assert_int_equal(list->argc, 0);
    argv_free(list);

    /* The table: unique names, a description each, runtime NULLs only
       where mail_conf computes them. */
    assert_true(count >= 60);
    for (size_t i = 0; i < count; i++) {
        assert_non_null(table[i].desc);
        assert_true(strlen(table[i].desc) > 10);
        assert_ptr_equal(mail_param_find(table[i].name), table + i);
        if (table[i].def == NULL)
            assert_true(strcmp(table[i].name, "myhostname") == 0 ||
                        strcmp(table[i].name, "mydomain") == 0 ||
                        strcmp(table[i].name, "mail_owner") == 0);
    }
    assert_null(mail_param_find("no_such_parameter"));
    mail_conf_free(conf);
}

static jmp_buf panic_jmp;

/* panic_hook - turn msg_panic() into a longjmp for the test */
static void panic_hook(int status)
{
    longjmp(panic_jmp, status);
}

static void test_getter_panics(void **state)
{
    TEST_DIR *td = *state;
    MAIL_CONF *volatile conf = read_ok(td, "mine = 5\n");
    volatile int panics = 0;

    msg_log_stderr(false);
    msg_exit_hook(panic_hook);
    if (setjmp(panic_jmp) == 0)
        (void) mail_conf_int(conf, "mine"); /* not in the table */
    else
        panics++;
    if (setjmp(panic_jmp) == 0)
        (void) mail_conf_int(conf, "message_size_limit"); /* a SIZE */
    else
        panics++;
    if (setjmp(panic_jmp) == 0)
        (void) mail_conf_list(conf, "myhostname"); /* a STR */
    else
        panics++;
    if (setjmp(panic_jmp) == 0)
        (void) mail_conf_bool(conf, "nothing_at_all");
    else
        panics++;
    msg_exit_hook(NULL);
    msg_log_stderr(true);
    assert_int_equal(panics, 4);
    /* mail_conf_str takes any name. */
    assert_string_equal(mail_conf_str(conf, "mine"), "5");
    mail_conf_free(conf);
}

static void test_check_value(void **state)
{
    VSTR *why = vstr_alloc(10);

    assert_int_equal(mail_conf_check_value("message_size_limit", "10m", why),
                     0);
    assert_int_equal(mail_conf_check_value("message_size_limit", "lots", why),
                     -1);
    assert_string_equal(vstr_str(why), "message_size_limit: bad size \"lots\"");
    assert_int_equal(mail_conf_check_value("soft_bounce", "yes", why), 0);
    assert_int_equal(mail_conf_check_value("soft_bounce", "2", why), -1);
    assert_int_equal(mail_conf_check_value("smtpd_timeout", "1q", why), -1);
    assert_string_equal(vstr_str(why), "smtpd_timeout: bad time \"1q\"");
    assert_int_equal(mail_conf_check_value("line_length_limit", "", why), -1);
    assert_int_equal(mail_conf_check_value("line_length_limit", "$x", why), 0);
    assert_int_equal(mail_conf_check_value("anything_else", "lots", why), 0);
    assert_int_equal(mail_conf_check_value("relayhost", "[h]:25", why), 0);

    /* Bounds: refused with the value as written and the bound. */
    assert_int_equal(
        mail_conf_check_value("smtpd_process_connection_limit", "0", why), -1);
    assert_string_equal(vstr_str(why), "smtpd_process_connection_limit: 0 is "
                                       "below the minimum 1");
    assert_int_equal(mail_conf_check_value("smtp_tcp_port", "65536", why), -1);
    assert_string_equal(vstr_str(why),
                        "smtp_tcp_port: 65536 is above the maximum 65535");
    assert_int_equal(mail_conf_check_value("smtp_tcp_port", "65535", why), 0);
    assert_int_equal(mail_conf_check_value("smtpd_timeout", "0s", why), -1);
    assert_string_equal(vstr_str(why),
                        "smtpd_timeout: 0s is below the minimum 1s");
    assert_int_equal(mail_conf_check_value("master_backoff_initial", "2h", why),
                     -1);
    assert_string_equal(vstr_str(why), "master_backoff_initial: 2h is above "
                                       "the maximum 3600s");
    assert_int_equal(mail_conf_check_value("master_backoff_initial", "1h", why),
                     0);
    assert_int_equal(mail_conf_check_value("line_length_limit", "511", why),
                     -1);
    /* 0 is allowed where it means "none". */
    assert_int_equal(mail_conf_check_value("smtpd_session_deadline", "0", why),
                     0);
    /* A list of times: each time is checked, the first bad one named. */
    assert_int_equal(mail_conf_check_value("retry_schedule", "1m, 5m 2h", why),
                     0);
    assert_int_equal(mail_conf_check_value("retry_schedule", "", why), 0);
    assert_int_equal(mail_conf_check_value("retry_schedule", "1m 5x 0s", why),
                     -1);
    assert_string_equal(vstr_str(why), "retry_schedule: bad time \"5x\"");
    assert_int_equal(mail_conf_check_value("retry_schedule", "1m, 0s 1q", why),
                     -1);
    assert_string_equal(vstr_str(why),
                        "retry_schedule: 0s is below the minimum 1s");
    vstr_free(why);
}

/* test_bounds_read - main.cf with a value out of bounds is refused with
   its line, like a value of the wrong type */
static void test_bounds_read(void **state)
{
    TEST_DIR *td = *state;

    expect_error(td, "# comment\nsmtpd_recipient_limit = 0\n",
                 " line 2: smtpd_recipient_limit: 0 is below the minimum 1");
    expect_error(td, "smtp_tcp_port = 99999\n",
                 " line 1: smtp_tcp_port: 99999 is above the maximum 65535");
    expect_error(td, "smtpd_timeout = 0m\n",
                 " line 1: smtpd_timeout: 0m is below the minimum 1s");
    /* The expanded value is checked: $zero is 0. */
    expect_error(td, "zero = 0\nipc_timeout = $zero\n",
                 " line 2: ipc_timeout: 0 is below the minimum 1s");
    /* Under a maximum is checked too. */
    expect_error(td, "master_backoff_initial = 7200\n",
                 " line 1: master_backoff_initial: 7200 is above the maximum "
                 "3600s");
    expect_error(td, "retry_schedule = 1m\n  0 5m\n",
                 " line 1: retry_schedule: 0 is below the minimum 1s");
    mail_conf_free(read_ok(td, "smtpd_recipient_limit = 1\n"
                               "smtp_tcp_port = 65535\n"
                               "smtpd_session_deadline = 0\n"
                               "retry_schedule = 1s,2m\n"));
}

/* test_bounds_table - every row's bounds make sense and every default (as
   expanded, with an empty main.cf) lies within them; each bound is
   enforced: one below the minimum and one above the maximum are refused */
static void test_bounds_table(void **state)
{
    TEST_DIR *td = *state;
    size_t count;
    const MAIL_PARAM *table = mail_param_table(&count);
    MAIL_CONF *conf = read_ok(td, "");
    char text[256];
    int bounded = 0;

    for (size_t i = 0; i < count; i++) {
        const MAIL_PARAM *param = table + i;
        long long value;

        switch (param->type) {
        case MAIL_PARAM_STR:
        case MAIL_PARAM_LIST:
        case MAIL_PARAM_BOOL:
            if (param->min != 0 || param->max != 0)
                fail_msg("%s: bounds on a parameter that is not a number",
                         param->name);
            continue;
        case MAIL_PARAM_INT:
            value = mail_conf_int(conf, param->name);
            break;
        case MAIL_PARAM_TIME:
            value = mail_conf_time(conf, param->name);
            break;
        case MAIL_PARAM_SIZE:
            value = mail_conf_size(conf, param->name);
            break;
        case MAIL_PARAM_TIME_LIST: {
            size_t n;
            long long *times = mail_conf_time_list(conf, param->name, &n);

            /* The times outside the bounds if any, else the first. */
            value = n ? times[0] : param->min;
            for (size_t j = 0; j < n; j++)
                if (times[j] < param->min || times[j] > param->max)
                    value = times[j];
            myfree(times);
            break;
        }
        default:
            fail_msg("%s: unknown type", param->name);
        }
        if (param->min < 0 || param->min > param->max)
            fail_msg("%s: bad bounds %lld..%lld", param->name, param->min,
                     param->max);
        if (value < param->min || value > param->max)
            fail_msg("%s: default %lld outside %lld..%lld", param->name, value,
                     param->min, param->max);
        if (param->min > 0) {
            bounded++;
            snprintf(text, sizeof(text), "%s = %lld\n", param->name,
                     param->min - 1);
            write_main_cf(td, text);
            assert_null(mail_conf_read(td->dir, td->why));
            if (strstr(vstr_str(td->why), "below the minimum") == NULL)
                fail_msg("%s: %s", param->name, vstr_str(td->why));
        }
        if (param->max < MAIL_PARAM_NOMAX) {
            bounded++;
            snprintf(text, sizeof(text), "%s = %lld\n", param->name,
                     param->max + 1);
            write_main_cf(td, text);
            assert_null(mail_conf_read(td->dir, td->why));
            if (strstr(vstr_str(td->why), "above the maximum") == NULL)
                fail_msg("%s: %s", param->name, vstr_str(td->why));
        }
    }
    /* The table does bound things (a table without bounds passes the
       loop above). */
    assert_true(bounded > 20);
    assert_non_null(mail_param_find("smtp_tcp_port"));
    assert_int_equal(mail_param_find("smtp_tcp_port")->max, 65535);
    mail_conf_free(conf);
}

/* count_files - entries in the test directory, . and .. excluded */
static int count_files(TEST_DIR *td)
{
    DIR *dir = opendir(td->dir);
    struct dirent *de;
    int count = 0;

    assert_non_null(dir);
    while ((de = readdir(dir)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            count++;
    closedir(dir);
    return count;
}

static void test_edit(void **state)
{
    TEST_DIR *td = *state;
    char *text;
    struct stat st;
    MAIL_CONF *conf;

    write_main_cf(td, "# header comment\n"
                      "#mydestination = commented out\n"
                      "mydestination_extra = keep me\n"
                      "mydestination = a,\n"
                      "    b,\n"
                      "# comment between\n"
                      "\n"
                      "\tc\n"
                      "relayhost = [x]\t# trailing\r\n"
                      "  \n"
                      "mydestination=again\n"
                      "  continued\n"
                      "last = 1");
    assert_int_equal(chmod(td->path, 0640), 0);
    assert_int_equal(
        mail_conf_edit(td->dir, "mydestination", "new, value", td->why), 0);
    text = read_main_cf(td);
    assert_string_equal(text, "# header comment\n"
                              "#mydestination = commented out\n"
                              "mydestination_extra = keep me\n"
                              "mydestination = new, value\n"
                              "# comment between\n"
                              "\n"
                              "relayhost = [x]\t# trailing\r\n"
                              "  \n"
                              "mydestination = new, value\n"
                              "last = 1");
    myfree(text);
    assert_int_equal(stat(td->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(count_files(td), 1);

    /* Absent: appended, after a newline the file lacked. */
    assert_int_equal(mail_conf_edit(td->dir, "soft_bounce", "yes", td->why), 0);
    assert_int_equal(mail_conf_edit(td->dir, "maillog_file", "", td->why), 0);
    assert_int_equal(mail_conf_edit(td->dir, "last", "2", td->why), 0);
    text = read_main_cf(td);
    assert_string_equal(text, "# header comment\n"
                              "#mydestination = commented out\n"
                              "mydestination_extra = keep me\n"
                              "mydestination = new, value\n"
                              "# comment between\n"
                              "\n"
                              "relayhost = [x]\t# trailing\r\n"
                              "  \n"
                              "mydestination = new, value\n"
                              "last = 2\n"
                              "soft_bounce = yes\n"
                              "maillog_file =\n");
    myfree(text);

    conf = mail_conf_read(td->dir, td->why);
    assert_non_null(conf);
    assert_string_equal(mail_conf_str(conf, "mydestination"), "new, value");
    assert_string_equal(mail_conf_str(conf, "mydestination_extra"), "keep me");
    assert_true(mail_conf_bool(conf, "soft_bounce"));
    assert_string_equal(mail_conf_str(conf, "last"), "2");
    mail_conf_free(conf);

    /* Refusals leave the file alone. */
    text = read_main_cf(td);
    assert_int_equal(mail_conf_edit(td->dir, "a b", "1", td->why), -1);
    assert_int_equal(mail_conf_edit(td->dir, "x", "1\ny = 2", td->why), -1);
    {
        char *after = read_main_cf(td);

        assert_string_equal(after, text);
        myfree(after);
    }
    myfree(text);

    /* Empty file and missing file. */
    write_main_cf(td, "");
    assert_int_equal(mail_conf_edit(td->dir, "a", "b", td->why), 0);
    text = read_main_cf(td);
    assert_string_equal(text, "a = b\n");
    myfree(text);
    unlink(td->path);
    assert_int_equal(mail_conf_edit(td->dir, "a", "b", td->why), -1);
    assert_non_null(strstr(vstr_str(td->why), td->path));
}

/* test_remove - postconf -X: every setting of the name goes with its
   continuation lines; comments, blank lines and every other byte stay; a
   name that is not set leaves the file untouched */
static void test_remove(void **state)
{
    TEST_DIR *td = *state;
    char *text;
    struct stat before;
    struct stat after;

    write_main_cf(td, "# header comment\n"
                      "#mydestination = commented out\n"
                      "mydestination_extra = keep me\n"
                      "mydestination = a,\n"
                      "    b,\n"
                      "# comment between\n"
                      "\n"
                      "\tc\n"
                      "relayhost = [x]\t# trailing\r\n"
                      "  \n"
                      "mydestination=again\n"
                      "  continued\n"
                      "last = 1");
    assert_int_equal(chmod(td->path, 0640), 0);
    assert_int_equal(mail_conf_remove(td->dir, "mydestination", td->why), 0);
    text = read_main_cf(td);
    assert_string_equal(text, "# header comment\n"
                              "#mydestination = commented out\n"
                              "mydestination_extra = keep me\n"
                              "# comment between\n"
                              "\n"
                              "relayhost = [x]\t# trailing\r\n"
                              "  \n"
                              "last = 1");
    myfree(text);
    assert_int_equal(stat(td->path, &before), 0);
    assert_int_equal(before.st_mode & 07777, 0640);
    assert_int_equal(count_files(td), 1);

    /* Not set (also a prefix of a set name): a no-op, the same file. */
    assert_int_equal(mail_conf_remove(td->dir, "mydestination", td->why), 0);
    assert_int_equal(mail_conf_remove(td->dir, "relay", td->why), 0);
    assert_int_equal(stat(td->path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);

    /* The last line, without a newline. */
    assert_int_equal(mail_conf_remove(td->dir, "last", td->why), 0);
    text = read_main_cf(td);
    assert_string_equal(text, "# header comment\n"
                              "#mydestination = commented out\n"
                              "mydestination_extra = keep me\n"
                              "# comment between\n"
                              "\n"
                              "relayhost = [x]\t# trailing\r\n"
                              "  \n");
    myfree(text);

    /* A bad name, a missing main.cf. */
    assert_int_equal(mail_conf_remove(td->dir, "a b", td->why), -1);
    unlink(td->path);
    assert_int_equal(mail_conf_remove(td->dir, "a", td->why), -1);
    assert_non_null(strstr(vstr_str(td->why), td->path));
}

/* write_file - replace dir/name with text */
static void write_file(TEST_DIR *td, const char *name, const char *text)
{
    (void) testlib_write(td->tmp, name, text);
}

/* test_myorigin_file - myorigin = /etc/mailname (Debian's main.cf): the
   first line of the file; a missing or empty file means $myhostname */
static void test_myorigin_file(void **state)
{
    TEST_DIR *td = *state;
    char text[512];
    char want[512];
    MAIL_CONF *conf;

    write_file(td, "mailname", "origin.test\nsecond.line.test\n");
    snprintf(text, sizeof(text),
             "myhostname = mx.example.org\nmyorigin = %s/mailname\n"
             "uses = x@$myorigin\n",
             td->dir);
    conf = read_ok(td, text);
    assert_string_equal(mail_conf_str(conf, "myorigin"), "origin.test");
    assert_string_equal(mail_conf_str(conf, "uses"), "x@origin.test");
    /* The file name stays what main.cf says, for `sluice conf`. */
    snprintf(want, sizeof(want), "%s/mailname", td->dir);
    assert_string_equal(mail_conf_raw(conf, "myorigin"), want);
    mail_conf_free(conf);

    /* Blanks and a CR around the name, no newline at the end. */
    write_file(td, "mailname", "  origin.test \r");
    conf = read_ok(td, text);
    assert_string_equal(mail_conf_str(conf, "myorigin"), "origin.test");
    mail_conf_free(conf);

    /* An empty file, or one whose first line is blank: $myhostname. */
    write_file(td, "mailname", "");
    conf = read_ok(td, text);
    assert_string_equal(mail_conf_str(conf, "myorigin"), "mx.example.org");
    mail_conf_free(conf);
    write_file(td, "mailname", " \nlater.test\n");
    conf = read_ok(td, text);
    assert_string_equal(mail_conf_str(conf, "myorigin"), "mx.example.org");
    mail_conf_free(conf);

    /* A missing file: $myhostname. */
    snprintf(want, sizeof(want), "%s/mailname", td->dir);
    unlink(want);
    conf = read_ok(td, text);
    assert_string_equal(mail_conf_str(conf, "myorigin"), "mx.example.org");
    assert_string_equal(mail_conf_str(conf, "uses"), "x@mx.example.org");
    mail_conf_free(conf);

    /* Through a $name too. */
    write_file(td, "mailname", "via.test\n");
    snprintf(text, sizeof(text), "dir = %s\nmyorigin = $dir/mailname\n",
             td->dir);
    conf = read_ok(td, text);
    assert_string_equal(mail_conf_str(conf, "myorigin"), "via.test");
    mail_conf_free(conf);

    /* Something that is not a domain name is an error, not an address. */
    write_file(td, "mailname", "not a domain\n");
    snprintf(text, sizeof(text), "# x\nmyorigin = %s/mailname\n", td->dir);
    snprintf(want, sizeof(want),
             " line 2: myorigin: %s/mailname: bad domain name "
             "\"not a domain\"",
             td->dir);
    expect_error(td, text, want);
    /* A directory cannot be read. */
    snprintf(text, sizeof(text), "myorigin = %s\n", td->dir);
    snprintf(want, sizeof(want), " line 1: myorigin: read %s: %s", td->dir,
             strerror(EISDIR));
    expect_error(td, text, want);
    /* Another parameter's value that starts with '/' is only a value. */
    conf = read_ok(td, "myhostname = /x\nrelayhost = /y\n");
    assert_string_equal(mail_conf_str(conf, "relayhost"), "/y");
    mail_conf_free(conf);
}

/* test_table - every row: a good unique name, a one-line description, a
   known type, and a default that is good for its type once expanded with
   an empty main.cf */
static void test_table(void **state)
{
    TEST_DIR *td = *state;
    size_t count;
    const MAIL_PARAM *table = mail_param_table(&count);
    MAIL_CONF *conf = read_ok(td, "");

    for (size_t i = 0; i < count; i++) {
        const char *name = table[i].name;
        const char *value = mail_conf_str(conf, name);
        bool ok = true;

        if (name == NULL || *name == 0 ||
            /* Upper case only where Postfix has it (smtp_tls_CAfile). */
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_CA") !=
                strlen(name))
            fail_msg("row %zu: bad name \"%s\"", i, name ? name : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(table[j].name, name) == 0)
                fail_msg("%s: duplicate name (rows %zu and %zu)", name, j, i);
        if (table[i].desc == NULL || strlen(table[i].desc) < 10 ||
            strchr(table[i].desc, '\n') != NULL)
            fail_msg("%s: missing or not a one-line description", name);
        if (table[i].def == NULL && strcmp(name, "myhostname") != 0 &&
            strcmp(name, "mydomain") != 0 && strcmp(name, "mail_owner") != 0)
            fail_msg("%s: no default, and none is computed at run time", name);
        switch (table[i].type) {
        case MAIL_PARAM_STR:
        case MAIL_PARAM_LIST:
            break;
        case MAIL_PARAM_INT:
            (void) mail_conf_int(conf, name);
            ok = strspn(value, "0123456789") == strlen(value) && *value;
            break;
        case MAIL_PARAM_BOOL:
            (void) mail_conf_bool(conf, name);
            ok = strcmp(value, "yes") == 0 || strcmp(value, "no") == 0;
            break;
        case MAIL_PARAM_TIME:
            (void) mail_conf_parse_time(value, &ok);
            break;
        case MAIL_PARAM_SIZE:
            (void) mail_conf_parse_size(value, &ok);
            break;
        case MAIL_PARAM_TIME_LIST: {
            size_t n_times;

            myfree(mail_conf_time_list(conf, name, &n_times));
            ok = n_times > 0;
            break;
        }
        default:
            fail_msg("%s: unknown type %d", name, (int) table[i].type);
        }
        if (!ok)
            fail_msg("%s: default \"%s\" is bad for its type", name, value);
        vstr_reset(td->why);
        if (mail_conf_check_value(name, value, td->why) < 0)
            fail_msg("%s: default refused: %s", name, vstr_str(td->why));
    }
    assert_int_equal(mail_conf_warnings(conf)->argc, 0);
    mail_conf_free(conf);
}

/* test_unknown - a name nothing uses is a warning with its line; one used
   as $name, or SERVICE_PARAM for a master.cf service, is not */
static void test_unknown(void **state)
{
    TEST_DIR *td = *state;
    MAIL_CONF *conf;
    const ARGV *warnings;
    char want[512];

    write_file(td, "master.cf",
               "# service type private unpriv chroot wakeup maxproc command\n"
               "relay unix - - n - - smtp\n"
               "qmgr unix n - n 300 1 qmgr\n");
    conf = read_ok(td, "# comment\n"
                       "myhostname = a.test\n"
                       "\n"
                       "mine = x\n"
                       "smtpd_banner = $myhostname $mine\n"
                       "smtpd_bogus = 1\n"
                       "relay_destination_concurrency_limit = 2\n"
                       "relay_initial_destination_concurrency = 2\n"
                       "relay_bogus = 3\n"
                       "nosuchservice_destination_concurrency_limit = 2\n"
                       "also_bogus =\n"
                       "  continued\n");
    warnings = mail_conf_warnings(conf);
    assert_int_equal(warnings->argc, 4);
    snprintf(want, sizeof(want), "%s line 6: unknown parameter smtpd_bogus",
             td->path);
    assert_string_equal(warnings->argv[0], want);
    snprintf(want, sizeof(want), "%s line 9: unknown parameter relay_bogus",
             td->path);
    assert_string_equal(warnings->argv[1], want);
    snprintf(want, sizeof(want),
             "%s line 10: unknown parameter "
             "nosuchservice_destination_concurrency_limit",
             td->path);
    assert_string_equal(warnings->argv[2], want);
    snprintf(want, sizeof(want), "%s line 11: unknown parameter also_bogus",
             td->path);
    assert_string_equal(warnings->argv[3], want);
    /* The unknown value still expands and reads. */
    assert_string_equal(mail_conf_str(conf, "smtpd_banner"), "a.test x");
    mail_conf_free(conf);

    /* Without a readable master.cf no name is a service's. */
    write_file(td, "master.cf", "relay unix - - n - - smtp\nbroken\n");
    conf = read_ok(td, "relay_destination_concurrency_limit = 2\n");
    assert_int_equal(mail_conf_warnings(conf)->argc, 1);
    mail_conf_free(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_expansion, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_loops, test_setup, test_teardown),
        cmocka_unit_test(test_units),
        cmocka_unit_test_setup_teardown(test_errors, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_defaults, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_getter_panics, test_setup,
                                        test_teardown),
        cmocka_unit_test(test_check_value),
        cmocka_unit_test_setup_teardown(test_edit, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_remove, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_table, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_myorigin_file, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_bounds_read, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_bounds_table, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_overrides, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_unknown, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
