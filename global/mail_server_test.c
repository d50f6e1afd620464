/*
 * mail_server_test - unit tests for the trigger connections of the daemon
 * skeleton: a wake-up byte that is already queued when the connection's
 * idle timeout fires is read (handed to on_trigger) before the connection
 * is closed, never dropped with it
 *
 * The timeout and the byte landing in the same loop pass cannot be timed
 * from outside, so the test builds a trigger connection the way the
 * server does (its accept callback on a real unix listener) and then
 * calls the connection's event callback as libevent would in that pass:
 * with EV_TIMEOUT and a byte on the socket. The module is included to
 * reach its static callbacks; nothing of it is replaced.
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cmocka.h>

#include "mail_server.c"
#include "testlib.h"

typedef struct TRIGGER_TEST {
    TESTLIB_DIR *dir;
    MAIL_SERVER *server;
    MAIL_SERVER_OPS ops;
    int lfd; /* the listener */
    int client; /* the sender's end */
    char got[16]; /* the bytes on_trigger was given */
    size_t got_len;
} TRIGGER_TEST;

/* trigger_test_on_trigger - keep each byte */
static void trigger_test_on_trigger(MAIL_SERVER *server, int byte, void *ctx)
{
    TRIGGER_TEST *tt = ctx;

    (void) server;
    if (tt->got_len < sizeof(tt->got))
        tt->got[tt->got_len++] = (char) byte;
}

/* trigger_test_setup - a server with on_trigger, a unix listener, and one
   connection to it accepted by the server's own accept callback */
static int trigger_test_setup(void **state)
{
    TRIGGER_TEST *tt = mycalloc(1, sizeof(*tt));
    struct sockaddr_un sun;

    if ((tt->dir = testlib_dir_create("mail_server")) == NULL)
        return -1;
    tt->ops.on_trigger = trigger_test_on_trigger;
    tt->server = mycalloc(1, sizeof(*tt->server));
    tt->server->ops = &tt->ops;
    tt->server->ctx = tt;
    tt->server->spare_fd = -1;
    if ((tt->server->base = event_base_new()) == NULL)
        return -1;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
                 testlib_path(tt->dir, "trigger")) >=
        (int) sizeof(sun.sun_path))
        return -1;
    tt->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    tt->client = socket(AF_UNIX, SOCK_STREAM, 0);
    if (tt->lfd < 0 || tt->client < 0 ||
        bind(tt->lfd, (struct sockaddr *) &sun, sizeof(sun)) < 0 ||
        listen(tt->lfd, 4) < 0 ||
        connect(tt->client, (struct sockaddr *) &sun, sizeof(sun)) < 0)
        return -1;
    mail_server_accept_event(tt->lfd, EV_READ, tt->server);
    if (tt->server->triggers == NULL || tt->server->triggers->next != NULL)
        return -1;
    *state = tt;
    return 0;
}

/* trigger_test_teardown - close and free what is left */
static int trigger_test_teardown(void **state)
{
    TRIGGER_TEST *tt = *state;

    while (tt->server->triggers)
        mail_server_trigger_free(tt->server->triggers);
    event_base_free(tt->server->base);
    myfree(tt->server);
    (void) close(tt->lfd);
    (void) close(tt->client);
    (void) testlib_dir_remove(tt->dir);
    myfree(tt);
    return 0;
}

/* trigger_test_closed - has the server closed the connection (the
   sender sees EOF)? */
static bool trigger_test_closed(TRIGGER_TEST *tt)
{
    char c;

    return recv(tt->client, &c, 1, MSG_DONTWAIT) == 0;
}

/* test_timeout_reads_queued_byte - the idle timeout fires with a byte
   already queued: on_trigger gets it, then the connection is closed */
static void test_timeout_reads_queued_byte(void **state)
{
    TRIGGER_TEST *tt = *state;
    MAIL_SERVER_TRIGGER *trig = tt->server->triggers;

    assert_int_equal(write(tt->client, "W", 1), 1);
    mail_server_trigger_event(trig->fd, EV_TIMEOUT, trig);
    assert_int_equal(tt->got_len, 1);
    assert_int_equal(tt->got[0], 'W');
    assert_null(tt->server->triggers);
    assert_true(trigger_test_closed(tt));
}

/* test_timeout_idle - the timeout with nothing queued: closed, nothing
   handed on */
static void test_timeout_idle(void **state)
{
    TRIGGER_TEST *tt = *state;
    MAIL_SERVER_TRIGGER *trig = tt->server->triggers;

    mail_server_trigger_event(trig->fd, EV_TIMEOUT, trig);
    assert_int_equal(tt->got_len, 0);
    assert_null(tt->server->triggers);
    assert_true(trigger_test_closed(tt));
}

/* test_read_keeps_open - bytes without the timeout: every one handed on,
   the connection kept for more wake-ups; a spurious wake-up (nothing to
   read) keeps it too; EOF closes it */
static void test_read_keeps_open(void **state)
{
    TRIGGER_TEST *tt = *state;
    MAIL_SERVER_TRIGGER *trig = tt->server->triggers;

    assert_int_equal(write(tt->client, "AB", 2), 2);
    mail_server_trigger_event(trig->fd, EV_READ, trig);
    assert_int_equal(tt->got_len, 2);
    assert_memory_equal(tt->got, "AB", 2);
    assert_ptr_equal(tt->server->triggers, trig);
    mail_server_trigger_event(trig->fd, EV_READ, trig);
    assert_ptr_equal(tt->server->triggers, trig);
    assert_int_equal(write(tt->client, "C", 1), 1);
    assert_int_equal(shutdown(tt->client, SHUT_WR), 0);
    mail_server_trigger_event(trig->fd, EV_READ, trig);
    assert_int_equal(tt->got_len, 3);
    assert_int_equal(tt->got[2], 'C');
    mail_server_trigger_event(trig->fd, EV_READ, trig);
    assert_null(tt->server->triggers);
    assert_int_equal(tt->got_len, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timeout_reads_queued_byte,
                                        trigger_test_setup,
                                        trigger_test_teardown),
        cmocka_unit_test_setup_teardown(test_timeout_idle, trigger_test_setup,
                                        trigger_test_teardown),
        cmocka_unit_test_setup_teardown(
            test_read_keeps_open, trigger_test_setup, trigger_test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
