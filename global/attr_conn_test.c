/*
 * attr_conn_test - the event-loop attribute-list connection, over a real
 * socket pair and a real event_base: lists split across reads at every
 * byte come out whole, several lists in one read come out in order, an
 * oversized list and a malformed one end the connection (never a
 * truncation), EOF in the middle of a list is an EOF, freeing from inside
 * each callback stops the connection (the SANITIZE=1 build shows no use
 * after free), read timeouts and the deadline end it, the client side
 * connects to a UNIX socket, and reading can be paused
 */
#include "sys_defs.h"

#include <sys/socket.h>
#include <setjmp.h>
#include <cmocka.h>

#include <event2/event.h>

#include "attr.h"
#include "attr_conn.h"
#include "mymalloc.h"
#include "sock.h"
#include "testlib.h"
#include "vstr.h"

#define TEST_MAX 256

typedef struct TEST_STATE {
    struct event_base *base;
    ATTR_CONN *conn;
    int peer; /* the other end of the socket pair */
    VSTR *seen; /* "value," for each list's "v" attribute */
    int lists;
    int ends;
    ATTR_CONN_END kind;
    VSTR *why;
    bool free_in_list; /* attr_conn_free from inside on_list */
    bool free_in_end; /* ... from inside on_end */
    bool free_in_drain; /* ... from inside on_drain */
    bool pause_in_list; /* attr_conn_reading(false) from inside on_list */
    int drains;
} TEST_STATE;

/* test_on_list - record the list */
static void test_on_list(ATTR_CONN *conn, ATTR_LIST *list, void *arg)
{
    TEST_STATE *st = arg;
    const char *value = attr_get_str(list, "v");

    st->lists++;
    vstr_cat(st->seen, value ? value : "?");
    vstr_cat(st->seen, ",");
    if (st->pause_in_list)
        attr_conn_reading(conn, false);
    if (st->free_in_list)
        st->conn = attr_conn_free(conn);
}

/* test_on_end - record the end */
static void test_on_end(ATTR_CONN *conn, ATTR_CONN_END kind, const char *why,
                        void *arg)
{
    TEST_STATE *st = arg;

    st->ends++;
    st->kind = kind;
    vstr_cpy(st->why, why);
    if (st->free_in_end)
        st->conn = attr_conn_free(conn);
    event_base_loopbreak(st->base);
}

/* test_on_drain - record the drain */
static void test_on_drain(ATTR_CONN *conn, void *arg)
{
    TEST_STATE *st = arg;

    st->drains++;
    if (st->free_in_drain)
        st->conn = attr_conn_free(conn);
}

static const ATTR_CONN_OPS test_ops = {
    .on_list = test_on_list,
    .on_end = test_on_end,
    .on_drain = test_on_drain,
};

/* setup - a fresh state with a server-side connection on a socket pair */
static int setup(void **state)
{
    TEST_STATE *st = mycalloc(1, sizeof(*st));
    int fds[2];

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0)
        return -1;
    st->base = event_base_new();
    st->seen = vstr_alloc(64);
    st->why = vstr_alloc(64);
    st->peer = fds[1];
    st->conn = attr_conn_accept(st->base, fds[0], TEST_MAX, &test_ops, st);
    *state = st;
    return 0;
}

/* teardown - free what is left */
static int teardown(void **state)
{
    TEST_STATE *st = *state;

    attr_conn_free(st->conn);
    if (st->peer >= 0)
        (void) close(st->peer);
    event_base_free(st->base);
    vstr_free(st->seen);
    vstr_free(st->why);
    myfree(st);
    return 0;
}

/* pump - let the loop handle what is readable now */
static void pump(TEST_STATE *st)
{
    for (int i = 0; i < 4; i++)
        assert_true(event_base_loop(st->base, EVLOOP_NONBLOCK) >= 0);
}

/* put - write bytes to the peer end */
static void put(TEST_STATE *st, const char *buf, size_t len)
{
    assert_int_equal(write(st->peer, buf, len), (ssize_t) len);
}

/* wire_of - the wire form of lists with v=values[i] (NULL-terminated) */
static VSTR *wire_of(const char *const *values)
{
    VSTR *wire = vstr_alloc(256);

    for (; *values; values++) {
        ATTR_LIST *list = attr_list_alloc();

        attr_add_str(list, "v", *values);
        attr_add_data(list, "d", "a\nb\0c", 5);
        attr_list_encode(list, wire);
        attr_list_free(list);
    }
    return wire;
}

/* test_split_every_byte - two lists written in two parts, cut at each byte
   in turn, and once a byte at a time: both come out whole, in order */
