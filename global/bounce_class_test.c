/*
 * bounce_class_test - the rules loader (good and bad files), the matchers,
 * and the accuracy of the built-in rules over the corpus of real replies
 * (tests/data/bounce-replies.tsv)
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include "bounce_class.h"
#include "mymalloc.h"
#include "testlib.h"
#include "vstr.h"

#define CORPUS "../tests/data/bounce-replies.tsv"
/* The floors, over the rows checked against a public page (all of them
   when written: 488 rows, 90.2% of the categories and 94.1% of hard/soft
   right). The corpus is labelled by what each reply means, so some rows
   are ambiguous by nature ("550 mailbox unavailable" means user unknown
   at GMX but is RFC 5321's generic text); below these the rules have
   regressed. */
#define CORPUS_FLOOR_PERCENT 88
#define CORPUS_HARD_FLOOR_PERCENT 92
#define CORPUS_MIN_VERIFIED 200

/* test_classify - classify with rules; the category */
static const char *test_classify(const BOUNCE_CLASS_RULES *rules,
                                 const char *dsn, int code, const char *text,
                                 bool *hard)
{
    BOUNCE_CLASS out;

    bounce_class_classify(rules, dsn, code, text, &out);
    if (hard != NULL)
        *hard = out.hard;
    return out.category;
}

static void test_builtin(void **state)
{
    VSTR *why = vstr_alloc(100);
    BOUNCE_CLASS_RULES *rules = bounce_class_rules_load("", why);
    bool hard;

    (void) state;
    assert_non_null(rules);
    assert_true(bounce_class_rules_count(rules) > 20);
    assert_string_equal(
        test_classify(rules, "5.1.1", 550,
                      "<x@y.test>: Recipient address rejected: User unknown",
                      &hard),
        "user_unknown");
    assert_true(hard);
    /* The same text deferred is not hard. */
    assert_string_equal(
        test_classify(rules, "4.1.1", 450, "User unknown", &hard),
        "user_unknown");
    assert_false(hard);
    assert_string_equal(
        test_classify(rules, "4.2.2", 452, "Mailbox full", &hard),
        "mailbox_full");
    assert_false(hard);
    /* Exchange names a full mailbox only by its exception class, with the
       words run together; 5.2.0 alone says nothing. */
    assert_string_equal(
        test_classify(rules, "5.2.0", 554,
                      "STOREDRV.Deliver.Exception:QuotaExceededException."
                      "MapiExceptionShutoffQuotaExceeded; Failed to process "
                      "message due to a permanent exception",
                      &hard),
        "mailbox_full");
    assert_false(hard);
    /* Reply code from our reason text when none is given. */
    assert_string_equal(
        test_classify(rules, "", 0,
                      "host mx.test[192.0.2.1] said: 552 message size "
                      "exceeds limit (in reply to end of DATA command)",
                      &hard),
        "message_too_large");
    /* Nothing matches: other, hard when permanent. */
    assert_string_equal(test_classify(rules, "", 554, "go away", &hard),
                        "other");
    assert_true(hard);
    assert_string_equal(test_classify(rules, NULL, -1, NULL, &hard), "other");
    assert_false(hard);
    assert_string_equal(bounce_class_builtin(), bounce_class_builtin());
    bounce_class_rules_free(rules);
    vstr_free(why);
}

static void test_reply_code(void **state)
{
    (void) state;
    assert_int_equal(bounce_class_reply_code("550 5.1.1 x"), 550);
    assert_int_equal(bounce_class_reply_code("smtp; 452 4.2.2 full"), 452);
    assert_int_equal(
        bounce_class_reply_code("host a[1.2.3.4] said: 421 busy (in reply)"),
        421);
    assert_int_equal(bounce_class_reply_code("5501 x"), 0);
    assert_int_equal(bounce_class_reply_code("connect to a: refused"), 0);
    assert_int_equal(bounce_class_reply_code(NULL), 0);
}

static void test_file_good(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("bounce_class_test");
    VSTR *why = vstr_alloc(100);
    const char *path =
        testlib_write(dir, "classes",
                      "# comment\n\n"
                      "rate_limited no code=4xx text=/slow  down/\n"
                      "  user_unknown permanent dsn=5.1.* code=55x\n"
                      "spam_content no text=/a\\/b/i\n");
    BOUNCE_CLASS_RULES *rules = bounce_class_rules_load(path, why);
    BOUNCE_CLASS out;

    (void) state;
    assert_non_null(rules);
    assert_int_equal(bounce_class_rules_count(rules), 3);
    assert_int_equal(bounce_class_classify(rules, "", 421, "SLOW  DOWN", &out),
                     0);
    assert_string_equal(out.category, "rate_limited");
    /* code=4xx does not match 521 */
    assert_int_equal(bounce_class_classify(rules, "", 521, "slow  down", &out),
                     -1);
    assert_int_equal(bounce_class_classify(rules, "5.1.10", 550, "x", &out), 1);
    assert_true(out.hard);
    assert_int_equal(bounce_class_classify(rules, "5.1.1", 450, "x", &out), -1);
    assert_int_equal(bounce_class_classify(rules, "", 0, "an a/b", &out), 2);
    bounce_class_rules_free(rules);
    vstr_free(why);
    testlib_dir_remove(dir);
}

