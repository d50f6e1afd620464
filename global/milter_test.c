/*
 * milter_test - unit tests for the milter codec: packets as libmilter
 * reads them, strict decoding of replies, milter addresses
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include "milter.h"
#include "vstr.h"

/* test_packet - length prefix counts the command byte */
static void test_packet(void **state)
{
    VSTR *out = vstr_alloc(10);

    milter_packet_strs(out, MILTER_CMD_HELO, "mx.test", (char *) NULL);
    assert_int_equal(vstr_len(out), 4 + 1 + 8);
    assert_memory_equal(vstr_str(out), "\0\0\0\x09Hmx.test\0", 13);
    vstr_reset(out);
    milter_connect(out, "h.test", '4', 25, "127.0.0.1");
    assert_memory_equal(vstr_str(out) + 4,
                        "Ch.test\0004\0\031"
                        "127.0.0.1\0",
                        vstr_len(out) - 4);
    vstr_free(out);
}

/* test_reply_ok - each kind of reply decodes */
static void test_reply_ok(void **state)
{
    VSTR *why = vstr_alloc(10);
    MILTER_REPLY rep;

    assert_int_equal(milter_reply_parse("c", 1, &rep, why), 0);
    assert_int_equal(rep.cmd, 'c');
    assert_int_equal(milter_reply_parse("y550 5.7.1 no\0", 14, &rep, why), 0);
    assert_string_equal(rep.text, "550 5.7.1 no");
    assert_int_equal(
        milter_reply_parse("y451-4.7.1 a\r\n451 4.7.1 b\0", 26, &rep, why), 0);
    assert_int_equal(milter_reply_parse("hX-A\0v\0", 7, &rep, why), 0);
    assert_string_equal(rep.name, "X-A");
    assert_string_equal(rep.value, "v");
    assert_int_equal(milter_reply_parse("m\0\0\0\2X-B\0\0", 10, &rep, why), 0);
    assert_int_equal(rep.index, 2);
    assert_string_equal(rep.value, "");
    assert_int_equal(
        milter_reply_parse("O\0\0\0\6\0\0\0\1\0\0\0\0", 13, &rep, why), 0);
    assert_int_equal(rep.version, 6);
    assert_int_equal(rep.actions, 1);
    vstr_free(why);
}

/* test_reply_bad - malformed replies are refused with a reason */
static void test_reply_bad(void **state)
{
    VSTR *why = vstr_alloc(10);
    MILTER_REPLY rep;

    assert_int_equal(milter_reply_parse("y250 ok\0", 8, &rep, why), -1);
    assert_int_equal(milter_reply_parse("y550 no", 7, &rep, why), -1);
    assert_int_equal(milter_reply_parse("y550-a\r\n451 b\0", 14, &rep, why),
                     -1);
    assert_int_equal(milter_reply_parse("y550 a\nb\0", 9, &rep, why), -1);
    assert_int_equal(milter_reply_parse("hX:A\0v\0", 7, &rep, why), -1);
    assert_int_equal(milter_reply_parse("hX-A\0v", 6, &rep, why), -1);
    assert_int_equal(milter_reply_parse("hX-A\0a\nb\0", 9, &rep, why), -1);
    assert_int_equal(milter_reply_parse("m\0\0", 3, &rep, why), -1);
    assert_int_equal(milter_reply_parse("O\0\0\0\6", 5, &rep, why), -1);
    assert_int_equal(milter_reply_parse("cxx", 3, &rep, why), -1);
    assert_int_equal(milter_reply_parse("Z", 1, &rep, why), -1);
    assert_true(vstr_len(why) > 0);
    vstr_free(why);
}

/* test_addr - the address forms and their errors */
static void test_addr(void **state)
{
    VSTR *why = vstr_alloc(10);
    MILTER_ADDR addr;

    assert_int_equal(milter_addr_parse("inet:127.0.0.1:8891", &addr, why), 0);
    assert_string_equal(addr.host, "127.0.0.1");
    assert_string_equal(addr.port, "8891");
    milter_addr_free(&addr);
    assert_int_equal(milter_addr_parse("inet:[::1]:25", &addr, why), 0);
    assert_string_equal(addr.host, "::1");
    milter_addr_free(&addr);
    assert_int_equal(milter_addr_parse("inet:8891@localhost", &addr, why), 0);
    assert_string_equal(addr.host, "localhost");
    milter_addr_free(&addr);
    assert_int_equal(milter_addr_parse("unix:/run/m.sock", &addr, why), 0);
    assert_true(addr.is_unix);
    assert_string_equal(addr.path, "/run/m.sock");
    milter_addr_free(&addr);
    assert_int_equal(milter_addr_parse("unix:rel", &addr, why), -1);
    assert_int_equal(milter_addr_parse("inet:host", &addr, why), -1);
    assert_int_equal(milter_addr_parse("inet:host:0", &addr, why), -1);
    assert_int_equal(milter_addr_parse("inet:host:99999", &addr, why), -1);
    assert_int_equal(milter_addr_parse("tcp:host:25", &addr, why), -1);
    assert_int_equal(milter_addr_parse("inet::25", &addr, why), -1);
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packet),
        cmocka_unit_test(test_reply_ok),
        cmocka_unit_test(test_reply_bad),
        cmocka_unit_test(test_addr),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