static void test_split_every_byte(void **state)
{
    static const char *const values[] = {"first", "second", NULL};
    static const char *const first[] = {"first", NULL};
    VSTR *wire = wire_of(values);
    VSTR *wire_first = wire_of(first);
    size_t len = vstr_len(wire);
    size_t len_first = vstr_len(wire_first);

    teardown(state);
    for (size_t cut = 1; cut < len; cut++) {
        TEST_STATE *st;

        assert_int_equal(setup(state), 0);
        st = *state;
        put(st, vstr_str(wire), cut);
        pump(st);
        put(st, vstr_str(wire) + cut, len - cut);
        pump(st);
        assert_int_equal(st->lists, 2);
        assert_string_equal(vstr_str(st->seen), "first,second,");
        assert_int_equal(st->ends, 0);
        teardown(state);
    }
    assert_int_equal(setup(state), 0);
    for (size_t i = 0; i < len; i++) {
        TEST_STATE *st = *state;

        put(st, vstr_str(wire) + i, 1);
        pump(st);
        assert_int_equal(st->lists, i + 1 == len         ? 2
                                    : i + 1 >= len_first ? 1
                                                         : 0);
    }
    assert_string_equal(vstr_str(((TEST_STATE *) *state)->seen),
                        "first,second,");
    vstr_free(wire);
    vstr_free(wire_first);
}

/* test_several_in_one_read - three lists in one write, three callbacks */
static void test_several_in_one_read(void **state)
{
    static const char *const values[] = {"a", "b", "c", NULL};
    TEST_STATE *st = *state;
    VSTR *wire = wire_of(values);

    put(st, vstr_str(wire), vstr_len(wire));
    pump(st);
    assert_int_equal(st->lists, 3);
    assert_string_equal(vstr_str(st->seen), "a,b,c,");
    assert_int_equal(st->ends, 0);
    vstr_free(wire);

    /* Many small lists, more bytes in all than one list may have. */
    wire = vstr_alloc(1024);
    for (int i = 0; i < 40; i++)
        vstr_cat(wire, "v=1:x\n\n");
    assert_true(vstr_len(wire) > TEST_MAX);
    put(st, vstr_str(wire), vstr_len(wire));
    pump(st);
    assert_int_equal(st->lists, 43);
    assert_int_equal(st->ends, 0);
    vstr_free(wire);
}

/* peer_sees_eof - after the owner freed the connection the peer reads EOF
   (libevent closes the descriptor from the loop) */
static void peer_sees_eof(TEST_STATE *st)
{
    char buf[16];

    pump(st);
    assert_int_equal(read(st->peer, buf, sizeof(buf)), 0);
}

/* test_oversized - a list larger than max_len ends the connection with a
   reason, whether its size is announced or it only grows; no list is
   handed on, and a good list before it still is */
static void test_oversized(void **state)
{
    static const char *const good[] = {"ok", NULL};
    TEST_STATE *st = *state;
    VSTR *wire = wire_of(good);
    char big[TEST_MAX * 2];

    /* A length that announces too much: ends before the value comes. */
    vstr_cat(wire, "v=1000:");
    put(st, vstr_str(wire), vstr_len(wire));
    pump(st);
    assert_int_equal(st->lists, 1);
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_MALFORMED);
    assert_non_null(strstr(vstr_str(st->why), "larger than 256 bytes"));
    st->conn = attr_conn_free(st->conn);
    peer_sees_eof(st);
    teardown(state);

    /* Many small attributes that add up to too much. */
    assert_int_equal(setup(state), 0);
    st = *state;
    for (size_t i = 0; i + 6 <= sizeof(big); i += 6)
        memcpy(big + i, "a=1:x\n", 6);
    put(st, big, sizeof(big) - sizeof(big) % 6);
    pump(st);
    assert_int_equal(st->lists, 0);
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_MALFORMED);
    assert_non_null(strstr(vstr_str(st->why), "larger than 256 bytes"));
    vstr_free(wire);
}

/* test_malformed - bad bytes end the connection with the decoder's reason */
static void test_malformed(void **state)
{
    TEST_STATE *st = *state;

    put(st, "v=3x:abc\n\n", 10);
    pump(st);
    assert_int_equal(st->lists, 0);
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_MALFORMED);
    assert_non_null(strstr(vstr_str(st->why), "bad length"));
}

