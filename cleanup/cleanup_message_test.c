/*
 * cleanup_message_test - unit tests for one message in cleanup: the file
 * stays invisible until commit, header fixes, address qualification, size
 * limit, abort and lost connections leave nothing, a failure at rename
 * leaves nothing, the filter seam, stale temporary files
 */
#include "sys_defs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cleanup.h"
#include "cleanup_proto.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "vstr.h"

typedef struct TEST_ENV {
    char dir[64];
    CLEANUP_CONF conf;
    VSTR *path;
} TEST_ENV;

/* test_setup - a queue directory with incoming/, logging to a file */
static int test_setup(void **state)
{
    TEST_ENV *env = mycalloc(1, sizeof(*env));

    snprintf(env->dir, sizeof(env->dir), "/tmp/cleanup_test.XXXXXX");
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
    env->conf.message_size_limit = 10000000;
    env->conf.header_size_limit = 102400;
    env->conf.body_checks_size_limit = 51200;
    *state = env;
    return 0;
}

/* test_teardown - remove the queue directory */
static int test_teardown(void **state)
{
    TEST_ENV *env = *state;
    VSTR *cmd = vstr_alloc(100);

    vstr_sprintf(cmd, "rm -rf '%s'", env->dir);
    assert_int_equal(system(vstr_str(cmd)), 0);
    vstr_free(cmd);
    vstr_free(env->path);
    myfree(env);
    return 0;
}

/* test_incoming_count - files in incoming/ (temporary ones included) */
static int test_incoming_count(TEST_ENV *env)
{
    DIR *dir;
    struct dirent *entry;
    int count = 0;

    vstr_sprintf(env->path, "%s/incoming", env->dir);
    assert_non_null(dir = opendir(vstr_str(env->path)));
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.' || entry->d_name[1] == 't')
            count++;
    closedir(dir);
    return count;
}

/* test_exists - does incoming/NAME exist */
static bool test_exists(TEST_ENV *env, const char *prefix, const char *qid)
{
    struct stat st;

    vstr_sprintf(env->path, "%s/incoming/%s%s", env->dir, prefix, qid);
    return stat(vstr_str(env->path), &st) == 0;
}

/* test_begin - BEGIN with the usual envelope */
static CLEANUP_MSG *test_begin(TEST_ENV *env, const char *sender,
                               long long flags,
                               const CLEANUP_FILTER *const *filters)
{
    CLEANUP_BEGIN req = {
        .flags = flags,
        .sender = sender,
        .origin = "smtp",
        .client_name = "unknown",
        .client_addr = "127.0.0.1",
        .helo_name = "client.test",
        .protocol = "ESMTP",
        .size = -1,
    };

    return cleanup_msg_begin(&env->conf, &req, filters);
}

/* test_load - the committed file: its info, and its content in content */
static QFILE_INFO *test_load(TEST_ENV *env, const char *qid, VSTR *content)
{
    QFILE_READER *reader;
    QFILE_INFO *info;
    QFILE_REC rec;
    VSTR *why = vstr_alloc(10);
    int fd;

    vstr_sprintf(env->path, "%s/incoming/%s", env->dir, qid);
    assert_true((fd = open(vstr_str(env->path), O_RDONLY)) >= 0);
    info = qfile_info_read(fd, why);
    if (info == NULL)
        fail_msg("queue file rejected: %s", vstr_str(why));
    lseek(fd, 0, SEEK_SET);
    reader = qfile_reader_alloc(fd);
    vstr_reset(content);
    while (qfile_read_rec(reader, &rec, why) > 0)
        if (rec.type == QFILE_REC_CONT)
            vstr_ncat(content, rec.data, rec.len);
    qfile_reader_free(reader);
    close(fd);
    vstr_free(why);
    return info;
}

/* test_log_has - does the maillog contain text */
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

