/*
 * spf_proto_test - the spf protocol: a request and both kinds of reply come
 * back unchanged through the wire form; the readers refuse what is not one
 * (a missing or unknown attribute, a result outside RFC 7208's seven, a
 * CR LF or other control byte in a text smtpd puts in a header); clean
 * makes any text acceptable; and the client gets the daemon's answer, or
 * an error (never a result) for a daemon that says nothing or speaks
 * another version, over a real socket
 */
#include "sys_defs.h"

#include <poll.h>
#include <setjmp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "attr.h"
#include "proto_test.h"
#include "spf_proto.h"
#include "vstr.h"

static void test_request_round_trip(void **state)
{
    SPF_REQUEST req = {.client_address = "192.0.2.1",
                       .helo_name = "client.test",
                       .sender = "",
                       .helo_check = true};
    SPF_REQUEST got = {0};
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list =
        proto_test_wire(spf_request_encode(&req), SPF_REQUEST_MAX);

    assert_int_equal(spf_request_decode(list, &got, why), 0);
    assert_string_equal(got.client_address, "192.0.2.1");
    assert_string_equal(got.helo_name, "client.test");
    assert_string_equal(got.sender, "");
    assert_true(got.helo_check);
    attr_list_free(list);
    vstr_free(why);
}

static void test_request_strict(void **state)
{
    VSTR *why = vstr_alloc(100);
    SPF_REQUEST got = {0};
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", SPF_REQ_CHECK);
    attr_add_str(list, "client_address", "192.0.2.1");
    attr_add_str(list, "helo_name", "h.test");
    assert_int_equal(spf_request_decode(list, &got, why), -1);
    assert_non_null(strstr(vstr_str(why), "sender"));
    attr_add_str(list, "sender", "a@b.test");
    assert_int_equal(spf_request_decode(list, &got, why), -1);
    assert_non_null(strstr(vstr_str(why), "helo_check"));
    attr_add_int(list, "helo_check", 0);
    assert_int_equal(spf_request_decode(list, &got, why), 0);
    assert_false(got.helo_check);
    attr_add_str(list, "queue_id", "X");
    assert_int_equal(spf_request_decode(list, &got, why), -1);
    assert_non_null(strstr(vstr_str(why), "queue_id"));
    attr_list_free(list);
    vstr_free(why);
}

static void test_reply_round_trip(void **state)
{
    SPF_REPLY ok = {.ok = true,
                    .result = SPF_PROTO_SOFTFAIL,
                    .explanation = "",
                    .received_spf = "softfail (mx.test: ...) client-ip=1;",
                    .helo_result = SPF_PROTO_FAIL};
    SPF_REPLY bad = {.ok = false, .reason = "libspf2 went away"};
    SPF_REPLY got = {0};
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = proto_test_wire(spf_reply_encode(&ok), SPF_REPLY_MAX);

    assert_int_equal(spf_reply_decode(list, &got, why), 0);
    assert_true(got.ok);
    assert_int_equal(got.result, SPF_PROTO_SOFTFAIL);
    assert_string_equal(got.received_spf, ok.received_spf);
    assert_int_equal(got.helo_result, SPF_PROTO_FAIL);
    attr_list_free(list);
    list = proto_test_wire(spf_reply_encode(&bad), SPF_REPLY_MAX);
    assert_int_equal(spf_reply_decode(list, &got, why), 0);
    assert_false(got.ok);
    assert_string_equal(got.reason, "libspf2 went away");
    attr_list_free(list);
    vstr_free(why);
}

/* reply_refused - spf_reply_decode refuses an ok reply with these
   values, saying expect */
static void reply_refused_helo(const char *result, const char *explanation,
                               const char *received, const char *helo_result,
                               const char *expect)
{
    SPF_REPLY got = {0};
    VSTR *why = vstr_alloc(100);
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "status", SPF_STAT_OK);
    attr_add_str(list, "result", result);
    attr_add_str(list, "explanation", explanation);
    attr_add_str(list, "received_spf", received);
    if (helo_result != NULL)
        attr_add_str(list, "helo_result", helo_result);
    list = proto_test_wire(list, SPF_REPLY_MAX);
    assert_int_equal(spf_reply_decode(list, &got, why), -1);
    assert_non_null(strstr(vstr_str(why), expect));
    attr_list_free(list);
    vstr_free(why);
}

static void reply_refused(const char *result, const char *explanation,
                          const char *received, const char *expect)
{
    reply_refused_helo(result, explanation, received, "none", expect);
}

static void test_reply_strict(void **state)
{
    VSTR *long_text = vstr_alloc(1000);

    for (int i = 0; i <= SPF_TEXT_MAX; i++)
        vstr_addch(long_text, 'x');
    reply_refused("Pass", "", "pass", "unknown result");
    reply_refused("", "", "pass", "unknown result");
    reply_refused("pass", "", "pass\r\nX-Injected: 1", "received_spf");
    reply_refused("fail", "see\nhere", "fail", "explanation");
    reply_refused("fail", "", "fail \x7f", "received_spf");
    reply_refused("fail", "", vstr_str(long_text), "received_spf");
    reply_refused_helo("pass", "", "pass", NULL, "helo_result");
    reply_refused_helo("pass", "", "pass", "Fail", "unknown helo_result");
    vstr_free(long_text);
}

