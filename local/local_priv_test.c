/*
 * local_priv_test - who a local delivery runs as
 *
 * local_priv_unroot: no |command runs as root (root's own go to the
 * alias owner in SYSTEM mode; none at all when that would be root too).
 * local_as: INSTANCE mode runs the action right here; SYSTEM mode runs it
 * in a real child that becomes the user (when the test runs as root:
 * nobody's uid is seen by the action) and brings its result back, and a
 * child that dies without a result is a deferral.
 */
#include "sys_defs.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pwd.h>

#include "local.h"
#include "mymalloc.h"
#include "vstr.h"

static int test_ran_here; /* set by test_action in this process */

/* test_action - say who we are */
static void test_action(void *arg, LOCAL_RESULT *res)
{
    test_ran_here = 1;
    local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "uid=%ld euid=%ld",
                     (long) getuid(), (long) geteuid());
}

/* test_die - end without a result */
static void test_die(void *arg, LOCAL_RESULT *res)
{
    _exit(3);
}

/* test_command_never_root - local_priv_unroot's choices */
static void test_command_never_root(void **state)
{
    LOCAL_CTX ctx;
    LOCAL_PRIV root = {.uid = 0, .gid = 0, .name = "root"};
    LOCAL_PRIV user = {.uid = 1000, .gid = 1000, .name = "user"};

    memset(&ctx, 0, sizeof(ctx));
    ctx.mode = LOCAL_MODE_SYSTEM;
    ctx.alias_owner.uid = 65534;
    ctx.alias_owner.name = "nobody";
    assert_ptr_equal(local_priv_unroot(&ctx, &user), &user);
    assert_ptr_equal(local_priv_unroot(&ctx, &root), &ctx.alias_owner);
    ctx.alias_owner.uid = 0;
    assert_null(local_priv_unroot(&ctx, &root));
    ctx.mode = LOCAL_MODE_INSTANCE;
    ctx.alias_owner.uid = 65534;
    assert_null(local_priv_unroot(&ctx, &root));
    assert_ptr_equal(local_priv_unroot(&ctx, &user), &user);
}

/* test_as_instance - INSTANCE mode: the action runs in this process */
static void test_as_instance(void **state)
{
    LOCAL_CTX ctx;
    LOCAL_PRIV me = {.uid = getuid(), .gid = getgid(), .name = "me"};
    LOCAL_RESULT res = {.text = vstr_alloc(100)};

    memset(&ctx, 0, sizeof(ctx));
    ctx.mode = LOCAL_MODE_INSTANCE;
    test_ran_here = 0;
    local_as(&ctx, &me, test_action, NULL, &res);
    assert_int_equal(test_ran_here, 1);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    vstr_free(res.text);
}

/* test_as_child - SYSTEM mode: a child becomes the user */
static void test_as_child(void **state)
{
    LOCAL_CTX ctx;
    LOCAL_PRIV nobody;
    LOCAL_RESULT res = {.text = vstr_alloc(100)};
    struct passwd *pw;
    char want[64];

    if (geteuid() != 0 || (pw = getpwnam("nobody")) == NULL) {
        vstr_free(res.text);
        skip();
    }
    memset(&ctx, 0, sizeof(ctx));
    ctx.mode = LOCAL_MODE_SYSTEM;
    local_priv_set(&nobody, pw);
    test_ran_here = 0;
    local_as(&ctx, &nobody, test_action, NULL, &res);
    assert_int_equal(test_ran_here, 0); /* not in this process */
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    assert_string_equal(res.dsn, "2.0.0");
    snprintf(want, sizeof(want), "uid=%ld euid=%ld", (long) pw->pw_uid,
             (long) pw->pw_uid);
    assert_string_equal(vstr_str(res.text), want);
    assert_int_equal(geteuid(), 0); /* we stay who we were */

    local_as(&ctx, &nobody, test_die, NULL, &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_string_equal(res.dsn, "4.3.0");
    assert_string_equal(vstr_str(res.text), "delivery process died");
    local_priv_free(&nobody);
    vstr_free(res.text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_never_root),
        cmocka_unit_test(test_as_instance),
        cmocka_unit_test(test_as_child),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
