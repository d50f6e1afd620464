/*
 * cleanup_checks_test - unit tests for canonical rewriting and the content
 * checks: address spans of headers, envelope and header rewriting
 * (extension carried over, "@domain" values), header_checks and
 * body_checks actions (REJECT, DISCARD, HOLD into hold/, WARN, REPLACE,
 * PREPEND, IGNORE), with real tables (inline:, pcre:) and real files
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cleanup.h"
#include "cleanup_proto.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "vstr.h"

/* Berkeley DB cannot free all of a handle that hit a corrupt page
   (DB_RUNRECOVERY): without this, a table spoiled under a running cleanup
   would fail the ASan build on that library's leak at exit. Only
   LeakSanitizer calls it. */
const char *__lsan_default_suppressions(void);

/* __lsan_default_suppressions - LeakSanitizer's hook */
const char *__lsan_default_suppressions(void)
{
    return "leak:libdb-5.3.so\n";
}

typedef struct TEST_ENV {
    char dir[64];
    CLEANUP_CONF conf;
    VSTR *path;
    VSTR *why;
} TEST_ENV;

/* test_setup - a queue directory with incoming/ and hold/, a log file */
static int test_setup(void **state)
{
    TEST_ENV *env = mycalloc(1, sizeof(*env));

    snprintf(env->dir, sizeof(env->dir), "/tmp/cleanup_checks.XXXXXX");
    assert_non_null(mkdtemp(env->dir));
    env->path = vstr_alloc(100);
    env->why = vstr_alloc(100);
    vstr_sprintf(env->path, "%s/incoming", env->dir);
    assert_int_equal(mkdir(vstr_str(env->path), 0700), 0);
    vstr_sprintf(env->path, "%s/hold", env->dir);
    assert_int_equal(mkdir(vstr_str(env->path), 0700), 0);
    vstr_sprintf(env->path, "%s/maillog", env->dir);
    msg_init("sluice", "cleanup");
    assert_int_equal(msg_log_file(vstr_str(env->path)), 0);
    env->conf.queue_dir = env->dir;
    env->conf.myhostname = "mx.example";
    env->conf.myorigin = "example.org";
    env->conf.message_size_limit = 10000000;
    env->conf.header_size_limit = 102400;
    env->conf.body_checks_size_limit = 51200;
    *state = env;
    return 0;
}

/* test_teardown - free the tables, remove the queue directory */
static int test_teardown(void **state)
{
    TEST_ENV *env = *state;
    VSTR *cmd = vstr_alloc(100);
    MAPS **tables[] = {
        &env->conf.canonical_maps,
        &env->conf.sender_canonical_maps,
        &env->conf.recipient_canonical_maps,
        &env->conf.header_checks,
        &env->conf.body_checks,
    };

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(tables); i++)
        if (*tables[i])
            *tables[i] = maps_free(*tables[i]);
    vstr_sprintf(cmd, "rm -rf '%s'", env->dir);
    assert_int_equal(system(vstr_str(cmd)), 0);
    vstr_free(cmd);
    vstr_free(env->path);
    vstr_free(env->why);
    myfree(env);
    return 0;
}

/* test_maps - open a table list or fail the test */
static MAPS *test_maps(TEST_ENV *env, const char *param, const char *value)
{
    MAPS *maps = maps_create(param, value, MAP_FLAG_NONE, env->why);

    if (maps == NULL)
        fail_msg("%s: %s", param, vstr_str(env->why));
    return maps;
}

/* test_pcre - write a pcre table file and open it */
static MAPS *test_pcre(TEST_ENV *env, const char *name, const char *text)
{
    VSTR *spec = vstr_alloc(100);
    MAPS *maps;
    FILE *fp;

    vstr_sprintf(env->path, "%s/%s", env->dir, name);
    assert_non_null(fp = fopen(vstr_str(env->path), "w"));
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    vstr_sprintf(spec, "pcre:%s", vstr_str(env->path));
    maps = test_maps(env, name, vstr_str(spec));
    vstr_free(spec);
    return maps;
}

/* test_send - one message through cleanup; its status, its queue ID */
static int test_send(TEST_ENV *env, const char *sender, const char *rcpt,
                     const char *content, char *qid, size_t qid_size)
{
    CLEANUP_BEGIN req = {
        .sender = sender,
        .origin = "smtp",
        .client_name = "client.test",
        .client_addr = "127.0.0.1",
        .helo_name = "helo.test",
        .protocol = "ESMTP",
        .size = -1,
    };
    CLEANUP_MSG *msg = cleanup_msg_begin(&env->conf, &req, NULL);
    int status;

    assert_int_equal(msg->status, 0);
    snprintf(qid, qid_size, "%s", msg->qid);
    cleanup_msg_rcpt(msg, rcpt, NULL, NULL);
    /* Odd chunks: lines split anywhere. */
    for (size_t i = 0, len = strlen(content); i < len; i += 7)
        cleanup_msg_data(msg, content + i, len - i < 7 ? len - i : 7);
    status = cleanup_msg_end(msg, false);
    cleanup_msg_free(msg);
    return status;
}

