/*
 * local_rules_test - the I/O-free parts of local delivery
 */
#include "sys_defs.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>

#include "argv.h"
#include "local.h"
#include "vstr.h"

/* test_addr_split - local part before the last '@' outside quotes,
   extension, folding */
static void test_addr_split(void **state)
{
    VSTR *user = vstr_alloc(10), *ext = vstr_alloc(10), *dom = vstr_alloc(10);

    local_addr_split("Bob+Lists@Example.TEST", "+", user, ext, dom);
    assert_string_equal(vstr_str(user), "bob");
    assert_string_equal(vstr_str(ext), "lists");
    assert_string_equal(vstr_str(dom), "example.test");
    local_addr_split("\"a@b\"@localhost", "", user, ext, dom);
    assert_string_equal(vstr_str(user), "\"a@b\"");
    assert_string_equal(vstr_str(dom), "localhost");
    /* a quoted '@' is not the domain separator (smtp_addr_split) */
    local_addr_split("\"a@b.test\"", "", user, ext, dom);
    assert_string_equal(vstr_str(user), "\"a@b.test\"");
    assert_string_equal(vstr_str(dom), "");
    local_addr_split("joe-x+y", "-+", user, ext, dom);
    assert_string_equal(vstr_str(user), "joe");
    assert_string_equal(vstr_str(ext), "x+y");
    assert_string_equal(vstr_str(dom), "");
    local_addr_split("joe+x", "", user, ext, dom);
    assert_string_equal(vstr_str(user), "joe+x");
    assert_string_equal(vstr_str(ext), "");
    vstr_free(user);
    vstr_free(ext);
    vstr_free(dom);
}

/* test_dest_split - commas, newlines, quotes, comments */
static void test_dest_split(void **state)
{
    ARGV *av = local_dest_split(" a, b@remote.test ,\"|cmd with, comma\","
                                "/var/x , :include:/etc/list");

    assert_int_equal(av->argc, 5);
    assert_string_equal(av->argv[0], "a");
    assert_string_equal(av->argv[1], "b@remote.test");
    assert_string_equal(av->argv[2], "|cmd with, comma");
    assert_string_equal(av->argv[3], "/var/x");
    assert_string_equal(av->argv[4], ":include:/etc/list");
    argv_free(av);

    av =
        local_dest_split("# a comment, with a comma\nx\n  # another\n\ny, z\n");
    assert_int_equal(av->argc, 3);
    assert_string_equal(av->argv[0], "x");
    assert_string_equal(av->argv[1], "y");
    assert_string_equal(av->argv[2], "z");
    argv_free(av);

    av = local_dest_split("");
    assert_int_equal(av->argc, 0);
    argv_free(av);
}

/* test_dest_type - the markers */
static void test_dest_type(void **state)
{
    const char *arg;

    assert_int_equal(local_dest_type("|/bin/cat", &arg), LOCAL_DEST_COMMAND);
    assert_string_equal(arg, "/bin/cat");
    assert_int_equal(local_dest_type("/tmp/f", &arg), LOCAL_DEST_FILE);
    assert_string_equal(arg, "/tmp/f");
    assert_int_equal(local_dest_type(":include: /l", &arg), LOCAL_DEST_INCLUDE);
    assert_string_equal(arg, "/l");
    assert_int_equal(local_dest_type("\\bob", &arg), LOCAL_DEST_MAILBOX);
    assert_string_equal(arg, "bob");
    assert_int_equal(local_dest_type("bob@x.test", &arg), LOCAL_DEST_ADDR);
    assert_string_equal(arg, "bob@x.test");
}

/* test_allowed - allow_mail_to_* lists */
static void test_allowed(void **state)
{
    ARGV *av = argv_split("alias, forward", ", ");

    assert_true(local_allowed(av, "alias"));
    assert_true(local_allowed(av, "forward"));
    assert_false(local_allowed(av, "include"));
    argv_free(av);
}

/* test_expand_path - $home $user ...; unknown or missing values skip */
static void test_expand_path(void **state)
{
    LOCAL_VARS vars = {.home = "/home/bob",
                       .user = "bob",
                       .local = "bob+x",
                       .extension = "x",
                       .domain = "localhost",
                       .recipient = "bob+x@localhost"};
    VSTR *out = vstr_alloc(10);

    assert_int_equal(local_expand_path("$home/.forward", &vars, out), 0);
    assert_string_equal(vstr_str(out), "/home/bob/.forward");
    assert_int_equal(local_expand_path("/f/${user}.$extension$$", &vars, out),
                     0);
    assert_string_equal(vstr_str(out), "/f/bob.x$");
    assert_int_equal(local_expand_path("/x/$nosuch", &vars, out), -1);
    vars.home = NULL;
    assert_int_equal(local_expand_path("$home/.forward", &vars, out), -1);
    assert_int_equal(local_expand_path("/fwd/$user", &vars, out), 0);
    assert_string_equal(vstr_str(out), "/fwd/bob");
    vstr_free(out);
}

/* test_delivered_to - the loop check looks at headers only, no case */
static void test_delivered_to(void **state)
{
    const char *msg = "Received: x\nDELIVERED-TO:  Bob@LocalHost \n"
                      "Subject: s\n\nDelivered-To: joe@localhost\n";

    assert_true(local_delivered_to_seen(msg, strlen(msg), "bob@localhost"));
    assert_false(local_delivered_to_seen(msg, strlen(msg), "joe@localhost"));
    assert_false(local_delivered_to_seen(msg, strlen(msg), "bo@localhost"));
    assert_int_equal(local_header_len(msg, strlen(msg)),
                     strlen("Received: x\nDELIVERED-TO:  Bob@LocalHost \n"
                            "Subject: s\n\n"));
}

