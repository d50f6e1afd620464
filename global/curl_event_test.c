/*
 * curl_event_test - unit tests for libcurl on a libevent base: an HTTP
 * GET from a server on loopback run by the same loop (sockets and
 * timer), and a refused connection, each handed to done once
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "curl_event.h"
#include "vstr.h"

#define REPLY "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"

typedef struct RESULT {
    int calls;
    CURLcode code;
    CURL *easy;
    VSTR *body;
    struct event_base *base;
} RESULT;

/* test_done - the transfer ended: stop the loop */
static void test_done(CURL *easy, CURLcode code, void *arg)
{
    RESULT *res = arg;

    res->calls++;
    res->code = code;
    res->easy = easy;
    event_base_loopbreak(res->base);
}

/* test_write - the body */
static size_t test_write(char *data, size_t size, size_t nmemb, void *arg)
{
    vstr_ncat(((RESULT *) arg)->body, data, size * nmemb);
    return size * nmemb;
}

/* test_serve - one request on fd: answer it, close */
static void test_serve(evutil_socket_t fd, short what, void *arg)
{
    char buf[4096];

    if (read(fd, buf, sizeof(buf)) > 0)
        assert_int_equal(write(fd, REPLY, strlen(REPLY)), strlen(REPLY));
    close(fd);
}

/* test_accept - a client: serve it once readable */
static void test_accept(evutil_socket_t fd, short what, void *arg)
{
    int conn = accept(fd, NULL, NULL);

    assert_true(conn >= 0);
    assert_int_equal(
        event_base_once(arg, conn, EV_READ, test_serve, NULL, NULL), 0);
}

/* test_listen - a socket on 127.0.0.1, its port in url */
static int test_listen(char *url, size_t len)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *) &sin, &slen), 0);
    assert_true(snprintf(url, len, "http://127.0.0.1:%d/x",
                         ntohs(sin.sin_port)) < (int) len);
    return fd;
}

/* test_get - url fetched on the loop; the result */
static void test_get(RESULT *res, const char *url)
{
    CURL_EVENT *ce = curl_event_create(res->base, test_done, res);
    CURL *easy = curl_easy_init();
    struct timeval limit = {10, 0};

    assert_non_null(ce);
    assert_non_null(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, test_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, res);
    assert_int_equal(curl_multi_add_handle(curl_event_multi(ce), easy),
                     CURLM_OK);
    /* Bounded: libcurl's own timeout ends the transfer before this. */
    event_base_loopexit(res->base, &limit);
    event_base_dispatch(res->base);
    assert_ptr_equal(res->easy, easy);
    curl_multi_remove_handle(curl_event_multi(ce), easy);
    curl_easy_cleanup(easy);
    curl_event_free(ce);
}

/* test_fetch - a GET answered by a server on the same loop */
static void test_fetch(void **state)
{
    RESULT res = {.body = vstr_alloc(100), .base = event_base_new()};
    char url[64];
    int fd = test_listen(url, sizeof(url));
    struct event *ev =
        event_new(res.base, fd, EV_READ | EV_PERSIST, test_accept, res.base);

    event_add(ev, NULL);
    test_get(&res, url);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.code, CURLE_OK);
    assert_string_equal(vstr_str(res.body), "hello");
    event_free(ev);
    close(fd);
    event_base_free(res.base);
    vstr_free(res.body);
}

/* test_refused - nobody listens: done hears the error */
static void test_refused(void **state)
{
    RESULT res = {.body = vstr_alloc(100), .base = event_base_new()};
    char url[64];

    close(test_listen(url, sizeof(url)));
    test_get(&res, url);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.code, CURLE_COULDNT_CONNECT);
    event_base_free(res.base);
    vstr_free(res.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_refused),
    };

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
