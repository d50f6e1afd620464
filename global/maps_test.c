/*
 * maps_test - unit tests for lookup tables: every type, folding, text
 * syntax errors with line numbers, duplicate keys, hash/btree build
 * atomicity and reopen on change, -d, lists of tables and the address
 * lookup order, in a fresh temp directory
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <time.h>
#include <setjmp.h>
#include <cmocka.h>

#include "maps.h"
#include "maps_priv.h"
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

    if (ctx == NULL || (ctx->tmp = testlib_dir_create("maps_test")) == NULL)
        return -1;
    ctx->dir = ctx->tmp->path;
    ctx->path = vstr_alloc(100);
    ctx->why = vstr_alloc(100);
    if (testlib_log_capture(ctx->tmp, "maps_test") < 0)
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

/* test_spec - "type:dir/name" in a static buffer */
static const char *test_spec(TEST_CTX *ctx, const char *type, const char *name)
{
    static char buf[200];

    snprintf(buf, sizeof(buf), "%s:%s/%s", type, ctx->dir, name);
    return buf;
}

/* test_log_has - the log mentions text (and is emptied then) */
static bool test_log_has(TEST_CTX *ctx, const char *text)
{
    return testlib_log_has(ctx->tmp, text);
}

/* test_get - lookup, checking the error code agrees */
static const char *test_get(MAP *map, const char *key)
{
    int error = -1;
    const char *value = map_get(map, key, &error);

    if (value)
        assert_int_equal(error, MAP_OK);
    else
        assert_int_equal(error, MAP_NOTFOUND);
    return value;
}

static void test_static_inline(void **state)
{
    TEST_CTX *ctx = *state;
    MAP *map;

    map = map_open("static:Relay", 0, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "anything"), "Relay");
    assert_true(map_is_pattern(map));
    assert_string_equal(map_spec(map), "static:Relay");
    map_close(map);

    map = map_open("static:{ two words }", 0, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "x"), "two words");
    map_close(map);

    map = map_open("inline:{ a=1, { B = x, Y }, c=Three }", 0, ctx->why);
    assert_non_null(map);
    assert_false(map_is_pattern(map));
    assert_string_equal(test_get(map, "A"), "1");
    assert_string_equal(test_get(map, "b"), "x, Y");
    assert_string_equal(test_get(map, "C"), "Three");
    assert_null(test_get(map, "d"));
    map_close(map);

    map = map_open("inline:{ a=1, B=2 }", MAP_FLAG_NOFOLD, ctx->why);
    assert_non_null(map);
    assert_null(test_get(map, "b"));
    assert_string_equal(test_get(map, "B"), "2");
    map_close(map);

    assert_null(map_open("inline:{ a=1, novalue }", 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "novalue"));
    assert_null(map_open("inline:{ a=1", 0, ctx->why));
    assert_null(map_open("nosuch:/x", 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "\"nosuch\""));
    assert_null(map_open("plainword", 0, ctx->why));
}

