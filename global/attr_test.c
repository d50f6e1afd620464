/*
 * attr_test - unit tests for the attribute protocol: round trip of awkward
 * values, incremental decoding, strictness of the decoder and of
 * attr_list_check(), the blocking stream over a socketpair (timeout, EOF)
 */
#include "sys_defs.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <setjmp.h>
#include <cmocka.h>

#include "attr.h"
#include "mymalloc.h"
#include "vstr.h"

#define TEST_MAX 100000

static const char awkward[] = "line1\nline2\0after nul=x:y\n\n";

/* test_sample - a list with every kind of value */
static ATTR_LIST *test_sample(void)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", "begin");
    attr_add_int(list, "flags", -42);
    attr_add_int(list, "big", 9223372036854775807LL);
    attr_add_str(list, "empty", "");
    attr_add_data(list, "data", awkward, sizeof(awkward) - 1);
    attr_add_str(list, "rcpt", "a=b:c\nd");
    attr_add_str(list, "rcpt", "second");
    return list;
}

/* test_check_sample - is list the sample, decoded? */
static void test_check_sample(const ATTR_LIST *list)
{
    long long value;
    const char *data;
    size_t len;

    assert_int_equal(attr_list_count(list), 7);
    assert_string_equal(attr_get_str(list, "request"), "begin");
    assert_true(attr_get_int(list, "flags", &value));
    assert_int_equal(value, -42);
    assert_true(attr_get_int(list, "big", &value));
    assert_true(value == 9223372036854775807LL);
    assert_string_equal(attr_get_str(list, "empty"), "");
    data = attr_get_data(list, "data", &len);
    assert_int_equal(len, sizeof(awkward) - 1);
    assert_memory_equal(data, awkward, len);
    /* A value with a NUL is not text. */
    assert_null(attr_get_str(list, "data"));
    assert_string_equal(attr_get_str(list, "rcpt"), "a=b:c\nd");
    assert_string_equal(attr_name_at(list, 6), "rcpt");
    assert_string_equal(attr_value_at(list, 6, &len), "second");
    assert_int_equal(len, 6);
    assert_null(attr_get_str(list, "nosuch"));
    assert_false(attr_get_int(list, "nosuch", &value));
    assert_false(attr_get_int(list, "request", &value));
}

/* test_encode_sample - the wire form of the sample */
static VSTR *test_encode_sample(void)
{
    ATTR_LIST *list = test_sample();
    VSTR *wire = vstr_alloc(0);

    attr_list_encode(list, wire);
    attr_list_free(list);
    return wire;
}

static void test_encode_exact(void **state)
{
    ATTR_LIST *list = attr_list_alloc();
    VSTR *wire = vstr_alloc(0);

    attr_add_int(list, "status", 0);
    attr_add_str(list, "reason", "a\nb");
    attr_list_encode(list, wire);
    assert_int_equal(vstr_len(wire), strlen("status=1:0\nreason=3:a\nb\n\n"));
    assert_string_equal(vstr_str(wire), "status=1:0\nreason=3:a\nb\n\n");
    attr_list_free(list);
    vstr_free(wire);
}

static void test_round_trip(void **state)
{
    VSTR *wire = test_encode_sample();
    VSTR *why = vstr_alloc(0);
    ATTR_LIST *list = NULL;
    size_t used = 0;

    /* Trailing bytes of the next list are not consumed. */
    vstr_cat(wire, "next=1:x\n");
    assert_int_equal(attr_list_decode(vstr_str(wire), vstr_len(wire), TEST_MAX,
                                      &used, &list, why),
                     1);
    assert_int_equal(used, vstr_len(wire) - strlen("next=1:x\n"));
    test_check_sample(list);
    attr_list_free(list);

    /* The empty list. */
    assert_int_equal(attr_list_decode("\n", 1, TEST_MAX, &used, &list, why), 1);
    assert_int_equal(used, 1);
    assert_int_equal(attr_list_count(list), 0);
    attr_list_free(list);
    vstr_free(wire);
    vstr_free(why);
}

