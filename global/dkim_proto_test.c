/*
 * dkim_proto_test - the DKIM requests and replies come back unchanged
 * through the wire form; the readers refuse what is not one (an unknown
 * request or result, data where none belongs, a domain that is not a DNS
 * token, signature attributes out of order or incomplete, a failed reply
 * with results)
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "dkim_proto.h"
#include "proto_test.h"
#include "vstr.h"

static void test_requests(void **state)
{
    DKIM_REQUEST req;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list;

    list = proto_test_wire(dkim_begin_list(NULL), DKIM_LIST_MAX);
    assert_int_equal(dkim_request_take(list, &req, why), 0);
    assert_int_equal(req.kind, DKIM_KIND_BEGIN);
    attr_list_free(list);
    list = proto_test_wire(dkim_data_list("a\0b\n", 4), DKIM_LIST_MAX);
    assert_int_equal(dkim_request_take(list, &req, why), 0);
    assert_int_equal(req.kind, DKIM_KIND_DATA);
    assert_int_equal(req.len, 4);
    assert_memory_equal(req.data, "a\0b\n", 4);
    attr_list_free(list);
    list = proto_test_wire(dkim_end_list(), DKIM_LIST_MAX);
    assert_int_equal(dkim_request_take(list, &req, why), 0);
    assert_int_equal(req.kind, DKIM_KIND_END);
    attr_list_free(list);
    /* Unknown request; data on end; data without its chunk. */
    list = attr_list_alloc();
    attr_add_str(list, "request", "check");
    assert_int_equal(dkim_request_take(list, &req, why), -1);
    attr_list_free(list);
    list = dkim_end_list();
    attr_add_data(list, "data", "x", 1);
    assert_int_equal(dkim_request_take(list, &req, why), -1);
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, "request", "data");
    assert_int_equal(dkim_request_take(list, &req, why), -1);
    attr_list_free(list);
    vstr_free(why);
}

static void test_reply_round_trip(void **state)
{
    DKIM_REPLY reply = {.ok = true, .count = 2};
    DKIM_REPLY got;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list;

    reply.sigs[0] = (DKIM_SIG_RESULT){DKIM_PROTO_PASS, "a.test", "s1"};
    reply.sigs[1] = (DKIM_SIG_RESULT){DKIM_PROTO_PERMERROR, "", ""};
    list = proto_test_wire(dkim_reply_list(&reply), DKIM_REPLY_MAX);
    assert_int_equal(dkim_reply_take(list, &got, why), 0);
    assert_true(got.ok);
    assert_int_equal(got.count, 2);
    assert_int_equal(got.sigs[0].result, DKIM_PROTO_PASS);
    assert_string_equal(got.sigs[0].domain, "a.test");
    assert_string_equal(got.sigs[0].selector, "s1");
    assert_int_equal(got.sigs[1].result, DKIM_PROTO_PERMERROR);
    assert_string_equal(got.sigs[1].domain, "");
    attr_list_free(list);
    /* No signature: ok with none. */
    reply.count = 0;
    list = proto_test_wire(dkim_reply_list(&reply), DKIM_REPLY_MAX);
    assert_int_equal(dkim_reply_take(list, &got, why), 0);
    assert_int_equal(got.count, 0);
    attr_list_free(list);
    /* A failure. */
    reply = (DKIM_REPLY){.ok = false, .reason = "no dns"};
    list = proto_test_wire(dkim_reply_list(&reply), DKIM_REPLY_MAX);
    assert_int_equal(dkim_reply_take(list, &got, why), 0);
    assert_false(got.ok);
    assert_string_equal(got.reason, "no dns");
    attr_list_free(list);
    vstr_free(why);
}

/* take - dkim_reply_take of a list given as name, value pairs */
static int take(const char *const *pairs, size_t count)
{
    ATTR_LIST *list = attr_list_alloc();
    DKIM_REPLY got;
    VSTR *why = vstr_alloc(100);
    int ret;

    for (size_t i = 0; i + 1 < count; i += 2)
        attr_add_str(list, pairs[i], pairs[i + 1]);
    ret = dkim_reply_take(list, &got, why);
    attr_list_free(list);
    vstr_free(why);
    return ret;
}

