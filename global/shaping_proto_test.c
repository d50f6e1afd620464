/*
 * shaping_proto_test - the `sluice shaping` <-> qmgr codec: round trips
 * through the wire form, and the strict readers
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "proto_test.h"
#include "shaping_proto.h"
#include "vstr.h"

static ATTR_LIST *wire(ATTR_LIST *list)
{
    return proto_test_wire(list, SHAPING_PROTO_LIST_MAX);
}

static void test_request(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_PROTO_REQUEST in = {SHAPING_PROTO_REQ_SUSPEND, "provider:Google",
                                1800};
    SHAPING_PROTO_REQUEST out;
    ATTR_LIST *list = wire(shaping_proto_request_list(&in));

    assert_int_equal(shaping_proto_request_take(list, &out, why), 0);
    assert_string_equal(out.request, "suspend");
    assert_string_equal(out.name, "provider:Google");
    assert_int_equal(out.seconds, 1800);
    attr_list_free(list);

    in = (SHAPING_PROTO_REQUEST){SHAPING_PROTO_REQ_LIST, NULL, 0};
    list = wire(shaping_proto_request_list(&in));
    assert_int_equal(shaping_proto_request_take(list, &out, why), 0);
    assert_null(out.name);
    attr_list_free(list);

    in = (SHAPING_PROTO_REQUEST){SHAPING_PROTO_REQ_RESUME, "a.test", 0};
    list = wire(shaping_proto_request_list(&in));
    assert_int_equal(shaping_proto_request_take(list, &out, why), 0);
    assert_string_equal(out.name, "a.test");
    attr_list_free(list);
    vstr_free(why);
}

static void test_request_strict(void **state)
{
    static const struct {
        const char *request;
        const char *name;
        long long seconds; /* -1: none */
        const char *why;
    } bad[] = {
        {"drop", NULL, -1, "unknown request \"drop\""},
        {"list", "a.test", -1, "list takes no name and no seconds"},
        {"list", NULL, 5, "list takes no name and no seconds"},
        {"suspend", NULL, 5, "suspend: \"\" is not a domain or provider:NAME"},
        {"suspend", "../etc", 5,
         "suspend: \"../etc\" is not a domain or provider:NAME"},
        {"suspend", "provider:", 5,
         "suspend: \"provider:\" is not a domain or provider:NAME"},
        {"suspend", "a.test", -1, "suspend: needs seconds"},
        {"suspend", "a.test", 0, "suspend: 0 seconds: not from 1 to 31622400"},
        {"suspend", "a.test", 31622401,
         "suspend: 31622401 seconds: not from 1 to 31622400"},
        {"resume", "a.test", 5, "resume: takes no seconds"},
    };
    VSTR *why = vstr_alloc(100);
    SHAPING_PROTO_REQUEST out;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        ATTR_LIST *list = attr_list_alloc();

        attr_add_str(list, SHAPING_PROTO_ATTR_REQUEST, bad[i].request);
        if (bad[i].name)
            attr_add_str(list, SHAPING_PROTO_ATTR_NAME, bad[i].name);
        if (bad[i].seconds >= 0)
            attr_add_int(list, SHAPING_PROTO_ATTR_SECONDS, bad[i].seconds);
        assert_int_equal(shaping_proto_request_take(list, &out, why), -1);
        assert_string_equal(vstr_str(why), bad[i].why);
        attr_list_free(list);
    }
    vstr_free(why);
}

static void test_bucket_and_reply(void **state)
{
    VSTR *why = vstr_alloc(100);
    SHAPING_PROTO_BUCKET in = {
        "provider:big", "provider:big", 5, 2, "10/s", 3, "100/m", 1, 0, 7,
        "suspend:r"};
    SHAPING_PROTO_BUCKET out;
    SHAPING_PROTO_REPLY reply_in = {SHAPING_PROTO_STAT_FAIL, "no such", NULL,
                                    NULL};
    SHAPING_PROTO_REPLY refused_in = {SHAPING_PROTO_STAT_OK, NULL,
                                      "f, line 3: bad", "127.0.0.1:6379 up"};
    SHAPING_PROTO_REPLY reply;
    ATTR_LIST *list = wire(shaping_proto_bucket_list(&in));

    assert_true(shaping_proto_is_bucket(list));
    assert_int_equal(shaping_proto_bucket_take(list, &out, why), 0);
    assert_string_equal(out.bucket, "provider:big");
    assert_string_equal(out.message_rate, "10/s");
    assert_string_equal(out.connection_rate, "100/m");
    assert_int_equal(out.max_connections, 5);
    assert_int_equal(out.connections, 2);
    assert_int_equal(out.message_tokens, 3);
    assert_int_equal(out.connection_tokens, 1);
    assert_int_equal(out.queued, 7);
    assert_string_equal(out.automation, "suspend:r");
    attr_list_free(list);

    in.queued = -1;
    list = shaping_proto_bucket_list(&in);
    assert_int_equal(shaping_proto_bucket_take(list, &out, why), -1);
    assert_string_equal(vstr_str(why), "queued: negative (-1)");
    attr_list_free(list);

    list = wire(shaping_proto_reply_list(&reply_in));
    assert_false(shaping_proto_is_bucket(list));
    assert_int_equal(shaping_proto_reply_take(list, &reply, why), 0);
    assert_int_equal(reply.status, SHAPING_PROTO_STAT_FAIL);
    assert_string_equal(reply.reason, "no such");
    assert_null(reply.refused);
    assert_null(reply.redis);
    attr_list_free(list);

    list = wire(shaping_proto_reply_list(&refused_in));
    assert_int_equal(shaping_proto_reply_take(list, &reply, why), 0);
    assert_int_equal(reply.status, SHAPING_PROTO_STAT_OK);
    assert_null(reply.reason);
    assert_string_equal(reply.refused, "f, line 3: bad");
    assert_string_equal(reply.redis, "127.0.0.1:6379 up");
    attr_list_free(list);

    list = attr_list_alloc();
    attr_add_int(list, SHAPING_PROTO_ATTR_STATUS, 7);
    assert_int_equal(shaping_proto_reply_take(list, &reply, why), -1);
    assert_string_equal(vstr_str(why), "unknown status 7");
    attr_list_free(list);
    vstr_free(why);
}

static void test_hello(void **state)
{
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = wire(shaping_proto_hello_list());
    ATTR_LIST *other =
        proto_hello_list(SHAPING_PROTO_NAME, SHAPING_PROTO_VERSION + 1);

    assert_int_equal(shaping_proto_hello_take(list, why), 0);
    assert_int_equal(shaping_proto_hello_take(other, why), -1);
    assert_non_null(strstr(vstr_str(why), "protocol mismatch"));
    attr_list_free(list);
    attr_list_free(other);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_request_strict),
        cmocka_unit_test(test_bucket_and_reply),
        cmocka_unit_test(test_hello),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
