/*
 * shaping_redis_test - unit tests of the shared limits' pure part: keys,
 * the server address, each node's local share, the script's answers and
 * the link state that is logged once per change
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>

#include "shaping.h"
#include "shaping_redis.h"
#include "vstr.h"

#define SEC 1000000LL

/* test_keys - one hash tag per bucket, a key per part */
static void test_keys(void **unused)
{
    VSTR *buf = vstr_alloc(10);

    assert_string_equal(
        shaping_redis_key(buf, "provider:google", SHAPING_REDIS_KEY_MSG),
        "sluice:shaping:{provider:google}:msg");
    assert_string_equal(
        shaping_redis_key(buf, "a.test", SHAPING_REDIS_KEY_LEASES),
        "sluice:shaping:{a.test}:leases");
    assert_string_equal(
        shaping_redis_key(buf, "a.test", SHAPING_REDIS_KEY_CONNMAX),
        "sluice:shaping:{a.test}:connmax");
    vstr_free(buf);
}

/* test_addr - host:port, [v6]:port, /path, and what is refused */
static void test_addr(void **unused)
{
    SHAPING_REDIS_ADDR addr;
    VSTR *why = vstr_alloc(10);
    static const char *const bad[] = {
        "",          "localhost",  "127.0.0.1:",  "127.0.0.1:0",
        ":6379",     "host:65536", "host:63x9",   "::1:6379",
        "[::1]6379", "[]:6379",    "host:123456",
    };

    assert_int_equal(shaping_redis_addr_parse("127.0.0.1:6379", &addr, why), 0);
    assert_string_equal(addr.host, "127.0.0.1");
    assert_int_equal(addr.port, 6379);
    assert_null(addr.path);
    shaping_redis_addr_done(&addr);
    assert_int_equal(shaping_redis_addr_parse("[::1]:7000", &addr, why), 0);
    assert_string_equal(addr.host, "::1");
    assert_int_equal(addr.port, 7000);
    shaping_redis_addr_done(&addr);
    assert_int_equal(
        shaping_redis_addr_parse("/run/redis/redis.sock", &addr, why), 0);
    assert_null(addr.host);
    assert_string_equal(addr.path, "/run/redis/redis.sock");
    shaping_redis_addr_done(&addr);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vstr_cpy(why, "");
        assert_int_equal(shaping_redis_addr_parse(bad[i], &addr, why), -1);
        assert_non_null(strstr(vstr_str(why), "shaping_redis_server"));
        assert_null(addr.host);
        assert_null(addr.path);
    }
    vstr_free(why);
}

/* test_share - the shares of all nodes together stay within the limit:
   nodes that each try every millisecond for a minute pass at most rate *
   window + burst together, and each still passes its share */
static void test_share(void **unused)
{
    SHAPING_RULE rule;
    SHAPING_RULE share;
    VSTR *why = vstr_alloc(10);

    assert_int_equal(
        shaping_rule_parse("a.test",
                           "message_rate=60/m connection_rate=10/s burst=4 "
                           "max_connections=5",
                           &rule, why),
        0);
    shaping_redis_share(&rule, 1, &share);
    assert_int_equal(share.message_rate.period_usec, 60 * SEC);
    assert_int_equal(share.max_connections, 5);
    shaping_redis_share(&rule, 2, &share);
    assert_int_equal(share.message_rate.count, 60);
    assert_int_equal(share.message_rate.period_usec, 120 * SEC);
    assert_int_equal(share.connection_rate.period_usec, 2 * SEC);
    assert_int_equal(share.burst, 2);
    assert_int_equal(share.max_connections, 2);
    /* never below 1: a limit below the node count */
    shaping_redis_share(&rule, 8, &share);
    assert_int_equal(share.burst, 1);
    assert_int_equal(share.max_connections, 1);
    assert_ptr_equal(share.key, rule.key);

    for (long long nodes = 1; nodes <= 4; nodes++) {
        SHAPING_STATE st[4] = {0};
        long long passed[4] = {0};
        long long total = 0;
        long long wait;

        shaping_redis_share(&rule, nodes, &share);
        for (long long now = SEC; now < 61 * SEC; now += 1000) {
            for (long long n = 0; n < nodes; n++) {
                if (shaping_may_start(&share, &st[n], now, &wait) ==
                    SHAPING_GO) {
                    shaping_start(&share, &st[n], now);
                    shaping_end(&st[n]);
                    passed[n]++;
                    total++;
                }
            }
        }
        /* 60/m over 60 s: 60 + burst 4 at most, all nodes together */
        assert_true(total <= 60 + 4);
        assert_true(total >= 60 - nodes);
        for (long long n = 0; n < nodes; n++)
            assert_true(passed[n] >= 60 / nodes - 1);
    }
    shaping_rule_done(&rule);
    vstr_free(why);
}

/* test_fallback - after Redis, a node's share starts empty: two nodes
   that each just passed a unit through Redis, going on alone, pass
   nothing for one share interval, then their shares */
