/*
 * master_cf_test - unit tests for the master.cf parser
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "argv.h"
#include "master_cf.h"
#include "mymalloc.h"
#include "vstr.h"

static const char good_cf[] =
    "# service  type  private unpriv  chroot  wakeup  maxproc command\n"
    "smtp       inet  n       -       n       -       -       smtpd\n"
    "127.0.0.1:2525 inet n    y       y       0       7       smtpd\n"
    "    -o smtpd_banner=test\n"
    "# a comment inside a continued entry\n"
    "\n"
    "\t-v\n"
    "   # indented comment\n"
    "smtp       unix  -       -       n       -       0       /opt/bin/smtp\n"
    "qmgr       unix  n       -       n       300     1       qmgr\n"
    "pickup     unix  n       -       n       60?     1       pickup";

static void test_good(void **state)
{
    VSTR *why = vstr_alloc(10);
    MASTER_CF *cf = master_cf_parse(good_cf, "/x/master.cf", 42, why);
    const MASTER_ENT *ent;

    if (cf == NULL)
        fail_msg("unexpected error: %s", vstr_str(why));
    assert_int_equal(cf->count, 5);

    ent = cf->ents + 0;
    assert_string_equal(ent->name, "smtp");
    assert_int_equal(ent->type, MASTER_SERV_INET);
    assert_false(ent->private_service);
    assert_true(ent->unpriv);
    assert_false(ent->chroot);
    assert_int_equal(ent->wakeup, 0);
    assert_int_equal(ent->maxproc, 42);
    assert_int_equal(ent->argv->argc, 1);
    assert_string_equal(ent->argv->argv[0], "smtpd");
    assert_null(ent->argv->argv[1]);
    assert_int_equal(ent->line, 2);

    ent = cf->ents + 1;
    assert_string_equal(ent->name, "127.0.0.1:2525");
    assert_true(ent->unpriv);
    assert_true(ent->chroot);
    assert_int_equal(ent->maxproc, 7);
    assert_int_equal(ent->line, 3);
    assert_int_equal(ent->argv->argc, 4);
    assert_string_equal(ent->argv->argv[1], "-o");
    assert_string_equal(ent->argv->argv[2], "smtpd_banner=test");
    assert_string_equal(ent->argv->argv[3], "-v");

    /* Same name, other type: another service. */
    ent = cf->ents + 2;
    assert_string_equal(ent->name, "smtp");
    assert_int_equal(ent->type, MASTER_SERV_UNIX);
    assert_true(ent->private_service);
    assert_int_equal(ent->maxproc, 0);
    assert_string_equal(ent->argv->argv[0], "/opt/bin/smtp");
    assert_int_equal(ent->line, 9);

    ent = cf->ents + 3;
    assert_int_equal(ent->wakeup, 300);
    assert_int_equal(ent->maxproc, 1);
    ent = cf->ents + 4;
    assert_int_equal(ent->wakeup, 60);
    assert_int_equal(ent->line, 11);

    assert_string_equal(master_serv_type_name(MASTER_SERV_INET), "inet");
    assert_string_equal(master_serv_type_name(MASTER_SERV_UNIX), "unix");
    assert_null(master_cf_free(cf));

    /* Empty and comment-only files have no services. */
    cf = master_cf_parse("# nothing\n\n", "/x/master.cf", 1, why);
    assert_non_null(cf);
    assert_int_equal(cf->count, 0);
    master_cf_free(cf);
    vstr_free(why);
}

static void test_errors(void **state)
{
    static const struct {
        const char *text;
        const char *why;
    } cases[] = {
        {"a inet n - n - - cmd\nb tcp n - n - - cmd\n",
         "/m.cf line 2: bad type \"tcp\" (use inet or unix)"},
        {"a inet x - n - - cmd\n",
         "/m.cf line 1: bad private field \"x\" (use y, n or -)"},
        {"a inet n yes n - - cmd\n",
         "/m.cf line 1: bad unpriv field \"yes\" (use y, n or -)"},
        {"# c\na inet n - N - - cmd\n",
         "/m.cf line 2: bad chroot field \"N\" (use y, n or -)"},
        {"a unix n - n 5m - cmd\n", "/m.cf line 1: bad wakeup time \"5m\""},
        {"a unix n - n ? - cmd\n", "/m.cf line 1: bad wakeup time \"?\""},
        {"a unix n - n - -1 cmd\n", "/m.cf line 1: bad maxproc \"-1\""},
        {"a unix n - n - 99999999999 cmd\n",
         "/m.cf line 1: bad maxproc \"99999999999\""},
        {"a unix n - n - -\n", "/m.cf line 1: missing command"},
        {"\na unix n - n\n  -\n",
         "/m.cf line 2: too few fields (6, need 7 and a command)"},
        {"a unix n - n - - x\nb unix n - n - - y\n\n"
         "a   unix - - - - - z\n",
         "/m.cf line 4: duplicate service \"a\" type unix (first at line 1)"},
        {"private/a unix n - n - - x\n",
         "/m.cf line 1: bad unix service name \"private/a\""},
        {". unix n - n - - x\n", "/m.cf line 1: bad unix service name \".\""},
        {".. unix n - n - - x\n", "/m.cf line 1: bad unix service name \"..\""},
        {"  a unix n - n - - x\n",
         "/m.cf line 1: continuation line without a service before it"},
    };
    VSTR *why = vstr_alloc(10);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        MASTER_CF *cf;

        vstr_reset(why);
        cf = master_cf_parse(cases[i].text, "/m.cf", 100, why);
        if (cf != NULL)
            fail_msg("case %zu parsed: %s", i, cases[i].text);
        assert_string_equal(vstr_str(why), cases[i].why);
    }
    vstr_free(why);
}

static void test_read_file(void **state)
{
    char dir[] = "/tmp/master_cf_test.XXXXXX";
    char path[64];
    char want[128];
    VSTR *why = vstr_alloc(10);
    MASTER_CF *cf;
    FILE *fp;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/master.cf", dir);

    /* Missing file: the path and the reason. */
    assert_null(master_cf_read(path, 100, why));
    snprintf(want, sizeof(want), "open %s: %s", path, strerror(ENOENT));
    assert_string_equal(vstr_str(why), want);

    assert_non_null(fp = fopen(path, "w"));
    fputs(good_cf, fp);
    assert_int_equal(fclose(fp), 0);
    cf = master_cf_read(path, 9, why);
    if (cf == NULL)
        fail_msg("unexpected error: %s", vstr_str(why));
    assert_int_equal(cf->count, 5);
    assert_int_equal(cf->ents[0].maxproc, 9);
    master_cf_free(cf);

    /* Errors name the file that was read. */
    assert_non_null(fp = fopen(path, "w"));
    fputs("qmgr unix n - n 300 1\n", fp);
    assert_int_equal(fclose(fp), 0);
    assert_null(master_cf_read(path, 9, why));
    snprintf(want, sizeof(want), "%s line 1: missing command", path);
    assert_string_equal(vstr_str(why), want);

    unlink(path);
    rmdir(dir);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_read_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