static void test_texthash(void **state)
{
    TEST_CTX *ctx = *state;
    MAP *map;

    test_file(ctx, "t",
              "# comment\n"
              "Alpha  first value\n"
              "\n"
              "beta second\n"
              "   continued here\n"
              "  # comment inside\n"
              "ALPHA duplicate\n"
              "gamma\tTabbed Value  \n");
    map = map_open(test_spec(ctx, "texthash", "t"), 0, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "alpha"), "first value");
    assert_string_equal(test_get(map, "ALPHA"), "first value");
    assert_string_equal(test_get(map, "beta"), "second continued here");
    assert_string_equal(test_get(map, "Gamma"), "Tabbed Value");
    assert_null(test_get(map, "delta"));
    map_close(map);
    assert_true(test_log_has(ctx, "line 7: duplicate key alpha: ignored"));

    map = map_open(test_spec(ctx, "texthash", "t"), MAP_FLAG_NOFOLD, ctx->why);
    assert_non_null(map);
    assert_null(test_get(map, "alpha"));
    assert_string_equal(test_get(map, "Alpha"), "first value");
    assert_string_equal(test_get(map, "ALPHA"), "duplicate");
    map_close(map);

    test_file(ctx, "bad", "good value\n\n# c\nlonelykey\n");
    assert_null(map_open(test_spec(ctx, "texthash", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "bad line 4:"));
    assert_non_null(strstr(vstr_str(ctx->why), "lonelykey"));

    test_file(ctx, "cont", "  starts with space\n");
    assert_null(map_open(test_spec(ctx, "texthash", "cont"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "line 1:"));

    assert_null(map_open(test_spec(ctx, "texthash", "missing"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "No such file"));
}

/* test_db_type - build, look up, syntax errors, for hash or btree */
static void test_db_type(TEST_CTX *ctx, const char *type)
{
    const char *spec;
    MAP *map;
    struct stat st;

    test_file(ctx, "db",
              "Key1 Value One\n"
              "key2 v2\n"
              "KEY1 second\n"
              "user@Example.TEST  x@y\n");
    spec = test_spec(ctx, type, "db");
    assert_int_equal(map_build(spec, 0, ctx->why), 0);
    assert_true(test_log_has(ctx, "line 3: duplicate key key1: ignored"));
    map = map_open(spec, 0, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "key1"), "Value One");
    assert_string_equal(test_get(map, "KEY2"), "v2");
    assert_string_equal(test_get(map, "USER@example.test"), "x@y");
    assert_null(test_get(map, "key3"));
    assert_null(test_get(map, "key"));
    map_close(map);

    /* A bad line fails the build and leaves the old table alone. */
    test_file(ctx, "db", "key1 new\nkey2 new\nbroken\n");
    assert_int_equal(map_build(spec, 0, ctx->why), -1);
    assert_non_null(strstr(vstr_str(ctx->why), "/db line 3:"));
    map = map_open(spec, 0, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "key1"), "Value One");
    map_close(map);
    vstr_sprintf(ctx->path, "%s/db.db.tmp.%ld", ctx->dir, (long) getpid());
    assert_int_equal(stat(vstr_str(ctx->path), &st), -1);

    /* Alias syntax. */
    test_file(ctx, "al",
              "postmaster: root\n"
              "Team : a@x.test,\n"
              "   b@x.test\n"
              "user: \"|/bin/cmd arg\"\n");
    spec = test_spec(ctx, type, "al");
    assert_int_equal(map_build(spec, MAP_FLAG_ALIAS, ctx->why), 0);
    map = map_open(spec, MAP_FLAG_ALIAS, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "postmaster"), "root");
    assert_string_equal(test_get(map, "team"), "a@x.test, b@x.test");
    assert_string_equal(test_get(map, "user"), "\"|/bin/cmd arg\"");
    map_close(map);
    test_file(ctx, "al", "postmaster: root\n# c\nno colon here\n");
    assert_int_equal(map_build(spec, MAP_FLAG_ALIAS, ctx->why), -1);
    assert_non_null(strstr(vstr_str(ctx->why), "al line 3: missing ':'"));

    /* Case-sensitive. */
    test_file(ctx, "cs", "Key upper\nkey lower\n");
    spec = test_spec(ctx, type, "cs");
    assert_int_equal(map_build(spec, MAP_FLAG_NOFOLD, ctx->why), 0);
    map = map_open(spec, MAP_FLAG_NOFOLD, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "Key"), "upper");
    assert_string_equal(test_get(map, "key"), "lower");
    assert_null(test_get(map, "KEY"));
    map_close(map);

    /* No .db yet: the message names it. */
    test_file(ctx, "nodb", "a b\n");
    assert_null(map_open(test_spec(ctx, type, "nodb"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "nodb.db: No such file"));
    /* No text file. */
    assert_int_equal(map_build(test_spec(ctx, type, "none"), 0, ctx->why), -1);
}

static void test_hash(void **state)
{
    test_db_type(*state, "hash");
}

