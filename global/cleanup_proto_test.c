/*
 * cleanup_proto_test - the cleanup protocol codec: what a client builds
 * cleanup takes back unchanged (through the wire form), and the readers
 * refuse every missing required attribute, an unknown attribute, the
 * wrong request, an oversized chunk, a bad status or queue ID, and a
 * greeting of another protocol or version
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "cleanup_proto.h"
#include "proto_test.h"
#include "vstr.h"

#define TEST_QID "0123456789ABCDEF"

typedef struct TEST_PAIR {
    const char *name;
    const char *value;
} TEST_PAIR;

/* build - a list of pairs, without the one named skip (when given) */
static ATTR_LIST *build(const TEST_PAIR *pairs, size_t count, const char *skip)
{
    ATTR_LIST *list = attr_list_alloc();

    for (size_t i = 0; i < count; i++)
        if (skip == NULL || strcmp(skip, pairs[i].name) != 0)
            attr_add_str(list, pairs[i].name, pairs[i].value);
    return list;
}

typedef int (*TEST_TAKE)(const ATTR_LIST *list, VSTR *why);

/* strict - pairs (a whole valid list) pass take; each required attribute
   of spec left out, an unknown attribute added, and a repeated one each
   fail with a reason */
static void strict(const TEST_PAIR *pairs, size_t count, const ATTR_SPEC *spec,
                   size_t spec_count, TEST_TAKE take)
{
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = build(pairs, count, NULL);

    assert_int_equal(take(list, why), 0);
    attr_list_free(list);
    for (size_t i = 0; i < spec_count; i++) {
        if (!spec[i].required)
            continue;
        list = build(pairs, count, spec[i].name);
        vstr_reset(why);
        if (take(list, why) != -1)
            fail_msg("%s missing was taken", spec[i].name);
        assert_true(vstr_len(why) > 0);
        attr_list_free(list);
    }
    list = build(pairs, count, NULL);
    attr_add_str(list, "bogus", "1");
    vstr_reset(why);
    assert_int_equal(take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "bogus"));
    attr_list_free(list);
    list = build(pairs, count, NULL);
    attr_add_str(list, pairs[count - 1].name, pairs[count - 1].value);
    assert_int_equal(take(list, why), -1);
    attr_list_free(list);
    vstr_free(why);
}

/* take_begin, ... - the readers as TEST_TAKE */
static int take_begin(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_BEGIN begin;

    return cleanup_begin_take(list, &begin, why);
}

static int take_rcpt(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_RCPT rcpt;

    return cleanup_rcpt_take(list, &rcpt, why);
}

static int take_data(const ATTR_LIST *list, VSTR *why)
{
    const char *data;
    size_t len;

    return cleanup_data_take(list, &data, &len, why);
}

static int take_end(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_END end;

    return cleanup_end_take(list, &end, why);
}

static int take_status(const ATTR_LIST *list, VSTR *why)
{
    CLEANUP_STATUS status;

    return cleanup_status_take(list, &status, why);
}

static void test_begin_round_trip(void **state)
{
    CLEANUP_BEGIN out = {.flags = CLEANUP_FLAG_LOCAL | CLEANUP_FLAG_8BIT,
                         .sender = "a\nb@c.test",
                         .origin = CLEANUP_ORIGIN_SMTP,
                         .client_name = "client.test",
                         .client_addr = "127.0.0.1",
                         .helo_name = "helo.test",
                         .protocol = "ESMTP",
                         .size = 12345,
                         .ret = "HDRS",
                         .envid = "env-1",
                         .sasl_username = "ann",
                         .full_name = "Ann Example"};
    CLEANUP_BEGIN in;
    CLEANUP_BEGIN bare = {.sender = "", .origin = "local", .size = -1};
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(cleanup_begin_list(&out), CLEANUP_LIST_MAX);

    assert_int_equal(cleanup_list_request(list) != NULL, 1);
    assert_string_equal(cleanup_list_request(list), CLEANUP_REQ_BEGIN);
    assert_int_equal(cleanup_begin_take(list, &in, why), 0);
    assert_int_equal(in.flags, out.flags);
    assert_string_equal(in.sender, out.sender);
    assert_string_equal(in.origin, out.origin);
    assert_string_equal(in.client_name, out.client_name);
    assert_string_equal(in.client_addr, out.client_addr);
    assert_string_equal(in.helo_name, out.helo_name);
    assert_string_equal(in.protocol, out.protocol);
    assert_int_equal(in.size, out.size);
    assert_string_equal(in.ret, out.ret);
    assert_string_equal(in.envid, out.envid);
    assert_string_equal(in.sasl_username, out.sasl_username);
    assert_string_equal(in.full_name, out.full_name);
    attr_list_free(list);

    /* Absent optional fields stay absent; the null sender survives. */
    list = proto_test_wire(cleanup_begin_list(&bare), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_begin_take(list, &in, why), 0);
    assert_int_equal(in.flags, 0);
    assert_string_equal(in.sender, "");
    assert_string_equal(in.origin, "local");
    assert_null(in.client_name);
    assert_null(in.client_addr);
    assert_null(in.helo_name);
    assert_null(in.protocol);
    assert_int_equal(in.size, -1);
    assert_null(in.ret);
    assert_null(in.envid);
    assert_null(in.full_name);
    attr_list_free(list);
    vstr_free(why);
}