static void test_file_bad(void **state)
{
    static const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"# x\nunknown_thing yes dsn=5.1.1\n", "classes:2: unknown category"},
        {"user_unknown maybe dsn=5.1.1\n", "classes:1: hard must be"},
        {"user_unknown yes\n", "classes:1: a rule needs"},
        {"user_unknown yes dsn=5.a.1\n", "classes:1: bad pattern"},
        {"\n\nuser_unknown yes text=/(/\n", "classes:3: text=: missing"},
        {"user_unknown yes text=/x/g\n", "classes:1: text=: unknown flag"},
        {"user_unknown yes text=x\n", "classes:1: text= wants"},
        {"user_unknown yes size=5\n", "classes:1: unknown matcher"},
        {"user_unknown yes dsn=5.1.1 dsn=5.1.2\n", "classes:1: matcher"},
        {"# only comments\n", "classes: no rules"},
    };
    TESTLIB_DIR *dir = testlib_dir_create("bounce_class_test");
    VSTR *why = vstr_alloc(100);

    (void) state;
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        const char *path = testlib_write(dir, "classes", bad[i].text);

        vstr_reset(why);
        assert_null(bounce_class_rules_load(path, why));
        if (strstr(vstr_str(why), bad[i].why) == NULL)
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i].text, vstr_str(why),
                     bad[i].why);
    }
    /* A NUL byte: named with its line. */
    {
        const char *path = testlib_path(dir, "nul");
        FILE *fp = fopen(path, "w");

        assert_non_null(fp);
        fputs("# one\nuser_unknown yes dsn=5.1.1\nx", fp);
        fputc(0, fp);
        fclose(fp);
        vstr_reset(why);
        assert_null(bounce_class_rules_load(path, why));
        assert_non_null(strstr(vstr_str(why), "nul:3: NUL byte"));
    }
    vstr_reset(why);
    assert_null(bounce_class_rules_load(testlib_path(dir, "missing"), why));
    assert_non_null(strstr(vstr_str(why), "No such file"));
    vstr_free(why);
    testlib_dir_remove(dir);
}

/* test_corpus - the built-in rules over the corpus: the accuracy, printed,
   at or above the floor */
static void test_corpus(void **state)
{
    VSTR *why = vstr_alloc(100);
    BOUNCE_CLASS_RULES *rules = bounce_class_rules_load(NULL, why);
    FILE *fp = fopen(CORPUS, "r");
    char line[8192];
    int rows = 0, right = 0, hard_right = 0;
    int sourced = 0, sourced_right = 0, sourced_hard_right = 0;
    bool verbose = getenv("BOUNCE_CLASS_VERBOSE") != NULL;

    (void) state;
    assert_non_null(rules);
    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp) != NULL) {
        char *field[7];
        char *cp = line;
        BOUNCE_CLASS out;
        size_t n;

        if (line[0] == '#' || strncmp(line, "category\t", 9) == 0)
            continue;
        line[strcspn(line, "\n")] = 0;
        for (n = 0; n < 7 && cp != NULL; n++) {
            field[n] = cp;
            if ((cp = strchr(cp, '\t')) != NULL)
                *cp++ = 0;
        }
        /* Seven fields, the last the page the text was checked against
           (http...) or "unverified". */
        if (n != 7 || cp != NULL ||
            (strncmp(field[6], "http", 4) != 0 &&
             strcmp(field[6], "unverified") != 0))
            fail_msg("%s: bad row: %s", CORPUS, line);
        bounce_class_classify(rules, field[2], (int) strtol(field[3], NULL, 10),
                              field[4], &out);
        rows++;
        if (field[6][0] == 'h')
            sourced++;
        if (strcmp(out.category, field[0]) == 0) {
            right++;
            sourced_right += field[6][0] == 'h';
        } else if (verbose)
            printf("MISS want %s got %s: %s %s %s\n", field[0], out.category,
                   field[3], field[2], field[4]);
        if (out.hard == (strcmp(field[1], "yes") == 0)) {
            hard_right++;
            sourced_hard_right += field[6][0] == 'h';
        } else if (verbose)
            printf("HARD want %s: %s %s %s\n", field[1], field[3], field[2],
                   field[4]);
    }
    fclose(fp);
    printf("bounce classification: %d/%d = %.1f%%; hard/soft: %d/%d = "
           "%.1f%%\n",
           right, rows, 100.0 * right / rows, hard_right, rows,
           100.0 * hard_right / rows);
    if (sourced > 0)
        printf("rows with a source URL: %d/%d; on them: %d/%d = %.1f%%; "
               "hard/soft: %d/%d = %.1f%%\n",
               sourced, rows, sourced_right, sourced,
               100.0 * sourced_right / sourced, sourced_hard_right, sourced,
               100.0 * sourced_hard_right / sourced);
    assert_true(sourced >= CORPUS_MIN_VERIFIED);
    assert_true(100 * sourced_right >= CORPUS_FLOOR_PERCENT * sourced);
    assert_true(100 * sourced_hard_right >=
                CORPUS_HARD_FLOOR_PERCENT * sourced);
    bounce_class_rules_free(rules);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin),   cmocka_unit_test(test_reply_code),
        cmocka_unit_test(test_file_good), cmocka_unit_test(test_file_bad),
        cmocka_unit_test(test_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