static void test_btree(void **state)
{
    test_db_type(*state, "btree");
}

static void test_rebuild_reopen(void **state)
{
    TEST_CTX *ctx = *state;
    const char *spec = test_spec(ctx, "hash", "re");
    const char *value;
    MAP *map;
    time_t opened;

    test_file(ctx, "re", "k old\nother 1\n");
    assert_int_equal(map_build(spec, 0, ctx->why), 0);
    map = map_open(spec, 0, ctx->why);
    assert_non_null(map);
    opened = time(NULL);
    assert_string_equal(test_get(map, "k"), "old");

    test_file(ctx, "re", "k new\nother 2\nadded x\n");
    assert_int_equal(map_build(spec, 0, ctx->why), 0);
    /* Within the same second the old file still answers, whole. */
    value = test_get(map, "k");
    assert_non_null(value);
    if (time(NULL) == opened) {
        assert_string_equal(value, "old");
        assert_string_equal(test_get(map, "other"), "1");
        assert_null(test_get(map, "added"));
    }
    map_force_check(map);
    assert_string_equal(test_get(map, "k"), "new");
    assert_string_equal(test_get(map, "added"), "x");

    /* A table that cannot be read any more keeps the old copy. */
    vstr_sprintf(ctx->path, "%s/re.db", ctx->dir);
    assert_int_equal(truncate(vstr_str(ctx->path), 0), 0);
    map_force_check(map);
    assert_string_equal(test_get(map, "k"), "new");
    assert_true(test_log_has(ctx, "changed but cannot be read"));
    map_close(map);

    /* texthash: follows its text file. */
    spec = test_spec(ctx, "texthash", "th");
    test_file(ctx, "th", "a 1\n");
    map = map_open(spec, 0, ctx->why);
    assert_non_null(map);
    assert_string_equal(test_get(map, "a"), "1");
    test_file(ctx, "th", "a 22\n");
    map_force_check(map);
    assert_string_equal(test_get(map, "a"), "22");
    map_close(map);
}

static void test_reopen_after_a_second(void **state)
{
    TEST_CTX *ctx = *state;
    const char *spec = test_spec(ctx, "btree", "sec");
    MAP *map;

    test_file(ctx, "sec", "k one\n");
    assert_int_equal(map_build(spec, 0, ctx->why), 0);
    map = map_open(spec, 0, ctx->why);
    assert_non_null(map);
    test_file(ctx, "sec", "k two\n");
    assert_int_equal(map_build(spec, 0, ctx->why), 0);
    usleep(1100 * 1000);
    assert_string_equal(test_get(map, "k"), "two");
    map_close(map);
}

static void test_delete(void **state)
{
    TEST_CTX *ctx = *state;
    const char *spec = test_spec(ctx, "hash", "del");
    MAP *map;

    test_file(ctx, "del", "a 1\nb 2\nc 3\n");
    assert_int_equal(map_build(spec, 0, ctx->why), 0);
    map = map_open(spec, 0, ctx->why);
    assert_non_null(map);
    assert_int_equal(map_delete(spec, "B", 0, ctx->why), 0);
    assert_int_equal(map_delete(spec, "b", 0, ctx->why), 1);
    map_force_check(map);
    assert_null(test_get(map, "b"));
    assert_string_equal(test_get(map, "a"), "1");
    assert_string_equal(test_get(map, "c"), "3");
    map_close(map);
    assert_int_equal(
        map_delete(test_spec(ctx, "texthash", "del"), "a", 0, ctx->why), -1);
    assert_int_equal(map_build(test_spec(ctx, "texthash", "del"), 0, ctx->why),
                     -1);
    assert_non_null(strstr(vstr_str(ctx->why), "cannot build"));
}