/* test_eof_mid_list - half a list, then EOF: an EOF, no list */
static void test_eof_mid_list(void **state)
{
    static const char *const values[] = {"whole", "half", NULL};
    TEST_STATE *st = *state;
    VSTR *wire = wire_of(values);

    put(st, vstr_str(wire), vstr_len(wire) - 4);
    (void) close(st->peer);
    st->peer = -1;
    pump(st);
    assert_int_equal(st->lists, 1);
    assert_string_equal(vstr_str(st->seen), "whole,");
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_EOF);
    assert_string_equal(vstr_str(st->why), ATTR_CONN_LOST);
    vstr_free(wire);
}

/* test_free_in_list - freeing inside on_list with more lists in the same
   read: no further callback, nothing touches the freed connection */
static void test_free_in_list(void **state)
{
    static const char *const values[] = {"a", "b", "c", NULL};
    TEST_STATE *st = *state;
    VSTR *wire = wire_of(values);

    st->free_in_list = true;
    put(st, vstr_str(wire), vstr_len(wire));
    (void) close(st->peer); /* an EOF waits behind the lists too */
    st->peer = -1;
    pump(st);
    assert_null(st->conn);
    assert_int_equal(st->lists, 1);
    assert_int_equal(st->ends, 0);
    vstr_free(wire);
}

/* test_free_in_end - freeing inside on_end, from an EOF and from a
   malformed list met inside the read loop */
static void test_free_in_end(void **state)
{
    TEST_STATE *st = *state;

    st->free_in_end = true;
    (void) close(st->peer);
    st->peer = -1;
    pump(st);
    assert_null(st->conn);
    assert_int_equal(st->ends, 1);
    teardown(state);

    assert_int_equal(setup(state), 0);
    st = *state;
    st->free_in_end = true;
    put(st, "v=1:a\n\nv=1:bb\n", 14);
    pump(st);
    assert_null(st->conn);
    assert_int_equal(st->lists, 1);
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_MALFORMED);
}

/* test_free_in_drain - send (it goes straight out: bev_direct.h), on_drain
   comes from the loop, not from inside the send, and frees; and
   attr_conn_drain_check on an empty output calls on_drain from the loop */
static void test_free_in_drain(void **state)
{
    TEST_STATE *st = *state;
    ATTR_LIST *list = attr_list_alloc();
    char buf[64];

    attr_add_str(list, "v", "reply");
    attr_conn_send(st->conn, list);
    attr_list_free(list);
    assert_int_equal(attr_conn_output_len(st->conn), 0);
    assert_int_equal(st->drains, 0); /* not from inside the send */
    st->free_in_drain = true;
    pump(st);
    assert_null(st->conn);
    assert_int_equal(st->drains, 1);
    assert_int_equal(read(st->peer, buf, sizeof(buf)), 11);
    assert_memory_equal(buf, "v=5:reply\n\n", 11);
    teardown(state);

    assert_int_equal(setup(state), 0);
    st = *state;
    st->free_in_drain = true;
    attr_conn_drain_check(st->conn);
    assert_int_equal(st->drains, 0); /* not from inside the caller */
    pump(st);
    assert_null(st->conn);
    assert_int_equal(st->drains, 1);
}

/* test_read_timeout - nothing comes: a timeout ends the connection; a
   whole list keeps it alive only while it is not idle */
static void test_read_timeout(void **state)
{
    TEST_STATE *st = *state;

    attr_conn_timeouts(st->conn, 1, 1);
    put(st, "v=1:a\n\n", 7);
    assert_int_equal(event_base_dispatch(st->base), 0);
    assert_int_equal(st->lists, 1);
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_TIMEOUT);
    assert_string_equal(vstr_str(st->why), ATTR_CONN_TIMED_OUT);
}

/* run_for - run the loop for ms milliseconds (or until nothing is left) */
static void run_for(TEST_STATE *st, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    assert_int_equal(event_base_loopexit(st->base, &tv), 0);
    assert_true(event_base_dispatch(st->base) >= 0);
}

/* test_read_timeout_off - a read timeout set back to 0 is gone: with the
   event in epoll (a list read since), and taken out (reading was off
   while data came) and put back when reading is on again */
static void test_read_timeout_off(void **state)
{
    TEST_STATE *st = *state;

    attr_conn_timeouts(st->conn, 1, 1);
    attr_conn_timeouts(st->conn, 0, 0);
    put(st, "v=1:a\n\n", 7);
    run_for(st, 2500);
    assert_int_equal(st->lists, 1);
    assert_int_equal(st->ends, 0);

    attr_conn_timeouts(st->conn, 1, 1);
    attr_conn_reading(st->conn, false);
    put(st, "v=1:b\n\n", 7);
    pump(st); /* the event sees the data and leaves epoll */
    assert_int_equal(st->lists, 1);
    attr_conn_timeouts(st->conn, 0, 0);
    attr_conn_reading(st->conn, true);
    run_for(st, 2500);
    assert_int_equal(st->lists, 2);
    assert_int_equal(st->ends, 0);
    assert_string_equal(vstr_str(st->seen), "a,b,");
}

