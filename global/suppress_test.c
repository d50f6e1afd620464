/*
 * suppress_test - unit tests of the suppression list on a real SQLite
 * file: keys, the global list against a tenant's, expiry, the rule that
 * a hard bounce does not shorten a permanent entry, a lazy handle that
 * sees a database made after it, and a second connection's write seen by
 * a reader that cached "empty"; the rows mark (PATH-rows) through adds,
 * removals, transactions and a database older than the mark
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "suppress.h"
#include "vstr.h"

#define NOW 1796443200LL

typedef struct FIXTURE {
    char dir[64];
    VSTR *path;
    VSTR *why;
} FIXTURE;

static int setup(void **state)
{
    FIXTURE *fx = calloc(1, sizeof(*fx));

    (void) snprintf(fx->dir, sizeof(fx->dir), "/tmp/suppress_test.XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    fx->path = vstr_alloc(100);
    vstr_sprintf(fx->path, "%s/list.sqlite", fx->dir);
    fx->why = vstr_alloc(100);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    FIXTURE *fx = *state;
    const char *suffixes[] = {"", "-wal", "-shm", "-rows"};
    VSTR *file = vstr_alloc(100);

    for (size_t i = 0; i < 4; i++) {
        vstr_sprintf(file, "%s%s", vstr_str(fx->path), suffixes[i]);
        (void) unlink(vstr_str(file));
    }
    (void) rmdir(fx->dir);
    vstr_free(file);
    vstr_free(fx->path);
    vstr_free(fx->why);
    free(fx);
    return 0;
}

static void add(SUPPRESS *sup, const char *tenant, const char *addr,
                const char *source, long long expires, VSTR *why)
{
    SUPPRESS_ENTRY e = {.tenant = tenant,
                        .address = addr,
                        .reason = source,
                        .source = source,
                        .created = NOW,
                        .expires = expires};

    assert_int_equal(suppress_add(sup, &e, NOW, why), 0);
}

static void test_key(void **state)
{
    VSTR *key = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    assert_int_equal(suppress_key(key, "<Bob.Smith@Example.TEST>", why), 0);
    assert_string_equal(vstr_str(key), "bob.smith@example.test");
    assert_int_equal(suppress_key(key, "bob", why), -1);
    assert_int_equal(suppress_key(key, "@x.test", why), -1);
    assert_int_equal(suppress_key(key, "a@", why), -1);
    assert_int_equal(suppress_key(key, "\"a@b\"@C.test", why), 0);
    assert_string_equal(vstr_str(key), "\"a@b\"@c.test");
    assert_int_equal(suppress_key(key, "a b@c.test", why), -1);
    assert_int_equal(suppress_key(key, "a\r\n@c.test", why), -1);
    assert_int_equal(suppress_key(key, "", why), -1);
    assert_true(suppress_tenant_ok(""));
    assert_true(suppress_tenant_ok("acme-1.x_y"));
    assert_false(suppress_tenant_ok("a/b"));
    assert_false(suppress_tenant_ok("."));
    assert_false(suppress_tenant_ok(".."));
    assert_true(suppress_tenant_ok("..."));
    assert_true(suppress_tenant_ok(".a"));
    assert_true(suppress_reason_ok("asked us, caf\xc3\xa9"));
    assert_false(suppress_reason_ok("two\nlines"));
    vstr_free(key);
    vstr_free(why);
}

static void test_lookup_rules(void **state)
{
    FIXTURE *fx = *state;
    SUPPRESS *sup = suppress_open(vstr_str(fx->path), SUPPRESS_CREATE, fx->why);
    VSTR *reason = vstr_alloc(10);
    VSTR *source = vstr_alloc(10);

    assert_non_null(sup);
    assert_int_equal(
        suppress_lookup(sup, NULL, "g@x.test", NOW, NULL, NULL, fx->why), 0);
    add(sup, "", "G@X.test", SUPPRESS_SRC_MANUAL, 0, fx->why);
    add(sup, "acme", "t@x.test", SUPPRESS_SRC_COMPLAINT, 0, fx->why);
    add(sup, "", "e@x.test", SUPPRESS_SRC_HARD_BOUNCE, NOW + 10, fx->why);
    /* global: every tenant and none */
    assert_int_equal(
        suppress_lookup(sup, NULL, "g@x.TEST", NOW, reason, source, fx->why),
        1);
    assert_string_equal(vstr_str(source), "manual");
    assert_int_equal(
        suppress_lookup(sup, "beta", "g@x.test", NOW, NULL, NULL, fx->why), 1);
    /* a tenant's: that tenant only */
    assert_int_equal(
        suppress_lookup(sup, "acme", "t@x.test", NOW, NULL, NULL, fx->why), 1);
    assert_int_equal(
        suppress_lookup(sup, "beta", "t@x.test", NOW, NULL, NULL, fx->why), 0);
    assert_int_equal(
        suppress_lookup(sup, NULL, "t@x.test", NOW, NULL, NULL, fx->why), 0);
    /* expiry: counts until its second, not from it */
    assert_int_equal(
        suppress_lookup(sup, NULL, "e@x.test", NOW + 9, NULL, NULL, fx->why),
        1);
    assert_int_equal(
        suppress_lookup(sup, NULL, "e@x.test", NOW + 10, NULL, NULL, fx->why),
        0);
    /* a hard bounce does not shorten a permanent entry; manual does */
    add(sup, "", "g@x.test", SUPPRESS_SRC_HARD_BOUNCE, NOW + 5, fx->why);
    assert_int_equal(suppress_lookup(sup, NULL, "g@x.test", NOW + 100, NULL,
                                     source, fx->why),
                     1);
    assert_string_equal(vstr_str(source), "manual");
    add(sup, "", "g@x.test", SUPPRESS_SRC_MANUAL, NOW + 5, fx->why);
    assert_int_equal(
        suppress_lookup(sup, NULL, "g@x.test", NOW + 100, NULL, NULL, fx->why),
        0);
    /* remove: only the tenant's own */
    assert_int_equal(suppress_remove(sup, "", "t@x.test", NOW, fx->why), 0);
    assert_int_equal(suppress_remove(sup, "acme", "T@x.test", NOW, fx->why), 1);
    assert_int_equal(
        suppress_lookup(sup, "acme", "t@x.test", NOW, NULL, NULL, fx->why), 0);
    suppress_close(sup);
    vstr_free(reason);
    vstr_free(source);
}

