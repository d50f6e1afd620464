/*
 * milter_edit_test - unit tests for a milter's header and body changes:
 * each kind of change at its place, the limit, body pieces with CR LF
 * split between them
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "milter.h"
#include "milter_edit.h"
#include "vstr.h"

#define MESSAGE                                                                \
    "Received: by h\n\tid X\n"                                                 \
    "Subject: one\n"                                                           \
    "X-Tag: a\n"                                                               \
    "X-Tag: b\n"                                                               \
    "\n"                                                                       \
    "body\n"

/* test_headers - add, insert, change, delete, change of a missing one */
static void test_headers(void **state)
{
    MILTER_EDIT *edit = milter_edit_alloc(0);
    VSTR *content = vstr_cpy(vstr_alloc(100), MESSAGE);

    assert_int_equal(milter_edit_header(edit, MILTER_REP_ADDHEADER, 0,
                                        "X-Added", "v\r\n\tfolded"),
                     0);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_INSHEADER, 0, "X-Top", "first"), 0);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_CHGHEADER, 2, "X-Tag", "B"), 0);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_CHGHEADER, 1, "Subject", ""), 0);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_CHGHEADER, 1, "X-New", "n"), 0);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_CHGHEADER, 1, "X-Gone", ""), 0);
    assert_int_equal(milter_edit_count(edit), 6);
    assert_int_equal(milter_edit_apply(edit, content), 6);
    assert_string_equal(vstr_str(content), "X-Top: first\n"
                                           "Received: by h\n\tid X\n"
                                           "X-Tag: a\n"
                                           "X-Tag: B\n"
                                           "X-Added: v\n\tfolded\n"
                                           "X-New: n\n"
                                           "\n"
                                           "body\n");
    milter_edit_free(edit);
    vstr_free(content);
}

/* test_body - a new body in pieces, a CR LF split between two */
static void test_body(void **state)
{
    MILTER_EDIT *edit = milter_edit_alloc(0);
    VSTR *content = vstr_cpy(vstr_alloc(100), MESSAGE);

    assert_int_equal(milter_edit_body(edit, "new\r", 4), 0);
    assert_int_equal(milter_edit_body(edit, "\nlines\r\n", 8), 0);
    assert_int_equal(milter_edit_apply(edit, content), 1);
    assert_string_equal(vstr_str(content), "Received: by h\n\tid X\n"
                                           "Subject: one\n"
                                           "X-Tag: a\n"
                                           "X-Tag: b\n"
                                           "\n"
                                           "new\nlines\n");
    milter_edit_free(edit);
    vstr_free(content);
}

/* test_limit - more than the limit is refused, nothing applied of it */
static void test_limit(void **state)
{
    MILTER_EDIT *edit = milter_edit_alloc(10);
    VSTR *content = vstr_cpy(vstr_alloc(100), MESSAGE);

    assert_int_equal(milter_edit_body(edit, "0123456789", 10), 0);
    assert_int_equal(milter_edit_body(edit, "x", 1), -1);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_ADDHEADER, 0, "X", "y"), -1);
    assert_int_equal(milter_edit_count(edit), 1);
    milter_edit_free(edit);
    edit = milter_edit_alloc(0);
    assert_int_equal(milter_edit_apply(edit, content), 0);
    assert_string_equal(vstr_str(content), MESSAGE);
    milter_edit_free(edit);
    vstr_free(content);
}

/* test_bounds - a header change past the header limit, reserved bytes
   past the limit: refused, and the bound named */
static void test_bounds(void **state)
{
    MILTER_EDIT *edit = milter_edit_alloc(20);

    assert_null(milter_edit_exceeded(edit));
    milter_edit_header_limit(edit, 8);
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_ADDHEADER, 0, "X", "long one"), -1);
    assert_string_equal(milter_edit_exceeded(edit), "header_size_limit");
    assert_int_equal(
        milter_edit_header(edit, MILTER_REP_ADDHEADER, 0, "X", "y"), 0);
    assert_int_equal(milter_edit_reserve(edit, 15), 0);
    assert_int_equal(milter_edit_reserve(edit, 1), -1);
    assert_string_equal(milter_edit_exceeded(edit), "message_size_limit");
    assert_int_equal(milter_edit_count(edit), 1);
    milter_edit_free(edit);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_bounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