static void test_commit(void **state)
{
    TEST_ENV *env = *state;
    static const char content[] =
        "Subject: hi\nX-Long: a\n b\n\nbody \xff\n.\nend\n";
    CLEANUP_MSG *msg = test_begin(env, "alice", CLEANUP_FLAG_LOCAL, NULL);
    VSTR *got = vstr_alloc(100);
    VSTR *want = vstr_alloc(100);
    QFILE_INFO *info;
    char qid[64];

    assert_int_equal(msg->status, 0);
    snprintf(qid, sizeof(qid), "%s", msg->qid);
    assert_true(test_exists(env, CLEANUP_TMP_PREFIX, qid));
    assert_false(test_exists(env, "", qid));
    cleanup_msg_rcpt(msg, "bob", NULL, NULL);
    cleanup_msg_rcpt(msg, "carol@x.test", "rfc822;carol@x.test", "FAILURE");
    /* One byte at a time: lines split anywhere. */
    for (size_t i = 0; i < sizeof(content) - 1; i++)
        cleanup_msg_data(msg, content + i, 1);
    /* Not visible before END. */
    assert_false(test_exists(env, "", qid));
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    assert_true(msg->committed);
    msg = cleanup_msg_free(msg);
    assert_false(test_exists(env, CLEANUP_TMP_PREFIX, qid));
    assert_true(test_exists(env, "", qid));
    assert_int_equal(test_incoming_count(env), 1);

    info = test_load(env, qid, got);
    assert_string_equal(info->sender, "alice@example.org");
    assert_int_equal(info->rcpt_count, 2);
    assert_string_equal(info->rcpts[0].address, "bob@example.org");
    assert_string_equal(info->rcpts[1].address, "carol@x.test");
    assert_string_equal(info->rcpts[1].orcpt, "rfc822;carol@x.test");
    assert_string_equal(info->rcpts[1].notify, "FAILURE");
    assert_string_equal(qfile_info_attr(info, "client_addr"), "127.0.0.1");
    assert_string_equal(qfile_info_attr(info, "helo_name"), "client.test");
    assert_string_equal(qfile_info_attr(info, "origin"), "smtp");
    qfile_info_free(info);

    /* Headers kept, missing ones added at the end of the header block. */
    vstr_sprintf(want,
                 "Subject: hi\nX-Long: a\n b\nMessage-Id: <%s@mx.example>"
                 "\nDate: ",
                 qid);
    assert_memory_equal(vstr_str(got), vstr_str(want), vstr_len(want));
    assert_non_null(strstr(vstr_str(got), "\nFrom: alice@example.org\n\n"
                                          "body \xff\n.\nend\n"));
    assert_int_equal(vstr_str(got)[vstr_len(got) - 1], '\n');
    vstr_sprintf(want, "%s: message-id=<%s@mx.example>", qid, qid);
    assert_true(test_log_has(env, vstr_str(want)));
    /* qmgr logs from=, size=, nrcpt= (queue active), not cleanup */
    assert_false(test_log_has(env, "queue active"));
    vstr_free(got);
    vstr_free(want);
}

static void test_headers_present(void **state)
{
    TEST_ENV *env = *state;
    static const char content[] =
        "From: x@y\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        "Message-ID:\n  <abc@def>\n\nhi";
    CLEANUP_MSG *msg = test_begin(env, "", 0, NULL);
    VSTR *got = vstr_alloc(100);
    QFILE_INFO *info;
    char qid[64];

    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, content, sizeof(content) - 1);
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    info = test_load(env, qid, got);
    assert_string_equal(info->sender, "");
    qfile_info_free(info);
    /* Nothing added; the missing final newline is. */
    assert_string_equal(vstr_str(got),
                        "From: x@y\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
                        "Message-ID:\n  <abc@def>\n\nhi\n");
    assert_true(test_log_has(env, ": message-id=<abc@def>"));
    vstr_free(got);
}

