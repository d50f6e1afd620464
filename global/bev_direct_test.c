/*
 * bev_direct_test - bev_direct_write over a real socket pair: straight
 * out when nothing is queued, queued behind what is, in order, and the
 * write callback only for queued bytes
 */
#include "sys_defs.h"

#include <sys/socket.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bev_direct.h"

typedef struct TEST_STATE {
    struct event_base *base;
    struct bufferevent *bev;
    int peer;
    int write_cbs;
} TEST_STATE;

static void test_write_cb(struct bufferevent *bev, void *arg)
{
    ((TEST_STATE *) arg)->write_cbs++;
}

static int setup(void **state)
{
    TEST_STATE *st = calloc(1, sizeof(*st));
    int sv[2];
    int small = 4096;

    if (st == NULL || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    (void) setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    (void) evutil_make_socket_nonblocking(sv[0]);
    st->base = event_base_new();
    st->bev = bufferevent_socket_new(st->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(st->bev, NULL, test_write_cb, NULL, st);
    bufferevent_enable(st->bev, EV_READ | EV_WRITE);
    /* Enabling EV_WRITE runs the write callback once, output or not. */
    event_base_loop(st->base, EVLOOP_NONBLOCK);
    st->write_cbs = 0;
    st->peer = sv[1];
    *state = st;
    return 0;
}

static int teardown(void **state)
{
    TEST_STATE *st = *state;

    bufferevent_free(st->bev);
    event_base_free(st->base);
    (void) close(st->peer);
    free(st);
    return 0;
}

/* drain_peer - read everything the peer has, running the loop meanwhile */
static size_t drain_peer(TEST_STATE *st, char *out, size_t size)
{
    size_t got = 0;

    for (int rounds = 0; rounds < 10000; rounds++) {
        ssize_t n;

        event_base_loop(st->base, EVLOOP_NONBLOCK);
        n = recv(st->peer, out + got, size - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t) n;
        else if (evbuffer_get_length(bufferevent_get_output(st->bev)) == 0)
            break;
    }
    return got;
}

/* test_straight_out - nothing queued: all of it goes out at once, no
   write callback follows */
static void test_straight_out(void **state)
{
    TEST_STATE *st = *state;
    char buf[64];

    assert_int_equal(bev_direct_write(st->bev, "250 Ok\r\n", 8),
                     BEV_DIRECT_ALL_SENT);
    assert_int_equal(recv(st->peer, buf, sizeof(buf), MSG_DONTWAIT), 8);
    assert_memory_equal(buf, "250 Ok\r\n", 8);
    event_base_loop(st->base, EVLOOP_NONBLOCK);
    assert_int_equal(st->write_cbs, 0);
}

/* test_partial_then_queued - more than the socket takes: the rest is
   queued, a later write queues behind it, the peer gets every byte in
   order, and the write callback comes once the queue drained */
static void test_partial_then_queued(void **state)
{
    TEST_STATE *st = *state;
    size_t big = 1024 * 1024;
    char *data = malloc(big + 4);
    char *got = malloc(big + 4 + 1);

    for (size_t i = 0; i < big; i++)
        data[i] = (char) ('a' + i % 26);
    assert_int_equal(bev_direct_write(st->bev, data, big), BEV_DIRECT_QUEUED);
    assert_true(evbuffer_get_length(bufferevent_get_output(st->bev)) > 0);
    assert_true(evbuffer_get_length(bufferevent_get_output(st->bev)) < big);
    assert_int_equal(bev_direct_write(st->bev, "TAIL", 4), BEV_DIRECT_QUEUED);
    memcpy(data + big, "TAIL", 4);
    assert_int_equal(drain_peer(st, got, big + 4 + 1), big + 4);
    assert_memory_equal(got, data, big + 4);
    assert_true(st->write_cbs >= 1);
    free(data);
    free(got);
}

/* test_peer_gone - the peer closed: nothing is lost silently, the bytes
   are queued and libevent's own write reports the error */
static void test_peer_gone(void **state)
{
    TEST_STATE *st = *state;

    (void) close(st->peer);
    st->peer = -1;
    assert_int_equal(bev_direct_write(st->bev, "x", 1), BEV_DIRECT_QUEUED);
    assert_int_equal(evbuffer_get_length(bufferevent_get_output(st->bev)), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_straight_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_then_queued, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_peer_gone, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