static void test_unix(void **state)
{
    TEST_CTX *ctx = *state;
    struct passwd *pw = getpwuid(0);
    MAP *map;
    const char *value;
    char want[512];

    assert_non_null(pw);
    map = map_open("unix:passwd.byname", 0, ctx->why);
    assert_non_null(map);
    value = test_get(map, pw->pw_name);
    assert_non_null(value);
    snprintf(want, sizeof(want), "%s:%s:0:%ld:", pw->pw_name, pw->pw_passwd,
             (long) pw->pw_gid);
    assert_int_equal(strncmp(value, want, strlen(want)), 0);
    assert_non_null(strstr(value, pw->pw_dir));
    assert_null(test_get(map, "no-such-user-here"));
    if (strcmp(pw->pw_name, "root") == 0)
        assert_null(test_get(map, "ROOT")); /* not folded */
    map_close(map);
    assert_null(map_open("unix:group.byname", 0, ctx->why));
}

static void test_maps_list(void **state)
{
    TEST_CTX *ctx = *state;
    MAPS *maps;
    VSTR *list = vstr_alloc(100);
    int error;

    test_file(ctx, "l1", "a from-l1\n");
    assert_int_equal(map_build(test_spec(ctx, "hash", "l1"), 0, ctx->why), 0);
    vstr_sprintf(list,
                 " hash:%s/l1,inline:{ a=inline, { b = x, y } }\t"
                 "static:last",
                 ctx->dir);
    maps = maps_create("test_maps", vstr_str(list), 0, ctx->why);
    assert_non_null(maps);
    assert_int_equal(maps_count(maps), 3);
    assert_string_equal(maps_find(maps, "A", &error), "from-l1");
    assert_string_equal(maps_find(maps, "b", &error), "x, y");
    assert_string_equal(maps_find(maps, "zzz", &error), "last");
    assert_int_equal(error, MAP_OK);
    maps_free(maps);

    maps = maps_create("test_maps", "", 0, ctx->why);
    assert_non_null(maps);
    assert_int_equal(maps_count(maps), 0);
    assert_null(maps_find(maps, "a", &error));
    assert_int_equal(error, MAP_NOTFOUND);
    assert_null(maps_find_addr(maps, "a@b", "+", MAPS_ADDR_LOCAL, &error));
    assert_int_equal(error, MAP_NOTFOUND);
    maps_free(maps);

    assert_null(maps_create("test_maps", "static:x, bogus:/y", 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "test_maps:"));
    assert_non_null(strstr(vstr_str(ctx->why), "\"bogus\""));
    vstr_sprintf(list, "hash:%s/absent", ctx->dir);
    assert_null(maps_create("alias_maps", vstr_str(list), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "alias_maps: hash:"));
    assert_null(maps_create("x", "inline:{ a=1 ", 0, ctx->why));
    vstr_free(list);
}

/* test_addr - maps_find_addr over one inline table */
static const char *test_addr(const char *table, const char *addr,
                             const char *delim, int flags)
{
    static char value[200];
    VSTR *why = vstr_alloc(10);
    MAPS *maps = maps_create("t", table, 0, why);
    const char *found;
    int error;

    assert_non_null(maps);
    found = maps_find_addr(maps, addr, delim, flags, &error);
    snprintf(value, sizeof(value), "%s", found ? found : "(none)");
    assert_int_equal(error, found ? MAP_OK : MAP_NOTFOUND);
    maps_free(maps);
    vstr_free(why);
    return value;
}