/* test_mbox_quote - ">From " quoting of lines, not of words */
static void test_mbox_quote(void **state)
{
    VSTR *out = vstr_alloc(10);
    bool bol = true;
    const char *in = "From x\nsay From y\nFrom\nFrom z";

    local_mbox_quote(in, strlen(in), &bol, out);
    assert_string_equal(vstr_str(out), ">From x\nsay From y\nFrom\n>From z");
    assert_false(bol);
    local_from_line(out, "", 0);
    assert_string_equal(vstr_str(out),
                        "From MAILER-DAEMON  Thu Jan  1 00:00:00 1970\n");
    local_from_line(out, "a@b.test", 86400 * 365);
    assert_string_equal(vstr_str(out),
                        "From a@b.test  Fri Jan  1 00:00:00 1971\n");
    vstr_free(out);
}

/* test_exit_result - sysexits as Postfix reads them */
static void test_exit_result(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};

    local_exit_result(0, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    local_exit_result(75 << 8, &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_string_equal(res.dsn, "4.3.0");
    local_exit_result(67 << 8, &res);
    assert_int_equal(res.stat, LOCAL_STAT_BOUNCE);
    assert_string_equal(res.dsn, "5.1.1");
    assert_non_null(strstr(vstr_str(res.text), "exit status 67"));
    local_exit_result(1 << 8, &res);
    assert_int_equal(res.stat, LOCAL_STAT_BOUNCE);
    local_exit_result(SIGKILL, &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_non_null(strstr(vstr_str(res.text), "signal 9"));
    vstr_free(res.text);
}

/* test_maildir_name - unique parts and host quoting */
static void test_maildir_name(void **state)
{
    VSTR *out = vstr_alloc(10);
    struct timeval tv = {1700000000, 42};

    local_maildir_name(out, &tv, 123, 7, "h/o:st");
    assert_string_equal(vstr_str(out), "1700000000.M42P123Q7.h\\057o\\072st");
    vstr_free(out);
}

/* test_privileges - the mode and the unknown-user rule */
static void test_privileges(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};

    assert_int_equal(local_mode(0, 101), LOCAL_MODE_SYSTEM);
    assert_int_equal(local_mode(0, 0), LOCAL_MODE_INSTANCE);
    assert_int_equal(local_mode(1000, 1000), LOCAL_MODE_INSTANCE);
    assert_true(
        local_user_check(LOCAL_MODE_INSTANCE, "nobody-here", false, &res));
    assert_true(local_user_check(LOCAL_MODE_SYSTEM, "bob", true, &res));
    assert_false(
        local_user_check(LOCAL_MODE_SYSTEM, "nobody-here", false, &res));
    assert_int_equal(res.stat, LOCAL_STAT_BOUNCE);
    assert_string_equal(res.dsn, "5.1.1");
    assert_string_equal(vstr_str(res.text), "unknown user: \"nobody-here\"");
    vstr_free(res.text);
}

/* test_name_safe - names that would escape the spool folder */
static void test_name_safe(void **state)
{
    assert_true(local_name_safe("bob"));
    assert_true(local_name_safe("bob.smith"));
    assert_true(local_name_safe(""));
    assert_false(local_name_safe("../etc"));
    assert_false(local_name_safe(".forward"));
    assert_false(local_name_safe("a/b"));
    assert_false(local_name_safe("a\nb"));
}

/* test_virtual_path - a virtual mailbox stays under virtual_mailbox_base */
static void test_virtual_path(void **state)
{
    static const struct {
        const char *base;
        const char *value;
        const char *want; /* NULL: refused */
    } cases[] = {
        {"/var/vmail", "a.test/bob/", "/var/vmail/a.test/bob/"},
        {"/var/vmail//", "a.test/bob", "/var/vmail/a.test/bob"},
        {"/var/vmail", "a.test/..bob/./x", "/var/vmail/a.test/..bob/./x"},
        {"/var/vmail", "../etc/passwd", NULL},
        {"/var/vmail", "a.test/../../etc/", NULL},
        {"/var/vmail", "a.test/..", NULL},
        {"/var/vmail", "/etc/passwd", NULL},
        {"/var/vmail", "", NULL},
        {"/var/vmail", "a\nb", NULL},
        {"var/vmail", "a.test/bob", NULL},
        {"", "a.test/bob", NULL},
        {"/", "a.test/bob", NULL},
    };
    VSTR *out = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        int ret = local_virtual_path(cases[i].base, cases[i].value, out, why);

        if (cases[i].want == NULL) {
            if (ret != -1 || vstr_len(why) == 0)
                fail_msg("%s + %s: not refused", cases[i].base, cases[i].value);
        } else if (ret != 0 || strcmp(vstr_str(out), cases[i].want) != 0) {
            fail_msg("%s + %s: %d %s", cases[i].base, cases[i].value, ret,
                     ret == 0 ? vstr_str(out) : vstr_str(why));
        }
        vstr_reset(out);
        vstr_reset(why);
    }
    vstr_free(out);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_split),
        cmocka_unit_test(test_dest_split),
        cmocka_unit_test(test_dest_type),
        cmocka_unit_test(test_allowed),
        cmocka_unit_test(test_expand_path),
        cmocka_unit_test(test_delivered_to),
        cmocka_unit_test(test_mbox_quote),
        cmocka_unit_test(test_exit_result),
        cmocka_unit_test(test_maildir_name),
        cmocka_unit_test(test_privileges),
        cmocka_unit_test(test_name_safe),
        cmocka_unit_test(test_virtual_path),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
