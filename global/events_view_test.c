/*
 * events_view_test - the journal line reader against jansson: the same
 * lines accepted, the same members read, on journal lines and on many
 * damaged copies of them
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include "events.h"
#include "events_view.h"
#include "mymalloc.h"
#include "vstr.h"

/* test_same - view and jansson agree on line: both refuse it, or both
   read one object with the same top-level members */
static void test_same(EVENTS_VIEW *view, const char *line, size_t len)
{
    VSTR *why = vstr_alloc(10);
    json_t *obj = json_loadb(line, len, 0, NULL);
    bool want = obj != NULL && json_is_object(obj);
    int got = events_view_parse(view, line, len, why);
    const char *key;
    json_t *value;

    if ((got == 0) != want)
        fail_msg("view %s, jansson %s: [%.*s] (%s)",
                 got == 0 ? "accepts" : "refuses", want ? "accepts" : "refuses",
                 (int) len, line, vstr_str(why));
    if (want) {
        json_object_foreach(obj, key, value)
        {
            long long ival;
            double rval;

            switch (json_typeof(value)) {
            case JSON_STRING:
                assert_int_equal(events_view_type(view, key),
                                 EVENTS_VIEW_STRING);
                assert_string_equal(events_view_str(view, key),
                                    json_string_value(value));
                break;
            case JSON_INTEGER:
                assert_true(events_view_int(view, key, &ival));
                assert_true(ival == json_integer_value(value));
                assert_true(events_view_num(view, key, &rval));
                break;
            case JSON_REAL:
                assert_int_equal(events_view_type(view, key), EVENTS_VIEW_REAL);
                assert_true(events_view_num(view, key, &rval));
                assert_true(rval == json_real_value(value));
                assert_false(events_view_int(view, key, &ival));
                break;
            case JSON_TRUE:
                assert_int_equal(events_view_type(view, key), EVENTS_VIEW_TRUE);
                break;
            case JSON_FALSE:
                assert_int_equal(events_view_type(view, key),
                                 EVENTS_VIEW_FALSE);
                break;
            case JSON_NULL:
                assert_int_equal(events_view_type(view, key), EVENTS_VIEW_NULL);
                assert_null(events_view_str(view, key));
                break;
            case JSON_OBJECT:
                assert_int_equal(events_view_type(view, key),
                                 EVENTS_VIEW_OBJECT);
                break;
            case JSON_ARRAY:
                assert_int_equal(events_view_type(view, key),
                                 EVENTS_VIEW_ARRAY);
                break;
            }
        }
    }
    json_decref(obj);
    vstr_free(why);
}

/* test_lines - journal lines as the writers make them, and hand-made
   ones */
static const char *const test_lines[] = {
    "{}",
    " { \"a\" : 1 , \"b\":[ 1 , {\"c\":null} ] }\r\n\t ",
    "{\"a\":-0,\"b\":0.5e+3,\"c\":1E-2,\"d\":-12.75,\"e\":9223372036854775807,"
    "\"f\":-9223372036854775808,\"g\":1e-400}",
    "{\"s\":\"\\u00e9\\uD83D\\uDE00\\\"\\\\\\/\\b\\f\\n\\r\\t x\",\"t\":\"\xc3\xa9"
    "\xe2\x82\xac\xf0\x9f\x98\x80\"}",
    "{\"dup\":1,\"dup\":\"second\"}",
    "{\"tags\":[\"a\",[],{}],\"metadata\":{\"k\":{\"deep\":[true,false]}}}",
    "[1,2]",
    "{\"a\":1}x",
    "{\"a\":01}",
    "{\"a\":1.}",
    "{\"a\":.5}",
    "{\"a\":+1}",
    "{\"a\":9223372036854775808}",
    "{\"a\":1e400}",
    "{\"a\":\"\\u0000\"}",
    "{\"a\":\"\\uD800\"}",
    "{\"a\":\"\\uDC00x\"}",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"\xc0\xaf\"}",
    "{\"a\":\"\xed\xa0\x80\"}",
    "{\"a\":\"\xf4\x90\x80\x80\"}",
    "{\"a\":tru}",
    "{\"a\":nul}",
    "{\"a\":1,}",
    "{,}",
    "{\"a\" 1}",
    "",
    "   ",
};

/* test_journal - lines of the journal writer, with every field kind */
static void test_journal(VSTR *out)
{
    struct timeval now = {.tv_sec = 1796443200, .tv_usec = 7};
    VSTR *why = vstr_alloc(10);
    EVENT event;

    events_event_init(&event, EVENTS_DELIVERED, "1MH73QWC9X200WSJ", "123");
    event.recipient = "b\"o\\b@d\xc3\xa9st.test";
    event.reply = "250 ok\r\nnext \xff byte \x01";
    event.relay = "mx[127.0.0.1]:25";
    event.delay = 61.234567;
    event.tls_version = "TLSv1.3";
    event.tls_cipher = "TLS_AES_256_GCM_SHA384";
    event.tls_level = "may";
    event.attempt_seconds = 0.25;
    event.tags = "[\"x\",{\"y\":[1,2.5,null]}]";
    event.metadata = "{\"k\":\"\\u00e9\"}";
    (void) events_format(out, &event, "node1.test", &now, why);
    events_event_init(&event, EVENTS_RECEIVED, "Q2", "0");
    event.sender = "alice@src.test";
    event.size = 249;
    event.rcpt_count = 2;
    event.client = "unknown[127.0.0.1]";
    event.message_id = "<m1@src.test>";
    (void) events_format(out, &event, "node1.test", &now, why);
    events_event_init(&event, EVENTS_BOUNCED, "Q3", "9");
    event.recipient = "x@y.test";
    event.category = "user_unknown";
    event.hard = 1;
    event.async = 0;
    event.verified = 0;
    (void) events_format(out, &event, "node1.test", &now, why);
    vstr_free(why);
}