static void test_find_addr(void **state)
{
    const char *all = "inline:{ u+e@d.test=full, u@d.test=user-at, "
                      "u+e=local-ext, u=local, @d.test=domain }";
    const char *few = "inline:{ u+e=local-ext, u=local, @d.test=domain }";

    assert_string_equal(test_addr(all, "U+E@D.test", "+", 0), "full");
    assert_string_equal(test_addr("inline:{ u@d.test=user-at, @d.test=dom }",
                                  "u+e@d.test", "+", 0),
                        "user-at");
    /* Without a delimiter the extension is part of the name. */
    assert_string_equal(test_addr("inline:{ u@d.test=user-at, @d.test=dom }",
                                  "u+e@d.test", "", 0),
                        "dom");
    assert_string_equal(test_addr(few, "u+e@d.test", "+", 0), "domain");
    assert_string_equal(test_addr(few, "u+e@d.test", "+", MAPS_ADDR_LOCAL),
                        "local-ext");
    assert_string_equal(test_addr("inline:{ u=local, @d.test=domain }",
                                  "u+e@d.test", "+-", MAPS_ADDR_LOCAL),
                        "local");
    assert_string_equal(test_addr("inline:{ u=local, @d.test=domain }",
                                  "u-e@d.test", "+-", MAPS_ADDR_LOCAL),
                        "local");
    assert_string_equal(test_addr("inline:{ u=local, @d.test=domain }",
                                  "u+e@d.test", "", MAPS_ADDR_LOCAL),
                        "domain");
    assert_string_equal(test_addr(few, "x@d.test", "+",
                                  MAPS_ADDR_LOCAL | MAPS_ADDR_NO_AT_DOMAIN),
                        "(none)");
    assert_string_equal(test_addr(few, "u+e", "+", 0), "local-ext");
    assert_string_equal(test_addr("inline:{ u=local }", "u+e", "+", 0),
                        "local");
    /* The first table with any form wins over later tables. */
    assert_string_equal(test_addr("inline:{ @d.test=first }, "
                                  "inline:{ u@d.test=second }",
                                  "u@d.test", "+", 0),
                        "first");
    /* A leading delimiter is not an extension. */
    assert_string_equal(
        test_addr("inline:{ +x=plus }", "+x@d.test", "+", MAPS_ADDR_LOCAL),
        "plus");
}

/* test_find_addr_quoted - a quoted '@' is not the domain separator: the
   whole quoted string is the local part (smtp_addr_split) */
static void test_find_addr_quoted(void **state)
{
    TEST_CTX *ctx = *state;
    VSTR *list = vstr_alloc(100);
    MAPS *maps;
    int error;

    test_file(ctx, "quoted",
              "\"v prefix\n@outside.example\" route\n"
              "\"w@outside.example\" whole\n");
    vstr_sprintf(list, "texthash:%s/quoted", ctx->dir);
    maps = maps_create("t", vstr_str(list), 0, ctx->why);
    assert_non_null(maps);
    /* no domain: only the whole address is a key */
    assert_null(maps_find_addr(maps, "\"v@outside.example\"", "",
                               MAPS_ADDR_LOCAL, &error));
    assert_int_equal(error, MAP_NOTFOUND);
    assert_null(maps_find_addr(maps, "\"v@outside.example\"@d.test", "",
                               MAPS_ADDR_LOCAL, &error));
    assert_string_equal(maps_find_addr(maps, "\"w@outside.example\"@d.test", "",
                                       MAPS_ADDR_LOCAL, &error),
                        "whole");
    maps_free(maps);
    vstr_free(list);
}