static void test_lazy_and_shared(void **state)
{
    FIXTURE *fx = *state;
    SUPPRESS *reader = suppress_open(vstr_str(fx->path), 0, fx->why);
    SUPPRESS *writer;

    /* without a flag a missing file is an error; lazy is an empty list */
    assert_null(reader);
    reader = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_non_null(reader);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 0);
    assert_int_equal(access(vstr_str(fx->path), F_OK), -1);
    /* made by another connection: seen; then written while the reader
       holds "empty" from the rows mark: seen too */
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_CREATE, fx->why);
    assert_non_null(writer);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 0);
    add(writer, "", "a@x.test", SUPPRESS_SRC_API, 0, fx->why);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    assert_int_equal(suppress_remove(writer, "", "a@x.test", NOW, fx->why), 1);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 0);
    suppress_close(writer);
    suppress_close(reader);
}

/* A reader opens read-only: it takes no write lock, so a writer's open
   transaction does not hold it up (before, every open ran BEGIN
   IMMEDIATE and waited SUPPRESS_BUSY_MS, then failed); a file without
   the table yet is an empty list; a file that is not a database is an
   error at each lookup (the caller decides), not at the open. */
static void test_reader_readonly(void **state)
{
    FIXTURE *fx = *state;
    SUPPRESS *writer =
        suppress_open(vstr_str(fx->path), SUPPRESS_CREATE, fx->why);
    SUPPRESS *reader;
    FILE *fp;

    assert_non_null(writer);
    add(writer, "", "a@x.test", SUPPRESS_SRC_API, 0, fx->why);
    assert_int_equal(suppress_begin(writer, fx->why), 0);
    add(writer, "", "b@x.test", SUPPRESS_SRC_API, 0, fx->why);
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_non_null(reader);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    assert_int_equal(
        suppress_lookup(reader, NULL, "b@x.test", NOW, NULL, NULL, fx->why), 0);
    assert_int_equal(suppress_commit(writer, fx->why), 0);
    assert_int_equal(
        suppress_lookup(reader, NULL, "b@x.test", NOW, NULL, NULL, fx->why), 1);
    /* a reader cannot write */
    SUPPRESS_ENTRY e = {.tenant = "",
                        .address = "c@x.test",
                        .reason = "r",
                        .source = SUPPRESS_SRC_API,
                        .created = NOW};
    assert_int_equal(suppress_add(reader, &e, NOW, fx->why), -1);
    suppress_close(reader);
    suppress_close(writer);
    assert_int_equal(unlink(vstr_str(fx->path)), 0);

    /* an empty file (its writer has not made the table yet) */
    fp = fopen(vstr_str(fx->path), "w");
    assert_non_null(fp);
    fclose(fp);
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_non_null(reader);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 0);
    suppress_close(reader);

    /* not a database: the handle is made, each lookup fails */
    fp = fopen(vstr_str(fx->path), "w");
    assert_non_null(fp);
    for (int i = 0; i < 64; i++)
        fputs("this is not an SQLite database file, ", fp);
    fclose(fp);
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_non_null(reader);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why),
        -1);
    assert_non_null(strstr(vstr_str(fx->why), "list.sqlite"));
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why),
        -1);
    suppress_close(reader);
}

