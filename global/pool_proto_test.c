/*
 * pool_proto_test - the `sluice pool` <-> qmgr codec (round trips through
 * the wire form, the strict readers) and the state text of sources
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "pool_proto.h"
#include "proto_test.h"
#include "reputation.h"
#include "source_pool.h"
#include "vstr.h"

static ATTR_LIST *wire(ATTR_LIST *list)
{
    return proto_test_wire(list, POOL_PROTO_LIST_MAX);
}

static void test_request(void **state)
{
    VSTR *why = vstr_alloc(100);
    POOL_PROTO_REQUEST in = {POOL_PROTO_REQ_FEEDBACK, "127.0.0.3/gmail",
                             POOL_PROTO_KIND_COMPLAINT};
    POOL_PROTO_REQUEST out;
    ATTR_LIST *list = wire(pool_proto_request_list(&in));

    assert_int_equal(pool_proto_request_take(list, &out, why), 0);
    assert_string_equal(out.request, "feedback");
    assert_string_equal(out.name, "127.0.0.3/gmail");
    assert_string_equal(out.kind, "complaint");
    attr_list_free(list);

    in = (POOL_PROTO_REQUEST){POOL_PROTO_REQ_PAUSE, "2001:db8::5", NULL};
    list = wire(pool_proto_request_list(&in));
    assert_int_equal(pool_proto_request_take(list, &out, why), 0);
    assert_string_equal(out.name, "2001:db8::5");
    assert_null(out.kind);
    attr_list_free(list);

    in = (POOL_PROTO_REQUEST){POOL_PROTO_REQ_LIST, NULL, NULL};
    list = wire(pool_proto_request_list(&in));
    assert_int_equal(pool_proto_request_take(list, &out, why), 0);
    assert_null(out.name);
    attr_list_free(list);
    vstr_free(why);
}

static void test_request_strict(void **state)
{
    static const struct {
        const char *request;
        const char *name;
        const char *kind;
        const char *why;
    } bad[] = {
        {"drop", NULL, NULL, "unknown request \"drop\""},
        {"list", "127.0.0.3", NULL, "list takes no name and no kind"},
        {"pause", NULL, NULL, "pause: needs a source address"},
        {"pause", "", NULL, "pause: needs a source address"},
        {"resume", "a b", NULL, "resume: needs a source address"},
        {"pause", "127.0.0.3", "bounce", "pause: takes no kind"},
        {"feedback", "127.0.0.3", NULL, "feedback: needs a kind"},
        {"feedback", "127.0.0.3", "spam",
         "feedback: kind \"spam\": not bounce or complaint"},
    };
    VSTR *why = vstr_alloc(100);
    POOL_PROTO_REQUEST out;

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        ATTR_LIST *list = attr_list_alloc();

        attr_add_str(list, POOL_PROTO_ATTR_REQUEST, bad[i].request);
        if (bad[i].name)
            attr_add_str(list, POOL_PROTO_ATTR_NAME, bad[i].name);
        if (bad[i].kind)
            attr_add_str(list, POOL_PROTO_ATTR_KIND, bad[i].kind);
        assert_int_equal(pool_proto_request_take(list, &out, why), -1);
        assert_string_equal(vstr_str(why), bad[i].why);
        attr_list_free(list);
    }
    vstr_free(why);
}

static void test_reply_and_hello(void **state)
{
    VSTR *why = vstr_alloc(100);
    POOL_PROTO_REPLY in = {POOL_PROTO_STAT_OK, NULL, "127.0.0.3 active ...\n"};
    POOL_PROTO_REPLY out;
    ATTR_LIST *list = wire(pool_proto_reply_list(&in));
    ATTR_LIST *other =
        proto_hello_list(POOL_PROTO_NAME, POOL_PROTO_VERSION + 1);

    assert_int_equal(pool_proto_reply_take(list, &out, why), 0);
    assert_int_equal(out.status, POOL_PROTO_STAT_OK);
    assert_null(out.reason);
    assert_string_equal(out.state, "127.0.0.3 active ...\n");
    attr_list_free(list);

    list = attr_list_alloc();
    attr_add_int(list, POOL_PROTO_ATTR_STATUS, 7);
    assert_int_equal(pool_proto_reply_take(list, &out, why), -1);
    assert_string_equal(vstr_str(why), "status 7: not 0 or 1");
    attr_list_free(list);

    list = wire(pool_proto_hello_list());
    assert_int_equal(pool_proto_hello_take(list, why), 0);
    assert_int_equal(pool_proto_hello_take(other, why), -1);
    attr_list_free(list);
    attr_list_free(other);
    vstr_free(why);
}

static void test_state_text(void **state)
{
    VSTR *why = vstr_alloc(100);
    VSTR *text = vstr_alloc(100);
    REPUTATION_CONF conf;
    REPUTATION *rep;
    SOURCE_POOL pool;
    SOURCE_POOLS pools = {&pool, 1};
    POOL_STATE_LINE line;
    long long now = 1800000000;

    assert_int_equal(reputation_conf_parse(&conf, "20s", 2, "10%", "5%", "5s",
                                           "1/s", 5, why),
                     0);
    rep = reputation_alloc(&conf);
    assert_int_equal(source_pool_parse("tx", "127.0.0.2 127.0.0.3", &pool, why),
                     0);
    (void) reputation_record(rep, "127.0.0.3", REPUTATION_HARD, false, now, now,
                             false, why);
    (void) reputation_record(rep, "127.0.0.3", REPUTATION_HARD, false, now, now,
                             false, why);
    (void) reputation_record(rep, "127.0.0.2/gmail", REPUTATION_OK, false, now,
                             now, false, why);
    pool_state_format(text, rep, NULL, &pools, now);

    assert_true(pool_state_find(vstr_str(text), "127.0.0.3", &line));
    assert_string_equal(line.state, "paused");
    assert_int_equal(line.until, now + 5);
    assert_int_equal(line.attempts, 2);
    assert_int_equal(line.hard, 2);
    assert_int_equal(line.day, -1);
    assert_int_equal(line.cap, -1);
    assert_true(pool_state_find(vstr_str(text), "127.0.0.2", &line));
    assert_string_equal(line.state, "active");
    assert_int_equal(line.attempts, 0);
    assert_true(pool_state_find(vstr_str(text), "127.0.0.2/gmail", &line));
    assert_int_equal(line.attempts, 1);
    /* A prefix is not a key; a missing key reads as active, empty. */
    assert_false(pool_state_find(vstr_str(text), "127.0.0", &line));
    assert_string_equal(line.state, "active");
    assert_int_equal(line.day, -1);

    source_pool_clear(&pool);
    reputation_free(rep);
    vstr_free(text);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_request_strict),
        cmocka_unit_test(test_reply_and_hello),
        cmocka_unit_test(test_state_text),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