static void test_fallback(void **unused)
{
    SHAPING_RULE rule;
    SHAPING_RULE share;
    SHAPING_STATE st = {0};
    VSTR *why = vstr_alloc(10);
    long long wait;
    long long now = 100 * SEC;

    assert_int_equal(
        shaping_rule_parse("a.test", "message_rate=4/s burst=4", &rule, why),
        0);
    shaping_redis_share(&rule, 2, &share);
    assert_int_equal(shaping_gcra_interval(&share.message_rate), SEC / 2);
    assert_int_equal(share.burst, 2);
    /* a full local bucket would pass 2 at once */
    assert_int_equal(shaping_gcra_tokens(&st.messages, &share.message_rate,
                                         share.burst, now),
                     2);
    shaping_redis_fallback(&share, &st, now);
    assert_int_equal(shaping_may_start(&share, &st, now, &wait), SHAPING_WAIT);
    assert_int_equal(wait, SEC / 2);
    assert_int_equal(shaping_may_start(&share, &st, now + SEC / 2, &wait),
                     SHAPING_GO);
    /* a later state is kept (never loosened) */
    st.messages.tat = now + 10 * SEC;
    shaping_redis_fallback(&share, &st, now);
    assert_int_equal(st.messages.tat, now + 10 * SEC);
    /* no rate: nothing to do */
    st = (SHAPING_STATE){0};
    share.message_rate.count = 0;
    shaping_redis_fallback(&share, &st, now);
    assert_int_equal(st.messages.tat, 0);
    shaping_rule_done(&rule);
    vstr_free(why);
}

/* test_verdict - the script's answers, clamped waits, garbage refused */
static void test_verdict(void **unused)
{
    long long wait;

    assert_int_equal(shaping_redis_verdict(1, 0, "ok", &wait),
                     SHAPING_REDIS_GO);
    assert_int_equal(wait, 0);
    assert_int_equal(shaping_redis_verdict(0, 250000, "rate", &wait),
                     SHAPING_REDIS_WAIT);
    assert_int_equal(wait, 250000);
    assert_int_equal(shaping_redis_verdict(0, 3, "rate", &wait),
                     SHAPING_REDIS_WAIT);
    assert_int_equal(wait, SHAPING_REDIS_MIN_WAIT);
    assert_int_equal(shaping_redis_verdict(0, 60 * SEC, "suspended", &wait),
                     SHAPING_REDIS_WAIT);
    assert_int_equal(wait, SHAPING_REDIS_MAX_WAIT);
    assert_int_equal(shaping_redis_verdict(0, 30 * SEC, "full", &wait),
                     SHAPING_REDIS_WAIT);
    assert_int_equal(wait, SHAPING_REDIS_POLL);
    assert_int_equal(shaping_redis_verdict(1, 0, "rate", &wait),
                     SHAPING_REDIS_BAD);
    assert_int_equal(shaping_redis_verdict(0, 5, "what", &wait),
                     SHAPING_REDIS_BAD);
    assert_int_equal(shaping_redis_verdict(0, -5, "rate", &wait),
                     SHAPING_REDIS_BAD);
    assert_int_equal(shaping_redis_verdict(2, 0, "ok", &wait),
                     SHAPING_REDIS_BAD);
    assert_int_equal(shaping_redis_verdict(0, 0, NULL, &wait),
                     SHAPING_REDIS_BAD);
}

/* test_link - each change logged once, reconnects back off */
static void test_link(void **unused)
{
    SHAPING_REDIS_LINK link = {0};

    assert_string_equal(shaping_redis_state_name(link.state), "connecting");
    assert_int_equal(shaping_redis_link_retry(&link), SHAPING_REDIS_RETRY_MIN);
    /* down from the start: said once */
    assert_true(shaping_redis_link_down(&link, 5));
    assert_false(shaping_redis_link_down(&link, 6));
    assert_false(shaping_redis_link_down(&link, 7));
    assert_int_equal(link.since, 5);
    assert_string_equal(shaping_redis_state_name(link.state), "down");
    assert_int_equal(shaping_redis_link_retry(&link),
                     4 * SHAPING_REDIS_RETRY_MIN);
    for (int i = 0; i < 100; i++)
        shaping_redis_link_down(&link, 8);
    assert_int_equal(shaping_redis_link_retry(&link), SHAPING_REDIS_RETRY_MAX);
    /* back: said once */
    assert_true(shaping_redis_link_up(&link, 10));
    assert_false(shaping_redis_link_up(&link, 11));
    assert_int_equal(link.since, 10);
    assert_int_equal(shaping_redis_link_retry(&link), SHAPING_REDIS_RETRY_MIN);
    assert_string_equal(shaping_redis_state_name(link.state), "up");
    /* and down again: said again */
    assert_true(shaping_redis_link_down(&link, 12));
    assert_false(shaping_redis_link_down(&link, 13));
}

/* test_scripts - the scripts use Redis's clock with microseconds */
static void test_scripts(void **unused)
{
    assert_non_null(strstr(shaping_redis_take_lua, "redis.call('TIME')"));
    assert_non_null(
        strstr(shaping_redis_take_lua, "* 1000000 + tonumber(t[2])"));
    assert_non_null(strstr(shaping_redis_renew_lua, "'XX'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),    cmocka_unit_test(test_addr),
        cmocka_unit_test(test_share),   cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_verdict), cmocka_unit_test(test_link),
        cmocka_unit_test(test_scripts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
