/*
 * qmgr_admin_proto_test - the admin protocol codec: what the admin command
 * builds qmgr takes back unchanged (through the wire form) and the other
 * way round, and the readers refuse a missing or unknown attribute, an
 * unknown request or status, a queue ID that could leave the queue, and a
 * peer of another protocol version
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "qmgr_admin_proto.h"
#include "proto_test.h"
#include "vstr.h"

#define TEST_QID "0123456789ABCDEF"

/* request_list - a REQUEST list, with one attribute replaced or left out
   (value NULL) when name is given */
static ATTR_LIST *request_list(const char *name, const char *value)
{
    static const char *const pairs[][2] = {
        {QMGR_ADMIN_ATTR_REQUEST, QMGR_ADMIN_REQ_HOLD},
        {QMGR_ADMIN_ATTR_QUEUE_ID, TEST_QID},
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

/* refused - qmgr_admin_request_take refuses this REQUEST, saying `expect` */
static void refused(ATTR_LIST *list, const char *expect)
{
    VSTR *why = vstr_alloc(100);
    QMGR_ADMIN_REQUEST req;

    if (qmgr_admin_request_take(list, &req, why) == 0)
        fail_msg("accepted; expected \"%s\"", expect);
    if (strstr(vstr_str(why), expect) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", vstr_str(why), expect);
    attr_list_free(list);
    vstr_free(why);
}

static void test_request_round_trip(void **state)
{
    static const char *const requests[] = {
        QMGR_ADMIN_REQ_HOLD,
        QMGR_ADMIN_REQ_DELETE,
        QMGR_ADMIN_REQ_REQUEUE,
    };
    VSTR *why = vstr_alloc(100);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(requests); i++) {
        QMGR_ADMIN_REQUEST out = {.request = requests[i], .queue_id = TEST_QID};
        ATTR_LIST *list =
            proto_test_wire(qmgr_admin_request_list(&out), QMGR_ADMIN_LIST_MAX);
        QMGR_ADMIN_REQUEST in;

        assert_int_equal(qmgr_admin_request_take(list, &in, why), 0);
        assert_string_equal(in.request, requests[i]);
        assert_string_equal(in.queue_id, TEST_QID);
        attr_list_free(list);
    }
    vstr_free(why);
}

static void test_request_strict(void **state)
{
    static const char *const bad_qids[] = {
        "..",
        "../../etc/passwd",
        "0123456789ABCDE",
        "0123456789ABCDEF0",
        "0123456789ABCDEI",
        "0123456789ABCDE/",
        "",
        "ALL",
    };
    ATTR_LIST *list;

    refused(request_list(QMGR_ADMIN_ATTR_REQUEST, NULL),
            QMGR_ADMIN_ATTR_REQUEST);
    refused(request_list(QMGR_ADMIN_ATTR_QUEUE_ID, NULL),
            QMGR_ADMIN_ATTR_QUEUE_ID);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_qids); i++)
        refused(request_list(QMGR_ADMIN_ATTR_QUEUE_ID, bad_qids[i]),
                "is not a queue ID");
    refused(request_list(QMGR_ADMIN_ATTR_REQUEST, "release"),
            "unknown request");
    refused(request_list(QMGR_ADMIN_ATTR_REQUEST, QMGR_ADMIN_REQ_HELLO),
            "unknown request");
    list = request_list(NULL, NULL);
    attr_add_str(list, "bogus", "1");
    refused(list, "bogus");
    list = request_list(NULL, NULL);
    attr_add_str(list, QMGR_ADMIN_ATTR_QUEUE_ID, TEST_QID);
    refused(list, QMGR_ADMIN_ATTR_QUEUE_ID);
}

