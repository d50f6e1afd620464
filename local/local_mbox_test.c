/*
 * local_mbox_test - mbox files, Maildirs and commands, on real files
 *
 * Everything happens under a fresh mkdtemp() folder that is removed
 * afterwards. The locking test has several processes append to one mbox
 * at once and then checks that every message is there whole.
 */
#include "sys_defs.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <sys/wait.h>

#include "local.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

#define TEST_WRITERS 8
#define TEST_PER_WRITER 5

static char test_dir[64];

/* test_path - a file in the test folder */
static const char *test_path(VSTR *buf, const char *name)
{
    vstr_sprintf(buf, "%s/%s", test_dir, name);
    return vstr_str(buf);
}

/* test_msg - a message with a body line that needs quoting */
static void test_msg(LOCAL_MSG *msg, const char *content)
{
    memset(msg, 0, sizeof(*msg));
    msg->sender = "a@remote.test";
    msg->recipient = "bob@localhost";
    msg->content = content;
    msg->len = strlen(content);
    msg->arrival = 0;
    msg->delivered_to = true;
}

/* test_mbox_format - From_ line, delivery headers, quoting, empty line */
static void test_mbox_format(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    LOCAL_MSG msg;
    char *data;

    test_msg(&msg, "Subject: s\n\nFrom here\nbody"); /* no final LF */
    local_mbox_deliver(test_path(path, "mbox"), &msg, 0, (uid_t) -1, (gid_t) -1,
                       LOCAL_LOCK_WAIT, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    data = safe_file_read(vstr_str(path), 100000, NULL);
    assert_non_null(data);
    assert_string_equal(data, "From a@remote.test  Thu Jan  1 00:00:00 1970\n"
                              "Delivered-To: bob@localhost\n"
                              "Return-Path: <a@remote.test>\n"
                              "Subject: s\n\n>From here\nbody\n\n");
    myfree(data);
    /* The lock file is gone afterwards. */
    assert_int_equal(access(test_path(path, "mbox.lock"), F_OK), -1);

    /* Over mailbox_size_limit: bounced, the file untouched. */
    local_mbox_deliver(test_path(path, "mbox"), &msg, 100, (uid_t) -1,
                       (gid_t) -1, LOCAL_LOCK_WAIT, &res);
    assert_int_equal(res.stat, LOCAL_STAT_BOUNCE);
    assert_string_equal(res.dsn, "5.2.2");
    unlink(test_path(path, "mbox"));
    vstr_free(path);
    vstr_free(res.text);
}

/* test_mbox_owner - root writing for a user: a new file is given to the
   user; an existing one must be the user's (or root's and empty) with one
   link, else the delivery is deferred and the file left alone */
static void test_mbox_owner(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    VSTR *link_path = vstr_alloc(10);
    LOCAL_MSG msg;
    struct stat st;
    off_t size;

    if (geteuid() != 0) {
        vstr_free(path);
        vstr_free(link_path);
        vstr_free(res.text);
        skip();
    }
    test_msg(&msg, "Subject: s\n\nbody\n");
    local_mbox_deliver(test_path(path, "own"), &msg, 0, 1, 1, LOCAL_LOCK_WAIT,
                       &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    assert_int_equal(stat(vstr_str(path), &st), 0);
    assert_int_equal(st.st_uid, 1);
    assert_int_equal(st.st_gid, 1);
    local_mbox_deliver(vstr_str(path), &msg, 0, 1, 1, LOCAL_LOCK_WAIT, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    assert_int_equal(stat(vstr_str(path), &st), 0);
    size = st.st_size;

    /* Someone else's mailbox: not ours to write for uid 2. */
    local_mbox_deliver(vstr_str(path), &msg, 0, 2, 2, LOCAL_LOCK_WAIT, &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_string_equal(res.dsn, "4.2.0");
    assert_int_equal(stat(vstr_str(path), &st), 0);
    assert_int_equal(st.st_size, size);
    assert_int_equal(st.st_uid, 1);

    /* A second link to it: deferred for its own user too. */
    assert_int_equal(link(vstr_str(path), test_path(link_path, "hard")), 0);
    local_mbox_deliver(vstr_str(link_path), &msg, 0, 1, 1, LOCAL_LOCK_WAIT,
                       &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_int_equal(stat(vstr_str(path), &st), 0);
    assert_int_equal(st.st_size, size);
    unlink(vstr_str(link_path));
    unlink(vstr_str(path));

    /* An empty file of root's (a delivery that died before its chown). */
    assert_int_equal(safe_file_write(test_path(path, "empty"), "", 0, 0600), 0);
    local_mbox_deliver(vstr_str(path), &msg, 0, 1, 1, LOCAL_LOCK_WAIT, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    assert_int_equal(stat(vstr_str(path), &st), 0);
    assert_int_equal(st.st_uid, 1);
    unlink(vstr_str(path));
    vstr_free(path);
    vstr_free(link_path);
    vstr_free(res.text);
}

/* test_mbox_stale_lock - a dot lock older than 5 minutes is taken over */
static void test_mbox_stale_lock(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    struct timeval old[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    LOCAL_MSG msg;

    assert_int_equal(safe_file_write(test_path(path, "st.lock"), "", 0, 0600),
                     0);
    assert_int_equal(utimes(vstr_str(path), old), 0);
    test_msg(&msg, "Subject: s\n\nbody\n");
    local_mbox_deliver(test_path(path, "st"), &msg, 0, (uid_t) -1, (gid_t) -1,
                       LOCAL_LOCK_WAIT, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    unlink(vstr_str(path));
    /* The stale lock went, and nothing was left aside. */
    assert_int_equal(access(test_path(path, "st.lock"), F_OK), -1);
    {
        DIR *dir = opendir(test_dir);
        struct dirent *ent;

        assert_non_null(dir);
        while ((ent = readdir(dir)) != NULL)
            assert_null(strstr(ent->d_name, "stale"));
        closedir(dir);
    }
    vstr_free(path);
    vstr_free(res.text);
}

/* test_mbox_fifo - a FIFO mailbox defers at once, with or without a
   reader; an alarm fails the test if the open blocks */
static void test_mbox_fifo(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    LOCAL_MSG msg;
    int reader;

    test_msg(&msg, "Subject: s\n\nbody\n");
    assert_int_equal(mkfifo(test_path(path, "fifo"), 0600), 0);
    alarm(10);
    local_mbox_deliver(vstr_str(path), &msg, 0, (uid_t) -1, (gid_t) -1,
                       LOCAL_LOCK_WAIT, &res);
    alarm(0);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_non_null(strstr(vstr_str(res.text), "not a regular file"));

    reader = open(vstr_str(path), O_RDONLY | O_NONBLOCK);
    assert_true(reader >= 0);
    alarm(10);
    local_mbox_deliver(vstr_str(path), &msg, 0, (uid_t) -1, (gid_t) -1,
                       LOCAL_LOCK_WAIT, &res);
    alarm(0);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_non_null(strstr(vstr_str(res.text), "not a regular file"));
    close(reader);
    unlink(vstr_str(path));
    vstr_free(path);
    vstr_free(res.text);
}

/* test_mbox_locked - an fcntl lock held by another process: deferred
   after lock_wait seconds, delivered once it is let go */
static void test_mbox_locked(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    LOCAL_MSG msg;
    int ready[2], release[2];
    time_t start;
    pid_t pid;
    char byte;

    test_msg(&msg, "Subject: s\n\nbody\n");
    test_path(path, "locked");
    assert_int_equal(safe_file_write(vstr_str(path), "", 0, 0600), 0);
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(release), 0);
    if ((pid = fork()) == 0) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        int fd = open(vstr_str(path), O_WRONLY);

        if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
            _exit(1);
        (void) write(ready[1], "x", 1);
        (void) read(release[0], &byte, 1);
        _exit(0);
    }
    assert_true(pid > 0);
    assert_int_equal(read(ready[0], &byte, 1), 1);
    start = time(NULL);
    local_mbox_deliver(vstr_str(path), &msg, 0, (uid_t) -1, (gid_t) -1, 1,
                       &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_string_equal(res.dsn, "4.2.0");
    assert_non_null(strstr(vstr_str(res.text), "mailbox is locked"));
    assert_true(time(NULL) - start < 10);
    assert_int_equal(write(release[1], "x", 1), 1);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    local_mbox_deliver(vstr_str(path), &msg, 0, (uid_t) -1, (gid_t) -1, 1,
                       &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    close(ready[0]);
    close(ready[1]);
    close(release[0]);
    close(release[1]);
    unlink(vstr_str(path));
    vstr_free(path);
    vstr_free(res.text);
}

/* test_mbox_concurrent - writers at once: every message whole */
static void test_mbox_concurrent(void **state)
{
    VSTR *path = vstr_alloc(10);
    pid_t pids[TEST_WRITERS];
    char *data;
    char *line;
    char *save = NULL;
    int messages = 0;
    int body_lines = 0;
    int current = -1;
    bool whole = true;

    test_path(path, "shared");
    for (int w = 0; w < TEST_WRITERS; w++) {
        if ((pids[w] = fork()) == 0) {
            LOCAL_RESULT res = {.text = vstr_alloc(10)};
            VSTR *content = vstr_alloc(100000);
            LOCAL_MSG msg;

            for (int m = 0; m < TEST_PER_WRITER; m++) {
                vstr_sprintf(content, "Subject: %d\n\n", w * 100 + m);
                for (int l = 0; l < 2000; l++)
                    vstr_sprintf_append(content, "line %d of %d\n", l,
                                        w * 100 + m);
                test_msg(&msg, vstr_str(content));
                local_mbox_deliver(vstr_str(path), &msg, 0, (uid_t) -1,
                                   (gid_t) -1, LOCAL_LOCK_WAIT, &res);
                if (res.stat != LOCAL_STAT_SENT)
                    _exit(1);
            }
            _exit(0);
        }
        assert_true(pids[w] > 0);
    }
    for (int w = 0; w < TEST_WRITERS; w++) {
        int status;

        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    data = safe_file_read(vstr_str(path), 100 * 1024 * 1024, NULL);
    assert_non_null(data);
    /* Every body line must name the message of the From_ block it is in,
       and every block must have all its lines. */
    for (line = strtok_r(data, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        int l, id;

        if (strncmp(line, "From ", 5) == 0) {
            if (current >= 0 && body_lines != 2000)
                whole = false;
            messages++;
            body_lines = 0;
            current = -1;
        } else if (strncmp(line, "Subject: ", 9) == 0) {
            current = (int) strtol(line + 9, NULL, 10);
        } else if (sscanf(line, "line %d of %d", &l, &id) == 2) {
            if (id != current || l != body_lines)
                whole = false;
            body_lines++;
        }
    }
    if (body_lines != 2000)
        whole = false;
    assert_int_equal(messages, TEST_WRITERS * TEST_PER_WRITER);
    assert_true(whole);
    myfree(data);
    unlink(vstr_str(path));
    vstr_free(path);
}

/* test_maildir - created when missing; the file lands in new/ */
static void test_maildir(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    VSTR *file = vstr_alloc(10);
    LOCAL_MSG msg;
    DIR *dp;
    struct dirent *de;
    int found = 0;
    char *data;

    test_msg(&msg, "Subject: s\n\nFrom here\n");
    local_maildir_deliver(test_path(path, "md/bob"), &msg, 0, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    assert_string_equal(vstr_str(res.text), "maildir");
    vstr_sprintf(file, "%s/new", vstr_str(path));
    dp = opendir(vstr_str(file));
    assert_non_null(dp);
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        found++;
        vstr_sprintf(file, "%s/new/%s", vstr_str(path), de->d_name);
        data = safe_file_read(vstr_str(file), 10000, NULL);
        assert_non_null(data);
        /* Maildir: no From_ line, no quoting. */
        assert_string_equal(data, "Delivered-To: bob@localhost\n"
                                  "Return-Path: <a@remote.test>\n"
                                  "Subject: s\n\nFrom here\n");
        myfree(data);
        unlink(vstr_str(file));
    }
    closedir(dp);
    assert_int_equal(found, 1);
    local_maildir_deliver(vstr_str(path), &msg, 10, &res);
    assert_int_equal(res.stat, LOCAL_STAT_BOUNCE);
    for (const char *sub = "tmp"; sub; sub = strcmp(sub, "tmp") == 0   ? "new"
                                             : strcmp(sub, "new") == 0 ? "cur"
                                                                       : NULL) {
        vstr_sprintf(file, "%s/%s", vstr_str(path), sub);
        assert_int_equal(rmdir(vstr_str(file)), 0);
    }
    assert_int_equal(rmdir(vstr_str(path)), 0);
    assert_int_equal(rmdir(test_path(path, "md")), 0);
    vstr_free(path);
    vstr_free(file);
    vstr_free(res.text);
}

/* test_command - stdin, environment, exit codes, the time limit */
static void test_command(void **state)
{
    LOCAL_RESULT res = {.text = vstr_alloc(10)};
    VSTR *path = vstr_alloc(10);
    VSTR *command = vstr_alloc(10);
    const char *env[] = {"RECIPIENT=bob@localhost", "PATH=/usr/bin:/bin", NULL};
    LOCAL_CMD cmd = {.shell = "/bin/sh", .env = env, .time_limit = 30};
    LOCAL_MSG msg;
    char *data;

    test_msg(&msg, "Subject: s\n\nbody\n");
    vstr_sprintf(command, "(echo \"$RECIPIENT\"; cat) > %s",
                 test_path(path, "out"));
    cmd.command = vstr_str(command);
    local_command_deliver(&cmd, &msg, &res);
    assert_int_equal(res.stat, LOCAL_STAT_SENT);
    data = safe_file_read(vstr_str(path), 10000, NULL);
    assert_non_null(data);
    assert_string_equal(data, "bob@localhost\nDelivered-To: bob@localhost\n"
                              "Return-Path: <a@remote.test>\nSubject: s\n\n"
                              "body\n");
    myfree(data);
    unlink(vstr_str(path));

    cmd.command = "echo over quota; exit 75";
    local_command_deliver(&cmd, &msg, &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_non_null(strstr(vstr_str(res.text), "over quota"));

    cmd.command = "echo no such user >&2; exit 67";
    local_command_deliver(&cmd, &msg, &res);
    assert_int_equal(res.stat, LOCAL_STAT_BOUNCE);
    assert_string_equal(res.dsn, "5.1.1");
    assert_non_null(strstr(vstr_str(res.text), "no such user"));

    /* A command that closes its output at once still gets all of a
       large message (it used to get one pipe's worth). */
    {
        VSTR *big = vstr_alloc(4 * 1024 * 1024 + 100);
        struct stat st;

        vstr_cpy(big, "Subject: big\n\n");
        while (vstr_len(big) < 4 * 1024 * 1024)
            vstr_cat(big, "a line of a large message, to be kept whole\n");
        test_msg(&msg, vstr_str(big));
        msg.delivered_to = false;
        vstr_sprintf(command, "exec cat > %s 2>/dev/null",
                     test_path(path, "big"));
        cmd.command = vstr_str(command);
        local_command_deliver(&cmd, &msg, &res);
        assert_int_equal(res.stat, LOCAL_STAT_SENT);
        assert_int_equal(stat(vstr_str(path), &st), 0);
        assert_int_equal((long long) st.st_size, (long long) vstr_len(big));
        unlink(vstr_str(path));

        /* Exit 0 without reading: EPIPE, and the mail is its. */
        cmd.command = "exec >&- 2>&-; exit 0";
        local_command_deliver(&cmd, &msg, &res);
        assert_int_equal(res.stat, LOCAL_STAT_SENT);
        vstr_free(big);
        test_msg(&msg, "Subject: s\n\nbody\n");
    }

    cmd.command = "exec sleep 30";
    cmd.time_limit = 1;
    local_command_deliver(&cmd, &msg, &res);
    assert_int_equal(res.stat, LOCAL_STAT_DEFER);
    assert_non_null(strstr(vstr_str(res.text), "time limit"));
    vstr_free(path);
    vstr_free(command);
    vstr_free(res.text);
}

/* setup - a fresh folder */
static int setup(void **state)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/local_mbox_test.XXXXXX");
    return mkdtemp(test_dir) ? 0 : -1;
}

/* teardown - remove it (every test cleans up after itself) */
static int teardown(void **state)
{
    return rmdir(test_dir);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as local does */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbox_format),
        cmocka_unit_test(test_mbox_owner),
        cmocka_unit_test(test_mbox_stale_lock),
        cmocka_unit_test(test_mbox_fifo),
        cmocka_unit_test(test_mbox_locked),
        cmocka_unit_test(test_mbox_concurrent),
        cmocka_unit_test(test_maildir),
        cmocka_unit_test(test_command),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