static void test_reply_strict(void **state)
{
    static const char *const bad_result[] = {
        "status", "ok", "result", "best", "domain", "a.test", "selector", "s"};
    static const char *const bad_domain[] = {
        "status", "ok",           "result",   "pass",
        "domain", "a.test\r\nX:", "selector", "s"};
    static const char *const out_of_order[] = {
        "status", "ok", "domain", "a.test", "result", "pass", "selector", "s"};
    static const char *const incomplete[] = {"status", "ok",     "result",
                                             "pass",   "domain", "a.test"};
    static const char *const fail_with_result[] = {"status", "fail",   "reason",
                                                   "x",      "result", "pass"};
    static const char *const unknown[] = {"status", "ok", "comment", "x"};
    static const char *const good[] = {"status", "ok",     "result",   "fail",
                                       "domain", "a.test", "selector", "s"};

    assert_int_equal(take(good, 8), 0);
    assert_int_equal(take(bad_result, 8), -1);
    assert_int_equal(take(bad_domain, 8), -1);
    assert_int_equal(take(out_of_order, 8), -1);
    assert_int_equal(take(incomplete, 6), -1);
    assert_int_equal(take(fail_with_result, 6), -1);
    assert_int_equal(take(unknown, 4), -1);
}

static void test_dmarc_fields(void **state)
{
    DKIM_REQUEST begin = {.kind = DKIM_KIND_BEGIN,
                          .dmarc = true,
                          .client_address = "192.0.2.1",
                          .spf_result = "pass",
                          .spf_domain = "mail.a.test"};
    DKIM_REQUEST req;
    DKIM_REPLY reply = {.ok = true,
                        .dmarc = true,
                        .dmarc_result = DMARC_PROTO_FAIL,
                        .dmarc_from = "a.test",
                        .dmarc_policy = "reject"};
    DKIM_REPLY got;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list;

    list = proto_test_wire(dkim_begin_list(&begin), DKIM_LIST_MAX);
    assert_int_equal(dkim_request_take(list, &req, why), 0);
    assert_true(req.dmarc);
    assert_string_equal(req.client_address, "192.0.2.1");
    assert_string_equal(req.spf_result, "pass");
    assert_string_equal(req.spf_domain, "mail.a.test");
    attr_list_free(list);
    /* DMARC fields on END, or incomplete: refused. */
    list = dkim_end_list();
    attr_add_str(list, "spf_domain", "x.test");
    assert_int_equal(dkim_request_take(list, &req, why), -1);
    attr_list_free(list);
    list = dkim_begin_list(NULL);
    attr_add_int(list, "dmarc", 1);
    assert_int_equal(dkim_request_take(list, &req, why), -1);
    attr_list_free(list);
    list = proto_test_wire(dkim_reply_list(&reply), DKIM_REPLY_MAX);
    assert_int_equal(dkim_reply_take(list, &got, why), 0);
    assert_true(got.dmarc);
    assert_int_equal(got.dmarc_result, DMARC_PROTO_FAIL);
    assert_string_equal(got.dmarc_from, "a.test");
    assert_string_equal(got.dmarc_policy, "reject");
    attr_list_free(list);
    reply.dmarc_policy = "discard";
    list = dkim_reply_list(&reply);
    assert_int_equal(dkim_reply_take(list, &got, why), -1);
    attr_list_free(list);
    vstr_free(why);
}

static void test_tokens(void **state)
{
    assert_true(dkim_proto_token_ok("sel-1.a_b.test"));
    assert_true(dkim_proto_token_ok(""));
    assert_false(dkim_proto_token_ok("a b"));
    assert_false(dkim_proto_token_ok("a;b"));
    assert_false(dkim_proto_token_ok("\xc3\xa9.test"));
    assert_int_equal(dkim_proto_result_code("temperror"), DKIM_PROTO_TEMPERROR);
    assert_int_equal(dkim_proto_result_code("none"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_reply_round_trip),
        cmocka_unit_test(test_reply_strict),
        cmocka_unit_test(test_dmarc_fields),
        cmocka_unit_test(test_tokens),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
