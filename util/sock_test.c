/*
 * sock_test - unit tests for sockets and triggers
 *
 * Everything runs over real sockets: UNIX sockets in a fresh directory under
 * /tmp, TCP on loopback only. No test asks DNS anything.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <setjmp.h>
#include <cmocka.h>

#include "sock.h"
#include "testlib.h"
#include "trigger.h"

typedef struct SOCK_TEST {
    TESTLIB_DIR *tmp;
    const char *dir; /* fresh temporary directory: tmp->path */
    char path[PATH_MAX]; /* a socket file inside it */
} SOCK_TEST;

static int sock_test_setup(void **state)
{
    SOCK_TEST *t = calloc(1, sizeof(*t));

    if (t == NULL || (t->tmp = testlib_dir_create("sock_test")) == NULL) {
        free(t);
        return -1;
    }
    t->dir = t->tmp->path;
    snprintf(t->path, sizeof(t->path), "%s/sock", t->dir);
    *state = t;
    return 0;
}

static int sock_test_teardown(void **state)
{
    SOCK_TEST *t = *state;
    int ret = testlib_dir_remove(t->tmp);

    free(t);
    return ret;
}

/* assert_cloexec - the descriptor must not survive exec */
static void assert_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);

    assert_true(flags >= 0);
    assert_true(flags & FD_CLOEXEC);
}

/* assert_nonblock - the descriptor must be non-blocking */
static void assert_nonblock(int fd, bool want)
{
    int flags = fcntl(fd, F_GETFL);

    assert_true(flags >= 0);
    assert_int_equal(!!(flags & O_NONBLOCK), want);
}

/* accept_wait - accept one connection on a non-blocking listener */
static int accept_wait(int listen_fd)
{
    struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};

    assert_int_equal(poll(&pfd, 1, 5000), 1);
    return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
}

/* assert_pass_byte - a byte written on one end arrives at the other */
static void assert_pass_byte(int from, int to, char ch)
{
    char got = 0;

    assert_int_equal(write(from, &ch, 1), 1);
    assert_int_equal(read(to, &got, 1), 1);
    assert_int_equal(got, ch);
}

