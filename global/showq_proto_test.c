/*
 * showq_proto_test - the showq protocol: a request mailq builds comes back
 * unchanged through the wire form, the reader refuses what is not a
 * request, and the client writes every piece of text it gets and succeeds
 * only at an "ok" END (a listing cut short, a failed END or a malformed
 * reply is an error with its reason, over a real socketpair)
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "attr.h"
#include "showq_proto.h"
#include "proto_test.h"
#include "vstr.h"

static void test_request_round_trip(void **state)
{
    SHOWQ_REQUEST req = {.json = true,
                         .sender = "",
                         .domain = "example.test",
                         .reason = "try\nagain"};
    SHOWQ_REQUEST got = {0};
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(showq_request_encode(&req), SHOWQ_REQUEST_MAX);

    assert_int_equal(showq_request_decode(list, &got, why), 0);
    assert_true(got.json);
    assert_false(got.by_domain);
    assert_string_equal(got.sender, "");
    assert_null(got.recipient);
    assert_string_equal(got.domain, "example.test");
    assert_string_equal(got.reason, "try\nagain");
    attr_list_free(list);
    vstr_free(why);
}

/* refused - showq_request_decode refuses list, saying expect */
static void refused(ATTR_LIST *list, const char *expect)
{
    SHOWQ_REQUEST got = {0};
    VSTR *why = vstr_alloc(100);

    list = proto_test_wire(list, SHOWQ_REQUEST_MAX);
    assert_int_equal(showq_request_decode(list, &got, why), -1);
    assert_non_null(strstr(vstr_str(why), expect));
    attr_list_free(list);
    vstr_free(why);
}

static void test_request_strict(void **state)
{
    ATTR_LIST *list;

    refused(attr_list_alloc(), "request");
    list = attr_list_alloc();
    attr_add_str(list, "request", "delete");
    refused(list, "unknown request");
    list = attr_list_alloc();
    attr_add_str(list, "request", SHOWQ_REQ_LIST);
    attr_add_str(list, "queue_id", "0123456789ABCDEF");
    refused(list, "queue_id");
    list = attr_list_alloc();
    attr_add_str(list, "request", SHOWQ_REQ_LIST);
    attr_add_int(list, "json", 2);
    refused(list, "json");
    list = attr_list_alloc();
    attr_add_str(list, "request", SHOWQ_REQ_LIST);
    attr_add_str(list, "by_domain", "yes");
    refused(list, "by_domain");
}

#define HELLO_V1 "request=5:hello\nprotocol=5:showq\nversion=1:1\n\n"

/* client - showq_list against a peer that greets (HELLO_V1, unless reply
   begins with a greeting of its own) and answers with the wire bytes
   reply (then closes); its return, the text in out, the reason in why */
static int client(const char *reply, VSTR *out, VSTR *why)
{
    SHOWQ_REQUEST req = {.by_domain = true};
    char request[256];
    char *text = NULL;
    size_t text_len = 0;
    FILE *fp = open_memstream(&text, &text_len);
    int sv[2];
    ssize_t got;
    int ret;

    assert_non_null(fp);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    if (strncmp(reply, "request=5:hello", 15) != 0)
        assert_int_equal(write(sv[1], HELLO_V1, strlen(HELLO_V1)),
                         (ssize_t) strlen(HELLO_V1));
    assert_int_equal(write(sv[1], reply, strlen(reply)),
                     (ssize_t) strlen(reply));
    (void) shutdown(sv[1], SHUT_WR);
    ret = showq_list(sv[0], &req, fp, why);
    got = read(sv[1], request, sizeof(request) - 1);
    assert_true(got > 0);
    request[got] = 0;
    assert_string_equal(request, HELLO_V1 "request=4:list\nby_domain=1:1\n\n");
    (void) close(sv[1]);
    fclose(fp);
    vstr_ncpy(out, text, text_len);
    free(text);
    return ret;
}

static void test_client(void **state)
{
    VSTR *out = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);

    assert_int_equal(
        client("text=7:line 1\n\n\ntext=7:line 2\n\n\nstatus=2:ok\n\n", out,
               why),
        0);
    assert_string_equal(vstr_str(out), "line 1\nline 2\n");

    /* Cut short: what came is written, and it is an error. */
    assert_int_equal(client("text=7:line 1\n\n\n", out, why), -1);
    assert_string_equal(vstr_str(out), "line 1\n");
    assert_non_null(strstr(vstr_str(why), "cut short"));

    assert_int_equal(
        client("status=4:fail\nreason=11:bad request\n\n", out, why), -1);
    assert_string_equal(vstr_str(why), "showq: bad request");

    assert_int_equal(client("text=1:x\nstatus=2:ok\n\n", out, why), -1);
    assert_non_null(strstr(vstr_str(why), "bad reply"));
    assert_int_equal(vstr_len(out), 0);
    assert_int_equal(client("status=5:maybe\n\n", out, why), -1);
    assert_non_null(strstr(vstr_str(why), "bad reply"));
    assert_int_equal(client("body=1:x\n\n", out, why), -1);
    assert_non_null(strstr(vstr_str(why), "bad reply"));

    /* A showq of another version: both versions named, nothing listed. */
    assert_int_equal(client("request=5:hello\nprotocol=5:showq\nversion=1:2\n\n"
                            "status=2:ok\n\n",
                            out, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "protocol mismatch: peer speaks "
                                          "showq version 2; this side speaks "
                                          "showq version 1"));
    /* One that does not greet at all. */
    assert_int_equal(client("request=5:hello\nstatus=2:ok\n\n", out, why), -1);
    assert_non_null(strstr(vstr_str(why), "protocol mismatch"));

    vstr_free(out);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_strict),
        cmocka_unit_test(test_client),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
