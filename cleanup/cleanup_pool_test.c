/*
 * cleanup_pool_test - the pool written into a committed queue file: by
 * SASL user, sender address and sender domain (in that order), the
 * default; an X-Sluice-Pool header replaces it when the submitter may
 * name that pool (smtp_source_pool_allow_maps; with no entry mynetworks
 * and local submission any, SASL users elsewhere and API tenants none),
 * else it is ignored; the header is removed either way; a name that is
 * no pool gives the default
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cleanup.h"
#include "cleanup_proto.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "source_pool.h"
#include "vstr.h"

typedef struct TEST_ENV {
    char dir[64];
    const char *tenant; /* the next message's (api origin), or NULL */
    CLEANUP_CONF conf;
    VSTR *path;
} TEST_ENV;

static const CLEANUP_FILTER *const test_filters[] = {&cleanup_pool_filter,
                                                     NULL};

/* test_write - a file in the test folder; its path in env->path */
static void test_write(TEST_ENV *env, const char *name, const char *text)
{
    FILE *fp;

    vstr_sprintf(env->path, "%s/%s", env->dir, name);
    assert_non_null(fp = fopen(vstr_str(env->path), "w"));
    fputs(text, fp);
    fclose(fp);
}

static int test_setup(void **state)
{
    TEST_ENV *env = mycalloc(1, sizeof(*env));
    VSTR *why = vstr_alloc(100);
    VSTR *spec = vstr_alloc(100);

    snprintf(env->dir, sizeof(env->dir), "/tmp/cleanup_pool.XXXXXX");
    assert_non_null(mkdtemp(env->dir));
    env->path = vstr_alloc(100);
    vstr_sprintf(env->path, "%s/incoming", env->dir);
    assert_int_equal(mkdir(vstr_str(env->path), 0700), 0);
    vstr_sprintf(env->path, "%s/maillog", env->dir);
    msg_init("sluice", "cleanup");
    assert_int_equal(msg_log_file(vstr_str(env->path)), 0);
    env->conf.queue_dir = env->dir;
    env->conf.myhostname = "mx.example";
    env->conf.myorigin = "example.org";
    env->conf.header_size_limit = 102400;
    env->conf.body_checks_size_limit = 51200;
    test_write(env, "pools",
               "transactional 127.0.0.2*2 127.0.0.3\n"
               "marketing 127.0.0.4\n"
               "dedicated 127.0.0.5\n");
    vstr_sprintf(spec, "texthash:%s", vstr_str(env->path));
    assert_non_null(env->conf.pools = source_pools_load("smtp_source_pools",
                                                        vstr_str(spec), why));
    env->conf.default_pool = "transactional";
    test_write(env, "rules",
               "sasl:alice marketing\n"
               "boss@vip.test marketing\n"
               "vip.test dedicated\n"
               "odd.test nosuchpool\n");
    vstr_sprintf(spec, "texthash:%s", vstr_str(env->path));
    assert_non_null(env->conf.pool_maps = maps_create("smtp_source_pool_maps",
                                                      vstr_str(spec), 0, why));
    assert_non_null(env->conf.mynetworks = match_list_create(
                        "mynetworks", "127.0.0.0/8", MATCH_LIST_ADDR, why));
    vstr_free(spec);
    vstr_free(why);
    *state = env;
    return 0;
}

static int test_teardown(void **state)
{
    TEST_ENV *env = *state;
    VSTR *cmd = vstr_alloc(100);

    cleanup_pool_conf_free(&env->conf);
    vstr_sprintf(cmd, "rm -rf '%s'", env->dir);
    assert_int_equal(system(vstr_str(cmd)), 0);
    vstr_free(cmd);
    vstr_free(env->path);
    myfree(env);
    return 0;
}

/* test_pool - queue one message; its pool attribute (caller frees), the
   count of pool attributes in *count and the content in content */
