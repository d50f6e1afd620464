/*
 * deliver_proto_test - the delivery protocol codec: what qmgr builds the
 * agent takes back unchanged (through the wire form), and the readers
 * refuse a missing or unknown attribute, the wrong request, a queue name
 * or ID that could leave the queue, a bad count or action
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "deliver_proto.h"
#include "proto_test.h"
#include "vstr.h"

#define TEST_QID "0123456789ABCDEF"

/* deliver_list - a DELIVER list, with one attribute replaced or left out
   (value NULL) when name is given */
static ATTR_LIST *deliver_list(const char *name, const char *value)
{
    static const char *const pairs[][2] = {
        {DELIVER_ATTR_REQUEST, DELIVER_REQ_DELIVER},
        {DELIVER_ATTR_QUEUE_NAME, "active"},
        {DELIVER_ATTR_QUEUE_ID, TEST_QID},
        {DELIVER_ATTR_NEXTHOP, "[127.0.0.1]:25"},
        {DELIVER_ATTR_SENDER, "a@b.test"},
        {DELIVER_ATTR_ACTIVE_USEC, "1700000000000000"},
        {DELIVER_ATTR_RCPT_COUNT, "2"},
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

static void test_request_round_trip(void **state)
{
    DELIVER_RCPT rcpts[2] = {
        {.offset = 120,
         .address = "x@y.test",
         .orcpt = "rfc822;x@y.test",
         .notify = "FAILURE"},
        {.offset = 200, .address = "z\nQ@y.test", .orcpt = "", .notify = ""},
    };
    DELIVER_REQ out = {.queue_name = "active",
                       .queue_id = TEST_QID,
                       .nexthop = "dest.test",
                       .sender = "",
                       .active_usec = 1700000000123456LL,
                       .rcpt_want = 2,
                       .conn_messages = 7,
                       .conn_group = "provider:big",
                       .conn_max = 3,
                       .source_address = "2001:db8::5",
                       .source_helo = "mta6.example.test",
                       .rcpts = rcpts};
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = proto_test_wire(deliver_req_list(&out), DELIVER_LIST_MAX);
    DELIVER_REQ *in = deliver_req_take(list, why);

    attr_list_free(list);
    assert_non_null(in);
    assert_string_equal(in->queue_name, "active");
    assert_string_equal(in->queue_id, TEST_QID);
    assert_string_equal(in->nexthop, "dest.test");
    assert_string_equal(in->sender, "");
    assert_true(in->active_usec == 1700000000123456LL);
    assert_int_equal(in->rcpt_want, 2);
    assert_int_equal(in->conn_messages, 7);
    assert_string_equal(in->conn_group, "provider:big");
    assert_int_equal(in->conn_max, 3);
    assert_string_equal(in->source_address, "2001:db8::5");
    assert_string_equal(in->source_helo, "mta6.example.test");
    assert_false(deliver_req_complete(in));
    for (size_t i = 0; i < 2; i++) {
        list = proto_test_wire(deliver_rcpt_list(rcpts + i), DELIVER_LIST_MAX);
        assert_int_equal(deliver_rcpt_take(in, list, why), 0);
        attr_list_free(list);
        assert_true(in->rcpts[i].offset == rcpts[i].offset);
        assert_string_equal(in->rcpts[i].address, rcpts[i].address);
        assert_string_equal(in->rcpts[i].orcpt, rcpts[i].orcpt);
        assert_string_equal(in->rcpts[i].notify, rcpts[i].notify);
    }
    assert_true(deliver_req_complete(in));
    /* one more RCPT than announced */
    list = proto_test_wire(deliver_rcpt_list(rcpts), DELIVER_LIST_MAX);
    assert_int_equal(deliver_rcpt_take(in, list, why), -1);
    assert_non_null(strstr(vstr_str(why), "rcpt_count"));
    attr_list_free(list);
    deliver_req_free(in);
    vstr_free(why);
}

/* refused - deliver_req_take refuses this DELIVER, saying `expect` */
static void refused(ATTR_LIST *list, const char *expect)
{
    VSTR *why = vstr_alloc(100);
    DELIVER_REQ *req = deliver_req_take(list, why);

    if (req != NULL)
        fail_msg("accepted; expected \"%s\"", expect);
    if (strstr(vstr_str(why), expect) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", vstr_str(why), expect);
    attr_list_free(list);
    vstr_free(why);
}

static void test_request_strict(void **state)
{
    static const char *const bad_qids[] = {
        "..",
        ".",
        "../../etc/passwd",
        "0123456789ABCDE",
        "0123456789ABCDEF0",
        "0123456789ABCDEI",
        "0123456789ABCDE/",
        "",
    };
    static const char *const bad_queues[] = {
        "..", "private", "pid", "../active", "active/..", "ACTIVE", "",
    };
    ATTR_LIST *list;

    /* every required attribute */
    refused(deliver_list(DELIVER_ATTR_QUEUE_ID, NULL), "queue_id");
    refused(deliver_list(DELIVER_ATTR_RCPT_COUNT, NULL), "rcpt_count");
    refused(deliver_list(DELIVER_ATTR_SENDER, NULL), "sender");
    /* an unknown one */
    list = deliver_list(NULL, NULL);
    attr_add_str(list, "bogus", "1");
    refused(list, "bogus");
    /* the wrong request */
    refused(deliver_list(DELIVER_ATTR_REQUEST, DELIVER_REQ_RCPT),
            "expected deliver, got \"rcpt\"");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_qids); i++)
        refused(deliver_list(DELIVER_ATTR_QUEUE_ID, bad_qids[i]), "queue_id");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_queues); i++)
        refused(deliver_list(DELIVER_ATTR_QUEUE_NAME, bad_queues[i]),
                "queue_name");
    refused(deliver_list(DELIVER_ATTR_RCPT_COUNT, "0"), "rcpt_count");
    refused(deliver_list(DELIVER_ATTR_RCPT_COUNT, "-1"), "rcpt_count");
    refused(deliver_list(DELIVER_ATTR_RCPT_COUNT, "100001"), "rcpt_count");
    refused(deliver_list(DELIVER_ATTR_RCPT_COUNT, "two"), "rcpt_count");
    refused(deliver_list(DELIVER_ATTR_ACTIVE_USEC, "soon"), "active_usec");
    list = deliver_list(NULL, NULL);
    attr_add_int(list, DELIVER_ATTR_CONN_MESSAGES, -1);
    refused(list, "bad conn_messages -1");
    list = deliver_list(NULL, NULL);
    attr_add_int(list, DELIVER_ATTR_CONN_MAX, 2);
    refused(list, "bad conn_max 2 (needs conn_group)");
    /* the same list, untouched, passes */
    {
        VSTR *why = vstr_alloc(100);

        list = deliver_list(NULL, NULL);
        deliver_req_free(deliver_req_take(list, why));
        attr_list_free(list);
        vstr_free(why);
    }
}

