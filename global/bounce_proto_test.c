/*
 * bounce_proto_test - the bounce protocol codec: what qmgr builds bounce
 * takes back unchanged (through the wire form), and the readers refuse a
 * missing or unknown attribute, the wrong request or kind, a queue name or
 * ID that could leave the queue, and a peer of another protocol version
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "bounce_proto.h"
#include "proto_test.h"
#include "vstr.h"

#define TEST_QID "0123456789ABCDEF"
#define TEST_DSN_QID "0123456789ABCDEG"

/* notify_list - a NOTIFY list, with one attribute replaced or left out
   (value NULL) when name is given */
static ATTR_LIST *notify_list(const char *name, const char *value)
{
    static const char *const pairs[][2] = {
        {BOUNCE_ATTR_REQUEST, BOUNCE_REQ_NOTIFY},
        {BOUNCE_ATTR_KIND, BOUNCE_KIND_BOUNCE},
        {BOUNCE_ATTR_QUEUE_NAME, "active"},
        {BOUNCE_ATTR_QUEUE_ID, TEST_QID},
    };
    ATTR_LIST *list = attr_list_alloc();

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(pairs); i++) {
        if (name && strcmp(name, pairs[i][0]) == 0) {
            if (value)
                attr_add_str(list, name, value);
        } else {
            attr_add_str(list, pairs[i][0], pairs[i][1]);
        }
    }
    return list;
}

/* refused - bounce_req_take refuses this NOTIFY, saying `expect` */
static void refused(ATTR_LIST *list, const char *expect)
{
    VSTR *why = vstr_alloc(100);
    BOUNCE_REQ req;

    if (bounce_req_take(list, &req, why) == 0)
        fail_msg("accepted; expected \"%s\"", expect);
    if (strstr(vstr_str(why), expect) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", vstr_str(why), expect);
    attr_list_free(list);
    vstr_free(why);
}

static void test_notify_round_trip(void **state)
{
    static const char *const kinds[] = {BOUNCE_KIND_BOUNCE, BOUNCE_KIND_DELAY};
    VSTR *why = vstr_alloc(100);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(kinds); i++) {
        BOUNCE_REQ out = {
            .kind = kinds[i], .queue_name = "deferred", .queue_id = TEST_QID};
        ATTR_LIST *list =
            proto_test_wire(bounce_req_list(&out), BOUNCE_LIST_MAX);
        BOUNCE_REQ in;

        assert_int_equal(bounce_req_take(list, &in, why), 0);
        assert_string_equal(in.kind, kinds[i]);
        assert_string_equal(in.queue_name, "deferred");
        assert_string_equal(in.queue_id, TEST_QID);
        attr_list_free(list);
    }
    vstr_free(why);
}

static void test_notify_strict(void **state)
{
    static const char *const bad_qids[] = {
        "..",
        "../../etc/passwd",
        "0123456789ABCDE",
        "0123456789ABCDEF0",
        "0123456789ABCDEI",
        "0123456789ABCDE/",
        "",
    };
    static const char *const bad_queues[] = {
        "..",     "private", "pid",    "../active", "active/..",
        "ACTIVE", "",        "bounce", "defer",
    };
    static const char *const required[] = {
        BOUNCE_ATTR_REQUEST,
        BOUNCE_ATTR_KIND,
        BOUNCE_ATTR_QUEUE_NAME,
        BOUNCE_ATTR_QUEUE_ID,
    };
    ATTR_LIST *list;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(required); i++)
        refused(notify_list(required[i], NULL), required[i]);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_qids); i++)
        refused(notify_list(BOUNCE_ATTR_QUEUE_ID, bad_qids[i]), "queue_id");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_queues); i++)
        refused(notify_list(BOUNCE_ATTR_QUEUE_NAME, bad_queues[i]),
                "queue_name");
    refused(notify_list(BOUNCE_ATTR_KIND, "bogus"), "unknown kind");
    refused(notify_list(BOUNCE_ATTR_REQUEST, "flush"), "unknown request");
    refused(notify_list(BOUNCE_ATTR_REQUEST, BOUNCE_REQ_HELLO),
            "unknown request");
    list = notify_list(NULL, NULL);
    attr_add_str(list, "bogus", "1");
    refused(list, "bogus");
    list = notify_list(NULL, NULL);
    attr_add_str(list, BOUNCE_ATTR_KIND, BOUNCE_KIND_DELAY);
    refused(list, BOUNCE_ATTR_KIND);
}