static void test_fail(void **state)
{
    TEST_CTX *ctx = *state;
    VSTR *list = vstr_alloc(100);
    struct stat st;
    MAPS *maps;
    char *junk;
    int error;
    int fd;

    test_file(ctx, "bt", "a 1\n");
    vstr_sprintf(list, "btree:%s/bt", ctx->dir);
    assert_int_equal(map_build(vstr_str(list), 0, ctx->why), 0);
    vstr_sprintf(list, "inline:{ x=1 }, btree:%s/bt, static:never", ctx->dir);
    maps = maps_create("t", vstr_str(list), 0, ctx->why);
    assert_non_null(maps);
    assert_string_equal(maps_find(maps, "x", &error), "1");
    /* Overwrite the .db in place (no lookup has cached its pages yet). */
    vstr_sprintf(list, "%s/bt.db", ctx->dir);
    fd = open(vstr_str(list), O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    junk = malloc((size_t) st.st_size);
    assert_non_null(junk);
    memset(junk, 0x5a, (size_t) st.st_size);
    assert_int_equal(pwrite(fd, junk, (size_t) st.st_size, 0), st.st_size);
    assert_int_equal(close(fd), 0);
    free(junk);
    assert_null(maps_find(maps, "a", &error));
    assert_int_equal(error, MAP_FAIL);
    assert_null(maps_find_addr(maps, "u@d.test", "+", MAPS_ADDR_LOCAL, &error));
    assert_int_equal(error, MAP_FAIL);
    maps_free(maps);
    vstr_free(list);
}

static void test_pcre(void **state)
{
    TEST_CTX *ctx = *state;
    const char *spec = test_spec(ctx, "pcre", "re");
    MAP *map;

    test_file(ctx, "re",
              "# header checks\n"
              "/^Subject: (.*) (spam)$/ REJECT $2: ${1}!\n"
              "if /@example\\.test$/\n"
              "  # inside\n"
              "/^(.+)\\+(.+)@/ EXT $1 $2 $$5\n"
              "if !/^admin/\n"
              "/^user/ USER-NOT-ADMIN\n"
              "endif\n"
              "/^admin/ ADMIN\n"
              "endif\n"
              "/CaseSensitive/i CASE\n"
              "!/^keep/ NOT-KEEP\n"
              "   continued\n"
              "#/x|y/ not-a-rule\n"
              "/a(b)?c/ opt[$1]\n");
    map = map_open(spec, 0, ctx->why);
    if (map == NULL)
        fail_msg("%s", vstr_str(ctx->why));
    assert_true(map_is_pattern(map));
    assert_string_equal(test_get(map, "subject: hello world spam"),
                        "REJECT spam: hello world!");
    assert_string_equal(test_get(map, "a+b@Example.TEST"), "EXT a b $5");
    assert_string_equal(test_get(map, "user@example.test"), "USER-NOT-ADMIN");
    assert_string_equal(test_get(map, "admin@example.test"), "ADMIN");
    assert_string_equal(test_get(map, "userkeep@other.test"),
                        "NOT-KEEP continued");
    assert_null(test_get(map, "keep@other.test"));
    assert_string_equal(test_get(map, "keep CaseSensitive"), "CASE");
    assert_null(test_get(map, "keep casesensitive"));
    assert_string_equal(test_get(map, "keep ac"), "opt[]");
    assert_string_equal(test_get(map, "keep abc"), "opt[b]");
    map_close(map);

    /* Flags m and x, another delimiter, regexp: as the same engine. */
    test_file(ctx, "re2",
              "|a$ \\n ^b|x NOT-MULTI\n"
              "|a$ \\n ^b|mx MULTI\n"
              "/ a \\/ b /x SLASH\n");
    map = map_open(test_spec(ctx, "regexp", "re2"), 0, ctx->why);
    if (map == NULL)
        fail_msg("%s", vstr_str(ctx->why));
    assert_string_equal(test_get(map, "xa\nby") ?: "(null)", "MULTI");
    assert_string_equal(test_get(map, "A/B"), "SLASH");
    assert_null(test_get(map, "a b"));
    map_close(map);

    /* Errors name the file and line. */
    test_file(ctx, "bad", "/ok/ fine\n\n/x(/ broken\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "bad line 3: error in regex"));
    assert_non_null(strstr(vstr_str(ctx->why), "parenthes"));
    test_file(ctx, "bad", "/(a)/ $2\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "line 1: $2"));
    test_file(ctx, "bad", "!/(a)/ $1\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "negated"));
    test_file(ctx, "bad", "/a/\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "line 1: no result"));
    test_file(ctx, "bad", "/a/q X\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "flag 'q'"));
    test_file(ctx, "bad", "/a/ X\nif /b/\nif /c/\nendif\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "line 2: if without endif"));
    test_file(ctx, "bad", "/a/ X\nendif\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "line 2: endif without if"));
    test_file(ctx, "bad", "/unclosed X\n");
    assert_null(map_open(test_spec(ctx, "pcre", "bad"), 0, ctx->why));
    assert_non_null(strstr(vstr_str(ctx->why), "missing closing"));
    assert_int_equal(map_build(spec, 0, ctx->why), -1);
}

/* test_pcre_match_limit - a rule that backtracks without end is skipped
   early (fuzz_maps found /^(.*)*x/ costing 200 ms a lookup), the next rule
   still answers, and the warning does not copy a whole long key */
static void test_pcre_match_limit(void **state)
{
    TEST_CTX *ctx = *state;
    VSTR *key = vstr_alloc(100);
    MAP *map;

    test_file(ctx, "slow", "/^(a+)+$/ SLOW\n/!$/ NEXT\n");
    map = map_open(test_spec(ctx, "pcre", "slow"), 0, ctx->why);
    if (map == NULL)
        fail_msg("%s", vstr_str(ctx->why));
    /* 2^20 steps: under PCRE2's default limit, over ours. */
    assert_string_equal(test_get(map, "aaaaaaaaaaaaaaaaaaa!"), "NEXT");
    assert_true(test_log_has(ctx, "match limit exceeded: rule skipped"));
    assert_string_equal(test_get(map, "aaaa"), "SLOW");
    for (int i = 0; i < 2000; i++)
        vstr_addch(key, i % 2 ? 'a' : 'A');
    vstr_cat(key, "!");
    assert_string_equal(test_get(map, vstr_str(key)), "NEXT");
    assert_true(test_log_has(ctx, "AaAa...\": match limit exceeded"));
    map_close(map);
    vstr_free(key);
}

static void test_pattern_addr(void **state)
{
    TEST_CTX *ctx = *state;
    VSTR *list = vstr_alloc(100);
    MAPS *maps;
    int error;

    /* A pattern table is asked the full address only: "u@d.test" here
       would match the second rule if it were tried. */
    test_file(ctx, "pat",
              "/^u\\+e@d\\.test$/ FULL\n/^u@/ STRIPPED\n"
              "/^@/ AT-DOMAIN\n/^u$/ LOCAL\n");
    vstr_sprintf(list, "pcre:%s/pat", ctx->dir);
    maps = maps_create("t", vstr_str(list), 0, ctx->why);
    assert_non_null(maps);
    assert_string_equal(
        maps_find_addr(maps, "u+e@d.test", "+", MAPS_ADDR_LOCAL, &error),
        "FULL");
    assert_null(
        maps_find_addr(maps, "u+x@d.test", "+", MAPS_ADDR_LOCAL, &error));
    assert_int_equal(error, MAP_NOTFOUND);
    assert_string_equal(maps_find_addr(maps, "u@d.test", "+", 0, &error),
                        "STRIPPED");
    maps_free(maps);

    /* maps_find_fixed skips the pattern table and asks the next one. */
    test_file(ctx, "dom", "/\\.test$/ PATTERN\n");
    vstr_sprintf(list, "pcre:%s/dom inline:{d.test=FIXED}", ctx->dir);
    maps = maps_create("t", vstr_str(list), 0, ctx->why);
    assert_non_null(maps);
    assert_string_equal(maps_find(maps, "d.test", &error), "PATTERN");
    assert_string_equal(maps_find_fixed(maps, "d.test", &error), "FIXED");
    assert_null(maps_find_fixed(maps, "e.test", &error));
    assert_int_equal(error, MAP_NOTFOUND);
    maps_free(maps);
    vstr_free(list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_inline),
        cmocka_unit_test(test_texthash),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_btree),
        cmocka_unit_test(test_rebuild_reopen),
        cmocka_unit_test(test_reopen_after_a_second),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_unix),
        cmocka_unit_test(test_maps_list),
        cmocka_unit_test(test_find_addr),
        cmocka_unit_test(test_find_addr_quoted),
        cmocka_unit_test(test_fail),
        cmocka_unit_test(test_pcre),
        cmocka_unit_test(test_pcre_match_limit),
        cmocka_unit_test(test_pattern_addr),
    };

    return cmocka_run_group_tests(tests, test_setup, test_teardown);
}