static void test_begin_strict(void **state)
{
    static const TEST_PAIR pairs[] = {
        {CLEANUP_ATTR_REQUEST, CLEANUP_REQ_BEGIN},
        {CLEANUP_ATTR_FLAGS, "0"},
        {CLEANUP_ATTR_SENDER, "a@b.test"},
        {CLEANUP_ATTR_ORIGIN, "smtp"},
        {CLEANUP_ATTR_SIZE, "10"},
    };
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list;

    strict(pairs, SLUICE_ARRAY_LEN(pairs), cleanup_begin_spec,
           SLUICE_ARRAY_LEN(cleanup_begin_spec), take_begin);
    /* Not an integer; another request. */
    list = build(pairs, SLUICE_ARRAY_LEN(pairs), CLEANUP_ATTR_FLAGS);
    attr_add_str(list, CLEANUP_ATTR_FLAGS, "x");
    assert_int_equal(take_begin(list, why), -1);
    attr_list_free(list);
    list = build(pairs, SLUICE_ARRAY_LEN(pairs), CLEANUP_ATTR_REQUEST);
    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_RCPT);
    assert_int_equal(take_begin(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "expected begin"));
    attr_list_free(list);
    vstr_free(why);
}

static void test_rcpt(void **state)
{
    static const TEST_PAIR pairs[] = {
        {CLEANUP_ATTR_REQUEST, CLEANUP_REQ_RCPT},
        {CLEANUP_ATTR_ADDRESS, "x@y.test"},
        {CLEANUP_ATTR_NOTIFY, "NEVER"},
    };
    CLEANUP_RCPT out = {.address = "x\r\n@y.test",
                        .orcpt = "rfc822;x@y.test",
                        .notify = "SUCCESS,FAILURE"};
    CLEANUP_RCPT bare = {.address = "z@y.test", .orcpt = "", .notify = NULL};
    CLEANUP_RCPT in;
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(cleanup_rcpt_list(&out), CLEANUP_LIST_MAX);

    assert_int_equal(cleanup_rcpt_take(list, &in, why), 0);
    assert_string_equal(in.address, out.address);
    assert_string_equal(in.orcpt, out.orcpt);
    assert_string_equal(in.notify, out.notify);
    attr_list_free(list);
    list = proto_test_wire(cleanup_rcpt_list(&bare), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_rcpt_take(list, &in, why), 0);
    assert_string_equal(in.address, "z@y.test");
    assert_null(in.orcpt);
    assert_null(in.notify);
    attr_list_free(list);
    strict(pairs, SLUICE_ARRAY_LEN(pairs), cleanup_rcpt_spec,
           SLUICE_ARRAY_LEN(cleanup_rcpt_spec), take_rcpt);
    vstr_free(why);
}