static void test_rcpt_strict(void **state)
{
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = deliver_list(NULL, NULL);
    DELIVER_REQ *req = deliver_req_take(list, why);

    attr_list_free(list);
    assert_non_null(req);
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_RCPT);
    attr_add_int(list, DELIVER_ATTR_OFFSET, 10);
    assert_int_equal(deliver_rcpt_take(req, list, why), -1);
    assert_non_null(strstr(vstr_str(why), "address"));
    attr_add_str(list, DELIVER_ATTR_ADDRESS, "a@b.test");
    attr_add_str(list, "unexpected", "x");
    assert_int_equal(deliver_rcpt_take(req, list, why), -1);
    assert_non_null(strstr(vstr_str(why), "unexpected"));
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_RCPT);
    attr_add_int(list, DELIVER_ATTR_OFFSET, -5);
    attr_add_str(list, DELIVER_ATTR_ADDRESS, "a@b.test");
    assert_int_equal(deliver_rcpt_take(req, list, why), -1);
    assert_non_null(strstr(vstr_str(why), "offset"));
    attr_list_free(list);
    assert_int_equal(req->rcpt_count, 0);
    deliver_req_free(req);
    vstr_free(why);
}

static void test_result_done(void **state)
{
    DELIVER_RESULT out = {.offset = 77,
                          .action = DELIVER_ACTION_BOUNCED,
                          .dsn = "5.1.1",
                          .reason = "host x said: 550 no",
                          .relay = NULL,
                          .diagnostic = "smtp; 550 no",
                          .remote_mta = NULL,
                          .category = "user_unknown",
                          .hard = true};
    DELIVER_RESULT in;
    DELIVER_DONE done_out = {
        .status = 0, .site_failed = true, .reason = "no server"};
    DELIVER_DONE done_in;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(deliver_result_list(&out), DELIVER_LIST_MAX);

    assert_int_equal(deliver_result_take(list, &in, why), 0);
    assert_true(in.offset == 77);
    assert_string_equal(in.action, DELIVER_ACTION_BOUNCED);
    assert_string_equal(in.dsn, "5.1.1");
    assert_string_equal(in.reason, out.reason);
    assert_string_equal(in.relay, "none");
    assert_string_equal(in.diagnostic, out.diagnostic);
    assert_null(in.remote_mta);
    assert_string_equal(in.category, "user_unknown");
    assert_true(in.hard);
    /* no timing given: none taken */
    assert_true(in.attempt_usec == -1 && in.conn_usec == -1);
    /* a DONE is not a RESULT */
    assert_int_equal(deliver_done_take(list, &done_in, why), -1);
    assert_non_null(strstr(vstr_str(why), "expected done"));
    attr_list_free(list);

    out.action = "delivered";
    list = deliver_result_list(&out);
    assert_int_equal(deliver_result_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "unknown action"));
    attr_list_free(list);

    list = proto_test_wire(deliver_done_list(&done_out), DELIVER_LIST_MAX);
    assert_int_equal(deliver_done_take(list, &done_in, why), 0);
    assert_int_equal(done_in.status, 0);
    assert_true(done_in.site_failed);
    assert_string_equal(done_in.reason, "no server");
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_DONE);
    attr_add_int(list, DELIVER_ATTR_STATUS, 0);
    assert_int_equal(deliver_done_take(list, &done_in, why), -1);
    assert_non_null(strstr(vstr_str(why), "site_failed"));
    attr_list_free(list);
    vstr_free(why);
}