static void test_headerless(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg = test_begin(env, "a@b", 0, NULL);
    VSTR *got = vstr_alloc(100);
    char qid[64];

    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, "just a body line\nmore\n", 22);
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    qfile_info_free(test_load(env, qid, got));
    assert_true(strncmp(vstr_str(got), "Message-Id: <", 13) == 0);
    assert_non_null(strstr(vstr_str(got), "\n\njust a body line\nmore\n"));
    /* Not local: no From: added. */
    assert_null(strstr(vstr_str(got), "From:"));
    vstr_free(got);
}

static void test_empty_content(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg = test_begin(env, "a@b", 0, NULL);
    VSTR *got = vstr_alloc(100);
    char qid[64];

    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    qfile_info_free(test_load(env, qid, got));
    assert_non_null(strstr(vstr_str(got), "\nDate: "));
    assert_int_equal(vstr_str(got)[vstr_len(got) - 1], '\n');
    assert_int_equal(vstr_str(got)[vstr_len(got) - 2], '\n');
    vstr_free(got);
}

static void test_abort_and_lost(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg = test_begin(env, "a@b", 0, NULL);

    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, "Subject: x\n\nbody\n", 17);
    assert_int_equal(test_incoming_count(env), 1);
    assert_int_equal(cleanup_msg_end(msg, true), 0);
    assert_false(msg->committed);
    cleanup_msg_free(msg);
    assert_int_equal(test_incoming_count(env), 0);

    /* A lost connection frees the message without END. */
    msg = test_begin(env, "a@b", 0, NULL);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, "Subject: x\n", 11);
    assert_int_equal(test_incoming_count(env), 1);
    cleanup_msg_free(msg);
    assert_int_equal(test_incoming_count(env), 0);
}

static void test_size_limit(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg;
    char big[200];

    env->conf.message_size_limit = 100;
    memset(big, 'x', sizeof(big));
    msg = test_begin(env, "a@b", 0, NULL);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, "Subject: x\n\n", 12);
    cleanup_msg_data(msg, big, sizeof(big));
    /* Removed at once, not at END. */
    assert_int_equal(test_incoming_count(env), 0);
    cleanup_msg_data(msg, big, sizeof(big));
    assert_int_equal(cleanup_msg_end(msg, false), 552);
    assert_string_equal(vstr_str(msg->reason),
                        "5.3.4 Message size exceeds fixed limit");
    cleanup_msg_free(msg);
    assert_int_equal(test_incoming_count(env), 0);

    /* SIZE= over the limit fails at BEGIN. */
    {
        CLEANUP_BEGIN req = {.sender = "a@b", .origin = "smtp", .size = 101};

        msg = cleanup_msg_begin(&env->conf, &req, NULL);
        assert_int_equal(msg->status, 552);
        assert_int_equal(cleanup_msg_end(msg, false), 552);
        cleanup_msg_free(msg);
    }
    assert_int_equal(test_incoming_count(env), 0);
}

static void test_no_recipients(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg = test_begin(env, "a@b", 0, NULL);

    cleanup_msg_data(msg, "Subject: x\n\n", 12);
    assert_int_equal(cleanup_msg_end(msg, false), 554);
    cleanup_msg_free(msg);
    assert_int_equal(test_incoming_count(env), 0);
}

static void test_write_failures(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg;
    CLEANUP_CONF bad = env->conf;

    /* The queue file cannot be created. */
    bad.queue_dir = "/nonexistent/queue";
    {
        CLEANUP_BEGIN req = {.sender = "a@b", .origin = "smtp", .size = -1};

        msg = cleanup_msg_begin(&bad, &req, NULL);
        assert_int_equal(msg->status, 451);
        assert_string_equal(vstr_str(msg->reason),
                            "4.3.0 queue file write error");
        cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
        cleanup_msg_data(msg, "x\n", 2);
        assert_int_equal(cleanup_msg_end(msg, false), 451);
        cleanup_msg_free(msg);
    }

    /* The rename fails (the file vanished): 451, nothing visible, and the
       log names the step that failed. */
    msg = test_begin(env, "a@b", 0, NULL);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, "Subject: x\n\nbody\n", 17);
    assert_int_equal(unlink(msg->tmp_path), 0);
    assert_int_equal(cleanup_msg_end(msg, false), 451);
    assert_false(msg->committed);
    {
        char line[200];

        snprintf(line, sizeof(line),
                 "warning: commit %s: rename: No such file or directory",
                 msg->qid);
        cleanup_msg_free(msg);
        assert_true(test_log_has(env, line));
    }
    assert_int_equal(test_incoming_count(env), 0);
}

