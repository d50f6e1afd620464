/*
 * match_list_test - unit tests for domain and address lists: domains,
 * .subdomains, the parent flag, tables with parent lookups, negation,
 * /file words, CIDR and 1.2.3 / 1.2 table keys, and -1 when a table
 * cannot be read, in a fresh temp directory
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "testlib.h"
#include "vstr.h"

/* Berkeley DB cannot free all of a handle that hit a corrupted page
   (DB_RUNRECOVERY); the tests that corrupt a file on purpose would
   otherwise fail the ASan build on that library's leak. */
const char *__lsan_default_suppressions(void);

/* __lsan_default_suppressions - LeakSanitizer's hook */
const char *__lsan_default_suppressions(void)
{
    return "leak:libdb-5.3.so\n";
}

typedef struct TEST_CTX {
    TESTLIB_DIR *tmp;
    const char *dir; /* tmp->path */
    VSTR *path; /* scratch */
    VSTR *why;
} TEST_CTX;

/* test_setup - a fresh folder, the log in it */
static int test_setup(void **state)
{
    TEST_CTX *ctx = calloc(1, sizeof(*ctx));

    if (ctx == NULL ||
        (ctx->tmp = testlib_dir_create("match_list_test")) == NULL)
        return -1;
    ctx->dir = ctx->tmp->path;
    ctx->path = vstr_alloc(100);
    ctx->why = vstr_alloc(100);
    if (testlib_log_capture(ctx->tmp, "match_list_test") < 0)
        return -1;
    *state = ctx;
    return 0;
}

/* test_teardown - remove the folder */
static int test_teardown(void **state)
{
    TEST_CTX *ctx = *state;
    int ret = testlib_dir_remove(ctx->tmp);

    vstr_free(ctx->path);
    vstr_free(ctx->why);
    free(ctx);
    return ret;
}

/* test_file - write dir/name with text; returns the path (scratch) */
static const char *test_file(TEST_CTX *ctx, const char *name, const char *text)
{
    return testlib_write(ctx->tmp, name, text);
}

/* test_list - compile value, failing the test if it does not */
static MATCH_LIST *test_list(TEST_CTX *ctx, const char *value, int flags)
{
    MATCH_LIST *list = match_list_create("test_list", value, flags, ctx->why);

    if (list == NULL)
        fail_msg("%s", vstr_str(ctx->why));
    return list;
}

static void test_domains(void **state)
{
    TEST_CTX *ctx = *state;
    MATCH_LIST *list;

    list = test_list(ctx,
                     "Example.TEST, .sub.test !bad.other.test "
                     ".other.test",
                     MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "example.test"), 1);
    assert_int_equal(match_list_match(list, "EXAMPLE.test."), 1);
    assert_int_equal(match_list_match(list, "a.example.test"), 0);
    assert_int_equal(match_list_match(list, "xexample.test"), 0);
    assert_int_equal(match_list_match(list, "sub.test"), 0);
    assert_int_equal(match_list_match(list, "a.b.sub.test"), 1);
    assert_int_equal(match_list_match(list, "asub.test"), 0);
    assert_int_equal(match_list_match(list, "bad.other.test"), 0);
    assert_int_equal(match_list_match(list, "good.other.test"), 1);
    match_list_free(list);

    list =
        test_list(ctx, "example.test", MATCH_LIST_DOMAIN | MATCH_LIST_PARENT);
    assert_int_equal(match_list_match(list, "example.test"), 1);
    assert_int_equal(match_list_match(list, "a.b.Example.test"), 1);
    assert_int_equal(match_list_match(list, "aexample.test"), 0);
    match_list_free(list);

    list = test_list(ctx, "", MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "example.test"), 0);
    match_list_free(list);

    assert_null(match_list_create("relay_domains", "a.test, !", 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "relay_domains:"));
    assert_null(match_list_create("relay_domains", "nosuch:/x", 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "\"nosuch\""));
}