/* mark - the rows mark's first byte, 0 when there is none */
static int mark(FIXTURE *fx)
{
    VSTR *file = vstr_alloc(100);
    FILE *fp;
    int ch = 0;

    vstr_sprintf(file, "%s-rows", vstr_str(fx->path));
    if ((fp = fopen(vstr_str(file), "r")) != NULL) {
        ch = getc(fp);
        fclose(fp);
    }
    vstr_free(file);
    return ch == EOF ? 0 : ch;
}

/* set_mark - write the rows mark as a crash or an old version might
   leave it; "" removes it */
static void set_mark(FIXTURE *fx, const char *text)
{
    VSTR *file = vstr_alloc(100);
    FILE *fp;

    vstr_sprintf(file, "%s-rows", vstr_str(fx->path));
    if (*text == 0) {
        assert_int_equal(unlink(vstr_str(file)), 0);
    } else {
        assert_non_null(fp = fopen(vstr_str(file), "w"));
        fputs(text, fp);
        fclose(fp);
    }
    vstr_free(file);
}

/* The rows mark: "0" for an empty table, "1" from before a row can be
   committed; a reader with the mark "0" answers from it, and sees each
   add of another connection at its next lookup: empty, some, empty
   again (the last removal), some again; a removal inside the caller's
   transaction settles the mark at its commit; expired rows count as
   rows (the mark says "1") but do not suppress. */
static void test_rows_mark(void **state)
{
    FIXTURE *fx = *state;
    SUPPRESS *writer =
        suppress_open(vstr_str(fx->path), SUPPRESS_CREATE, fx->why);
    SUPPRESS *reader;

    assert_non_null(writer);
    assert_int_equal(mark(fx), '0');
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_non_null(reader);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(
            suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why),
            0);
        add(writer, "", "a@x.test", SUPPRESS_SRC_API, 0, fx->why);
        assert_int_equal(mark(fx), '1');
        assert_int_equal(
            suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why),
            1);
        assert_int_equal(suppress_lookup(reader, "acme", "A@x.test", NOW, NULL,
                                         NULL, fx->why),
                         1);
        assert_int_equal(
            suppress_lookup(reader, NULL, "b@x.test", NOW, NULL, NULL, fx->why),
            0);
        assert_int_equal(suppress_remove(writer, "", "a@x.test", NOW, fx->why),
                         1);
        assert_int_equal(mark(fx), '0');
    }
    /* in the caller's transaction: "1" at the add, "0" after the commit */
    assert_int_equal(suppress_begin(writer, fx->why), 0);
    add(writer, "acme", "t@x.test", SUPPRESS_SRC_COMPLAINT, 0, fx->why);
    assert_int_equal(mark(fx), '1');
    assert_int_equal(suppress_commit(writer, fx->why), 0);
    assert_int_equal(
        suppress_lookup(reader, "acme", "t@x.test", NOW, NULL, NULL, fx->why),
        1);
    assert_int_equal(
        suppress_lookup(reader, "beta", "t@x.test", NOW, NULL, NULL, fx->why),
        0);
    assert_int_equal(suppress_begin(writer, fx->why), 0);
    assert_int_equal(suppress_remove(writer, "acme", "t@x.test", NOW, fx->why),
                     1);
    assert_int_equal(mark(fx), '1');
    assert_int_equal(suppress_commit(writer, fx->why), 0);
    assert_int_equal(mark(fx), '0');
    /* a rolled-back add leaves "1": lookups ask SQLite, which says no */
    assert_int_equal(suppress_begin(writer, fx->why), 0);
    add(writer, "", "r@x.test", SUPPRESS_SRC_API, 0, fx->why);
    suppress_rollback(writer);
    assert_int_equal(mark(fx), '1');
    assert_int_equal(
        suppress_lookup(reader, NULL, "r@x.test", NOW, NULL, NULL, fx->why), 0);
    /* an expired row: a row, not a suppression */
    add(writer, "", "e@x.test", SUPPRESS_SRC_HARD_BOUNCE, NOW + 10, fx->why);
    assert_int_equal(
        suppress_lookup(reader, NULL, "e@x.test", NOW + 9, NULL, NULL, fx->why),
        1);
    assert_int_equal(suppress_lookup(reader, NULL, "e@x.test", NOW + 10, NULL,
                                     NULL, fx->why),
                     0);
    /* a reader cannot change the list (nor the mark) */
    assert_int_equal(suppress_remove(reader, "", "e@x.test", NOW, fx->why), -1);
    assert_int_equal(mark(fx), '1');
    suppress_close(reader);
    suppress_close(writer);
}