static void test_byte_at_a_time(void **state)
{
    VSTR *wire = test_encode_sample();
    VSTR *why = vstr_alloc(0);
    size_t wire_len = vstr_len(wire);
    ATTR_LIST *list = NULL;
    size_t used = 0;

    /* Every prefix of a good list needs more, and is read no further than
       its length: each prefix lives in a buffer of exactly that size. */
    for (size_t n = 0; n < wire_len; n++) {
        char *prefix = mymemdup(vstr_str(wire), n);

        list = NULL;
        assert_int_equal(
            attr_list_decode(prefix, n, TEST_MAX, &used, &list, why), 0);
        assert_null(list);
        myfree(prefix);
    }
    assert_int_equal(
        attr_list_decode(vstr_str(wire), wire_len, TEST_MAX, &used, &list, why),
        1);
    assert_int_equal(used, wire_len);
    test_check_sample(list);
    attr_list_free(list);
    vstr_free(wire);
    vstr_free(why);
}

/* test_decode_str - decode a C string with a generous limit */
static int test_decode_str(const char *input, size_t max_len, VSTR *why)
{
    ATTR_LIST *list = NULL;
    size_t used = 0;
    int ret;

    vstr_reset(why);
    ret = attr_list_decode(input, strlen(input), max_len, &used, &list, why);
    if (ret == 1) {
        assert_non_null(list);
        assert_int_equal(used, strlen(input));
    } else {
        assert_null(list);
    }
    attr_list_free(list);
    return ret;
}

static void test_malformed(void **state)
{
    VSTR *why = vstr_alloc(0);
    static const char *const bad[] = {
        "Name=1:x\n\n", /* upper case */
        "na-me=1:x\n\n", /* bad character */
        "=1:x\n\n", /* empty name */
        "name\n\n", /* no '=' */
        "name=:x\n\n", /* empty length */
        "name=-1:x\n\n", /* sign */
        "name=+1:x\n\n", /* sign */
        "name= 1:x\n\n", /* space */
        "name=1x:x\n\n", /* junk in length */
        "name=1:xy\n\n", /* value longer than its length */
        "name=0:x\n\n", /* empty value, then junk */
        "name=99999999999999999999:x\n", /* overflows 64 bits */
        "name=184467440737095516160:x\n", /* more digits than fit */
        "name=000000000000000000001:x\n\n", /* more digits than fit */
        " name=1:x\n\n", /* space before name */
    };
    char long_name[100];

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(bad); i++) {
        if (test_decode_str(bad[i], TEST_MAX, why) != -1)
            fail_msg("accepted: \"%s\"", bad[i]);
        assert_true(vstr_len(why) > 0);
    }
    /* Errors show even before the list is complete. */
    assert_int_equal(test_decode_str("na-", TEST_MAX, why), -1);
    assert_int_equal(test_decode_str("name=1:x", TEST_MAX, why), 0);
    assert_int_equal(test_decode_str("name=1:xy", TEST_MAX, why), -1);
    assert_non_null(strstr(vstr_str(why), "newline"));
    assert_int_equal(
        test_decode_str("name=99999999999999999999", TEST_MAX, why), -1);
    assert_non_null(strstr(vstr_str(why), "overflow"));

    /* One spelling per length: leading zeros are refused, "0" is not. */
    assert_int_equal(test_decode_str("name=0001:x\n\n", TEST_MAX, why), -1);
    assert_int_equal(test_decode_str("name=01:x\n\n", TEST_MAX, why), -1);
    assert_int_equal(test_decode_str("name=0:\n\n", TEST_MAX, why), 1);

    /* Names up to 64 bytes, not 65. */
    memset(long_name, 'a', 64);
    memcpy(long_name + 64, "=1:x\n\n", 7);
    assert_int_equal(test_decode_str(long_name, TEST_MAX, why), 1);
    memset(long_name, 'a', 65);
    memcpy(long_name + 65, "=1:x\n\n", 7);
    assert_int_equal(test_decode_str(long_name, TEST_MAX, why), -1);
    long_name[65] = 0;
    assert_int_equal(test_decode_str(long_name, TEST_MAX, why), -1);
    vstr_free(why);
}

static void test_max_len(void **state)
{
    VSTR *why = vstr_alloc(0);
    const char *list = "name=5:hello\nx=1:y\n\n"; /* 20 bytes */

    assert_int_equal(strlen(list), 20);
    assert_int_equal(test_decode_str(list, 20, why), 1);
    assert_int_equal(test_decode_str(list, 19, why), -1);
    assert_non_null(strstr(vstr_str(why), "larger than 19"));
    /* A declared length over the limit fails before the value arrives. */
    assert_int_equal(test_decode_str("data=1000:", 100, why), -1);
    assert_int_equal(test_decode_str("data=1000:", 2000, why), 0);
    assert_int_equal(test_decode_str("data=95:", 100, why), -1);
    assert_int_equal(test_decode_str("data=90:", 100, why), 0);
    /* A stream of names with no end fails once past the limit. */
    assert_int_equal(test_decode_str("abcdefghij", 5, why), -1);
    assert_int_equal(test_decode_str("a=00000000000000000", 10, why), -1);
    vstr_free(why);
}