/* test_deadline - the deadline ends a connection that stays busy; 0
   turns it off again */
static void test_deadline(void **state)
{
    TEST_STATE *st = *state;

    attr_conn_deadline(st->conn, 1);
    assert_int_equal(event_base_dispatch(st->base), 0);
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_TIMEOUT);
    teardown(state);

    assert_int_equal(setup(state), 0);
    st = *state;
    attr_conn_deadline(st->conn, 1);
    attr_conn_deadline(st->conn, 0);
    pump(st);
    (void) close(st->peer);
    st->peer = -1;
    assert_int_equal(event_base_dispatch(st->base), 0);
    assert_int_equal(st->kind, ATTR_CONN_EOF); /* not the deadline */
}

/* test_pause - with reading off lists wait in the input; back on, they are
   handed on from the loop */
static void test_pause(void **state)
{
    static const char *const values[] = {"a", "b", NULL};
    TEST_STATE *st = *state;
    VSTR *wire = wire_of(values);

    st->pause_in_list = true;
    put(st, vstr_str(wire), vstr_len(wire));
    pump(st);
    assert_int_equal(st->lists, 1);
    assert_true(attr_conn_input_len(st->conn) > 0);
    st->pause_in_list = false;
    attr_conn_reading(st->conn, true);
    assert_int_equal(st->lists, 1);
    pump(st);
    assert_int_equal(st->lists, 2);
    assert_string_equal(vstr_str(st->seen), "a,b,");
    assert_int_equal(attr_conn_input_len(st->conn), 0);
    vstr_free(wire);
}

/* test_pause_then_eof - lists wait in the input with reading off and the
   peer gone; reading back on hands them all on before the end */
static void test_pause_then_eof(void **state)
{
    static const char *const values[] = {"a", "b", "c", NULL};
    TEST_STATE *st = *state;
    VSTR *wire = wire_of(values);

    st->pause_in_list = true;
    put(st, vstr_str(wire), vstr_len(wire));
    (void) close(st->peer);
    st->peer = -1;
    pump(st);
    assert_int_equal(st->lists, 1);
    assert_int_equal(st->ends, 0);
    st->pause_in_list = false;
    attr_conn_reading(st->conn, true);
    pump(st);
    assert_string_equal(vstr_str(st->seen), "a,b,c,");
    assert_int_equal(st->ends, 1);
    assert_int_equal(st->kind, ATTR_CONN_EOF);
    vstr_free(wire);
}

/* test_client - attr_conn_connect to a listening UNIX socket: a list each
   way; a missing socket is an error with the path */
static void test_client(void **state)
{
    TEST_STATE *st = *state;
    TESTLIB_DIR *dir = testlib_dir_create("attr_conn");
    const char *path;
    VSTR *why = vstr_alloc(64);
    ATTR_STREAM *stream;
    ATTR_LIST *list = attr_list_alloc();
    ATTR_LIST *got = NULL;
    int listen_fd;
    int fd;

    assert_non_null(dir);
    path = testlib_path(dir, "nothing");
    assert_null(
        attr_conn_connect(st->base, path, TEST_MAX, &test_ops, st, why));
    assert_non_null(strstr(vstr_str(why), path));
    path = testlib_path(dir, "service");
    assert_true((listen_fd = sock_unix_listen(path, 4, 0600)) >= 0);
    st->conn = attr_conn_free(st->conn);
    st->conn = attr_conn_connect(st->base, path, TEST_MAX, &test_ops, st, why);
    assert_non_null(st->conn);
    assert_true((fd = accept(listen_fd, NULL, NULL)) >= 0);
    stream = attr_stream_open(fd, TEST_MAX, 5000);
    attr_add_str(list, "v", "request");
    attr_conn_send(st->conn, list);
    pump(st);
    assert_int_equal(attr_stream_read(stream, &got, why), 0);
    assert_string_equal(attr_get_str(got, "v"), "request");
    attr_list_free(got);
    attr_list_free(list);
    list = attr_list_alloc();
    attr_add_str(list, "v", "reply");
    assert_int_equal(attr_stream_write(stream, list, why), 0);
    pump(st);
    assert_string_equal(vstr_str(st->seen), "reply,");
    attr_list_free(list);
    attr_stream_close(stream);
    (void) close(listen_fd);
    vstr_free(why);
    assert_int_equal(testlib_dir_remove(dir), 0);
}

/* main - run the tests */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_in_one_read, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof_mid_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_timeout_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_then_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
