/*
 * cleanup_client_test - the blocking cleanup client against a fake cleanup
 *
 * A forked child listens on a UNIX socket in a fresh folder and speaks
 * cleanup's side of the protocol: it greets (HELLO, with the version the
 * test chooses), checks what arrives (the client's HELLO, BEGIN, RCPT,
 * content in chunks no larger than CLEANUP_CHUNK_MAX, END) and answers
 * END with 0 only when the content is the expected one.
 */
#include "sys_defs.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/wait.h>

#include "attr.h"
#include "cleanup_client.h"
#include "cleanup_proto.h"
#include "sock.h"
#include "vstr.h"

#define TEST_CONTENT_LEN 150000 /* three chunks */
#define TEST_QID "0123456789ABCDEF" /* a valid queue ID */

static char test_dir[64];
static char test_sock[128];
static const char *test_full_name; /* BEGIN must carry it, when set */
static const char *test_ret; /* BEGIN's ret: this, or absent when NULL */
static const char *test_envid; /* BEGIN's envid: this, or absent when NULL */
static long long test_version = CLEANUP_PROTO_VERSION; /* of our HELLO */

/* test_hello - the fake cleanup's HELLO, claiming test_version */
static void test_hello(ATTR_STREAM *stream)
{
    ATTR_LIST *list = attr_list_alloc();
    VSTR *why = vstr_alloc(10);

    attr_add_str(list, CLEANUP_ATTR_REQUEST, CLEANUP_REQ_HELLO);
    attr_add_str(list, CLEANUP_ATTR_PROTOCOL, CLEANUP_PROTO_NAME);
    attr_add_int(list, CLEANUP_ATTR_VERSION, test_version);
    (void) attr_stream_write(stream, list, why);
    attr_list_free(list);
    vstr_free(why);
}

/* test_content - the message the tests send */
static void test_content(VSTR *out)
{
    vstr_cpy(out, "Subject: test\n\n");
    while (vstr_len(out) < TEST_CONTENT_LEN)
        vstr_cat(out, "0123456789abcdefghijklmnopqrstuvwxyz\n");
}

/* test_reply - one STATUS list */
static void test_reply(ATTR_STREAM *stream, int status, const char *qid)
{
    ATTR_LIST *list = attr_list_alloc();
    VSTR *why = vstr_alloc(10);

    attr_add_int(list, CLEANUP_ATTR_STATUS, status);
    if (status)
        attr_add_str(list, CLEANUP_ATTR_REASON, "4.3.0 test failure");
    if (qid)
        attr_add_str(list, CLEANUP_ATTR_QUEUE_ID, qid);
    (void) attr_stream_write(stream, list, why);
    attr_list_free(list);
    vstr_free(why);
}

/* test_attr_is - list has name with value want, or lacks it when want is
   NULL */
static bool test_attr_is(const ATTR_LIST *list, const char *name,
                         const char *want)
{
    const char *value = attr_get_str(list, name);

    if (want == NULL)
        return value == NULL;
    return value != NULL && strcmp(value, want) == 0;
}

/* test_server - cleanup's side for one connection; end_status is what END
   gets when all was well. Exit 0 when the client behaved. */