static void test_data(void **state)
{
    static const TEST_PAIR pairs[] = {
        {CLEANUP_ATTR_REQUEST, CLEANUP_REQ_DATA},
        {CLEANUP_ATTR_DATA, "Subject: x\n\nbody\n"},
    };
    static const char bytes[] = "a\0b\nc\n.\n";
    VSTR *why = vstr_alloc(100);
    VSTR *big = vstr_alloc(CLEANUP_CHUNK_MAX + 1);
    ATTR_LIST *list = proto_test_wire(cleanup_data_list(bytes, sizeof(bytes)),
                                      CLEANUP_LIST_MAX);
    const char *data;
    size_t len;

    assert_int_equal(cleanup_data_take(list, &data, &len, why), 0);
    assert_int_equal(len, sizeof(bytes));
    assert_memory_equal(data, bytes, sizeof(bytes));
    attr_list_free(list);
    strict(pairs, SLUICE_ARRAY_LEN(pairs), cleanup_data_spec,
           SLUICE_ARRAY_LEN(cleanup_data_spec), take_data);

    /* A full chunk passes, one byte more does not. */
    while (vstr_len(big) < CLEANUP_CHUNK_MAX)
        vstr_addch(big, 'x');
    list = proto_test_wire(cleanup_data_list(vstr_str(big), vstr_len(big)),
                           CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_data_take(list, &data, &len, why), 0);
    assert_int_equal(len, CLEANUP_CHUNK_MAX);
    attr_list_free(list);
    vstr_addch(big, 'x');
    list = proto_test_wire(cleanup_data_list(vstr_str(big), vstr_len(big)),
                           CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_data_take(list, &data, &len, why), -1);
    assert_non_null(strstr(vstr_str(why), "data chunk of 65537 bytes"));
    assert_null(data);
    attr_list_free(list);
    vstr_free(big);
    vstr_free(why);
}

static void test_end(void **state)
{
    static const TEST_PAIR pairs[] = {
        {CLEANUP_ATTR_REQUEST, CLEANUP_REQ_END},
        {CLEANUP_ATTR_ABORT, "0"},
    };
    VSTR *why = vstr_alloc(100);
    CLEANUP_END out = {.abort = true};
    CLEANUP_END in;
    ATTR_LIST *list = proto_test_wire(cleanup_end_list(&out), CLEANUP_LIST_MAX);

    assert_int_equal(cleanup_end_take(list, &in, why), 0);
    assert_true(in.abort);
    attr_list_free(list);
    out.abort = false;
    list = proto_test_wire(cleanup_end_list(&out), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_end_take(list, &in, why), 0);
    assert_false(in.abort);
    assert_null(in.prepend);
    attr_list_free(list);
    /* Header lines to prepend: whole lines, a field name first, no
       control byte but TAB and LF. */
    out.prepend = "Authentication-Results: a; dkim=pass\n\tx=y\n";
    list = proto_test_wire(cleanup_end_list(&out), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_end_take(list, &in, why), 0);
    assert_string_equal(in.prepend, out.prepend);
    attr_list_free(list);
    {
        static const char *const bad[] = {"",
                                          "A: b",
                                          " A: b\n",
                                          "no colon\n",
                                          "A: b\r\nC: d\n",
                                          "A: \x01\n",
                                          "A: \xc3\xa9\n",
                                          "\nA: b\n"};

        for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
            out.prepend = bad[i];
            list = proto_test_wire(cleanup_end_list(&out), CLEANUP_LIST_MAX);
            assert_int_equal(cleanup_end_take(list, &in, why), -1);
            attr_list_free(list);
        }
    }
    /* A milter's quarantine: a printable reason. */
    out.prepend = NULL;
    out.hold = "milter quarantine: virus found";
    list = proto_test_wire(cleanup_end_list(&out), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_end_take(list, &in, why), 0);
    assert_string_equal(in.hold, out.hold);
    attr_list_free(list);
    out.hold = "two\nlines";
    list = proto_test_wire(cleanup_end_list(&out), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_end_take(list, &in, why), -1);
    attr_list_free(list);
    out.hold = NULL;
    strict(pairs, SLUICE_ARRAY_LEN(pairs), cleanup_end_spec,
           SLUICE_ARRAY_LEN(cleanup_end_spec), take_end);
    vstr_free(why);
}