/* test_fsize_failure - writes fail (EFBIG) after limit bytes: status */
static int test_fsize_failure(TEST_ENV *env, rlim_t limit, size_t body_len)
{
    struct rlimit old, small;
    CLEANUP_MSG *msg;
    char *body = mymalloc(body_len);
    int status;

    memset(body, 'y', body_len);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = limit;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    msg = test_begin(env, "a@b", 0, NULL);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, "Subject: x\n\n", 12);
    for (size_t done = 0; done < body_len; done += 1000)
        cleanup_msg_data(msg, body + done,
                         body_len - done < 1000 ? body_len - done : 1000);
    status = cleanup_msg_end(msg, false);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    if (status)
        assert_string_equal(vstr_str(msg->reason),
                            "4.3.0 queue file write error");
    assert_false(msg->committed && status);
    cleanup_msg_free(msg);
    myfree(body);
    return status;
}

/* The disk fills up mid-message or at the final flush: 451, no file. */
static void test_disk_full(void **state)
{
    TEST_ENV *env = *state;

    /* Fails while the content streams (the writer flushes every 64k). */
    assert_int_equal(test_fsize_failure(env, 100000, 300000), 451);
    assert_int_equal(test_incoming_count(env), 0);
    /* Fails at END, in the last flush. */
    assert_int_equal(test_fsize_failure(env, 1000, 5000), 451);
    assert_int_equal(test_incoming_count(env), 0);
    assert_true(test_log_has(env, "File too large"));
    /* And within the limit it works. */
    assert_int_equal(test_fsize_failure(env, 100000, 5000), 0);
    assert_int_equal(test_incoming_count(env), 1);
}

/* A filter: drops X-Drop:, rewrites Subject:, counts body bytes. */
typedef struct TEST_FILTER_STATE {
    size_t body_bytes;
    int headers;
    bool ended;
} TEST_FILTER_STATE;

static TEST_FILTER_STATE test_filter_result;

static void *test_filter_begin(CLEANUP_MSG *msg)
{
    memset(&test_filter_result, 0, sizeof(test_filter_result));
    return &test_filter_result;
}

static CLEANUP_FILTER_ACT test_filter_header(void *state, CLEANUP_MSG *msg,
                                             VSTR *header)
{
    TEST_FILTER_STATE *fs = state;

    fs->headers++;
    if (strncasecmp(vstr_str(header), "x-drop:", 7) == 0)
        return CLEANUP_FILTER_DROP;
    if (strncasecmp(vstr_str(header), "subject:", 8) == 0)
        vstr_cpy(header, "Subject: [checked] hi\n");
    return CLEANUP_FILTER_KEEP;
}

static void test_filter_body(void *state, CLEANUP_MSG *msg, const char *data,
                             size_t len)
{
    ((TEST_FILTER_STATE *) state)->body_bytes += len;
}

static void test_filter_end(void *state, CLEANUP_MSG *msg)
{
    ((TEST_FILTER_STATE *) state)->ended = true;
}