static void test_unix_listen_connect(void **state)
{
    SOCK_TEST *t = *state;
    struct stat st;
    int lfd;
    int cfd;
    int afd;

    lfd = sock_unix_listen(t->path, 10, 0622);
    assert_true(lfd >= 0);
    assert_cloexec(lfd);
    assert_nonblock(lfd, true);
    assert_int_equal(lstat(t->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0622);

    cfd = sock_unix_connect(t->path);
    assert_true(cfd >= 0);
    assert_cloexec(cfd);
    assert_nonblock(cfd, false);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    assert_pass_byte(cfd, afd, 'x');
    assert_pass_byte(afd, cfd, 'y');
    close(afd);
    close(cfd);
    close(lfd);
}

static void test_unix_stale_replaced(void **state)
{
    SOCK_TEST *t = *state;
    int lfd;
    int cfd;
    int afd;

    /* A listener that died leaves its socket file behind. */
    lfd = sock_unix_listen(t->path, 10, 0600);
    assert_true(lfd >= 0);
    close(lfd);
    assert_int_equal(sock_unix_connect(t->path), -1);
    assert_int_equal(errno, ECONNREFUSED);

    lfd = sock_unix_listen(t->path, 10, 0600);
    assert_true(lfd >= 0);
    cfd = sock_unix_connect(t->path);
    assert_true(cfd >= 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    assert_pass_byte(cfd, afd, 'z');
    close(afd);
    close(cfd);
    close(lfd);
}

static void test_unix_not_a_socket(void **state)
{
    SOCK_TEST *t = *state;
    struct stat st;
    int fd;

    /* A regular file where the socket should be is data: keep it. */
    fd = open(t->path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "data", 4), 4);
    close(fd);
    assert_int_equal(sock_unix_listen(t->path, 10, 0600), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(stat(t->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 4);
}

static void test_unix_errors(void **state)
{
    SOCK_TEST *t = *state;
    char long_path[PATH_MAX];
    char missing[PATH_MAX];
    struct sockaddr_un sun;
    size_t len;

    len = (size_t) snprintf(long_path, sizeof(long_path), "%s/", t->dir);
    while (len < sizeof(sun.sun_path) + 10)
        long_path[len++] = 'a';
    long_path[len] = 0;
    errno = 0;
    assert_int_equal(sock_unix_listen(long_path, 10, 0600), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    errno = 0;
    assert_int_equal(sock_unix_connect(long_path), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    errno = 0;
    assert_int_equal(trigger_send(long_path, TRIGGER_WAKEUP), -1);
    assert_int_equal(errno, ENAMETOOLONG);

    /* Exactly one byte too long for sun_path (no room for the NUL). */
    long_path[sizeof(sun.sun_path)] = 0;
    errno = 0;
    assert_int_equal(sock_unix_listen(long_path, 10, 0600), -1);
    assert_int_equal(errno, ENAMETOOLONG);

    snprintf(missing, sizeof(missing), "%s/nodir/sock", t->dir);
    assert_int_equal(sock_unix_listen(missing, 10, 0600), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(sock_unix_connect(missing), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(sock_unix_listen("", 10, 0600), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_trigger_arrives(void **state)
{
    SOCK_TEST *t = *state;
    char buf[4];
    int lfd;
    int afd;

    lfd = sock_unix_listen(t->path, 10, 0600);
    assert_true(lfd >= 0);
    assert_int_equal(trigger_send(t->path, TRIGGER_WAKEUP), 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    /* One byte, then end of file: the sender closed. */
    assert_int_equal(read(afd, buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], TRIGGER_WAKEUP);
    assert_int_equal(read(afd, buf, sizeof(buf)), 0);
    close(afd);

    /* Any byte value, including 0 and 255, goes through unchanged. */
    assert_int_equal(trigger_send(t->path, 255), 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    assert_int_equal(read(afd, buf, sizeof(buf)), 1);
    assert_int_equal((unsigned char) buf[0], 255);
    close(afd);

    assert_int_equal(trigger_send(t->path, 256), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(trigger_send(t->path, -1), -1);
    assert_int_equal(errno, EINVAL);
    close(lfd);
}

/* test_trigger_conn_kept - a kept trigger connection: many bytes on one
   connection; when the receiver closes it (restart, idle timeout) the
   next byte goes on a new one; nobody listening is an error, and the
   connection is made again once a receiver is back */
static void test_trigger_conn_kept(void **state)
{
    SOCK_TEST *t = *state;
    struct pollfd pfd;
    TRIGGER_CONN *conn = trigger_conn_create(t->path);
    char buf[8];
    int lfd;
    int afd;

    errno = 0;
    assert_int_equal(trigger_conn_send(conn, TRIGGER_WAKEUP), -1);
    assert_int_equal(errno, ENOENT);
    lfd = sock_unix_listen(t->path, 10, 0600);
    assert_true(lfd >= 0);
    assert_int_equal(trigger_conn_send(conn, 'a'), 0);
    assert_int_equal(trigger_conn_send(conn, 'b'), 0);
    assert_int_equal(trigger_conn_send(conn, 'c'), 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    assert_int_equal(read(afd, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "abc", 3);
    /* One connection only: nothing else waits to be accepted. */
    pfd = (struct pollfd){.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0);

    /* The receiver closes it: the next byte arrives on a new connection. */
    close(afd);
    assert_int_equal(trigger_conn_send(conn, 'd'), 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    assert_int_equal(read(afd, buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], 'd');
    assert_int_equal(trigger_conn_send(conn, 256), -1);
    assert_int_equal(errno, EINVAL);

    /* The sender goes: the receiver sees end of file. */
    conn = trigger_conn_free(conn);
    assert_null(conn);
    assert_int_equal(read(afd, buf, sizeof(buf)), 0);
    close(afd);
    close(lfd);
}

static void test_trigger_nobody_listening(void **state)
{
    SOCK_TEST *t = *state;
    int lfd;

    assert_int_equal(trigger_send(t->path, TRIGGER_WAKEUP), -1);
    assert_int_equal(errno, ENOENT);
    lfd = sock_unix_listen(t->path, 10, 0600);
    assert_true(lfd >= 0);
    close(lfd);
    assert_int_equal(trigger_send(t->path, TRIGGER_WAKEUP), -1);
    assert_int_equal(errno, ECONNREFUSED);
}

static void test_trigger_full_backlog(void **state)
{
    SOCK_TEST *t = *state;
    int lfd;
    int sent = 0;
    int ret = 0;

    /* Nobody accepts: the sender must fail fast, not wait (alarm = hang). */
    lfd = sock_unix_listen(t->path, 1, 0600);
    assert_true(lfd >= 0);
    alarm(10);
    while (sent < 100 && (ret = trigger_send(t->path, TRIGGER_SCAN_ALL)) == 0)
        sent++;
    alarm(0);
    assert_int_equal(ret, -1);
    assert_int_equal(errno, EAGAIN);
    assert_true(sent >= 1);
    close(lfd);
}

static void test_inet_listen_connect(void **state)
{
    struct sockaddr_in sin;
    socklen_t sin_len = sizeof(sin);
    int on = 0;
    socklen_t on_len = sizeof(on);
    int lfd;
    int cfd;
    int afd;

    lfd = sock_inet_listen("127.0.0.1:0", 10);
    assert_true(lfd >= 0);
    assert_cloexec(lfd);
    assert_nonblock(lfd, true);
    assert_int_equal(getsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, &on_len),
                     0);
    assert_true(on);
    assert_int_equal(getsockname(lfd, (struct sockaddr *) &sin, &sin_len), 0);
    assert_int_equal(sin.sin_family, AF_INET);
    assert_int_equal(ntohl(sin.sin_addr.s_addr), INADDR_LOOPBACK);
    assert_true(ntohs(sin.sin_port) > 0);

    cfd = sock_inet_connect("127.0.0.1", ntohs(sin.sin_port));
    assert_true(cfd >= 0);
    assert_cloexec(cfd);
    assert_nonblock(cfd, false);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    assert_pass_byte(cfd, afd, 'q');
    close(afd);
    close(cfd);

    /* The courtesy name, never looked up. */
    cfd = sock_inet_connect("localhost", ntohs(sin.sin_port));
    assert_true(cfd >= 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    close(afd);
    close(cfd);
    close(lfd);

    /* Nobody on the port any more. */
    assert_int_equal(sock_inet_connect("127.0.0.1", ntohs(sin.sin_port)), -1);
    assert_int_equal(errno, ECONNREFUSED);
}

/* inet_listen_port - listen on addr and return the bound port, or -1 */
static int inet_listen_port(const char *addr, int *family)
{
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    int fd = sock_inet_listen(addr, 5);
    int port;

    if (fd < 0)
        return -1;
    assert_int_equal(getsockname(fd, (struct sockaddr *) &ss, &ss_len), 0);
    *family = ss.ss_family;
    if (ss.ss_family == AF_INET6)
        port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
    else
        port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
    close(fd);
    return port;
}

static void test_inet_address_forms(void **state)
{
    int family;
    int port;
    int lfd;
    int cfd;
    int afd;
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);

    /* Wildcards: "port" and "*:port", reachable over IPv4 loopback. */
    assert_true(inet_listen_port("0", &family) > 0);
    assert_true(inet_listen_port("*:0", &family) > 0);
    lfd = sock_inet_listen("*:0", 5);
    assert_true(lfd >= 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *) &ss, &ss_len), 0);
    port = ss.ss_family == AF_INET6
               ? ntohs(((struct sockaddr_in6 *) &ss)->sin6_port)
               : ntohs(((struct sockaddr_in *) &ss)->sin_port);
    cfd = sock_inet_connect("127.0.0.1", port);
    assert_true(cfd >= 0);
    afd = accept_wait(lfd);
    assert_true(afd >= 0);
    close(afd);
    close(cfd);
    close(lfd);

    port = inet_listen_port("localhost:0", &family);
    assert_true(port > 0);
    assert_int_equal(family, AF_INET);

    /* IPv6 loopback, when this kernel has IPv6 at all. */
    if ((lfd = sock_inet_listen("[::1]:0", 5)) >= 0) {
        ss_len = sizeof(ss);
        assert_int_equal(getsockname(lfd, (struct sockaddr *) &ss, &ss_len), 0);
        assert_int_equal(ss.ss_family, AF_INET6);
        port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        cfd = sock_inet_connect("::1", port);
        assert_true(cfd >= 0);
        afd = accept_wait(lfd);
        assert_true(afd >= 0);
        close(afd);
        close(cfd);
        cfd = sock_inet_connect("[::1]", port);
        assert_true(cfd >= 0);
        close(cfd);
        close(lfd);
    } else {
        assert_true(errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL);
    }
}

static void test_inet_bad_addresses(void **state)
{
    static const char *const bad[] = {
        "",
        ":",
        ":25",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:25x",
        "127.0.0.1: 25",
        "*:",
        "*",
        "x",
        "example.com:25",
        "localhost",
        "localhost.:25",
        "1.2.3.4.5:25",
        "::1:25",
        "[::1",
        "[::1]",
        "[::1]25",
        "[]:25",
        "[127.0.0.1]:25",
        "[::1]:",
        "999.0.0.1:25",
        "127.0.0.1:99999999999999999999",
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        errno = 0;
        if (sock_inet_listen(bad[i], 5) != -1 || errno != EINVAL)
            fail_msg("sock_inet_listen(\"%s\") accepted or errno %d", bad[i],
                     errno);
    }
    errno = 0;
    assert_int_equal(sock_inet_connect("example.com", 25), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(sock_inet_connect("127.0.0.1", 0), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(sock_inet_connect("127.0.0.1", 65536), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(sock_inet_connect("", 25), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(sock_inet_connect("[]", 25), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_flags(void **state)
{
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(sock_cloexec(fds[0], true), 0);
    assert_cloexec(fds[0]);
    assert_int_equal(sock_cloexec(fds[0], false), 0);
    assert_int_equal(fcntl(fds[0], F_GETFD) & FD_CLOEXEC, 0);
    assert_int_equal(sock_nonblock(fds[0], true), 0);
    assert_nonblock(fds[0], true);
    assert_int_equal(sock_nonblock(fds[0], false), 0);
    assert_nonblock(fds[0], false);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(sock_nonblock(fds[0], true), -1);
    assert_int_equal(errno, EBADF);
    assert_int_equal(sock_cloexec(fds[0], true), -1);
    assert_int_equal(errno, EBADF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unix_listen_connect,
                                        sock_test_setup, sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_unix_stale_replaced,
                                        sock_test_setup, sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_unix_not_a_socket, sock_test_setup,
                                        sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_unix_errors, sock_test_setup,
                                        sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_trigger_conn_kept, sock_test_setup,
                                        sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_trigger_arrives, sock_test_setup,
                                        sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_trigger_nobody_listening,
                                        sock_test_setup, sock_test_teardown),
        cmocka_unit_test_setup_teardown(test_trigger_full_backlog,
                                        sock_test_setup, sock_test_teardown),
        cmocka_unit_test(test_inet_listen_connect),
        cmocka_unit_test(test_inet_address_forms),
        cmocka_unit_test(test_inet_bad_addresses),
        cmocka_unit_test(test_flags),
    };

    return cmocka_run_group_tests_name("sock", tests, NULL, NULL);
}