static const ATTR_SPEC test_spec[] = {
    {"request", ATTR_TYPE_STR, true, false, "what"},
    {"status", ATTR_TYPE_INT, true, false, "a number"},
    {"rcpt", ATTR_TYPE_STR, false, true, "repeats"},
    {"data", ATTR_TYPE_DATA, false, false, "bytes"},
    {"reason", ATTR_TYPE_STR, false, false, "text"},
};

/* test_check_one - build a list from name/value pairs and check it */
static int test_check_one(VSTR *why, const char *const *pairs)
{
    ATTR_LIST *list = attr_list_alloc();
    int ret;

    for (; pairs[0] != NULL; pairs += 2)
        attr_add_str(list, pairs[0], pairs[1]);
    vstr_reset(why);
    ret = attr_list_check(list, test_spec, SLUICE_ARRAY_LEN(test_spec), why);
    attr_list_free(list);
    return ret;
}

static void test_check(void **state)
{
    VSTR *why = vstr_alloc(0);
    ATTR_LIST *list;
    static const char *const good[] = {
        "request", "x", "status", "-12", "rcpt", "a", "rcpt", "b", NULL};
    static const char *const missing[] = {"request", "x", NULL};
    static const char *const unknown[] = {"request", "x", "status", "1",
                                          "foo",     "1", NULL};
    static const char *const repeat[] = {"request", "x", "status", "1",
                                         "status",  "2", NULL};
    static const char *const not_ints[] = {"",
                                           "-",
                                           "+1",
                                           " 1",
                                           "1 ",
                                           "1x",
                                           "0x10",
                                           "9223372036854775808",
                                           "-9223372036854775809",
                                           NULL};

    assert_int_equal(test_check_one(why, good), 0);
    assert_int_equal(test_check_one(why, missing), -1);
    assert_string_equal(vstr_str(why), "missing attribute \"status\"");
    assert_int_equal(test_check_one(why, unknown), -1);
    assert_string_equal(vstr_str(why), "unknown attribute \"foo\"");
    assert_int_equal(test_check_one(why, repeat), -1);
    assert_string_equal(vstr_str(why), "repeated attribute \"status\"");
    for (const char *const *cp = not_ints; *cp; cp++) {
        const char *pairs[] = {"request", "x", "status", *cp, NULL};

        if (test_check_one(why, pairs) != -1)
            fail_msg("integer accepted: \"%s\"", *cp);
        assert_string_equal(vstr_str(why),
                            "attribute \"status\" is not an integer");
    }
    {
        const char *pairs[] = {"request", "x", "status", "-9223372036854775808",
                               NULL};

        assert_int_equal(test_check_one(why, pairs), 0);
    }

    /* NUL is fine in data, not in text. */
    list = attr_list_alloc();
    attr_add_str(list, "request", "x");
    attr_add_int(list, "status", 7);
    attr_add_data(list, "data", "a\0b", 3);
    assert_int_equal(
        attr_list_check(list, test_spec, SLUICE_ARRAY_LEN(test_spec), why), 0);
    attr_add_data(list, "reason", "a\0b", 3);
    assert_int_equal(
        attr_list_check(list, test_spec, SLUICE_ARRAY_LEN(test_spec), why), -1);
    assert_string_equal(vstr_str(why),
                        "attribute \"reason\" contains a NUL byte");
    /* why may be NULL. */
    assert_int_equal(
        attr_list_check(list, test_spec, SLUICE_ARRAY_LEN(test_spec), NULL),
        -1);
    attr_list_free(list);
    vstr_free(why);
}

/* test_elapsed_ms - milliseconds since start */
static long test_elapsed_ms(const struct timespec *start)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 +
           (now.tv_nsec - start->tv_nsec) / 1000000;
}