static void test_status(void **state)
{
    static const TEST_PAIR pairs[] = {
        {CLEANUP_ATTR_STATUS, "451"},
        {CLEANUP_ATTR_REASON, "4.3.0 queue file write error"},
        {CLEANUP_ATTR_QUEUE_ID, TEST_QID},
    };
    static const char *const bad_qids[] = {
        "",
        "../../etc/passwd",
        "0123456789ABCDE",
        "0123456789ABCDEF0",
        "0123456789abcdef",
        "0123456789ABCDE\n",
        "012345678/ABCDEF",
    };
    static const char *const bad_codes[] = {"-1",  "1",   "250",
                                            "399", "600", "99999999999"};
    VSTR *why = vstr_alloc(100);
    CLEANUP_STATUS out = {
        .status = 0, .reason = "ignored", .queue_id = TEST_QID};
    CLEANUP_STATUS in;
    ATTR_LIST *list =
        proto_test_wire(cleanup_status_list(&out), CLEANUP_LIST_MAX);

    assert_int_equal(cleanup_status_take(list, &in, why), 0);
    assert_int_equal(in.status, 0);
    assert_null(in.reason); /* only a failure has one */
    assert_string_equal(in.queue_id, TEST_QID);
    attr_list_free(list);
    out =
        (CLEANUP_STATUS){.status = 554, .reason = "5.5.1 no", .queue_id = NULL};
    list = proto_test_wire(cleanup_status_list(&out), CLEANUP_LIST_MAX);
    assert_int_equal(cleanup_status_take(list, &in, why), 0);
    assert_int_equal(in.status, 554);
    assert_string_equal(in.reason, "5.5.1 no");
    assert_null(in.queue_id);
    attr_list_free(list);
    strict(pairs, SLUICE_ARRAY_LEN(pairs), cleanup_status_spec,
           SLUICE_ARRAY_LEN(cleanup_status_spec), take_status);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_qids); i++) {
        list = build(pairs, 1, NULL);
        attr_add_str(list, CLEANUP_ATTR_QUEUE_ID, bad_qids[i]);
        vstr_reset(why);
        if (cleanup_status_take(list, &in, why) != -1)
            fail_msg("queue_id \"%s\" was taken", bad_qids[i]);
        assert_non_null(strstr(vstr_str(why), "bad queue_id"));
        attr_list_free(list);
    }
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad_codes); i++) {
        list = build(pairs + 1, 2, NULL);
        attr_add_str(list, CLEANUP_ATTR_STATUS, bad_codes[i]);
        if (cleanup_status_take(list, &in, why) != -1)
            fail_msg("status %s was taken", bad_codes[i]);
        attr_list_free(list);
    }
    /* A request is not a status. */
    list = build(pairs, SLUICE_ARRAY_LEN(pairs), NULL);
    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_HELLO);
    assert_int_equal(cleanup_status_take(list, &in, why), -1);
    attr_list_free(list);
    vstr_free(why);
}

static void test_hello(void **state)
{
    static const TEST_PAIR pairs[] = {
        {CLEANUP_ATTR_REQUEST, CLEANUP_REQ_HELLO},
        {CLEANUP_ATTR_PROTOCOL, CLEANUP_PROTO_NAME},
        {CLEANUP_ATTR_VERSION, "1"},
    };
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = proto_test_wire(cleanup_hello_list(), CLEANUP_LIST_MAX);

    assert_string_equal(attr_get_str(list, CLEANUP_ATTR_PROTOCOL), "cleanup");
    assert_string_equal(attr_get_str(list, CLEANUP_ATTR_VERSION), "1");
    assert_int_equal(cleanup_hello_take(list, why), 0);
    attr_list_free(list);
    strict(pairs, SLUICE_ARRAY_LEN(pairs), cleanup_hello_spec,
           SLUICE_ARRAY_LEN(cleanup_hello_spec), cleanup_hello_take);

    /* Another version: both named. */
    list = build(pairs, 2, NULL);
    attr_add_int(list, CLEANUP_ATTR_VERSION, 2);
    assert_int_equal(cleanup_hello_take(list, why), -1);
    assert_string_equal(vstr_str(why),
                        "protocol mismatch: peer speaks cleanup version 2; "
                        "this side speaks cleanup version 1");
    attr_list_free(list);

    /* Another protocol. */
    list = build(pairs + 2, 1, NULL);
    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_HELLO);
    attr_add_str(list, CLEANUP_ATTR_PROTOCOL, "deliver");
    assert_int_equal(cleanup_hello_take(list, why), -1);
    assert_non_null(strstr(vstr_str(why), "peer speaks deliver version 1"));
    attr_list_free(list);

    /* No greeting at all: a client of the time before HELLO. */
    list = build(pairs, 0, NULL);
    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_BEGIN);
    assert_int_equal(cleanup_hello_take(list, why), -1);
    assert_string_equal(vstr_str(why),
                        "protocol mismatch: no greeting (first list is "
                        "\"begin\"); this side speaks cleanup version 1");
    attr_list_free(list);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_round_trip),
        cmocka_unit_test(test_begin_strict),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_data),
        cmocka_unit_test(test_end),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_hello),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