static void test_domain_tables(void **state)
{
    TEST_CTX *ctx = *state;
    MATCH_LIST *list;
    VSTR *value = vstr_alloc(100);

    test_file(ctx, "dom",
              "exact.test OK\n"
              ".wild.test anything\n"
              "parent.test OK\n"
              "no.test REJECT\n"
              "dunno.test dunno\n");
    vstr_sprintf(value, "hash:%s/dom", ctx->dir);
    assert_int_equal(map_build(vstr_str(value), 0, ctx->why), 0);

    list = test_list(ctx, vstr_str(value), MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "EXACT.test"), 1);
    assert_int_equal(match_list_match(list, "a.exact.test"), 0);
    assert_int_equal(match_list_match(list, "wild.test"), 0);
    assert_int_equal(match_list_match(list, "a.b.wild.test"), 1);
    assert_int_equal(match_list_match(list, "x.parent.test"), 0);
    assert_int_equal(match_list_match(list, "no.test"), 0);
    assert_int_equal(match_list_match(list, "dunno.test"), 0);
    match_list_free(list);

    list =
        test_list(ctx, vstr_str(value), MATCH_LIST_DOMAIN | MATCH_LIST_PARENT);
    assert_int_equal(match_list_match(list, "x.y.parent.test"), 1);
    assert_int_equal(match_list_match(list, "a.b.wild.test"), 1);
    assert_int_equal(match_list_match(list, "x.no.test"), 0);
    match_list_free(list);

    /* Negated table, then a catch-all. */
    vstr_sprintf(value, "!hash:%s/dom, .test", ctx->dir);
    list = test_list(ctx, vstr_str(value), MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "exact.test"), 0);
    assert_int_equal(match_list_match(list, "other.test"), 1);
    match_list_free(list);

    /* inline: with braces in a list. */
    list = test_list(ctx, "inline:{ a.test=ok, b.test=x }, c.test",
                     MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "b.test"), 1);
    assert_int_equal(match_list_match(list, "c.test"), 1);
    assert_int_equal(match_list_match(list, "d.test"), 0);
    match_list_free(list);
    vstr_free(value);
}

static void test_files(void **state)
{
    TEST_CTX *ctx = *state;
    MATCH_LIST *list;
    VSTR *value = vstr_alloc(100);

    test_file(ctx, "inner",
              "# our domains\nin1.test in2.test # two\n"
              "!no.in3.test, .in3.test\n");
    vstr_sprintf(value, "first.test, %s/inner", ctx->dir);
    list = test_list(ctx, vstr_str(value), MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "in2.test"), 1);
    assert_int_equal(match_list_match(list, "x.in3.test"), 1);
    assert_int_equal(match_list_match(list, "no.in3.test"), 0);
    assert_int_equal(match_list_match(list, "first.test"), 1);
    assert_int_equal(match_list_match(list, "other.test"), 0);
    match_list_free(list);

    /* !/file negates each of its words */
    vstr_sprintf(value, "!%s/inner, .test", ctx->dir);
    list = test_list(ctx, vstr_str(value), MATCH_LIST_DOMAIN);
    assert_int_equal(match_list_match(list, "in1.test"), 0);
    assert_int_equal(match_list_match(list, "no.in3.test"), 1);
    assert_int_equal(match_list_match(list, "zz.test"), 1);
    match_list_free(list);

    vstr_sprintf(value, "%s/absent", ctx->dir);
    assert_null(match_list_create("mydestination", vstr_str(value),
                                  MATCH_LIST_DOMAIN, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "absent"));
    vstr_free(value);
}