static void test_filters(void **state)
{
    TEST_ENV *env = *state;
    static const CLEANUP_FILTER filter = {
        .name = "test",
        .begin = test_filter_begin,
        .header = test_filter_header,
        .body = test_filter_body,
        .end = test_filter_end,
    };
    static const CLEANUP_FILTER *const filters[] = {&filter, NULL};
    static const char content[] =
        "Subject: hi\nX-Drop: secret\n  more\nDate: x\n\n12345\n";
    CLEANUP_MSG *msg = test_begin(env, "a@b", 0, filters);
    VSTR *got = vstr_alloc(100);
    char qid[64];

    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg, content, sizeof(content) - 1);
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    qfile_info_free(test_load(env, qid, got));
    assert_true(strncmp(vstr_str(got),
                        "Subject: [checked] hi\nDate: x\n"
                        "Message-Id: <",
                        43) == 0);
    assert_null(strstr(vstr_str(got), "secret"));
    assert_int_equal(test_filter_result.headers, 3);
    assert_int_equal(test_filter_result.body_bytes, 7); /* "\n12345\n" */
    assert_true(test_filter_result.ended);
    vstr_free(got);
}

static void test_header_size_limit(void **state)
{
    TEST_ENV *env = *state;
    CLEANUP_MSG *msg;
    VSTR *got = vstr_alloc(100);
    char qid[64];

    env->conf.header_size_limit = 40;
    msg = test_begin(env, "a@b", 0, NULL);
    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    cleanup_msg_data(msg,
                     "A: 1234567890\nB: 1234567890\nC: 1234567890\n"
                     "Message-Id: <late@x>\n\nbody\n",
                     70);
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    qfile_info_free(test_load(env, qid, got));
    /* C: and what follows became body; Message-Id added before it. */
    assert_true(strncmp(vstr_str(got),
                        "A: 1234567890\nB: 1234567890\n"
                        "Message-Id: <",
                        41) == 0);
    assert_non_null(strstr(vstr_str(got), "\n\nC: 1234567890\n"
                                          "Message-Id: <late@x>\n\nbody\n"));
    vstr_free(got);
}

/* test_chunked - commit content fed in chunks of size step; its content
   with the generated Message-Id and Date lines removed */
static void test_chunked(TEST_ENV *env, const char *content, size_t len,
                         size_t step, VSTR *out)
{
    CLEANUP_MSG *msg = test_begin(env, "a@b", 0, NULL);
    VSTR *got = vstr_alloc(100);
    char qid[64];
    const char *cp, *end;

    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, "r@x.test", NULL, NULL);
    for (size_t done = 0; done < len; done += step)
        cleanup_msg_data(msg, content + done,
                         len - done < step ? len - done : step);
    assert_int_equal(cleanup_msg_end(msg, false), 0);
    cleanup_msg_free(msg);
    qfile_info_free(test_load(env, qid, got));
    vstr_reset(out);
    for (cp = vstr_str(got); cp < vstr_str(got) + vstr_len(got); cp = end) {
        end = memchr(cp, '\n', (size_t) (vstr_str(got) + vstr_len(got) - cp));
        end = end ? end + 1 : vstr_str(got) + vstr_len(got);
        if (strncmp(cp, "Message-Id: <", 13) != 0 && strncmp(cp, "Date: ", 6))
            vstr_ncat(out, cp, (size_t) (end - cp));
    }
    vstr_free(got);
}

/* However the content is cut into chunks, the queue file is the same. */
static void test_chunking_invariance(void **state)
{
    TEST_ENV *env = *state;
    static const char *const contents[] = {
        "Subject: a\nX: b\n c\n\nbody\nmore\n",
        "not a header\nSubject: a\n",
        "Subject: no newline at end",
        "\n\n\nleading empty lines\n",
        "A: 1\n\tcont\nB:\n\n\x80\xff\x00"
        "bin\n",
    };
    VSTR *want = vstr_alloc(100);
    VSTR *got = vstr_alloc(100);

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(contents); i++) {
        size_t len = strlen(contents[i]);

        if (i == 4)
            len = 22; /* holds a NUL */
        test_chunked(env, contents[i], len, len ? len : 1, want);
        for (size_t step = 1; step < 8; step++) {
            test_chunked(env, contents[i], len, step, got);
            assert_int_equal(vstr_len(got), vstr_len(want));
            assert_memory_equal(vstr_str(got), vstr_str(want), vstr_len(want));
        }
    }
    /* Spot checks of the results. */
    test_chunked(env, contents[1], strlen(contents[1]), 3, got);
    assert_string_equal(vstr_str(got), "\nnot a header\nSubject: a\n");
    test_chunked(env, contents[2], strlen(contents[2]), 3, got);
    assert_string_equal(vstr_str(got), "Subject: no newline at end\n\n");
    vstr_free(want);
    vstr_free(got);
}