static char *test_pool(TEST_ENV *env, const char *origin, const char *addr,
                       const char *sasl, const char *sender,
                       const char *content, int *count, VSTR *got)
{
    CLEANUP_BEGIN req = {.sender = sender,
                         .origin = origin,
                         .client_name = "unknown",
                         .client_addr = addr,
                         .protocol = "ESMTP",
                         .sasl_username = sasl,
                         .tenant = env->tenant,
                         .size = -1};
    CLEANUP_MSG *msg = cleanup_msg_begin(&env->conf, &req, test_filters);
    VSTR *why = vstr_alloc(10);
    QFILE_READER *reader;
    QFILE_INFO *info;
    QFILE_REC rec;
    char qid[64];
    char *pool;
    int fd;

    assert_int_equal(msg->status, 0);
    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "bob@x.test", NULL, NULL);
    cleanup_msg_data(msg, content, strlen(content));
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    vstr_sprintf(env->path, "%s/incoming/%s", env->dir, qid);
    assert_true((fd = open(vstr_str(env->path), O_RDONLY)) >= 0);
    if ((info = qfile_info_read(fd, why)) == NULL)
        fail_msg("queue file rejected: %s", vstr_str(why));
    pool = mystrdup(qfile_info_attr(info, SOURCE_POOL_ATTR));
    *count = 0;
    for (size_t i = 0; i < info->attr_count; i++)
        if (strcmp(info->attrs[i].name, SOURCE_POOL_ATTR) == 0)
            (*count)++;
    qfile_info_free(info);
    lseek(fd, 0, SEEK_SET);
    reader = qfile_reader_alloc(fd);
    vstr_reset(got);
    while (qfile_read_rec(reader, &rec, why) > 0)
        if (rec.type == QFILE_REC_CONT)
            vstr_ncat(got, rec.data, rec.len);
    qfile_reader_free(reader);
    close(fd);
    vstr_free(why);
    return pool;
}

static bool test_log_has(TEST_ENV *env, const char *text)
{
    char buf[65536];
    int fd;
    ssize_t n;

    vstr_sprintf(env->path, "%s/maillog", env->dir);
    assert_true((fd = open(vstr_str(env->path), O_RDONLY)) >= 0);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = 0;
    return strstr(buf, text) != NULL;
}

#define PLAIN "Subject: x\n\nbody\n"
#define HEADER "Subject: x\nX-Sluice-Pool: dedicated\n\nbody\n"

static void test_rules(void **state)
{
    TEST_ENV *env = *state;
    VSTR *got = vstr_alloc(100);
    int count;
    char *pool;

    /* the SASL user first, even for a sender domain with its own rule */
    pool = test_pool(env, "smtp", "192.0.2.9", "alice", "x@vip.test", PLAIN,
                     &count, got);
    assert_string_equal(pool, "marketing");
    assert_int_equal(count, 1);
    myfree(pool);
    /* the sender address before its domain */
    pool = test_pool(env, "smtp", "192.0.2.9", NULL, "Boss@VIP.test", PLAIN,
                     &count, got);
    assert_string_equal(pool, "marketing");
    myfree(pool);
    pool = test_pool(env, "smtp", "192.0.2.9", NULL, "x@vip.test", PLAIN,
                     &count, got);
    assert_string_equal(pool, "dedicated");
    myfree(pool);
    /* another SASL user: no rule of its own, the domain decides */
    pool = test_pool(env, "smtp", "192.0.2.9", "carol", "x@vip.test", PLAIN,
                     &count, got);
    assert_string_equal(pool, "dedicated");
    myfree(pool);
    /* none: the default */
    pool = test_pool(env, "smtp", "192.0.2.9", NULL, "x@other.test", PLAIN,
                     &count, got);
    assert_string_equal(pool, "transactional");
    myfree(pool);
    /* a rule naming no pool: logged, the default */
    pool = test_pool(env, "smtp", "192.0.2.9", NULL, "x@odd.test", PLAIN,
                     &count, got);
    assert_string_equal(pool, "transactional");
    assert_true(test_log_has(env, "pool \"nosuchpool\" named by "
                                  "smtp_source_pool_maps (odd.test) is not "
                                  "in smtp_source_pools"));
    myfree(pool);
    vstr_free(got);
}

static void test_header(void **state)
{
    TEST_ENV *env = *state;
    VSTR *got = vstr_alloc(100);
    static const char *const trusted[][3] = {
        {"smtp", "127.0.0.1", NULL}, /* mynetworks */
        {"smtp", "127.0.0.1", "bob"}, /* authenticated, in mynetworks */
        {"local", NULL, NULL}, /* sendmail, pickup */
    };
    int count;
    char *pool;

    for (size_t i = 0; i < sizeof(trusted) / sizeof(trusted[0]); i++) {
        pool = test_pool(env, trusted[i][0], trusted[i][1], trusted[i][2],
                         "x@other.test", HEADER, &count, got);
        assert_string_equal(pool, "dedicated");
        assert_int_equal(count, 1);
        assert_null(strstr(vstr_str(got), "X-Sluice-Pool"));
        assert_non_null(strstr(vstr_str(got), "Subject: x\n"));
        assert_non_null(strstr(vstr_str(got), "\n\nbody\n"));
        myfree(pool);
    }
    /* the header beats a rule */
    pool = test_pool(env, "smtp", "127.0.0.1", "alice", "x@other.test", HEADER,
                     &count, got);
    assert_string_equal(pool, "dedicated");
    assert_int_equal(count, 1);
    myfree(pool);
    /* untrusted: ignored, logged, removed */
    pool = test_pool(env, "smtp", "192.0.2.9", NULL, "x@other.test", HEADER,
                     &count, got);
    assert_string_equal(pool, "transactional");
    assert_null(strstr(vstr_str(got), "X-Sluice-Pool"));
    assert_true(test_log_has(env, "X-Sluice-Pool: dedicated ignored"));
    myfree(pool);
    /* no such pool: the default, logged; several headers: the first */
    pool = test_pool(env, "smtp", "127.0.0.1", NULL, "x@vip.test",
                     "X-Sluice-Pool: nosuch\nx-sluice-pool: marketing\n\nb\n",
                     &count, got);
    assert_string_equal(pool, "transactional");
    assert_int_equal(count, 1);
    assert_null(strstr(vstr_str(got), "luice-Pool"));
    assert_null(strstr(vstr_str(got), "luice-pool"));
    assert_true(test_log_has(env, "pool \"nosuch\" named by X-Sluice-Pool"));
    myfree(pool);
    vstr_free(got);
}