/* test_load - the file in queue (NULL when absent); content into content */
static QFILE_INFO *test_load(TEST_ENV *env, const char *queue, const char *qid,
                             VSTR *content)
{
    QFILE_READER *reader;
    QFILE_INFO *info;
    QFILE_REC rec;
    int fd;

    vstr_sprintf(env->path, "%s/%s/%s", env->dir, queue, qid);
    if ((fd = open(vstr_str(env->path), O_RDONLY)) < 0)
        return NULL;
    if ((info = qfile_info_read(fd, env->why)) == NULL)
        fail_msg("queue file rejected: %s", vstr_str(env->why));
    lseek(fd, 0, SEEK_SET);
    reader = qfile_reader_alloc(fd);
    vstr_reset(content);
    while (qfile_read_rec(reader, &rec, env->why) > 0)
        if (rec.type == QFILE_REC_CONT)
            vstr_ncat(content, rec.data, rec.len);
    qfile_reader_free(reader);
    close(fd);
    return info;
}

/* test_log_has - does the maillog contain text */
static bool test_log_has(TEST_ENV *env, const char *text)
{
    static char buf[262144];
    ssize_t n;
    int fd;

    vstr_sprintf(env->path, "%s/maillog", env->dir);
    assert_true((fd = open(vstr_str(env->path), O_RDONLY)) >= 0);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = 0;
    return strstr(buf, text) != NULL;
}

/* test_spans_text - the addresses found in value, joined by '|' */
static char *test_spans_text(const char *value)
{
    size_t spans[20];
    ssize_t n = cleanup_rewrite_addr_spans(value, spans, 10);
    VSTR *out = vstr_alloc(64);

    if (n < 0)
        vstr_cpy(out, "ERROR");
    for (ssize_t i = 0; i < n; i++) {
        if (i > 0)
            vstr_addch(out, '|');
        vstr_ncat(out, value + spans[2 * i], spans[2 * i + 1] - spans[2 * i]);
    }
    return vstr_export(out);
}

static void test_addr_spans(void **state)
{
    static const struct {
        const char *value;
        const char *want;
    } cases[] = {
        {" a@b.test", "a@b.test"},
        {" Some One <a@b.test>, c@d.test", "a@b.test|c@d.test"},
        {" \"Doe, John\" <jd@x.test>,\n\tother@y.test (Other, Person)",
         "jd@x.test|other@y.test"},
        {" < a@b.test >", "a@b.test"},
        {" user", "user"},
        {" \"quoted local\"@x.test, ok@x.test", "ok@x.test"},
        {" <@route.test:a@b.test>, ok@x.test", "ok@x.test"},
        {" John Smith", ""},
        {" <>", ""},
        {" undisclosed-recipients:;", "ERROR"},
        {" \"unbalanced <a@b.test>", "ERROR"},
        {" a@b.test (unbalanced", "ERROR"},
        {" a@b.test>", "ERROR"},
    };

    (void) state;
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(cases); i++) {
        char *got = test_spans_text(cases[i].value);

        if (strcmp(got, cases[i].want) != 0)
            fail_msg("\"%s\": got \"%s\", want \"%s\"", cases[i].value, got,
                     cases[i].want);
        myfree(got);
    }
}