static void test_remove_stale(void **state)
{
    TEST_ENV *env = *state;
    struct timeval old[2] = {{1000, 0}, {1000, 0}};
    int fd;

    vstr_sprintf(env->path, "%s/incoming/%sOLD", env->dir, CLEANUP_TMP_PREFIX);
    assert_true((fd = open(vstr_str(env->path), O_CREAT | O_WRONLY, 0600)) >=
                0);
    close(fd);
    assert_int_equal(utimes(vstr_str(env->path), old), 0);
    vstr_sprintf(env->path, "%s/incoming/%sNEW", env->dir, CLEANUP_TMP_PREFIX);
    assert_true((fd = open(vstr_str(env->path), O_CREAT | O_WRONLY, 0600)) >=
                0);
    close(fd);
    cleanup_remove_stale(&env->conf, 3600);
    assert_false(test_exists(env, CLEANUP_TMP_PREFIX, "OLD"));
    assert_true(test_exists(env, CLEANUP_TMP_PREFIX, "NEW"));
}

/* test_local_headers - bare addresses in the address headers of local
   mail get @myorigin; those of mail from an SMTP client stay as written */
static void test_local_headers(void **state)
{
    TEST_ENV *env = *state;
    static const char content[] =
        "To: root, \"Doe, J\" <jd>,\n other@x.test\n"
        "Cc: team: a, b;\nReply-To: rt (the desk)\nSubject: root\n\nroot\n";
    static const char local[] =
        "To: root@example.org, \"Doe, J\" <jd@example.org>,\n other@x.test\n"
        "Cc: team: a, b;\nReply-To: rt@example.org (the desk)\n"
        "Subject: root\n";
    VSTR *got = vstr_alloc(100);

    for (int pass = 0; pass < 2; pass++) {
        CLEANUP_MSG *msg =
            test_begin(env, "alice", pass == 0 ? CLEANUP_FLAG_LOCAL : 0, NULL);
        QFILE_INFO *info;
        char qid[64];

        snprintf(qid, sizeof(qid), "%s", msg->qid);
        cleanup_msg_rcpt(msg, "bob@x.test", NULL, NULL);
        cleanup_msg_data(msg, content, sizeof(content) - 1);
        assert_int_equal(cleanup_msg_end(msg, false), 0);
        cleanup_msg_free(msg);
        info = test_load(env, qid, got);
        qfile_info_free(info);
        if (pass == 0)
            assert_memory_equal(vstr_str(got), local, sizeof(local) - 1);
        else
            assert_memory_equal(vstr_str(got), content, 60);
        assert_non_null(strstr(vstr_str(got), "\n\nroot\n"));
    }
    vstr_free(got);
}

static void test_qualify(void **state)
{
    TEST_ENV *env = *state;
    char *addr;

    addr = cleanup_qualify(&env->conf, "root");
    assert_string_equal(addr, "root@example.org");
    myfree(addr);
    addr = cleanup_qualify(&env->conf, "a@b");
    assert_string_equal(addr, "a@b");
    myfree(addr);
    /* a quoted '@' is not a domain: the address is ours */
    addr = cleanup_qualify(&env->conf, "\"v@outside.example\"");
    assert_string_equal(addr, "\"v@outside.example\"@example.org");
    myfree(addr);
    addr = cleanup_qualify(&env->conf, "\"v@outside.example\"@localhost");
    assert_string_equal(addr, "\"v@outside.example\"@localhost");
    myfree(addr);
    addr = cleanup_qualify(&env->conf, "");
    assert_string_equal(addr, "");
    myfree(addr);
}

