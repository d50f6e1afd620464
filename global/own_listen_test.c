/*
 * own_listen_test - main.cf listen addresses, and master's socket taken
 * over or not
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "own_listen.h"
#include "vstr.h"

/* test_split_one - addr splits into want_host and want_port */
static void test_split_one(const char *addr, const char *want_host,
                           const char *want_port)
{
    VSTR *host = vstr_alloc(16);
    VSTR *port = vstr_alloc(16);

    assert_int_equal(own_listen_split(addr, host, port), 0);
    assert_string_equal(vstr_str(host), want_host);
    assert_string_equal(vstr_str(port), want_port);
    vstr_free(host);
    vstr_free(port);
}

/* test_split_bad - addr is not ADDRESS:PORT */
static void test_split_bad(const char *addr)
{
    VSTR *host = vstr_alloc(16);
    VSTR *port = vstr_alloc(16);

    assert_int_equal(own_listen_split(addr, host, port), -1);
    vstr_free(host);
    vstr_free(port);
}

/* test_split - the forms api_listen and metrics_listen take */
static void test_split(void **state)
{
    test_split_one("127.0.0.1:9100", "127.0.0.1", "9100");
    test_split_one("[::1]:8080", "::1", "8080");
    test_split_one("[fe80::1%lo]:80", "fe80::1%lo", "80");
    test_split_one(":9100", "", "9100");
    test_split_one("[]:9100", "", "9100");
    test_split_one("::1:80", "::1", "80"); /* the last colon */
    test_split_bad("");
    test_split_bad("9100");
    test_split_bad("127.0.0.1");
    test_split_bad("127.0.0.1:");
    test_split_bad("[::1]");
    test_split_bad("[::1]:");
    test_split_bad("[::1]x:80");
    test_split_bad("[::1:80");
}

/* test_port - the port a socket is bound to */
static int test_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    assert_int_equal(getsockname(fd, (struct sockaddr *) &sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* test_port_of_addr - the port of "127.0.0.1:port" */
static int test_port_of_addr(const char *addr)
{
    return (int) strtol(strchr(addr, ':') + 1, NULL, 10);
}

/* test_bindable - can a plain socket bind 127.0.0.1:port? */
static bool test_bindable(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    sin.sin_port = htons((uint16_t) port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = bind(fd, (struct sockaddr *) &sin, sizeof(sin)) == 0 &&
         listen(fd, 1) == 0;
    (void) close(fd);
    return ok;
}

/* test_inherit - master's socket is taken for its own address only */
static void test_inherit(void **state)
{
    char fd_text[16];
    char addr[32];
    int master_fd;
    int fd;

    (void) unsetenv("SLUICE_OWN_LISTEN_FD");
    (void) unsetenv("SLUICE_OWN_LISTEN_ADDR");
    /* No master: bound here, port 0 gets an ephemeral one. */
    master_fd = own_listen("test_listen", "127.0.0.1:0", 8);
    assert_true(master_fd >= 3);
    assert_true(fcntl(master_fd, F_GETFL) & O_NONBLOCK);
    snprintf(fd_text, sizeof(fd_text), "%d", master_fd);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", test_port(master_fd));
    /* Master's socket for this very address: taken as it is. */
    assert_int_equal(setenv("SLUICE_OWN_LISTEN_FD", fd_text, 1), 0);
    assert_int_equal(setenv("SLUICE_OWN_LISTEN_ADDR", addr, 1), 0);
    assert_int_equal(own_listen("test_listen", addr, 8), master_fd);
    assert_true(fcntl(master_fd, F_GETFD) & FD_CLOEXEC);
    /* Master bound another address: its socket is closed, a new one
       bound (the same port now free, without SO_REUSEPORT). */
    fd = own_listen("test_listen", "127.0.0.1:0", 8);
    assert_true(fd >= 3);
    (void) close(fd);
    /* master's socket is gone: its port can be bound again */
    assert_true(test_bindable(test_port_of_addr(addr)));
    /* A descriptor that is not a listener: ignored. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    snprintf(fd_text, sizeof(fd_text), "%d", fd);
    assert_int_equal(setenv("SLUICE_OWN_LISTEN_FD", fd_text, 1), 0);
    assert_int_equal(setenv("SLUICE_OWN_LISTEN_ADDR", "127.0.0.1:0", 1), 0);
    master_fd = own_listen("test_listen", "127.0.0.1:0", 8);
    assert_int_not_equal(master_fd, fd);
    (void) close(master_fd);
    (void) close(fd);
    (void) unsetenv("SLUICE_OWN_LISTEN_FD");
    (void) unsetenv("SLUICE_OWN_LISTEN_ADDR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_inherit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