static void test_rewrite_envelope_and_headers(void **state)
{
    TEST_ENV *env = *state;
    VSTR *content = vstr_alloc(256);
    QFILE_INFO *info;
    char qid[64];

    env->conf.recipient_delimiter = "+";
    env->conf.sender_canonical_maps = test_maps(
        env, "sender_canonical_maps", "inline:{ old@x.test=mid@y.test }");
    env->conf.canonical_maps =
        test_maps(env, "canonical_maps",
                  "inline:{ mid@y.test=final@z.test, @dom.test=@new.test }");
    env->conf.recipient_canonical_maps = test_maps(
        env, "recipient_canonical_maps",
        "inline:{ joe@a.test=jim@b.test, exact+tag@a.test=t@c.test }");

    assert_int_equal(
        test_send(env, "old@x.test", "joe+ext@a.test",
                  "From: Old Name <old@x.test>\n"
                  "To: joe+ext@a.test, \"Ex, Act\" <exact+tag@a.test>,\n"
                  " keep@k.test (Keep)\n"
                  "Cc: someone@dom.test\n"
                  "Subject: old@x.test stays\n"
                  "X-Other: joe@a.test\n\nbody old@x.test\n",
                  qid, sizeof(qid)),
        0);
    assert_non_null(info = test_load(env, "incoming", qid, content));
    assert_string_equal(info->sender, "final@z.test");
    assert_string_equal(info->rcpts[0].address, "jim+ext@b.test");
    qfile_info_free(info);
    assert_non_null(strstr(vstr_str(content),
                           "From: Old Name <final@z.test>\n"
                           "To: jim+ext@b.test, \"Ex, Act\" <t@c.test>,\n"
                           " keep@k.test (Keep)\n"
                           "Cc: someone@new.test\n"
                           "Subject: old@x.test stays\n"
                           "X-Other: joe@a.test\n"));
    assert_non_null(strstr(vstr_str(content), "\nbody old@x.test\n"));

    /* @domain value on the envelope; an unmatched address is untouched. */
    assert_int_equal(test_send(env, "a@dom.test", "who@else.test",
                               "Subject: x\n\nb\n", qid, sizeof(qid)),
                     0);
    assert_non_null(info = test_load(env, "incoming", qid, content));
    assert_string_equal(info->sender, "a@new.test");
    assert_string_equal(info->rcpts[0].address, "who@else.test");
    qfile_info_free(info);
    env->conf.recipient_delimiter = NULL;
    vstr_free(content);
}

static void test_header_checks(void **state)
{
    TEST_ENV *env = *state;
    VSTR *content = vstr_alloc(256);
    QFILE_INFO *info;
    char qid[64];
    int status;

    env->conf.header_checks =
        test_pcre(env, "header_checks",
                  "/^Subject: reject me/ REJECT go away\n"
                  "/^Subject: code/ REJECT 4.7.0 later\n"
                  "/^Subject: plain reject/ reject\n"
                  "/^Subject: hold/ HOLD held for review\n"
                  "/^Subject: discard/ DISCARD dropped\n"
                  "/^Subject: warn/ WARN just so you know\n"
                  "/^X-Replace:/ REPLACE X-Replaced: yes\n"
                  "/^X-Prepend:/ PREPEND X-Before: 1\n"
                  "/^X-Ignore:/ IGNORE\n"
                  "/^X-Folded: a b/ WARN folded seen\n");

    status = test_send(env, "s@x.test", "r@y.test",
                       "Subject: reject me now\n\nbody\n", qid, sizeof(qid));
    assert_int_equal(status, 550);
    assert_null(test_load(env, "incoming", qid, content));
    assert_true(test_log_has(env, ": reject: header Subject: reject me now from"
                                  " client.test[127.0.0.1]; from=<s@x.test>"
                                  " to=<r@y.test> proto=ESMTP"
                                  " helo=<helo.test>: 5.7.1 go away"));

    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: code\n\nb\n", qid, sizeof(qid)),
                     451);
    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: plain reject\n\nb\n", qid,
                               sizeof(qid)),
                     550);
    assert_true(test_log_has(env, ": 5.7.1 message content rejected"));

    /* HOLD: committed into hold/, not incoming/. */
    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: hold this\n\nbody\n", qid,
                               sizeof(qid)),
                     0);
    assert_null(test_load(env, "incoming", qid, content));
    assert_non_null(info = test_load(env, "hold", qid, content));
    qfile_info_free(info);
    assert_true(test_log_has(env, ": hold: header Subject: hold this from"));

    /* DISCARD: success, nothing anywhere. */
    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: discard\n\nbody\n", qid, sizeof(qid)),
                     0);
    assert_null(test_load(env, "incoming", qid, content));
    assert_null(test_load(env, "hold", qid, content));
    vstr_sprintf(env->path, "%s/incoming/%s%s", env->dir, CLEANUP_TMP_PREFIX,
                 qid);
    assert_int_equal(access(vstr_str(env->path), F_OK), -1);
    assert_true(test_log_has(env, ": discard: header Subject: discard from"));

    /* WARN, REPLACE, PREPEND, IGNORE, folded headers joined. */
    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: warn\nX-Replace: old\nX-Prepend: p\n"
                               "X-Ignore: gone\nX-Folded: a\n b\n\nbody\n",
                               qid, sizeof(qid)),
                     0);
    assert_non_null(info = test_load(env, "incoming", qid, content));
    qfile_info_free(info);
    assert_non_null(strstr(vstr_str(content),
                           "Subject: warn\nX-Replaced: yes\nX-Before: 1\n"
                           "X-Prepend: p\nX-Folded: a\n b\n"));
    assert_null(strstr(vstr_str(content), "X-Ignore"));
    assert_true(test_log_has(env, ": warning: header Subject: warn from"));
    assert_true(test_log_has(env, ": warning: header X-Folded: a b from"));
    vstr_free(content);
}