/* test_virtual_rcpts - queue one message to rcpt (with orcpt) through
   the virtual table; its status, and its recipients "addr orcpt" joined
   by '|' in got */
static int test_virtual_rcpts(TEST_ENV *env, const char *rcpt,
                              const char *orcpt, VSTR *got)
{
    CLEANUP_MSG *msg = test_begin(env, "s@client.test", 0, NULL);
    VSTR *content = vstr_alloc(100);
    char qid[64];
    int status;

    snprintf(qid, sizeof(qid), "%s", msg->qid);
    cleanup_msg_rcpt(msg, rcpt, orcpt, NULL);
    cleanup_msg_data(msg, "Subject: v\n\nv\n", 15);
    status = cleanup_msg_end(msg, false);
    cleanup_msg_free(msg);
    vstr_reset(got);
    if (status == 0) {
        QFILE_INFO *info = test_load(env, qid, content);

        for (size_t i = 0; i < info->rcpt_count; i++)
            vstr_sprintf_append(got, "%s%s %s", i ? "|" : "",
                                info->rcpts[i].address, info->rcpts[i].orcpt);
        qfile_info_free(info);
    }
    vstr_free(content);
    return status;
}

/* test_virtual - virtual_alias_maps: one-to-many, self, catch-all,
   extensions, the limits at their edges, the original recipient */
static void test_virtual(void **state)
{
    TEST_ENV *env = *state;
    VSTR *why = vstr_alloc(100);
    VSTR *got = vstr_alloc(100);
    MAPS *maps = maps_create(
        "virtual_alias_maps",
        "inline:{ {list@v.test = a@x.test, <b@x.test> b@x.test}, "
        "{a@x.test = a@x.test, c@x.test}, @catch.test=all@x.test, "
        "d1@x.test=d2@x.test, d2@x.test=d3@x.test, d3@x.test=d4@x.test, "
        "d4@x.test=d5@x.test, {wide@x.test = w1@x.test, w2@x.test, w3@x.test}, "
        "dom@x.test=@y.test, bare@x.test=user }",
        MAP_FLAG_NONE, why);
    ARGV *split;

    if (maps == NULL)
        fail_msg("%s", vstr_str(why));
    env->conf.virtual_alias_maps = maps;
    env->conf.recipient_delimiter = "+";
    env->conf.virtual_recursion_limit = 3;
    env->conf.virtual_expansion_limit = 4;

    /* list -> a, b (once); a -> a (kept), c: four addresses before the
       duplicate b is dropped. The client's address is the
       ORCPT of every result. */
    assert_int_equal(test_virtual_rcpts(env, "list@v.test", NULL, got), 0);
    assert_string_equal(vstr_str(got), "a@x.test rfc822;list@v.test|"
                                       "b@x.test rfc822;list@v.test|"
                                       "c@x.test rfc822;list@v.test");
    /* A client's ORCPT is kept; an unmapped address gets none. */
    assert_int_equal(test_virtual_rcpts(env, "x@catch.test", "rfc822;o@t", got),
                     0);
    assert_string_equal(vstr_str(got), "all@x.test rfc822;o@t");
    assert_int_equal(test_virtual_rcpts(env, "none@x.test", NULL, got), 0);
    assert_string_equal(vstr_str(got), "none@x.test ");
    /* The extension propagates; "@domain" keeps the local part; a bare
       result gets @myorigin. */
    assert_int_equal(test_virtual_rcpts(env, "d2+e@x.test", NULL, got), 0);
    assert_string_equal(vstr_str(got), "d5+e@x.test rfc822;d2+2Be@x.test");
    assert_int_equal(test_virtual_rcpts(env, "dom@x.test", NULL, got), 0);
    assert_string_equal(vstr_str(got), "dom@y.test rfc822;dom@x.test");
    assert_int_equal(test_virtual_rcpts(env, "bare@x.test", NULL, got), 0);
    assert_string_equal(vstr_str(got), "user@example.org rfc822;bare@x.test");
    /* Three levels pass (d2), a fourth fails (d1); three addresses pass
       (wide), with a limit of two they fail. */
    assert_int_equal(test_virtual_rcpts(env, "d2@x.test", NULL, got), 0);
    assert_string_equal(vstr_str(got), "d5@x.test rfc822;d2@x.test");
    assert_int_equal(test_virtual_rcpts(env, "d1@x.test", NULL, got), 451);
    assert_true(test_log_has(env, "unreasonable virtual_alias_maps map "
                                  "nesting for d4@x.test"));
    env->conf.virtual_expansion_limit = 3;
    assert_int_equal(test_virtual_rcpts(env, "wide@x.test", NULL, got), 0);
    env->conf.virtual_expansion_limit = 2;
    assert_int_equal(test_virtual_rcpts(env, "wide@x.test", NULL, got), 451);
    assert_true(test_log_has(env, "unreasonable virtual_alias_maps map "
                                  "expansion size for w1@x.test"));

    split =
        cleanup_rewrite_result_split(" a@x, \"q, r\"@y\t<c@z>,,\"e\\\"f\"@w ");
    assert_int_equal(split->argc, 4);
    assert_string_equal(split->argv[0], "a@x");
    assert_string_equal(split->argv[1], "\"q, r\"@y");
    assert_string_equal(split->argv[2], "c@z");
    assert_string_equal(split->argv[3], "\"e\\\"f\"@w");
    argv_free(split);

    env->conf.virtual_alias_maps = maps_free(maps);
    env->conf.recipient_delimiter = NULL;
    vstr_free(why);
    vstr_free(got);
}