static void test_status(void **state)
{
    VSTR *why = vstr_alloc(100);
    BOUNCE_STATUS out = {.status = 0, .dsn_queue_id = TEST_DSN_QID};
    BOUNCE_STATUS in;
    ATTR_LIST *list =
        proto_test_wire(bounce_status_list(&out), BOUNCE_LIST_MAX);

    assert_int_equal(bounce_status_take(list, &in, why), 0);
    assert_int_equal(in.status, 0);
    assert_null(in.reason);
    assert_string_equal(in.dsn_queue_id, TEST_DSN_QID);
    attr_list_free(list);

    out = (BOUNCE_STATUS){.status = 1, .reason = "cleanup: lost\nconnection"};
    list = proto_test_wire(bounce_status_list(&out), BOUNCE_LIST_MAX);
    assert_int_equal(bounce_status_take(list, &in, why), 0);
    assert_int_equal(in.status, 1);
    assert_string_equal(in.reason, "cleanup: lost\nconnection");
    assert_null(in.dsn_queue_id);
    attr_list_free(list);

    /* missing status, unknown attribute, bad queue ID of the notice */
    list = attr_list_alloc();
    attr_add_str(list, BOUNCE_ATTR_REASON, "x");
    assert_int_equal(bounce_status_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), BOUNCE_ATTR_STATUS));
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_int(list, BOUNCE_ATTR_STATUS, 0);
    attr_add_str(list, "bogus", "x");
    assert_int_equal(bounce_status_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "bogus"));
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, BOUNCE_ATTR_STATUS, "zero");
    assert_int_equal(bounce_status_take(list, &in, why), -1);
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_int(list, BOUNCE_ATTR_STATUS, 0);
    attr_add_str(list, BOUNCE_ATTR_DSN_QUEUE_ID, "../x");
    assert_int_equal(bounce_status_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "dsn_queue_id"));
    attr_list_free(list);
    vstr_free(why);
}

static void test_hello(void **state)
{
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = proto_test_wire(bounce_hello_list(), BOUNCE_LIST_MAX);

    assert_string_equal(attr_get_str(list, BOUNCE_ATTR_PROTOCOL), "bounce");
    assert_string_equal(attr_get_str(list, BOUNCE_ATTR_VERSION), "1");
    assert_int_equal(bounce_hello_take(list, why), 0);
    attr_list_free(list);
    /* another version: both named */
    list = attr_list_alloc();
    attr_add_str(list, BOUNCE_ATTR_REQUEST, BOUNCE_REQ_HELLO);
    attr_add_str(list, BOUNCE_ATTR_PROTOCOL, BOUNCE_PROTO_NAME);
    attr_add_int(list, BOUNCE_ATTR_VERSION, 2);
    attr_add_str(list, "newer", "an attribute of version 2");
    assert_int_equal(bounce_hello_take(list, why), -1);
    assert_string_equal(vstr_str(why),
                        "protocol mismatch: peer speaks bounce version 2; "
                        "this side speaks bounce version 1");
    attr_list_free(list);
    /* another protocol */
    list = attr_list_alloc();
    attr_add_str(list, BOUNCE_ATTR_REQUEST, BOUNCE_REQ_HELLO);
    attr_add_str(list, BOUNCE_ATTR_PROTOCOL, "deliver");
    attr_add_int(list, BOUNCE_ATTR_VERSION, 1);
    assert_int_equal(bounce_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "peer speaks deliver version 1"));
    attr_list_free(list);
    /* no version */
    list = attr_list_alloc();
    attr_add_str(list, BOUNCE_ATTR_REQUEST, BOUNCE_REQ_HELLO);
    attr_add_str(list, BOUNCE_ATTR_PROTOCOL, BOUNCE_PROTO_NAME);
    assert_int_equal(bounce_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "version (none)"));
    attr_list_free(list);
    /* no greeting at all: an older peer */
    list = notify_list(NULL, NULL);
    assert_int_equal(bounce_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "no greeting"));
    attr_list_free(list);
    /* the right version, an unknown attribute: strict */
    list = bounce_hello_list();
    attr_add_str(list, "bogus", "1");
    assert_int_equal(bounce_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "bogus"));
    attr_list_free(list);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_round_trip),
        cmocka_unit_test(test_notify_strict),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_hello),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
