/*
 * source_pool_test - the smtp_source_pools syntax (v4, v6 with and
 * without brackets, weights, EHLO names, what is refused), tables read
 * whole with file and line in errors, the weighted round robin (exact
 * shares, skipping unusable sources, weight 0), the pool rule keys and
 * their order, and whether an address is this machine's
 */
#include "sys_defs.h"

#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>

#include "source_pool.h"
#include "testlib.h"
#include "vstr.h"

static void test_parse(void **state)
{
    VSTR *why = vstr_alloc(10);
    SOURCE_POOL pool;

    assert_int_equal(source_pool_parse("Marketing",
                                       "127.0.0.2*2/mta2.example.test, "
                                       "[::1]*3/mta6.example.test 2001:db8::7 "
                                       "127.0.0.3*0",
                                       &pool, why),
                     0);
    assert_string_equal(pool.name, "marketing");
    assert_int_equal(pool.count, 4);
    assert_string_equal(pool.sources[0].address, "127.0.0.2");
    assert_int_equal(pool.sources[0].family, AF_INET);
    assert_int_equal(pool.sources[0].weight, 2);
    assert_string_equal(pool.sources[0].helo_name, "mta2.example.test");
    assert_string_equal(pool.sources[1].address, "::1");
    assert_int_equal(pool.sources[1].family, AF_INET6);
    assert_int_equal(pool.sources[1].weight, 3);
    assert_string_equal(pool.sources[2].address, "2001:db8::7");
    assert_int_equal(pool.sources[2].weight, 1);
    assert_string_equal(pool.sources[2].helo_name, "");
    assert_int_equal(pool.sources[3].weight, 0);
    source_pool_clear(&pool);
    vstr_free(why);
}

static void test_refused(void **state)
{
    static const char *const bad[][2] = {
        {"p", ""},
        {"p", "192.0.2.300"},
        {"p", "mta.example.test"},
        {"p", "127.0.0.2*"},
        {"p", "127.0.0.2*x"},
        {"p", "127.0.0.2*1001"},
        {"p", "127.0.0.2*99999999999999999999"},
        {"p", "127.0.0.2/"},
        {"p", "127.0.0.2/bad_name"},
        {"p", "127.0.0.2/a..b"},
        {"p", "127.0.0.2/a.b."},
        {"p", "127.0.0.2*1*2"},
        {"p", "[::1"},
        {"p", "[::1]x"},
        {"p", "127.0.0.2 127.0.0.2"},
        {"p", "127.0.0.2*0 127.0.0.3*0"},
        {"bad name", "127.0.0.2"},
        {"p/q", "127.0.0.2"},
        {"", "127.0.0.2"},
    };
    VSTR *why = vstr_alloc(10);
    SOURCE_POOL pool;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(source_pool_parse(bad[i][0], bad[i][1], &pool, why),
                         -1);
        assert_true(vstr_len(why) > 0);
        assert_null(pool.sources);
    }
    vstr_free(why);
}

static void test_load(void **state)
{
    TESTLIB_DIR *dir = testlib_dir_create("source_pool");
    VSTR *why = vstr_alloc(10);
    VSTR *spec = vstr_alloc(10);
    const char *path = testlib_write(dir, "pools",
                                     "# pools\n"
                                     "transactional 127.0.0.2*2/a.test\n"
                                     "  127.0.0.3/b.test\n"
                                     "marketing 127.0.0.4\n");
    SOURCE_POOLS *pools;

    vstr_sprintf(spec, "texthash:%s", path);
    pools = source_pools_load("smtp_source_pools", vstr_str(spec), why);
    assert_non_null(pools);
    assert_int_equal(pools->count, 2);
    assert_int_equal(source_pools_find(pools, "TRANSACTIONAL")->count, 2);
    assert_int_equal(source_pools_find(pools, "transactional")->lineno, 2);
    assert_non_null(source_pools_find(pools, "marketing"));
    assert_null(source_pools_find(pools, "other"));
    source_pools_free(pools);

    /* nothing configured: NULL, no reason */
    assert_null(source_pools_load("smtp_source_pools", "", why));
    assert_int_equal(vstr_len(why), 0);

    /* an error names the file and the line */
    path = testlib_write(dir, "bad", "a 127.0.0.2\nb 127.0.0.999\n");
    vstr_sprintf(spec, "texthash:%s", path);
    assert_null(source_pools_load("smtp_source_pools", vstr_str(spec), why));
    assert_non_null(strstr(vstr_str(why), "line 2"));
    assert_non_null(strstr(vstr_str(why), "127.0.0.999"));

    path = testlib_write(dir, "twice", "a 127.0.0.2\nA 127.0.0.3\n");
    vstr_sprintf(spec, "texthash:%s", path);
    assert_null(source_pools_load("smtp_source_pools", vstr_str(spec), why));
    assert_non_null(strstr(vstr_str(why), "defined twice"));

    assert_null(source_pools_load("smtp_source_pools", "regexp:/x", why));
    assert_non_null(strstr(vstr_str(why), "read whole"));
    vstr_sprintf(spec, "texthash:%s", testlib_path(dir, "missing"));
    assert_null(source_pools_load("smtp_source_pools", vstr_str(spec), why));
    assert_true(vstr_len(why) > 0);
    vstr_free(spec);
    vstr_free(why);
    testlib_dir_remove(dir);
}