/* The attempt's latency and its new connection's setup go and come back;
   a negative one is refused. */
static void test_result_timing(void **state)
{
    DELIVER_RESULT out = {.offset = 3,
                          .action = DELIVER_ACTION_DEFERRED,
                          .dsn = "4.0.0",
                          .reason = "451 later",
                          .attempt_usec = 250000,
                          .conn_usec = 120000};
    DELIVER_RESULT in;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(deliver_result_list(&out), DELIVER_LIST_MAX);

    assert_int_equal(deliver_result_take(list, &in, why), 0);
    assert_true(in.attempt_usec == 250000);
    assert_true(in.conn_usec == 120000);
    attr_list_free(list);
    out.conn_usec = 0;
    list = proto_test_wire(deliver_result_list(&out), DELIVER_LIST_MAX);
    assert_int_equal(deliver_result_take(list, &in, why), 0);
    assert_true(in.attempt_usec == 250000 && in.conn_usec == -1);
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_RESULT);
    attr_add_int(list, DELIVER_ATTR_OFFSET, 3);
    attr_add_str(list, DELIVER_ATTR_ACTION, DELIVER_ACTION_SENT);
    attr_add_str(list, DELIVER_ATTR_DSN, "2.0.0");
    attr_add_str(list, DELIVER_ATTR_REASON, "250 ok");
    attr_add_int(list, DELIVER_ATTR_CONN_USEC, -5);
    assert_int_equal(deliver_result_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "negative"));
    attr_list_free(list);
    vstr_free(why);
}

static void test_result_tls(void **state)
{
    DELIVER_RESULT out = {.offset = 9,
                          .action = DELIVER_ACTION_SENT,
                          .dsn = "2.0.0",
                          .reason = "250 ok",
                          .tls_version = "TLSv1.3",
                          .tls_cipher = "TLS_AES_256_GCM_SHA384",
                          .tls_level = "Verified"};
    DELIVER_RESULT in;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(deliver_result_list(&out), DELIVER_LIST_MAX);

    assert_int_equal(deliver_result_take(list, &in, why), 0);
    assert_string_equal(in.tls_version, "TLSv1.3");
    assert_string_equal(in.tls_cipher, "TLS_AES_256_GCM_SHA384");
    assert_string_equal(in.tls_level, "Verified");
    attr_list_free(list);
    /* plain text: none of the three */
    out.tls_version = out.tls_cipher = out.tls_level = NULL;
    list = proto_test_wire(deliver_result_list(&out), DELIVER_LIST_MAX);
    assert_int_equal(deliver_result_take(list, &in, why), 0);
    assert_null(in.tls_version);
    assert_null(in.tls_cipher);
    assert_null(in.tls_level);
    attr_list_free(list);
    /* a level that is not one of the four, or a version alone: refused */
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_RESULT);
    attr_add_int(list, DELIVER_ATTR_OFFSET, 9);
    attr_add_str(list, DELIVER_ATTR_ACTION, DELIVER_ACTION_SENT);
    attr_add_str(list, DELIVER_ATTR_DSN, "2.0.0");
    attr_add_str(list, DELIVER_ATTR_REASON, "250 ok");
    attr_add_str(list, DELIVER_ATTR_TLS_VERSION, "TLSv1.2");
    assert_int_equal(deliver_result_take(list, &in, why), -1);
    attr_add_str(list, DELIVER_ATTR_TLS_CIPHER, "X");
    attr_add_str(list, DELIVER_ATTR_TLS_LEVEL, "Secure");
    assert_int_equal(deliver_result_take(list, &in, why), -1);
    assert_non_null(strstr(vstr_str(why), "tls_version"));
    attr_list_free(list);
    vstr_free(why);
}