/* test_from_header - the From: of a local submission, with a full name */
static void test_from_header(void **state)
{
    static const struct {
        const char *sender;
        const char *name;
        const char *want;
    } cases[] = {
        {"u@h.test", NULL, "From: u@h.test\n"},
        {"u@h.test", "", "From: u@h.test\n"},
        {"u@h.test", "   ", "From: u@h.test\n"},
        {"", NULL, "From: MAILER-DAEMON\n"},
        {"u@h.test", "Some One", "From: Some One <u@h.test>\n"},
        {"u@h.test", "  Some   One ", "From: Some One <u@h.test>\n"},
        {"u@h.test", "Doe, John", "From: \"Doe, John\" <u@h.test>\n"},
        {"u@h.test", "J. Doe", "From: \"J. Doe\" <u@h.test>\n"},
        {"u@h.test", "a \"b\" \\c", "From: \"a \\\"b\\\" \\\\c\" <u@h.test>\n"},
        {"u@h.test", "Evil\r\nBcc: x@y.test",
         "From: \"Evil Bcc: x@y.test\" <u@h.test>\n"},
        {"u@h.test", "Tab\tName", "From: Tab Name <u@h.test>\n"},
        {"", "Mailer", "From: Mailer <MAILER-DAEMON>\n"},
    };
    VSTR *out = vstr_alloc(10);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vstr_reset(out);
        cleanup_from_header(out, cases[i].sender, cases[i].name);
        assert_string_equal(vstr_str(out), cases[i].want);
    }
    vstr_free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_headers_present, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_headerless, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_empty_content, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_abort_and_lost, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_size_limit, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_no_recipients, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_write_failures, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_filters, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_header_size_limit, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_chunking_invariance, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_remove_stale, test_setup,
                                        test_teardown),
        cmocka_unit_test(test_from_header),
        cmocka_unit_test_setup_teardown(test_virtual, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_qualify, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_local_headers, test_setup,
                                        test_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
