/*
 * deliver_agent_test - the agents' one request reader, over a real socket
 * pair: a whole request (HELLO, DELIVER, RCPTs) comes out as a
 * DELIVER_REQ; a peer of another version, one without a greeting, lists
 * out of order and a connection closed midway are errors with a reason
 * (and the queue ID, when DELIVER was read, for the log)
 */
#include "sys_defs.h"

#include <sys/socket.h>
#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "deliver_agent.h"
#include "deliver_proto.h"
#include "mymalloc.h"
#include "vstr.h"

#define TEST_QID "0123456789ABCDEF"

/* send_lists - write lists (NULL-terminated) to fd, then close it */
static void send_lists(int fd, ATTR_LIST **lists)
{
    VSTR *wire = vstr_alloc(256);

    for (; *lists; lists++) {
        attr_list_encode(*lists, wire);
        attr_list_free(*lists);
    }
    assert_int_equal(write(fd, vstr_str(wire), vstr_len(wire)),
                     (ssize_t) vstr_len(wire));
    (void) close(fd);
    vstr_free(wire);
}

/* read_req - what the reader makes of lists sent by "qmgr" */
static DELIVER_REQ *read_req(ATTR_LIST **lists, VSTR *why, char **qid_seen)
{
    int fds[2];
    ATTR_STREAM *stream;
    DELIVER_REQ *req;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    send_lists(fds[1], lists);
    stream = attr_stream_open(fds[0], DELIVER_LIST_MAX, 5000);
    req = deliver_agent_read(stream, why, qid_seen);
    attr_stream_close(stream);
    return req;
}

/* hello - a HELLO of version */
static ATTR_LIST *hello(long long version)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, DELIVER_ATTR_REQUEST, DELIVER_REQ_HELLO);
    attr_add_str(list, DELIVER_ATTR_PROTOCOL, DELIVER_PROTO_NAME);
    attr_add_int(list, DELIVER_ATTR_VERSION, version);
    return list;
}

/* deliver - a DELIVER for count recipients */
static ATTR_LIST *deliver(size_t count)
{
    DELIVER_REQ out = {.queue_name = "active",
                       .queue_id = TEST_QID,
                       .nexthop = "[127.0.0.1]:25",
                       .sender = "s@x.test",
                       .active_usec = 1,
                       .rcpt_want = count};

    return deliver_req_list(&out);
}

/* rcpt - a RCPT */
static ATTR_LIST *rcpt(long long offset, char *address)
{
    DELIVER_RCPT out = {.offset = offset, .address = address};

    return deliver_rcpt_list(&out);
}

static void test_whole_request(void **state)
{
    ATTR_LIST *lists[] = {hello(DELIVER_PROTO_VERSION), deliver(2),
                          rcpt(10, "a@x.test"), rcpt(20, "b@x.test"), NULL};
    VSTR *why = vstr_alloc(100);
    char *qid = NULL;
    DELIVER_REQ *req = read_req(lists, why, &qid);

    assert_non_null(req);
    assert_null(qid);
    assert_string_equal(req->queue_id, TEST_QID);
    assert_int_equal(req->rcpt_count, 2);
    assert_string_equal(req->rcpts[1].address, "b@x.test");
    assert_true(req->rcpts[1].offset == 20);
    deliver_req_free(req);
    vstr_free(why);
}

/* refused - the reader refuses lists, saying expect */
static void refused(ATTR_LIST **lists, const char *expect, bool qid_known)
{
    VSTR *why = vstr_alloc(100);
    char *qid = NULL;

    assert_null(read_req(lists, why, &qid));
    if (strstr(vstr_str(why), expect) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\"", vstr_str(why), expect);
    if (qid_known)
        assert_string_equal(qid, TEST_QID);
    else
        assert_null(qid);
    myfree(qid);
    vstr_free(why);
}

static void test_refused(void **state)
{
    ATTR_LIST *newer[] = {hello(DELIVER_PROTO_VERSION + 1), deliver(1),
                          rcpt(10, "a@x.test"), NULL};
    ATTR_LIST *no_hello[] = {deliver(1), rcpt(10, "a@x.test"), NULL};
    ATTR_LIST *two_hellos[] = {hello(DELIVER_PROTO_VERSION),
                               hello(DELIVER_PROTO_VERSION), NULL};
    ATTR_LIST *cut[] = {hello(DELIVER_PROTO_VERSION), deliver(3),
                        rcpt(10, "a@x.test"), NULL};
    ATTR_LIST *deliver_twice[] = {hello(DELIVER_PROTO_VERSION), deliver(2),
                                  deliver(2), NULL};

    refused(newer,
            "protocol mismatch: peer speaks deliver version 5; this side "
            "speaks deliver version 4",
            false);
    refused(no_hello, "no greeting (first list is \"deliver\")", false);
    refused(two_hellos, "expected deliver, got \"hello\"", false);
    refused(cut, "", true);
    refused(deliver_twice, "expected rcpt, got \"deliver\"", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_request),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