/* test_allow_defaults - no smtp_source_pool_allow_maps: a SASL user
   outside mynetworks may name any pool (the header is honoured from
   authenticated clients), an API tenant none (the header is removed, a
   warning logged, the rules' pool kept) */
static void test_allow_defaults(void **state)
{
    TEST_ENV *env = *state;
    VSTR *got = vstr_alloc(100);
    int count;
    char *pool;

    pool = test_pool(env, "smtp", "192.0.2.9", "bob", "x@other.test", HEADER,
                     &count, got);
    assert_string_equal(pool, "dedicated");
    assert_null(strstr(vstr_str(got), "X-Sluice-Pool"));
    myfree(pool);
    env->tenant = "acme";
    pool =
        test_pool(env, "api", NULL, NULL, "x@other.test", HEADER, &count, got);
    env->tenant = NULL;
    assert_string_equal(pool, "transactional");
    assert_int_equal(count, 1);
    assert_null(strstr(vstr_str(got), "X-Sluice-Pool"));
    assert_true(test_log_has(env, "tenant:acme is not in "
                                  "smtp_source_pool_allow_maps"));
    myfree(pool);
    vstr_free(got);
}

/* test_allow_maps - the allow-list decides per SASL user, tenant and for
   mynetworks; the first key found wins; "*" is any pool */
static void test_allow_maps(void **state)
{
    TEST_ENV *env = *state;
    VSTR *got = vstr_alloc(100);
    VSTR *spec = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    static const struct {
        const char *origin, *addr, *sasl, *tenant, *want;
    } cases[] = {
        {"smtp", "192.0.2.9", "bob", NULL, "dedicated"}, /* "*" */
        {"smtp", "192.0.2.9", "alice", NULL, "marketing"}, /* its rule */
        {"smtp", "192.0.2.9", "carol", NULL, "transactional"}, /* unlisted */
        {"api", NULL, NULL, "acme", "dedicated"},
        {"api", NULL, NULL, "globex", "transactional"}, /* only its own */
        {"smtp", "127.0.0.1", NULL, NULL, "transactional"}, /* mynetworks */
        {"smtp", "127.0.0.1", "bob", NULL, "dedicated"}, /* sasl: first */
        {"local", NULL, NULL, NULL, "dedicated"}, /* no entry: any */
    };
    int count;
    char *pool;

    test_write(env, "allow",
               "sasl:alice marketing\n"
               "sasl:bob *\n"
               "tenant:acme dedicated, transactional\n"
               "tenant:globex marketing\n"
               "mynetworks transactional marketing\n");
    vstr_sprintf(spec, "texthash:%s", vstr_str(env->path));
    assert_non_null(env->conf.pool_allow_maps = maps_create(
                        "smtp_source_pool_allow_maps", vstr_str(spec), 0, why));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        env->tenant = cases[i].tenant;
        pool = test_pool(env, cases[i].origin, cases[i].addr, cases[i].sasl,
                         "x@other.test", HEADER, &count, got);
        if (strcmp(pool, cases[i].want) != 0)
            fail_msg("case %zu: pool %s, want %s", i, pool, cases[i].want);
        assert_int_equal(count, 1);
        assert_null(strstr(vstr_str(got), "X-Sluice-Pool"));
        myfree(pool);
    }
    env->tenant = NULL;
    assert_true(test_log_has(env, "smtp_source_pool_allow_maps (tenant:globex) "
                                  "allows only \"marketing\""));
    assert_true(test_log_has(env, "smtp_source_pool_allow_maps (mynetworks) "
                                  "allows only \"transactional marketing\""));
    vstr_free(spec);
    vstr_free(why);
    vstr_free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rules, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_header, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_allow_defaults, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_allow_maps, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