static void test_source(void **state)
{
    DELIVER_REQ out = {.queue_name = "active",
                       .queue_id = TEST_QID,
                       .nexthop = "dest.test",
                       .sender = "",
                       .rcpt_want = 1,
                       .source_address = "192.0.2.300"};
    DELIVER_DONE done = {.status = 1, .source_failed = true};
    DELIVER_DONE done_in;
    DELIVER_RESULT result = {.offset = 5,
                             .action = DELIVER_ACTION_SENT,
                             .dsn = "2.0.0",
                             .reason = "250 ok",
                             .source = "127.0.0.2"};
    DELIVER_RESULT result_in;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list;
    DELIVER_REQ *in;

    /* not an IP address: refused */
    list = proto_test_wire(deliver_req_list(&out), DELIVER_LIST_MAX);
    assert_null(deliver_req_take(list, why));
    assert_non_null(strstr(vstr_str(why), "bad source_address"));
    attr_list_free(list);
    /* none: NULL on the other side */
    out.source_address = "";
    list = proto_test_wire(deliver_req_list(&out), DELIVER_LIST_MAX);
    assert_non_null(in = deliver_req_take(list, why));
    assert_null(in->source_address);
    assert_null(in->source_helo);
    deliver_req_free(in);
    attr_list_free(list);
    /* DONE's source_failed, RESULT's source */
    list = proto_test_wire(deliver_done_list(&done), DELIVER_LIST_MAX);
    assert_int_equal(deliver_done_take(list, &done_in, why), 0);
    assert_true(done_in.source_failed);
    attr_list_free(list);
    done.source_failed = false;
    list = proto_test_wire(deliver_done_list(&done), DELIVER_LIST_MAX);
    assert_int_equal(deliver_done_take(list, &done_in, why), 0);
    assert_false(done_in.source_failed);
    attr_list_free(list);
    list = proto_test_wire(deliver_result_list(&result), DELIVER_LIST_MAX);
    assert_int_equal(deliver_result_take(list, &result_in, why), 0);
    assert_string_equal(result_in.source, "127.0.0.2");
    /* a success carries no category */
    assert_null(result_in.category);
    attr_list_free(list);
    vstr_free(why);
}

static void test_hello(void **state)
{
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = proto_test_wire(deliver_hello_list(), DELIVER_LIST_MAX);

    assert_int_equal(deliver_hello_take(list, why), 0);
    attr_list_free(list);
    /* another version: both named */
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_HELLO);
    attr_add_str(list, DELIVER_ATTR_PROTOCOL, DELIVER_PROTO_NAME);
    attr_add_int(list, DELIVER_ATTR_VERSION, DELIVER_PROTO_VERSION + 1);
    attr_add_str(list, "newer", "x");
    assert_int_equal(deliver_hello_take(list, why), -1);
    assert_string_equal(vstr_str(why),
                        "protocol mismatch: peer speaks deliver version 5; "
                        "this side speaks deliver version 4");
    attr_list_free(list);
    /* another protocol */
    list = attr_list_alloc();
    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_HELLO);
    attr_add_str(list, DELIVER_ATTR_PROTOCOL, "bounce");
    attr_add_int(list, DELIVER_ATTR_VERSION, 1);
    assert_int_equal(deliver_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "peer speaks bounce version 1"));
    attr_list_free(list);
    /* no greeting at all: an older peer */
    list = deliver_list(NULL, NULL);
    assert_int_equal(deliver_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "no greeting"));
    attr_list_free(list);
    /* the right version, an unknown attribute: strict */
    list = deliver_hello_list();
    attr_add_str(list, "bogus", "1");
    assert_int_equal(deliver_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "bogus"));
    attr_list_free(list);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_strict),
        cmocka_unit_test(test_rcpt_strict),
        cmocka_unit_test(test_result_done),
        cmocka_unit_test(test_result_tls),
        cmocka_unit_test(test_result_timing),
        cmocka_unit_test(test_source),
        cmocka_unit_test(test_hello),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