static void test_server(int lsock, int end_status)
{
    int fd = accept(lsock, NULL, NULL);
    ATTR_STREAM *stream = attr_stream_open(fd, CLEANUP_LIST_MAX, 10000);
    VSTR *why = vstr_alloc(100);
    VSTR *got = vstr_alloc(TEST_CONTENT_LEN);
    VSTR *want = vstr_alloc(TEST_CONTENT_LEN);
    ATTR_LIST *list = NULL;
    int rcpts = 0;
    bool ok = true;

    test_content(want);
    test_hello(stream);
    if (attr_stream_read(stream, &list, why) < 0 ||
        cleanup_hello_take(list, why) < 0) {
        fprintf(stderr, "fake cleanup: HELLO: %s\n", vstr_str(why));
        _exit(4);
    }
    attr_list_free(list);
    if (test_version != CLEANUP_PROTO_VERSION) {
        /* The client must hang up without waiting for a STATUS. */
        bool eof = attr_stream_read(stream, &list, why) == 0 &&
                   attr_stream_read(stream, &list, why) < 0;

        _exit(eof ? 5 : 6);
    }
    if (attr_stream_read(stream, &list, why) < 0 ||
        attr_list_check(list, cleanup_begin_spec,
                        SLUICE_ARRAY_LEN(cleanup_begin_spec), why) < 0 ||
        strcmp(attr_get_str(list, CLEANUP_ATTR_SENDER), "a@test") != 0 ||
        (test_full_name != NULL &&
         (attr_get_str(list, CLEANUP_ATTR_FULL_NAME) == NULL ||
          strcmp(attr_get_str(list, CLEANUP_ATTR_FULL_NAME), test_full_name) !=
              0)) ||
        !test_attr_is(list, CLEANUP_ATTR_RET, test_ret) ||
        !test_attr_is(list, CLEANUP_ATTR_ENVID, test_envid)) {
        fprintf(stderr, "fake cleanup: BEGIN: %s\n", vstr_str(why));
        _exit(2);
    }
    attr_list_free(list);
    test_reply(stream, 0, TEST_QID);
    for (;;) {
        const char *req;

        if (attr_stream_read(stream, &list, why) < 0)
            _exit(3); /* hung up: the abort test */
        req = attr_get_str(list, CLEANUP_ATTR_REQUEST);
        if (strcmp(req, CLEANUP_REQ_RCPT) == 0) {
            rcpts++;
        } else if (strcmp(req, CLEANUP_REQ_DATA) == 0) {
            size_t len;
            const char *data = attr_get_data(list, CLEANUP_ATTR_DATA, &len);

            if (len > CLEANUP_CHUNK_MAX || len == 0)
                ok = false;
            vstr_ncat(got, data, len);
        } else if (strcmp(req, CLEANUP_REQ_END) == 0) {
            attr_list_free(list);
            break;
        }
        attr_list_free(list);
    }
    if (rcpts != 2 || vstr_len(got) != vstr_len(want) ||
        memcmp(vstr_str(got), vstr_str(want), vstr_len(want)) != 0)
        ok = false;
    test_reply(stream, ok ? end_status : 451, NULL);
    attr_stream_close(stream);
    _exit(ok ? 0 : 1);
}