static bool skip_index;
static size_t skipped;

static bool usable_but_one(const SOURCE_POOL *pool, size_t index, void *arg)
{
    return !skip_index || index != skipped;
}

static bool none_usable(const SOURCE_POOL *pool, size_t index, void *arg)
{
    return false;
}

static void test_wrr(void **state)
{
    VSTR *why = vstr_alloc(10);
    SOURCE_POOL pool;
    long long current[3] = {0, 0, 0};
    int counts[3] = {0, 0, 0};
    long last = -1;
    int run = 0, longest = 0;

    assert_int_equal(source_pool_parse("p",
                                       "127.0.0.2*2 127.0.0.3*1 127.0.0.4*0",
                                       &pool, why),
                     0);
    /* exact shares over every window of sum-of-weights picks, spread */
    for (int i = 0; i < 3000; i++) {
        long pick = source_pool_wrr_next(&pool, current, NULL, NULL);

        assert_true(pick >= 0 && pick < 2);
        counts[pick]++;
        run = pick == last ? run + 1 : 1;
        if (run > longest)
            longest = run;
        last = pick;
        if (i % 3 == 2) {
            assert_int_equal(counts[0], (i + 1) / 3 * 2);
            assert_int_equal(counts[1], (i + 1) / 3);
        }
    }
    assert_int_equal(counts[2], 0);
    assert_true(longest <= 2);

    /* an unusable source is skipped; the others take everything */
    skip_index = true;
    skipped = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(
            source_pool_wrr_next(&pool, current, usable_but_one, NULL), 1);
    skip_index = false;
    assert_int_equal(source_pool_wrr_next(&pool, current, none_usable, NULL),
                     -1);
    source_pool_clear(&pool);
    vstr_free(why);
}

static void test_rule_keys(void **state)
{
    ARGV *keys = source_pool_rule_keys("alice", "acme", "Bob@Example.TEST");

    assert_int_equal(keys->argc, 4);
    assert_string_equal(keys->argv[0], "sasl:alice");
    assert_string_equal(keys->argv[1], "tenant:acme");
    assert_string_equal(keys->argv[2], "bob@example.test");
    assert_string_equal(keys->argv[3], "example.test");
    argv_free(keys);
    keys = source_pool_rule_keys(NULL, "", "");
    assert_int_equal(keys->argc, 0);
    argv_free(keys);
    keys = source_pool_rule_keys("", NULL, "postmaster");
    assert_int_equal(keys->argc, 1);
    assert_string_equal(keys->argv[0], "postmaster");
    argv_free(keys);
}

static void test_addr_local(void **state)
{
    VSTR *why = vstr_alloc(10);
    SOURCE_POOL_SOURCE here = {.address = "127.0.0.2", .family = AF_INET};
    SOURCE_POOL_SOURCE away = {.address = "192.0.2.1", .family = AF_INET};

    assert_int_equal(source_pool_addr_local(&here, why), 0);
    assert_int_equal(source_pool_addr_local(&away, why), -1);
    assert_non_null(strstr(vstr_str(why), "192.0.2.1"));
    vstr_free(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),     cmocka_unit_test(test_refused),
        cmocka_unit_test(test_load),      cmocka_unit_test(test_wrr),
        cmocka_unit_test(test_rule_keys), cmocka_unit_test(test_addr_local),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