static void test_addresses(void **state)
{
    TEST_CTX *ctx = *state;
    MATCH_LIST *list;
    VSTR *value = vstr_alloc(100);

    list = test_list(ctx,
                     "127.0.0.0/8, !10.1.2.3 10.0.0.0/8 [::1] "
                     "[2001:db8::]/32",
                     MATCH_LIST_ADDR);
    assert_int_equal(match_list_match(list, "127.1.2.3"), 1);
    assert_int_equal(match_list_match(list, "10.1.2.3"), 0);
    assert_int_equal(match_list_match(list, "10.1.2.4"), 1);
    assert_int_equal(match_list_match(list, "::1"), 1);
    assert_int_equal(match_list_match(list, "[::1]"), 1);
    assert_int_equal(match_list_match(list, "2001:db8:1::5"), 1);
    assert_int_equal(match_list_match(list, "::ffff:127.0.0.1"), 1);
    assert_int_equal(match_list_match(list, "192.0.2.1"), 0);
    match_list_free(list);

    test_file(ctx, "nets",
              "192.0.2 OK\n"
              "198.51 OK\n"
              "203.0.113.7 OK\n"
              "203.0.113 REJECT\n"
              "2001:db8::9 OK\n");
    vstr_sprintf(value, "::1, btree:%s/nets", ctx->dir);
    assert_int_equal(map_build(vstr_str(value) + 5, 0, ctx->why), 0);
    list = test_list(ctx, vstr_str(value), MATCH_LIST_ADDR);
    assert_int_equal(match_list_match(list, "192.0.2.200"), 1);
    assert_int_equal(match_list_match(list, "198.51.100.1"), 1);
    assert_int_equal(match_list_match(list, "203.0.113.7"), 1);
    assert_int_equal(match_list_match(list, "203.0.113.8"), 0);
    assert_int_equal(match_list_match(list, "[192.0.2.1]"), 1);
    assert_int_equal(match_list_match(list, "::ffff:192.0.2.1"), 1);
    assert_int_equal(match_list_match(list, "2001:db8::9"), 1);
    assert_int_equal(match_list_match(list, "2001:db8::8"), 0);
    assert_int_equal(match_list_match(list, "192.0.3.1"), 0);
    assert_int_equal(match_list_match(list, "::1"), 1);
    match_list_free(list);

    assert_null(match_list_create("mynetworks", "127.0.0.1, example.test",
                                  MATCH_LIST_ADDR, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "mynetworks:"));
    assert_non_null(strstr(vstr_str(ctx->why), "example.test"));
    assert_null(match_list_create("mynetworks", "10.0.0.0/33", MATCH_LIST_ADDR,
                                  ctx->why));
    vstr_free(value);
}

/* test_corrupt - overwrite a .db file in place, as a failing disk would */
static void test_corrupt(const char *db_path)
{
    struct stat st;
    char *junk;
    int fd = open(db_path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    junk = malloc((size_t) st.st_size);
    assert_non_null(junk);
    memset(junk, 0x5a, (size_t) st.st_size);
    assert_int_equal(pwrite(fd, junk, (size_t) st.st_size, 0), st.st_size);
    assert_int_equal(close(fd), 0);
    free(junk);
}

static void test_table_failure(void **state)
{
    TEST_CTX *ctx = *state;
    MATCH_LIST *list;
    VSTR *value = vstr_alloc(100);

    test_file(ctx, "fail", "a.test OK\n");
    vstr_sprintf(value, "btree:%s/fail", ctx->dir);
    assert_int_equal(map_build(vstr_str(value), 0, ctx->why), 0);
    vstr_sprintf(value, "first.test, btree:%s/fail, last.test", ctx->dir);
    list = test_list(ctx, vstr_str(value), MATCH_LIST_DOMAIN);
    /* No lookup before: Berkeley DB would answer from its cache. */
    vstr_sprintf(value, "%s/fail.db", ctx->dir);
    test_corrupt(vstr_str(value));
    assert_int_equal(match_list_match(list, "first.test"), 1);
    assert_int_equal(match_list_match(list, "last.test"), -1);
    match_list_free(list);
    vstr_free(value);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domains),
        cmocka_unit_test(test_domain_tables),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_table_failure),
    };

    return cmocka_run_group_tests(tests, test_setup, test_teardown);
}