static void test_clean(void **state)
{
    VSTR *out = vstr_alloc(10);
    VSTR *in = vstr_alloc(2000);

    spf_proto_clean("pass\r\n\tX: \xc3\xa9", out);
    assert_string_equal(vstr_str(out), "pass???X: ??");
    /* Too long: cut at a space before the limit. */
    for (int i = 0; i < 300; i++)
        vstr_cat(in, "abcd ");
    spf_proto_clean(vstr_str(in), out);
    assert_true(vstr_len(out) <= SPF_TEXT_MAX);
    assert_true(vstr_len(out) > SPF_TEXT_MAX - 6);
    assert_int_equal(vstr_str(out)[vstr_len(out) - 1], 'd');
    vstr_free(in);
    vstr_free(out);
}

static void test_result_names(void **state)
{
    static const char *const names[] = {"none",     "neutral",  "pass",
                                        "fail",     "softfail", "temperror",
                                        "permerror"};

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(names); i++) {
        assert_int_equal(spf_proto_result_code(names[i]), (int) i);
        assert_string_equal(spf_proto_result_name((SPF_PROTO_RESULT) i),
                            names[i]);
    }
    assert_int_equal(spf_proto_result_code("hardfail"), -1);
}

/* serve - a fake spf service at dir/private/spf that accepts one client,
   writes reply (wire bytes) and closes; the pid of the child */
static pid_t serve(const char *dir, const char *reply)
{
    char path[200];
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    pid_t pid;

    snprintf(path, sizeof(path), "%s/private", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/private/spf", dir);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *) &sun, sizeof(sun)), 0);
    assert_int_equal(listen(fd, 1), 0);
    if ((pid = fork()) == 0) {
        int conn = accept(fd, NULL, NULL);
        char buf[4096];

        if (conn >= 0) {
            if (write(conn, reply, strlen(reply)) < 0)
                _exit(1);
            /* Read all the client sends (until it closes, or says
               nothing for half a second), so that none of its writes
               meets a closed socket (EPIPE), however it splits them. */
            struct pollfd pfd = {.fd = conn, .events = POLLIN};

            while (poll(&pfd, 1, 500) > 0 && read(conn, buf, sizeof(buf)) > 0)
                continue;
            close(conn);
        }
        _exit(0);
    }
    close(fd);
    return pid;
}

/* ask - spf_proto_check against a fake service answering reply */
static int ask(const char *reply, SPF_PROTO_RESULT *result, VSTR *received,
               VSTR *why)
{
    char dir[] = "/tmp/spf_proto_test.XXXXXX";
    char path[200];
    SPF_REQUEST req = {.client_address = "192.0.2.1",
                       .helo_name = "h.test",
                       .sender = "a@b.test"};
    VSTR *explanation = vstr_alloc(10);
    pid_t pid;
    int ret;

    assert_non_null(mkdtemp(dir));
    pid = serve(dir, reply);
    ret = spf_proto_check(dir, 2000, &req, result, explanation, received, why);
    waitpid(pid, NULL, 0);
    snprintf(path, sizeof(path), "%s/private/spf", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/private", dir);
    rmdir(path);
    rmdir(dir);
    vstr_free(explanation);
    return ret;
}

/* SPF_PROTO_VERSION 3 (2: DKIM requests on the same service; 3: the
   HELO identity) */
#define HELLO_CUR "request=5:hello\nprotocol=3:spf\nversion=1:3\n\n"

static void test_client(void **state)
{
    SPF_PROTO_RESULT result = SPF_PROTO_NONE;
    VSTR *received = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    assert_int_equal(ask(HELLO_CUR "status=2:ok\nresult=4:pass\nexplanation=0:"
                                   "\nreceived_spf=4:pass\nhelo_result=4:none"
                                   "\n\n",
                         &result, received, why),
                     0);
    assert_int_equal(result, SPF_PROTO_PASS);
    assert_string_equal(vstr_str(received), "pass");
    /* No reply at all: an error, not a result. */
    assert_int_equal(ask(HELLO_CUR, &result, received, why), -1);
    assert_non_null(strstr(vstr_str(why), "no reply"));
    /* Another version. */
    assert_int_equal(ask("request=5:hello\nprotocol=3:spf\nversion=1:2\n\n",
                         &result, received, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "protocol mismatch"));
    /* The daemon could not check. */
    assert_int_equal(ask(HELLO_CUR "status=4:fail\nreason=7:no dns!\n\n",
                         &result, received, why),
                     -1);
    assert_non_null(strstr(vstr_str(why), "no dns!"));
    vstr_free(received);
    vstr_free(why);
}

static void test_client_no_service(void **state)
{
    SPF_PROTO_RESULT result;
    SPF_REQUEST req = {
        .client_address = "192.0.2.1", .helo_name = "", .sender = ""};
    VSTR *a = vstr_alloc(10);
    VSTR *b = vstr_alloc(10);
    VSTR *why = vstr_alloc(10);

    assert_int_equal(
        spf_proto_check("/nonexistent", 1000, &req, &result, a, b, why), -1);
    assert_non_null(strstr(vstr_str(why), "cannot connect to the spf service"));
    vstr_free(a);
    vstr_free(b);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_strict),
        cmocka_unit_test(test_reply_round_trip),
        cmocka_unit_test(test_reply_strict),
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_client_no_service),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