static void test_body_checks(void **state)
{
    TEST_ENV *env = *state;
    VSTR *content = vstr_alloc(256);
    QFILE_INFO *info;
    char qid[64];

    env->conf.body_checks = test_pcre(env, "body_checks",
                                      "/^bad line/ REJECT body refused\n"
                                      "/^secret/ REPLACE [removed]\n"
                                      "/^drop me/ IGNORE\n"
                                      "/^mark/ PREPEND > marked\n"
                                      "/^$/ WARN empty line\n");
    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: x\n\nfine\nbad line here\nmore\n", qid,
                               sizeof(qid)),
                     550);
    assert_null(test_load(env, "incoming", qid, content));
    assert_true(test_log_has(env, ": reject: body bad line here from"));

    /* The separator is no body line; the last line lacks its newline. */
    assert_int_equal(test_send(env, "s@x.test", "r@y.test",
                               "Subject: x\n\nsecret stuff\ndrop me\nmark\n"
                               "keep\nsecret end",
                               qid, sizeof(qid)),
                     0);
    assert_non_null(info = test_load(env, "incoming", qid, content));
    qfile_info_free(info);
    assert_non_null(strstr(vstr_str(content),
                           "\n\n[removed]\n> marked\nmark\nkeep\n[removed]\n"));
    assert_null(strstr(vstr_str(content), "drop me"));
    assert_false(test_log_has(env, "empty line"));
    vstr_free(content);
}

/* test_broken_table - a btree: table, opened, then its .db overwritten in
   place with junk before any lookup cached a page: lookups fail */
static MAPS *test_broken_table(TEST_ENV *env, const char *param,
                               const char *text)
{
    VSTR *spec = vstr_alloc(100);
    struct stat st;
    char *junk;
    MAPS *maps;
    FILE *fp;
    int fd;

    vstr_sprintf(env->path, "%s/%s", env->dir, param);
    assert_non_null(fp = fopen(vstr_str(env->path), "w"));
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    vstr_sprintf(spec, "btree:%s", vstr_str(env->path));
    if (map_build(vstr_str(spec), MAP_FLAG_NONE, env->why) < 0)
        fail_msg("map_build: %s", vstr_str(env->why));
    maps = test_maps(env, param, vstr_str(spec));
    vstr_sprintf(env->path, "%s/%s.db", env->dir, param);
    assert_true((fd = open(vstr_str(env->path), O_WRONLY)) >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    junk = mymalloc((size_t) st.st_size);
    memset(junk, 0x5a, (size_t) st.st_size);
    assert_int_equal(pwrite(fd, junk, (size_t) st.st_size, 0), st.st_size);
    assert_int_equal(close(fd), 0);
    myfree(junk);
    vstr_free(spec);
    return maps;
}

static void test_table_failures(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_BEGIN req = {
        .sender = "s@x.test",
        .origin = "smtp",
        .size = -1,
    };
    CLEANUP_MSG *msg;
    char qid[64];

    /* Envelope sender: told at the first recipient, answered at END. */
    env->conf.canonical_maps =
        test_broken_table(env, "canonical_maps", "s@x.test t@x.test\n");
    msg = cleanup_msg_begin(&env->conf, &req, NULL);
    assert_int_equal(msg->status, 0);
    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@y.test", NULL, NULL);
    cleanup_msg_data(msg, "Subject: x\n\nb\n", 14);
    assert_int_equal(cleanup_msg_end(msg, false), 451);
    assert_string_equal(vstr_str(msg->reason),
                        "4.3.0 address rewriting table lookup failed");
    cleanup_msg_free(msg);
    vstr_sprintf(env->path, "%s/incoming/%s%s", env->dir, CLEANUP_TMP_PREFIX,
                 qid);
    assert_int_equal(access(vstr_str(env->path), F_OK), -1);
    env->conf.canonical_maps = maps_free(env->conf.canonical_maps);

    /* header_checks. */
    env->conf.header_checks =
        test_broken_table(env, "header_checks", "x-a:b REJECT\n");
    assert_int_equal(test_send(env, "s@x.test", "r@y.test", "Subject: x\n\nb\n",
                               qid, sizeof(qid)),
                     451);
    vstr_sprintf(env->path, "%s/incoming/%s", env->dir, qid);
    assert_int_equal(access(vstr_str(env->path), F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_spans),
        cmocka_unit_test_setup_teardown(test_rewrite_envelope_and_headers,
                                        test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_header_checks, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_body_checks, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_table_failures, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