/* test_start - a fake cleanup in a child; returns its pid */
static pid_t test_start(int end_status)
{
    int lsock;
    pid_t pid;

    (void) unlink(test_sock);
    lsock = sock_unix_listen(test_sock, 5, 0600);
    assert_true(lsock >= 0);
    /* The child's accept() must wait for the client. */
    assert_int_equal(sock_nonblock(lsock, false), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        test_server(lsock, end_status);
    close(lsock);
    return pid;
}

/* test_wait - the child's exit status */
static int test_wait(pid_t pid)
{
    int status;

    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

/* test_send - open, two recipients, the content in odd pieces */
static CLEANUP_CLIENT *test_send(VSTR *why)
{
    CLEANUP_CLIENT *client;
    VSTR *content = vstr_alloc(TEST_CONTENT_LEN);

    client = cleanup_client_open(test_sock, 10000, 0, "a@test", "local", why);
    if (client == NULL)
        fail_msg("open: %s", vstr_str(why));
    assert_string_equal(cleanup_client_queue_id(client), TEST_QID);
    assert_int_equal(cleanup_client_rcpt(client, "b@test", NULL, NULL, why), 0);
    assert_int_equal(
        cleanup_client_rcpt(client, "c@test", "rfc822;c@test", "NEVER", why),
        0);
    test_content(content);
    for (size_t pos = 0; pos < vstr_len(content); pos += 7777) {
        size_t len = vstr_len(content) - pos;

        assert_int_equal(cleanup_client_write(client, vstr_str(content) + pos,
                                              len < 7777 ? len : 7777, why),
                         0);
    }
    vstr_free(content);
    return client;
}

/* test_commit - a whole message, queued */
static void test_commit(void **state)
{
    VSTR *why = vstr_alloc(100);
    pid_t pid = test_start(0);
    CLEANUP_CLIENT *client = test_send(why);

    assert_int_equal(cleanup_client_commit(client, why), 0);
    assert_int_equal(test_wait(pid), 0);
    vstr_free(why);
}

/* test_refused - cleanup answers END with 451: -1 and the reason */
static void test_refused(void **state)
{
    VSTR *why = vstr_alloc(100);
    pid_t pid = test_start(451);
    CLEANUP_CLIENT *client = test_send(why);

    assert_int_equal(cleanup_client_commit(client, why), -1);
    assert_non_null(strstr(vstr_str(why), "451 4.3.0 test failure"));
    assert_int_equal(test_wait(pid), 0);
    vstr_free(why);
}

/* test_refused_code - begin with a full name; END refused with 554:
   cleanup_client_end says the code */
static void test_refused_code(void **state)
{
    VSTR *why = vstr_alloc(100);
    VSTR *content = vstr_alloc(TEST_CONTENT_LEN);
    CLEANUP_CLIENT *client;
    pid_t pid;
    int code = -1;

    test_full_name = "Ann Example";
    pid = test_start(554);
    client = cleanup_client_begin(test_sock, 10000, 0, "a@test", "local",
                                  test_full_name, &code, why);
    if (client == NULL)
        fail_msg("begin: %s", vstr_str(why));
    assert_int_equal(code, 0);
    assert_int_equal(cleanup_client_rcpt(client, "b@test", NULL, NULL, why), 0);
    assert_int_equal(cleanup_client_rcpt(client, "c@test", NULL, NULL, why), 0);
    test_content(content);
    assert_int_equal(
        cleanup_client_write(client, vstr_str(content), vstr_len(content), why),
        0);
    assert_int_equal(cleanup_client_end(client, &code, why), -1);
    assert_int_equal(code, 554);
    assert_non_null(strstr(vstr_str(why), "cleanup: 554 "));
    test_full_name = NULL;
    assert_int_equal(test_wait(pid), 0);

    /* no server: not cleanup's answer, so no code */
    (void) unlink(test_sock);
    code = -1;
    assert_null(cleanup_client_begin(test_sock, 1000, 0, "a@test", "local",
                                     NULL, &code, why));
    assert_int_equal(code, 0);
    vstr_free(content);
    vstr_free(why);
}

/* test_dsn_begin - cleanup_client_begin_dsn puts RET and ENVID in BEGIN;
   NULL or "" leaves them out (the fake cleanup checks both) */
static void test_dsn_begin(void **state)
{
    VSTR *why = vstr_alloc(100);
    VSTR *content = vstr_alloc(TEST_CONTENT_LEN);
    static const char *const cases[][2] = {
        {"HDRS", "env.1"}, {"FULL", NULL}, {NULL, "x"}, {NULL, NULL}};

    test_content(content);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        CLEANUP_CLIENT *client;
        pid_t pid;
        int code = -1;

        test_ret = cases[i][0];
        test_envid = cases[i][1];
        pid = test_start(0);
        client = cleanup_client_begin_dsn(
            test_sock, 10000, 0, "a@test", "local", NULL,
            test_ret != NULL ? test_ret : "", test_envid, &code, why);
        if (client == NULL)
            fail_msg("begin: %s", vstr_str(why));
        assert_int_equal(cleanup_client_rcpt(client, "b@test", NULL, NULL, why),
                         0);
        assert_int_equal(cleanup_client_rcpt(client, "c@test", NULL, NULL, why),
                         0);
        assert_int_equal(cleanup_client_write(client, vstr_str(content),
                                              vstr_len(content), why),
                         0);
        assert_int_equal(cleanup_client_end(client, &code, why), 0);
        assert_int_equal(test_wait(pid), 0);
    }
    test_ret = test_envid = NULL;
    vstr_free(content);
    vstr_free(why);
}

/* test_abort - hanging up before END: cleanup sees EOF, nothing queued */
static void test_abort(void **state)
{
    VSTR *why = vstr_alloc(100);
    pid_t pid = test_start(0);
    CLEANUP_CLIENT *client = test_send(why);

    assert_null(cleanup_client_abort(client));
    assert_int_equal(test_wait(pid), 3);
    vstr_free(why);
}

/* test_version_mismatch - a cleanup that speaks another version: the open
   fails with both versions in the reason and no code (not a refusal of
   the message), and the client hangs up after its BEGIN */
static void test_version_mismatch(void **state)
{
    VSTR *why = vstr_alloc(100);
    pid_t pid;
    int code = -1;

    test_version = CLEANUP_PROTO_VERSION + 1;
    pid = test_start(0);
    assert_null(cleanup_client_begin(test_sock, 10000, 0, "a@test", "local",
                                     NULL, &code, why));
    test_version = CLEANUP_PROTO_VERSION;
    assert_int_equal(code, 0);
    assert_non_null(strstr(vstr_str(why), "cleanup: protocol mismatch"));
    assert_non_null(strstr(vstr_str(why), "peer speaks cleanup version 2"));
    assert_non_null(
        strstr(vstr_str(why), "this side speaks cleanup version 1"));
    assert_int_equal(test_wait(pid), 5);
    vstr_free(why);
}

/* test_no_server - nobody listens: NULL with the path in the reason */
static void test_no_server(void **state)
{
    VSTR *why = vstr_alloc(100);

    (void) unlink(test_sock);
    assert_null(cleanup_client_open(test_sock, 1000, 0, "", "local", why));
    assert_non_null(strstr(vstr_str(why), test_sock));
    vstr_free(why);
}

/* setup - a fresh folder for the socket */
static int setup(void **state)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/cleanup_client_test.XXXXXX");
    if (mkdtemp(test_dir) == NULL)
        return -1;
    snprintf(test_sock, sizeof(test_sock), "%s/cleanup", test_dir);
    return 0;
}

/* teardown - remove the folder */
static int teardown(void **state)
{
    (void) unlink(test_sock);
    return rmdir(test_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_refused_code),
        cmocka_unit_test(test_dsn_begin),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_version_mismatch),
        cmocka_unit_test(test_no_server),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