static void test_stream(void **state)
{
    int sv[2];
    ATTR_STREAM *left;
    ATTR_STREAM *right;
    ATTR_LIST *list;
    ATTR_LIST *got = NULL;
    VSTR *why = vstr_alloc(0);
    char big[200000];
    struct timespec start;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    left = attr_stream_open(sv[0], 300000, 2000);
    right = attr_stream_open(sv[1], 300000, 2000);
    assert_int_equal(attr_stream_fd(left), sv[0]);

    /* Two lists in one go: the second stays buffered for the next read. */
    list = test_sample();
    assert_int_equal(attr_stream_write(left, list, why), 0);
    assert_int_equal(attr_stream_write(left, list, why), 0);
    attr_list_free(list);
    assert_int_equal(attr_stream_read(right, &got, why), 0);
    test_check_sample(got);
    got = attr_list_free(got);
    assert_int_equal(attr_stream_read(right, &got, why), 0);
    test_check_sample(got);
    got = attr_list_free(got);

    /* A list larger than the socket buffer, written by a child while we
       read: partial writes loop. */
    memset(big, 'z', sizeof(big));
    big[100] = '\n';
    big[101] = 0;
    {
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
            ATTR_LIST *child_list = attr_list_alloc();

            attr_add_data(child_list, "data", big, sizeof(big));
            _exit(attr_stream_write(left, child_list, why) == 0 ? 0 : 1);
        }
        assert_int_equal(attr_stream_read(right, &got, why), 0);
        {
            size_t len;
            const char *data = attr_get_data(got, "data", &len);

            assert_int_equal(len, sizeof(big));
            assert_memory_equal(data, big, sizeof(big));
        }
        got = attr_list_free(got);
        {
            int status;

            assert_int_equal(waitpid(pid, &status, 0), pid);
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }

    /* Nothing arrives: timeout, after about the timeout. */
    {
        int fd = dup(sv[1]);

        assert_true(fd >= 0);
        attr_stream_close(right);
        right = attr_stream_open(fd, 300000, 200);
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    assert_int_equal(attr_stream_read(right, &got, why), -1);
    assert_null(got);
    assert_string_equal(vstr_str(why), "timeout");
    assert_true(test_elapsed_ms(&start) >= 190);
    assert_true(test_elapsed_ms(&start) < 2000);

    /* Half a list, then EOF. */
    assert_int_equal(write(sv[0], "name=5:ab", 9), 9);
    assert_int_equal(shutdown(sv[0], SHUT_WR), 0);
    assert_int_equal(attr_stream_read(right, &got, why), -1);
    assert_string_equal(vstr_str(why), "unexpected EOF");

    /* Writing to a closed peer is an error, not SIGPIPE. */
    right = attr_stream_close(right);
    list = test_sample();
    assert_int_equal(attr_stream_write(left, list, why), -1);
    assert_non_null(strstr(vstr_str(why), "write"));
    attr_list_free(list);
    left = attr_stream_close(left);
    vstr_free(why);
}

static void test_stream_limits(void **state)
{
    int sv[2];
    ATTR_STREAM *stream;
    ATTR_LIST *got = NULL;
    VSTR *why = vstr_alloc(0);
    char buf[300];

    /* Malformed input is reported with the decoder's reason. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    stream = attr_stream_open(sv[1], 256, 2000);
    assert_int_equal(write(sv[0], "Bad=1:x\n\n", 9), 9);
    assert_int_equal(attr_stream_read(stream, &got, why), -1);
    assert_non_null(strstr(vstr_str(why), "attribute name"));
    stream = attr_stream_close(stream);
    close(sv[0]);

    /* A list over max_len is an error, even one never finished. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    stream = attr_stream_open(sv[1], 256, 2000);
    memset(buf, 'a', sizeof(buf));
    assert_int_equal(write(sv[0], buf, sizeof(buf)), sizeof(buf));
    assert_int_equal(attr_stream_read(stream, &got, why), -1);
    assert_null(got);
    stream = attr_stream_close(stream);
    close(sv[0]);

    /* A pipe is not a socket: writes fall back to write(2). */
    assert_int_equal(pipe(sv), 0);
    {
        ATTR_STREAM *writer = attr_stream_open(sv[1], 256, 2000);
        ATTR_LIST *list = attr_list_alloc();

        stream = attr_stream_open(sv[0], 256, 2000);
        attr_add_str(list, "status", "0");
        assert_int_equal(attr_stream_write(writer, list, why), 0);
        assert_int_equal(attr_stream_read(stream, &got, why), 0);
        assert_string_equal(attr_get_str(got, "status"), "0");
        got = attr_list_free(got);
        attr_list_free(list);
        attr_stream_close(writer);
        assert_int_equal(attr_stream_read(stream, &got, why), -1);
        assert_string_equal(vstr_str(why), "unexpected EOF");
        attr_stream_close(stream);
    }
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_exact),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_max_len),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_limits),
    };

    return cmocka_run_group_tests_name("attr", tests, NULL, NULL);
}