/* A database older than the mark (no PATH-rows) or a mark that wrongly
   says "0": a reader opened then asks SQLite (no mark) and finds the
   rows; the next writer to open sets the mark as the table stands. */
static void test_rows_mark_repaired(void **state)
{
    FIXTURE *fx = *state;
    SUPPRESS *writer =
        suppress_open(vstr_str(fx->path), SUPPRESS_CREATE, fx->why);
    SUPPRESS *reader;

    assert_non_null(writer);
    add(writer, "", "a@x.test", SUPPRESS_SRC_API, 0, fx->why);
    suppress_close(writer);
    set_mark(fx, "");
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    assert_int_equal(mark(fx), 0);
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_non_null(writer);
    assert_int_equal(mark(fx), '1');
    /* the reader opens the mark it now finds, and still sees the row */
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    suppress_close(reader);
    suppress_close(writer);
    set_mark(fx, "0\n");
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_int_equal(mark(fx), '1');
    assert_int_equal(suppress_remove(writer, "", "a@x.test", NOW, fx->why), 1);
    suppress_close(writer);
    set_mark(fx, "1\n");
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_int_equal(mark(fx), '0');
    suppress_close(writer);

    /* a mark that cannot be written: the add fails and says why; a
       reader that cannot open it asks SQLite */
    VSTR *file = vstr_alloc(100);
    SUPPRESS_ENTRY e = {.tenant = "",
                        .address = "b@x.test",
                        .reason = "r",
                        .source = SUPPRESS_SRC_API,
                        .created = NOW};

    vstr_sprintf(file, "%s-rows", vstr_str(fx->path));
    assert_int_equal(unlink(vstr_str(file)), 0);
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_non_null(writer);
    add(writer, "", "a@x.test", SUPPRESS_SRC_API, 0, fx->why);
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    suppress_close(writer);
    assert_int_equal(unlink(vstr_str(file)), 0);
    assert_int_equal(mkdir(vstr_str(file), 0755), 0);
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_null(writer);
    assert_non_null(strstr(vstr_str(fx->why), "list.sqlite-rows"));
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_null(writer);
    assert_int_equal(rmdir(vstr_str(file)), 0);
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_non_null(writer);
    assert_int_equal(suppress_add(writer, &e, NOW, fx->why), 0);
    assert_int_equal(
        suppress_lookup(reader, NULL, "b@x.test", NOW, NULL, NULL, fx->why), 1);
    suppress_close(writer);
    suppress_close(reader);
    vstr_free(file);
}

/* A mark cut short under a reader that has it open (by hand, a full
   disk; a writer never shortens it) is no answer: the lookup asks
   SQLite. Read from a mapping, the mark emptied would kill the reader
   with SIGBUS, and "0" without its newline would hide the rows. */
static void test_rows_mark_short(void **state)
{
    FIXTURE *fx = *state;
    SUPPRESS *writer =
        suppress_open(vstr_str(fx->path), SUPPRESS_CREATE, fx->why);
    SUPPRESS *reader;
    VSTR *file = vstr_alloc(100);

    assert_non_null(writer);
    vstr_sprintf(file, "%s-rows", vstr_str(fx->path));
    add(writer, "", "a@x.test", SUPPRESS_SRC_API, 0, fx->why);
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_non_null(reader);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    assert_int_equal(truncate(vstr_str(file), 0), 0);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    assert_int_equal(
        suppress_lookup(reader, NULL, "z@x.test", NOW, NULL, NULL, fx->why), 0);
    set_mark(fx, "0");
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    /* A reader that first finds it empty or short asks SQLite too. */
    suppress_close(reader);
    assert_int_equal(truncate(vstr_str(file), 0), 0);
    reader = suppress_open(vstr_str(fx->path),
                           SUPPRESS_LAZY | SUPPRESS_READONLY, fx->why);
    assert_non_null(reader);
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 1);
    /* The next writer to open mends it; the last removal says "0\n" and
       the reader answers from it again. */
    suppress_close(writer);
    writer = suppress_open(vstr_str(fx->path), SUPPRESS_LAZY, fx->why);
    assert_non_null(writer);
    assert_int_equal(mark(fx), '1');
    assert_int_equal(suppress_remove(writer, "", "a@x.test", NOW, fx->why), 1);
    assert_int_equal(mark(fx), '0');
    assert_int_equal(
        suppress_lookup(reader, NULL, "a@x.test", NOW, NULL, NULL, fx->why), 0);
    suppress_close(writer);
    suppress_close(reader);
    vstr_free(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test_setup_teardown(test_lookup_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_and_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_readonly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_mark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_mark_short, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_mark_repaired, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