/* The reader accepts what jansson accepts and reads the same values. */
static void test_view_fixed(void **state)
{
    EVENTS_VIEW *view = events_view_alloc();
    VSTR *journal = vstr_alloc(1000);
    const char *cp;

    for (size_t i = 0; i < sizeof(test_lines) / sizeof(test_lines[0]); i++)
        test_same(view, test_lines[i], strlen(test_lines[i]));
    test_journal(journal);
    for (cp = vstr_str(journal); *cp;) {
        const char *nl = strchr(cp, '\n');

        test_same(view, cp, (size_t) (nl - cp));
        assert_int_equal(events_view_parse(view, cp, (size_t) (nl - cp), NULL),
                         0);
        cp = nl + 1;
    }
    /* What index.c and suppress.c read. */
    test_journal(vstr_reset(journal));
    assert_int_equal(
        events_view_parse(
            view, vstr_str(journal),
            (size_t) (strchr(vstr_str(journal), '\n') - vstr_str(journal)),
            NULL),
        0);
    assert_string_equal(events_view_str(view, "kind"), "delivered");
    assert_string_equal(events_view_str(view, "recipient"),
                        "b\"o\\b@d\xc3\xa9st.test");
    assert_string_equal(events_view_str(view, "reply"),
                        "250 ok\r\nnext ? byte \x01");
    assert_null(events_view_str(view, "tenant"));
    assert_int_equal(events_view_type(view, "tenant"), EVENTS_VIEW_NULL);
    assert_int_equal(events_view_type(view, "nothing"), EVENTS_VIEW_NONE);
    assert_int_equal(events_view_type(view, "tls"), EVENTS_VIEW_OBJECT);
    {
        double delay;

        assert_true(events_view_num(view, "delay", &delay));
        assert_true(delay == 61.234567);
    }
    vstr_free(journal);
    events_view_free(view);
}

/* Damaged copies of journal lines: bytes changed, dropped, doubled, the
   line cut; the reader and jansson agree on each. */
static void test_view_damaged(void **state)
{
    static const char noise[] = "{}[]\",:\\/ 0123456789.eE+-tfnulrasx\xc3\xa9"
                                "\x80\xff\x01\n";
    EVENTS_VIEW *view = events_view_alloc();
    VSTR *journal = vstr_alloc(1000);
    VSTR *copy = vstr_alloc(1000);
    unsigned seed = 19;
    const char *lines[sizeof(test_lines) / sizeof(test_lines[0]) + 3];
    size_t nlines = 0;
    char *cp;

    test_journal(journal);
    for (cp = vstr_str(journal); *cp;) {
        char *nl = strchr(cp, '\n');

        *nl = 0;
        lines[nlines++] = cp;
        cp = nl + 1;
    }
    for (size_t i = 0; i < sizeof(test_lines) / sizeof(test_lines[0]); i++)
        lines[nlines++] = test_lines[i];
    for (int round = 0; round < 40000; round++) {
        const char *line = lines[(size_t) rand_r(&seed) % nlines];
        int edits = 1 + rand_r(&seed) % 3;

        vstr_cpy(copy, line);
        for (int e = 0; e < edits && vstr_len(copy) > 0; e++) {
            size_t at = (size_t) rand_r(&seed) % vstr_len(copy);
            char ch = noise[(size_t) rand_r(&seed) % (sizeof(noise) - 1)];
            VSTR *tail = vstr_alloc(1000);

            switch (rand_r(&seed) % 4) {
            case 0: /* change */
                vstr_str(copy)[at] = ch;
                break;
            case 1: /* drop */
                vstr_cpy(tail, vstr_str(copy) + at + 1);
                vstr_truncate(copy, at);
                vstr_cat(copy, vstr_str(tail));
                break;
            case 2: /* insert */
                vstr_cpy(tail, vstr_str(copy) + at);
                vstr_truncate(copy, at);
                vstr_addch(copy, ch);
                vstr_cat(copy, vstr_str(tail));
                break;
            default: /* cut */
                vstr_truncate(copy, at);
                break;
            }
            vstr_free(tail);
        }
        test_same(view, vstr_str(copy), vstr_len(copy));
    }
    vstr_free(copy);
    vstr_free(journal);
    events_view_free(view);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_fixed),
        cmocka_unit_test(test_view_damaged),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