static void test_reply(void **state)
{
    static const int statuses[] = {
        QMGR_ADMIN_STAT_OK,
        QMGR_ADMIN_STAT_NOTHERE,
        QMGR_ADMIN_STAT_FAIL,
    };
    VSTR *why = vstr_alloc(100);
    QMGR_ADMIN_REPLY in;
    ATTR_LIST *list;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(statuses); i++) {
        QMGR_ADMIN_REPLY out = {.status = statuses[i],
                                .reason = i == 2 ? "move: denied" : NULL};

        list =
            proto_test_wire(qmgr_admin_reply_list(&out), QMGR_ADMIN_LIST_MAX);
        assert_int_equal(qmgr_admin_reply_take(list, &in, why), 0);
        assert_int_equal(in.status, statuses[i]);
        if (i == 2)
            assert_string_equal(in.reason, "move: denied");
        else
            assert_null(in.reason);
        attr_list_free(list);
    }
    /* missing status, unknown status, unknown attribute, not a number */
    list = attr_list_alloc();
    attr_add_str(list, QMGR_ADMIN_ATTR_REASON, "x");
    assert_int_equal(qmgr_admin_reply_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), QMGR_ADMIN_ATTR_STATUS));
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_int(list, QMGR_ADMIN_ATTR_STATUS, 3);
    assert_int_equal(qmgr_admin_reply_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "unknown status 3"));
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_int(list, QMGR_ADMIN_ATTR_STATUS, -1);
    assert_int_equal(qmgr_admin_reply_take(list, &in, why), -1);
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_int(list, QMGR_ADMIN_ATTR_STATUS, 0);
    attr_add_str(list, "bogus", "x");
    assert_int_equal(qmgr_admin_reply_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "bogus"));
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, QMGR_ADMIN_ATTR_STATUS, "ok");
    assert_int_equal(qmgr_admin_reply_take(list, &in, why), -1);
    attr_list_free(list);
    vstr_free(why);
}

static void test_hello(void **state)
{
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(qmgr_admin_hello_list(), QMGR_ADMIN_LIST_MAX);

    assert_string_equal(attr_get_str(list, QMGR_ADMIN_ATTR_PROTOCOL),
                        "qmgr_admin");
    assert_string_equal(attr_get_str(list, QMGR_ADMIN_ATTR_VERSION), "1");
    assert_int_equal(qmgr_admin_hello_take(list, why), 0);
    attr_list_free(list);
    /* another version: both named */
    list = attr_list_alloc();
    attr_add_str(list, QMGR_ADMIN_ATTR_REQUEST, QMGR_ADMIN_REQ_HELLO);
    attr_add_str(list, QMGR_ADMIN_ATTR_PROTOCOL, QMGR_ADMIN_PROTO_NAME);
    attr_add_int(list, QMGR_ADMIN_ATTR_VERSION, 2);
    assert_int_equal(qmgr_admin_hello_take(list, why), -1);
    assert_string_equal(vstr_str(why),
                        "protocol mismatch: peer speaks qmgr_admin version 2; "
                        "this side speaks qmgr_admin version 1");
    attr_list_free(list);
    /* another protocol, same version */
    list = attr_list_alloc();
    attr_add_str(list, QMGR_ADMIN_ATTR_REQUEST, QMGR_ADMIN_REQ_HELLO);
    attr_add_str(list, QMGR_ADMIN_ATTR_PROTOCOL, "bounce");
    attr_add_int(list, QMGR_ADMIN_ATTR_VERSION, 1);
    assert_int_equal(qmgr_admin_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "peer speaks bounce version 1"));
    attr_list_free(list);
    /* a version that is not a number */
    list = attr_list_alloc();
    attr_add_str(list, QMGR_ADMIN_ATTR_REQUEST, QMGR_ADMIN_REQ_HELLO);
    attr_add_str(list, QMGR_ADMIN_ATTR_PROTOCOL, QMGR_ADMIN_PROTO_NAME);
    attr_add_str(list, QMGR_ADMIN_ATTR_VERSION, "1.0");
    assert_int_equal(qmgr_admin_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "version 1.0;"));
    attr_list_free(list);
    /* no greeting at all: an older admin command */
    list = request_list(NULL, NULL);
    assert_int_equal(qmgr_admin_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "no greeting"));
    attr_list_free(list);
    /* the right version, an unknown attribute: strict */
    list = qmgr_admin_hello_list();
    attr_add_str(list, "bogus", "1");
    assert_int_equal(qmgr_admin_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "bogus"));
    attr_list_free(list);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_strict),
        cmocka_unit_test(test_reply),
        cmocka_unit_test(test_hello),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
