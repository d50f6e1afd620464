/*
 * qfile_test - unit tests for queue file records: round trip, strictness
 * (a file cut at every byte, corrupt records), in-place done marks, write
 * errors, the dump; and the producer: the order of its steps, a failure
 * injected at each step, what it leaves behind.
 *
 * The producer's system calls are seen and failed by this program's own
 * open, write, pwrite, fsync, fdatasync, rename and syncfs, which stand in
 * front of the C library's (as tests/faultshim.c does with LD_PRELOAD for
 * the system tests): they record each call on a file under the test's
 * directory and fail the one a test names, then call the real one.
 */
#include "sys_defs.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <cmocka.h>

#include "mymalloc.h"
#include "qfile.h"
#include "vstr.h"

static const char test_content[] =
    "From: a@example.com\nSubject: caf\xc3\xa9\n\nline one\n.\nnul \0 byte\n";

/* test_fd - a fresh in-memory file */
static int test_fd(void)
{
    int fd = memfd_create("qfile_test", 0);

    assert_true(fd >= 0);
    return fd;
}

/* test_write_sample - write a complete queue file; returns its length */
static off_t test_write_sample(int fd)
{
    QFILE_WRITER *writer = qfile_writer_alloc(fd);
    struct timeval tv = {1700000000, 42};
    off_t len;

    qfile_put_time(writer, &tv);
    qfile_put_sender(writer, "sender@example.com");
    qfile_put_attr(writer, "client_addr", "127.0.0.1");
    qfile_put_attr(writer, "origin", "smtp");
    qfile_put_rcpt(writer, "one@example.com", "rfc822;one@example.com",
                   "SUCCESS,FAILURE");
    qfile_put_rcpt(writer, "two@example.com", NULL, NULL);
    qfile_put_content_begin(writer);
    qfile_put_content(writer, test_content, sizeof(test_content) - 1);
    assert_int_equal(qfile_writer_finish(writer), 0);
    assert_int_equal(qfile_writer_rcpt_count(writer), 2);
    assert_int_equal(qfile_writer_content_size(writer),
                     sizeof(test_content) - 1);
    len = qfile_writer_offset(writer);
    qfile_writer_free(writer);
    assert_int_equal(lseek(fd, 0, SEEK_END), len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return len;
}

/* test_read_all - read fd from the start: content into out; the status */
static int test_read_all(int fd, VSTR *out, VSTR *why)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int status;

    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    reader = qfile_reader_alloc(fd);
    while ((status = qfile_read_rec(reader, &rec, why)) > 0)
        if (rec.type == QFILE_REC_CONT && out)
            vstr_ncat(out, rec.data, rec.len);
    /* The final state sticks. */
    assert_int_equal(qfile_read_rec(reader, &rec, why), status);
    qfile_reader_free(reader);
    return status;
}

/* test_copy - a new memfd holding len bytes of fd */
static int test_copy(int fd, off_t len)
{
    int copy = test_fd();
    char *buf = mymalloc((size_t) len + 1);

    assert_int_equal(pread(fd, buf, (size_t) len, 0), len);
    assert_int_equal(write(copy, buf, (size_t) len), len);
    assert_int_equal(lseek(copy, 0, SEEK_SET), 0);
    myfree(buf);
    return copy;
}

static void test_round_trip(void **state)
{
    int fd = test_fd();
    VSTR *content = vstr_alloc(100);
    VSTR *why = vstr_alloc(10);
    QFILE_INFO *info;

    test_write_sample(fd);
    assert_int_equal(test_read_all(fd, content, why), 0);
    assert_int_equal(vstr_len(content), sizeof(test_content) - 1);
    assert_memory_equal(vstr_str(content), test_content,
                        sizeof(test_content) - 1);

    lseek(fd, 0, SEEK_SET);
    info = qfile_info_read(fd, why);
    assert_non_null(info);
    assert_int_equal(info->version, QFILE_VERSION);
    assert_int_equal(info->arrival.tv_sec, 1700000000);
    assert_int_equal(info->arrival.tv_usec, 42);
    assert_string_equal(info->sender, "sender@example.com");
    assert_int_equal(info->attr_count, 2);
    assert_string_equal(qfile_info_attr(info, "client_addr"), "127.0.0.1");
    assert_string_equal(qfile_info_attr(info, "origin"), "smtp");
    assert_null(qfile_info_attr(info, "helo_name"));
    assert_int_equal(info->rcpt_count, 2);
    assert_int_equal(info->rcpt_done, 0);
    assert_string_equal(info->rcpts[0].address, "one@example.com");
    assert_string_equal(info->rcpts[0].orcpt, "rfc822;one@example.com");
    assert_string_equal(info->rcpts[0].notify, "SUCCESS,FAILURE");
    assert_string_equal(info->rcpts[1].address, "two@example.com");
    assert_string_equal(info->rcpts[1].orcpt, "");
    assert_false(info->rcpts[1].done);
    assert_int_equal(info->content_size, sizeof(test_content) - 1);
    assert_true(info->content_offset > info->rcpts[1].offset);
    qfile_info_free(info);
    vstr_free(content);
    vstr_free(why);
    close(fd);
}

static void test_null_sender_and_big_content(void **state)
{
    int fd = test_fd();
    QFILE_WRITER *writer = qfile_writer_alloc(fd);
    struct timeval tv = {1, 999999};
    size_t big_len = QFILE_REC_MAX * 2 + 12345;
    char *big = mymalloc(big_len);
    VSTR *content = vstr_alloc(100);
    VSTR *why = vstr_alloc(10);
    QFILE_INFO *info;

    for (size_t i = 0; i < big_len; i++)
        big[i] = (char) (i * 7 + (i >> 13));
    qfile_put_time(writer, &tv);
    qfile_put_sender(writer, "");
    qfile_put_rcpt(writer, "x@y", NULL, NULL);
    qfile_put_content_begin(writer);
    qfile_put_content(writer, big, 10);
    qfile_put_content(writer, big + 10, big_len - 10);
    assert_int_equal(qfile_writer_finish(writer), 0);
    qfile_writer_free(writer);
    assert_int_equal(test_read_all(fd, content, why), 0);
    assert_int_equal(vstr_len(content), big_len);
    assert_memory_equal(vstr_str(content), big, big_len);
    lseek(fd, 0, SEEK_SET);
    info = qfile_info_read(fd, why);
    assert_non_null(info);
    assert_string_equal(info->sender, "");
    assert_int_equal(info->arrival.tv_usec, 999999);
    assert_int_equal(info->content_size, (long long) big_len);
    qfile_info_free(info);
    myfree(big);
    vstr_free(content);
    vstr_free(why);
    close(fd);
}

/* A file cut at any byte is rejected, by the reader and by the dump. */
static void test_truncated_everywhere(void **state)
{
    int fd = test_fd();
    off_t len = test_write_sample(fd);
    VSTR *why = vstr_alloc(10);
    FILE *devnull = fopen("/dev/null", "w");

    assert_non_null(devnull);
    for (off_t cut = 0; cut < len; cut++) {
        int copy = test_copy(fd, cut);
        QFILE_INFO *info;

        vstr_reset(why);
        info = qfile_info_read(copy, why);
        if (info != NULL)
            fail_msg("file cut at %lld of %lld accepted", (long long) cut,
                     (long long) len);
        assert_true(vstr_len(why) > 0);
        assert_int_equal(test_read_all(copy, NULL, why), -1);
        lseek(copy, 0, SEEK_SET);
        assert_int_equal(qfile_dump(copy, devnull), -1);
        close(copy);
    }
    /* And the whole file is fine. */
    assert_int_equal(test_read_all(fd, NULL, why), 0);
    fclose(devnull);
    vstr_free(why);
    close(fd);
}

/* test_patched - the sample with bytes replaced at offset: read status */
static int test_patched(off_t offset, const char *bytes, size_t len, VSTR *why)
{
    int fd = test_fd();
    int status;

    test_write_sample(fd);
    assert_int_equal(pwrite(fd, bytes, len, offset), (ssize_t) len);
    status = test_read_all(fd, NULL, why);
    close(fd);
    return status;
}

static void test_corrupt_records(void **state)
{
    VSTR *why = vstr_alloc(10);
    int fd = test_fd();
    off_t len = test_write_sample(fd);
    QFILE_INFO *info = qfile_info_read(fd, why);
    off_t rcpt = info->rcpts[0].offset;
    off_t content = info->content_offset;
    unsigned char huge[4] = {0x7f, 0xff, 0xff, 0xff};

    qfile_info_free(info);

    /* Unknown type in the envelope. */
    assert_int_equal(test_patched(rcpt, "Q", 1, why), -1);
    assert_non_null(strstr(vstr_str(why), "unknown record type"));
    /* Content record in the envelope. */
    assert_int_equal(test_patched(rcpt, "C", 1, why), -1);
    /* A length over the limit. */
    assert_int_equal(test_patched(rcpt + 1, (const char *) huge, 4, why), -1);
    assert_non_null(strstr(vstr_str(why), "over the limit"));
    /* First record not a size record. */
    assert_int_equal(test_patched(0, "T", 1, why), -1);
    /* The size record disagrees (content size field). */
    assert_int_equal(test_patched(QFILE_HDR_LEN + 18, "9", 1, why), -1);
    assert_non_null(strstr(vstr_str(why), "content bytes"));
    /* The size record disagrees (recipient count). */
    assert_int_equal(test_patched(QFILE_HDR_LEN + 50, "3", 1, why), -1);
    /* Unsupported version. */
    assert_int_equal(test_patched(QFILE_HDR_LEN + 2, "2", 1, why), -1);
    /* An envelope record after the content started. */
    assert_int_equal(test_patched(content, "A", 1, why), -1);
    /* The END record made a content record. */
    assert_int_equal(test_patched(len - QFILE_HDR_LEN, "C", 1, why), -1);
    vstr_free(why);

    /* Data after END. */
    {
        int copy = test_copy(fd, len);

        assert_int_equal(pwrite(copy, "x", 1, len), 1);
        lseek(copy, 0, SEEK_SET);
        assert_null(qfile_info_read(copy, NULL));
        close(copy);
    }
    close(fd);
}

/* test_info_read_new - qfile_info_read_new (a file just opened: no lseek,
   a short read taken as its end) reads what qfile_info_read reads and
   still refuses data after END and any cut */
static void test_info_read_new(void **state)
{
    int fd = test_fd();
    off_t len = test_write_sample(fd);
    QFILE_INFO *info = qfile_info_read_new(fd, NULL);
    QFILE_INFO *old;
    VSTR *why = vstr_alloc(10);

    assert_non_null(info);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    old = qfile_info_read(fd, NULL);
    assert_non_null(old);
    assert_int_equal(info->rcpt_count, old->rcpt_count);
    assert_int_equal(info->content_offset, old->content_offset);
    assert_int_equal(info->content_size, old->content_size);
    qfile_info_free(old);
    qfile_info_free(info);
    for (off_t cut = 0; cut < len; cut += 7) {
        int copy = test_copy(fd, cut);

        assert_null(qfile_info_read_new(copy, NULL));
        close(copy);
    }
    /* Data after END: one byte, and many (past the first read). */
    for (size_t extra = 1; extra <= 200000; extra += 199999) {
        int copy = test_copy(fd, len);
        char *junk = mycalloc(1, extra);

        assert_int_equal(pwrite(copy, junk, extra, len), (ssize_t) extra);
        vstr_reset(why);
        assert_null(qfile_info_read_new(copy, why));
        assert_non_null(strstr(vstr_str(why), "data after END"));
        myfree(junk);
        close(copy);
    }
    vstr_free(why);
    close(fd);
}

/* Flipping any byte never crashes the reader (ASan build checks more). */
static void test_flip_every_byte(void **state)
{
    int fd = test_fd();
    off_t len = test_write_sample(fd);
    FILE *devnull = fopen("/dev/null", "w");

    for (off_t at = 0; at < len; at++) {
        int copy = test_copy(fd, len);
        unsigned char ch;
        QFILE_INFO *info;

        assert_int_equal(pread(copy, &ch, 1, at), 1);
        ch ^= 0xff;
        assert_int_equal(pwrite(copy, &ch, 1, at), 1);
        info = qfile_info_read(copy, NULL);
        qfile_info_free(info);
        lseek(copy, 0, SEEK_SET);
        qfile_dump(copy, devnull);
        close(copy);
    }
    fclose(devnull);
    close(fd);
}

static void test_mark_done(void **state)
{
    int fd = test_fd();
    VSTR *why = vstr_alloc(10);
    QFILE_INFO *info;
    off_t second;

    test_write_sample(fd);
    info = qfile_info_read(fd, why);
    second = info->rcpts[1].offset;
    qfile_info_free(info);

    assert_int_equal(qfile_mark_done(fd, second, why), 0);
    assert_int_equal(qfile_mark_done(fd, second, why), 0); /* again */
    lseek(fd, 0, SEEK_SET);
    info = qfile_info_read(fd, why);
    assert_non_null(info);
    assert_false(info->rcpts[0].done);
    assert_true(info->rcpts[1].done);
    assert_int_equal(info->rcpt_done, 1);
    assert_int_equal(info->rcpts[1].offset, second);
    qfile_info_free(info);

    /* Not a recipient record there: refused, file unchanged. */
    assert_int_equal(qfile_mark_done(fd, 0, why), -1);
    assert_non_null(strstr(vstr_str(why), "not a recipient"));
    assert_int_equal(qfile_mark_done(fd, second + 1, why), -1);
    assert_int_equal(qfile_mark_done(fd, 1000000, why), -1);
    assert_int_equal(test_read_all(fd, NULL, why), 0);
    vstr_free(why);
    close(fd);
}

/* A full disk is reported by finish, with its errno. */
static void test_write_error(void **state)
{
    int fd = open("/dev/full", O_WRONLY);
    QFILE_WRITER *writer;
    struct timeval tv = {1, 0};

    if (fd < 0)
        skip();
    writer = qfile_writer_alloc(fd);
    qfile_put_time(writer, &tv);
    qfile_put_sender(writer, "a@b");
    qfile_put_rcpt(writer, "c@d", NULL, NULL);
    qfile_put_content_begin(writer);
    qfile_put_content(writer, "x\n", 2);
    errno = 0;
    assert_int_equal(qfile_writer_finish(writer), -1);
    assert_int_equal(errno, ENOSPC);
    assert_int_equal(qfile_writer_error(writer), ENOSPC);
    qfile_writer_free(writer);
    close(fd);
}

static void test_dump(void **state)
{
    int fd = test_fd();
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream(&text, &text_len);

    test_write_sample(fd);
    assert_int_equal(qfile_dump(fd, out), 0);
    fclose(out);
    assert_non_null(strstr(text, "sender: sender@example.com\n"));
    assert_non_null(strstr(text, "recipient: one@example.com "
                                 "orcpt=rfc822;one@example.com "
                                 "notify=SUCCESS,FAILURE\n"));
    assert_non_null(strstr(text, "recipient: two@example.com\n"));
    assert_non_null(strstr(text, "named_attribute: client_addr=127.0.0.1\n"));
    assert_non_null(strstr(text, "*** MESSAGE CONTENTS ***\nFrom: a@"));
    /* The content holds a NUL, which the dump passes through as is. */
    assert_non_null(memmem(text, text_len,
                           "nul \0 byte\n"
                           "*** MESSAGE FILE END ***\n",
                           36));
    free(text);
    close(fd);
}

/*
 * System calls seen by the producer tests.
 */
typedef struct TEST_SYS {
    bool on; /* record and inject only while set */
    char dir[PATH_MAX]; /* only paths under here count */
    char trace[512]; /* "create write pwrite fsync ..." */
    char dir_opened[PATH_MAX]; /* the last directory opened */
    const char *fail_op; /* the call to fail, NULL: none */
    int fail_errno;
    const char *fail_op2; /* and a second one */
    int fail_errno2;
    int file_fd; /* the queue file, -1 */
    int dir_fd; /* the directory being synced, -1 */
} TEST_SYS;

static TEST_SYS test_sys = {.file_fd = -1, .dir_fd = -1};

/* test_real - the C library's function name */
static void *test_real(const char *name)
{
    void *real = dlsym(RTLD_NEXT, name);

    if (real == NULL)
        abort();
    return real;
}

#define TEST_REAL(name)                                                        \
    static __typeof__(&name) real;                                             \
    real = real ? real : (__typeof__(&name)) test_real(#name)

/* test_sys_under - is path under the test directory */
static bool test_sys_under(const char *path)
{
    size_t len = strlen(test_sys.dir);

    return test_sys.on && len > 0 && strncmp(path, test_sys.dir, len) == 0 &&
           (path[len] == '/' || path[len] == 0);
}

/* test_sys_call - record call op; true when it is to fail (errno set) */
static bool test_sys_call(const char *op)
{
    size_t used = strlen(test_sys.trace);

    snprintf(test_sys.trace + used, sizeof(test_sys.trace) - used, "%s%s",
             used ? " " : "", op);
    if (test_sys.fail_op && strcmp(test_sys.fail_op, op) == 0) {
        test_sys.fail_op = NULL;
        errno = test_sys.fail_errno;
        return true;
    }
    if (test_sys.fail_op2 && strcmp(test_sys.fail_op2, op) == 0) {
        test_sys.fail_op2 = NULL;
        errno = test_sys.fail_errno2;
        return true;
    }
    return false;
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    va_list ap;
    int fd;

    TEST_REAL(open);
    if (flags & O_CREAT) {
        va_start(ap, flags);
        mode = (mode_t) va_arg(ap, int);
        va_end(ap);
    }
    if (test_sys_under(path)) {
        if (test_sys_call((flags & O_DIRECTORY) ? "open-dir" : "create"))
            return -1;
        fd = real(path, flags, mode);
        if (flags & O_DIRECTORY) {
            test_sys.dir_fd = fd;
            snprintf(test_sys.dir_opened, sizeof(test_sys.dir_opened), "%s",
                     path);
        } else {
            test_sys.file_fd = fd;
        }
        return fd;
    }
    return real(path, flags, mode);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    TEST_REAL(write);
    if (test_sys.on && fd >= 0 && fd == test_sys.file_fd &&
        test_sys_call("write"))
        return -1;
    return real(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    TEST_REAL(pwrite);
    if (test_sys.on && fd >= 0 && fd == test_sys.file_fd &&
        test_sys_call("pwrite"))
        return -1;
    return real(fd, buf, len, off);
}

/* test_sys_sync - one fsync or fdatasync; true when it is to fail */
static bool test_sys_sync(int fd)
{
    if (!test_sys.on || fd < 0)
        return false;
    if (fd == test_sys.file_fd)
        return test_sys_call("fsync");
    if (fd == test_sys.dir_fd)
        return test_sys_call("dir-fsync");
    return false;
}

int fsync(int fd)
{
    TEST_REAL(fsync);
    return test_sys_sync(fd) ? -1 : real(fd);
}

int fdatasync(int fd)
{
    TEST_REAL(fdatasync);
    return test_sys_sync(fd) ? -1 : real(fd);
}

int rename(const char *from, const char *to)
{
    TEST_REAL(rename);
    if (test_sys_under(from) && test_sys_call("rename"))
        return -1;
    return real(from, to);
}

int syncfs(int fd)
{
    TEST_REAL(syncfs);
    if (test_sys.on && fd >= 0 && fd == test_sys.file_fd &&
        test_sys_call("syncfs"))
        return -1;
    return real(fd);
}

/* test_out_setup - a fresh directory; record calls under it */
static int test_out_setup(void **state)
{
    char templ[] = "/tmp/qfile_test.XXXXXX";

    assert_non_null(mkdtemp(templ));
    memset(&test_sys, 0, sizeof(test_sys));
    snprintf(test_sys.dir, sizeof(test_sys.dir), "%s", templ);
    test_sys.file_fd = test_sys.dir_fd = -1;
    test_sys.on = true;
    return 0;
}

/* test_out_teardown - stop recording, remove the directory and its files */
static int test_out_teardown(void **state)
{
    VSTR *cmd = vstr_alloc(100);

    test_sys.on = false;
    vstr_sprintf(cmd, "rm -rf '%s'", test_sys.dir);
    assert_int_equal(system(vstr_str(cmd)), 0);
    vstr_free(cmd);
    return 0;
}

/* test_out_path - "DIR/name" in a static buffer */
static const char *test_out_path(const char *name)
{
    static char path[PATH_MAX + 64];

    snprintf(path, sizeof(path), "%s/%s", test_sys.dir, name);
    return path;
}

/* test_out_entries - the names in the test directory (subdirectories
   walked), sorted, space-separated; "" when empty */
static void test_out_entries(const char *dir, const char *prefix, VSTR *out)
{
    struct dirent **names;
    int count = scandir(dir, &names, NULL, alphasort);

    assert_true(count >= 0);
    for (int i = 0; i < count; i++) {
        const char *name = names[i]->d_name;

        if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            VSTR *sub = vstr_alloc(100);
            struct stat st;

            vstr_sprintf(sub, "%s/%s", dir, name);
            assert_int_equal(lstat(vstr_str(sub), &st), 0);
            if (S_ISDIR(st.st_mode)) {
                VSTR *sub_prefix = vstr_alloc(100);

                vstr_sprintf(sub_prefix, "%s%s/", prefix, name);
                test_out_entries(vstr_str(sub), vstr_str(sub_prefix), out);
                vstr_free(sub_prefix);
            } else {
                vstr_sprintf_append(out, "%s%s%s", vstr_len(out) ? " " : "",
                                    prefix, name);
            }
            vstr_free(sub);
        }
        free(names[i]);
    }
    free(names);
}

/* test_out_files - what the test directory holds, as one string */
static const char *test_out_files(void)
{
    static char text[1024];
    VSTR *out = vstr_alloc(100);

    test_out_entries(test_sys.dir, "", out);
    snprintf(text, sizeof(text), "%s", vstr_str(out));
    vstr_free(out);
    return text;
}

/* test_out_fill - the records of a small message, content_len bytes */
static void test_out_fill(QFILE_OUT *out, size_t content_len)
{
    QFILE_WRITER *writer = qfile_out_writer(out);
    struct timeval tv = {1700000000, 7};
    char *content = mymalloc(content_len + 1);

    memset(content, 'x', content_len);
    if (content_len > 0)
        content[content_len - 1] = '\n';
    qfile_put_time(writer, &tv);
    qfile_put_sender(writer, "sender@example.test");
    qfile_put_rcpt(writer, "rcpt@example.test", NULL, NULL);
    qfile_put_content_begin(writer);
    qfile_put_content(writer, content, content_len);
    myfree(content);
}

/* test_out_check - path holds a whole queue file of content_len bytes */
static void test_out_check(const char *path, size_t content_len)
{
    VSTR *why = vstr_alloc(64);
    int fd = open(path, O_RDONLY);
    QFILE_INFO *info;

    assert_true(fd >= 0);
    info = qfile_info_read(fd, why);
    assert_non_null(info);
    assert_string_equal(info->sender, "sender@example.test");
    assert_int_equal(info->rcpt_count, 1);
    assert_int_equal(info->content_size, (long long) content_len);
    qfile_info_free(info);
    close(fd);
    vstr_free(why);
}

/* The steps in their order, each after the one before it: create, write,
   the S record, fsync, rename, open and fsync the directory. */
static void test_commit_order(void **state)
{
    QFILE_OUT *out = qfile_create(test_out_path(".tmp.A1"), 0600, 0);
    QFILE_STEP step = QFILE_STEP_WRITE;

    assert_non_null(out);
    assert_string_equal(qfile_out_path(out), test_out_path(".tmp.A1"));
    test_out_fill(out, 100);
    assert_int_equal(qfile_commit(out, test_out_path("A1"), &step), 0);
    assert_int_equal(step, QFILE_STEP_NONE);
    assert_string_equal(test_sys.trace, "create write pwrite fsync rename "
                                        "open-dir dir-fsync");
    assert_string_equal(test_sys.dir_opened, test_sys.dir);
    assert_string_equal(test_out_files(), "A1");
    test_out_check(test_out_path("A1"), 100);
}

/* Content over the write buffer goes out while the records are written,
   before the commit; the order holds. */
static void test_commit_order_big(void **state)
{
    QFILE_OUT *out = qfile_create(test_out_path(".tmp.B1"), 0600, 0);

    assert_non_null(out);
    test_out_fill(out, 200 * 1024);
    assert_true(strncmp(test_sys.trace, "create write", 12) == 0);
    assert_int_equal(qfile_commit(out, test_out_path("B1"), NULL), 0);
    assert_non_null(strstr(test_sys.trace,
                           " write pwrite fsync rename open-dir dir-fsync"));
    assert_null(strstr(test_sys.trace, "dir-fsync "));
    test_out_check(test_out_path("B1"), 200 * 1024);
}

/* A failure at each step: reported with its step and errno, no later step
   attempted, and nothing left in the directory. */
static void test_commit_fails_at_each_step(void **state)
{
    static const struct {
        const char *fail_op;
        int fail_errno;
        QFILE_STEP step;
        const char *trace;
    } cases[] = {
        {"write", ENOSPC, QFILE_STEP_WRITE, "create write"},
        {"pwrite", EIO, QFILE_STEP_WRITE, "create write pwrite"},
        {"fsync", EIO, QFILE_STEP_FSYNC, "create write pwrite fsync"},
        {"rename", EXDEV, QFILE_STEP_RENAME,
         "create write pwrite fsync rename"},
        {"open-dir", EMFILE, QFILE_STEP_DIR_FSYNC,
         "create write pwrite fsync rename open-dir"},
        {"dir-fsync", EIO, QFILE_STEP_DIR_FSYNC,
         "create write pwrite fsync rename open-dir dir-fsync"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        QFILE_OUT *out;
        QFILE_STEP step = QFILE_STEP_NONE;

        test_sys.trace[0] = 0;
        test_sys.file_fd = test_sys.dir_fd = -1;
        test_sys.fail_op = cases[i].fail_op;
        test_sys.fail_errno = cases[i].fail_errno;
        out = qfile_create(test_out_path(".tmp.C1"), 0600, 0);
        assert_non_null(out);
        test_out_fill(out, 100);
        errno = 0;
        assert_int_equal(qfile_commit(out, test_out_path("C1"), &step), -1);
        assert_int_equal(errno, cases[i].fail_errno);
        assert_int_equal(step, cases[i].step);
        assert_string_equal(test_sys.trace, cases[i].trace);
        assert_string_equal(test_out_files(), "");
    }
}

/* A write error while the records are written (the buffer flushed early)
   is sticky: the commit reports the write and goes no further. */
static void test_commit_after_write_error(void **state)
{
    QFILE_OUT *out = qfile_create(test_out_path(".tmp.D1"), 0600, 0);
    QFILE_STEP step = QFILE_STEP_NONE;

    assert_non_null(out);
    test_sys.fail_op = "write";
    test_sys.fail_errno = ENOSPC;
    test_out_fill(out, 200 * 1024);
    assert_int_equal(qfile_writer_error(qfile_out_writer(out)), ENOSPC);
    assert_int_equal(qfile_commit(out, test_out_path("D1"), &step), -1);
    assert_int_equal(errno, ENOSPC);
    assert_int_equal(step, QFILE_STEP_WRITE);
    assert_string_equal(test_sys.trace, "create write");
    assert_string_equal(test_out_files(), "");
}

/* Into another directory (cleanup's hold/): that directory is the one
   synced; the temporary name is gone from the first. */
static void test_commit_other_dir(void **state)
{
    QFILE_OUT *out;
    char hold[PATH_MAX + 64];

    assert_int_equal(mkdir(test_out_path("incoming"), 0700), 0);
    assert_int_equal(mkdir(test_out_path("hold"), 0700), 0);
    snprintf(hold, sizeof(hold), "%s", test_out_path("hold"));
    out = qfile_create(test_out_path("incoming/.tmp.E1"), 0600, 0);
    assert_non_null(out);
    test_out_fill(out, 10);
    assert_int_equal(qfile_commit(out, test_out_path("hold/E1"), NULL), 0);
    assert_string_equal(test_sys.dir_opened, hold);
    assert_string_equal(test_out_files(), "hold/E1");
}

/* test_count_word - how many times word appears in the trace */
static int test_count_word(const char *trace, const char *word)
{
    size_t len = strlen(word);
    int count = 0;

    for (const char *cp = trace; (cp = strstr(cp, word)) != NULL; cp += len)
        if ((cp == trace || cp[-1] == ' ') && (cp[len] == ' ' || !cp[len]))
            count++;
    return count;
}

/* test_group_item - create incoming/.tmp.NAME with a message of len
   content bytes, to be committed as DIR/NAME */
static void test_group_item(QFILE_COMMIT *item, char *path, size_t size,
                            const char *dir, const char *name, size_t len)
{
    char tmp[PATH_MAX + 64];

    snprintf(tmp, sizeof(tmp), "%s/incoming/.tmp.%s", test_sys.dir, name);
    snprintf(path, size, "%s/%s/%s", test_sys.dir, dir, name);
    memset(item, 0, sizeof(*item));
    item->out = qfile_create(tmp, 0600, 0);
    assert_non_null(item->out);
    test_out_fill(item->out, len);
    item->path = path;
}

/* Group commit: three files into incoming/ and one into hold/ share one
   directory fsync per directory, each after every rename into it; a file
   whose rename fails fails alone, and its temporary file is gone. */
static void test_commit_group(void **state)
{
    QFILE_COMMIT items[4];
    char paths[4][PATH_MAX + 64];
    static const char *const names[] = {"G0", "G1", "G2", "G3"};

    assert_int_equal(mkdir(test_out_path("incoming"), 0700), 0);
    assert_int_equal(mkdir(test_out_path("hold"), 0700), 0);
    for (size_t i = 0; i < 4; i++)
        test_group_item(items + i, paths[i], sizeof(paths[i]),
                        i == 3 ? "hold" : "incoming", names[i], 10 + i);
    assert_int_equal(unlink(test_out_path("incoming/.tmp.G1")), 0);
    test_sys.trace[0] = 0;
    qfile_commit_group(items, 4);
    assert_int_equal(items[0].step, QFILE_STEP_NONE);
    assert_int_equal(items[1].step, QFILE_STEP_RENAME);
    assert_int_equal(items[1].error, ENOENT);
    assert_int_equal(items[2].step, QFILE_STEP_NONE);
    assert_int_equal(items[3].step, QFILE_STEP_NONE);
    for (size_t i = 0; i < 4; i++)
        assert_null(items[i].out);
    assert_int_equal(test_count_word(test_sys.trace, "rename"), 4);
    assert_int_equal(test_count_word(test_sys.trace, "dir-fsync"), 2);
    /* Every rename before the first directory fsync. */
    assert_null(strstr(strstr(test_sys.trace, "dir-fsync"), "rename"));
    assert_string_equal(test_out_files(), "hold/G3 incoming/G0 incoming/G2");
    test_out_check(paths[0], 10);
    test_out_check(paths[2], 12);
    test_out_check(paths[3], 13);
}

/* The group's fsync of incoming/ fails: every file renamed into it is
   taken back and fails at that step with its errno; the file committed
   into hold/ (another fsync) stands. */
static void test_commit_group_dir_fsync_fails(void **state)
{
    QFILE_COMMIT items[3];
    char paths[3][PATH_MAX + 64];
    static const char *const names[] = {"H0", "H1", "H2"};

    assert_int_equal(mkdir(test_out_path("incoming"), 0700), 0);
    assert_int_equal(mkdir(test_out_path("hold"), 0700), 0);
    for (size_t i = 0; i < 3; i++)
        test_group_item(items + i, paths[i], sizeof(paths[i]),
                        i == 2 ? "hold" : "incoming", names[i], 10);
    test_sys.fail_op = "dir-fsync";
    test_sys.fail_errno = EIO;
    qfile_commit_group(items, 3);
    assert_int_equal(items[0].step, QFILE_STEP_DIR_FSYNC);
    assert_int_equal(items[0].error, EIO);
    assert_int_equal(items[1].step, QFILE_STEP_DIR_FSYNC);
    assert_int_equal(items[1].error, EIO);
    assert_int_equal(items[2].step, QFILE_STEP_NONE);
    assert_string_equal(test_out_files(), "hold/H2");
    test_out_check(paths[2], 10);
}

/* A directory that cannot be opened for want of permission: with
   QFILE_CREATE_SYNCFS the file's file system is synced instead, after the
   rename; without it, or for another error, the commit fails. */
static void test_commit_syncfs_fallback(void **state)
{
    QFILE_OUT *out;
    QFILE_STEP step = QFILE_STEP_NONE;

    test_sys.fail_op = "open-dir";
    test_sys.fail_errno = EACCES;
    out = qfile_create(test_out_path(".tmp.F1"), 0644, QFILE_CREATE_SYNCFS);
    assert_non_null(out);
    test_out_fill(out, 10);
    assert_int_equal(qfile_commit(out, test_out_path("F1"), &step), 0);
    assert_int_equal(step, QFILE_STEP_NONE);
    assert_string_equal(test_sys.trace, "create write pwrite fsync rename "
                                        "open-dir syncfs");
    assert_string_equal(test_out_files(), "F1");
    test_out_check(test_out_path("F1"), 10);

    assert_int_equal(unlink(test_out_path("F1")), 0);

    /* EPERM counts as well. */
    test_sys.trace[0] = 0;
    test_sys.file_fd = -1;
    out = qfile_create(test_out_path(".tmp.F2"), 0644, QFILE_CREATE_SYNCFS);
    assert_non_null(out);
    test_out_fill(out, 10);
    test_sys.fail_op = "open-dir";
    test_sys.fail_errno = EPERM;
    assert_int_equal(qfile_commit(out, test_out_path("F2"), &step), 0);
    assert_non_null(strstr(test_sys.trace, "rename open-dir syncfs"));
    assert_string_equal(test_out_files(), "F2");

    /* Without the flag: a failure, and the file taken back. */
    test_sys.trace[0] = 0;
    test_sys.file_fd = -1;
    out = qfile_create(test_out_path(".tmp.F4"), 0600, 0);
    assert_non_null(out);
    test_out_fill(out, 10);
    test_sys.fail_op = "open-dir";
    test_sys.fail_errno = EACCES;
    assert_int_equal(qfile_commit(out, test_out_path("F4"), &step), -1);
    assert_int_equal(errno, EACCES);
    assert_int_equal(step, QFILE_STEP_DIR_FSYNC);
    assert_string_equal(test_sys.trace, "create write pwrite fsync rename "
                                        "open-dir");
    assert_string_equal(test_out_files(), "F2");

    /* With the flag, an error other than permission is no reason to
       sync everything: a failure. */
    test_sys.trace[0] = 0;
    test_sys.file_fd = -1;
    out = qfile_create(test_out_path(".tmp.F5"), 0600, QFILE_CREATE_SYNCFS);
    assert_non_null(out);
    test_out_fill(out, 10);
    test_sys.fail_op = "open-dir";
    test_sys.fail_errno = EIO;
    assert_int_equal(qfile_commit(out, test_out_path("F5"), &step), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(step, QFILE_STEP_DIR_FSYNC);
    assert_null(strstr(test_sys.trace, "syncfs"));
    assert_string_equal(test_out_files(), "F2");
}

/* The fallback's own failure: syncfs failing fails the commit. */
static void test_commit_syncfs_fails(void **state)
{
    QFILE_OUT *out =
        qfile_create(test_out_path(".tmp.G1"), 0600, QFILE_CREATE_SYNCFS);
    QFILE_STEP step = QFILE_STEP_NONE;

    assert_non_null(out);
    test_out_fill(out, 10);
    test_sys.fail_op = "open-dir";
    test_sys.fail_errno = EACCES;
    test_sys.fail_op2 = "syncfs";
    test_sys.fail_errno2 = EIO;
    assert_int_equal(qfile_commit(out, test_out_path("G1"), &step), -1);
    assert_int_equal(errno, EIO);
    assert_int_equal(step, QFILE_STEP_DIR_FSYNC);
    assert_string_equal(test_sys.trace, "create write pwrite fsync rename "
                                        "open-dir syncfs");
    assert_string_equal(test_out_files(), "");
}

/* Abort removes the temporary file, whatever was written; NULL is fine. */
static void test_abort(void **state)
{
    QFILE_OUT *out = qfile_create(test_out_path(".tmp.H1"), 0600, 0);

    assert_non_null(out);
    assert_string_equal(test_out_files(), ".tmp.H1");
    test_out_fill(out, 200 * 1024);
    assert_null(qfile_abort(out));
    assert_string_equal(test_out_files(), "");
    assert_null(strstr(test_sys.trace, "rename"));
    assert_null(qfile_abort(NULL));

    /* Right after the create, too. */
    out = qfile_create(test_out_path(".tmp.H2"), 0600, 0);
    assert_non_null(out);
    assert_null(qfile_abort(out));
    assert_string_equal(test_out_files(), "");
}

/* The create is exclusive: an existing file is neither reused nor hurt. */
static void test_create_exclusive(void **state)
{
    int fd = open(test_out_path(".tmp.I1"), O_WRONLY | O_CREAT, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, "keep", 4), 4);
    close(fd);
    errno = 0;
    assert_null(qfile_create(test_out_path(".tmp.I1"), 0600, 0));
    assert_int_equal(errno, EEXIST);
    assert_string_equal(test_out_files(), ".tmp.I1");
    {
        struct stat st;

        assert_int_equal(stat(test_out_path(".tmp.I1"), &st), 0);
        assert_int_equal(st.st_size, 4);
    }
}

/* test_content_collect - a QFILE_CONTENT_FN that appends to a VSTR */
static int test_content_collect(void *ctx, const char *data, size_t len)
{
    vstr_ncat((VSTR *) ctx, data, len);
    return 0;
}

/* test_content_stop - a QFILE_CONTENT_FN that stops the walk */
static int test_content_stop(void *ctx, const char *data, size_t len)
{
    return 7;
}

/* The content written so far can be read back before the commit (small,
   still buffered, and over the write buffer), and a prepended record
   lands before it: the committed file is whole, its content the prefix
   followed by the rest, its mode kept, no sibling left behind. */
static void test_prepend_content(void **state)
{
    static const size_t sizes[] = {100, 200 * 1024, 2 * 1024 * 1024 + 3};
    static const char prefix[] = "DKIM-Signature: v=1; a=rsa-sha256\n";

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sizes); i++) {
        QFILE_OUT *out = qfile_create(test_out_path(".tmp.P1"), 0640, 0);
        VSTR *seen = vstr_alloc(100);
        VSTR *why = vstr_alloc(64);
        QFILE_READER *reader;
        QFILE_REC rec;
        struct stat st;
        int fd;

        assert_non_null(out);
        test_out_fill(out, sizes[i]);
        assert_int_equal(qfile_out_content(out, test_content_collect, seen), 0);
        assert_int_equal(vstr_len(seen), sizes[i]);
        assert_int_equal(qfile_out_content(out, test_content_stop, NULL), 7);
        assert_int_equal(
            qfile_out_prepend_content(out, prefix, sizeof(prefix) - 1), 0);
        /* More content after the prepend goes on at the end. */
        qfile_put_content(qfile_out_writer(out), "tail\n", 5);
        assert_string_equal(test_out_files(), ".tmp.P1");
        assert_int_equal(qfile_commit(out, test_out_path("P1"), NULL), 0);
        assert_string_equal(test_out_files(), "P1");
        assert_int_equal(stat(test_out_path("P1"), &st), 0);
        {
            mode_t mask = umask(022);

            umask(mask);
            assert_int_equal(st.st_mode & 0777, 0640 & ~mask);
        }

        fd = open(test_out_path("P1"), O_RDONLY);
        assert_true(fd >= 0);
        reader = qfile_reader_alloc(fd);
        vstr_reset(seen);
        while (qfile_read_rec(reader, &rec, why) == 1)
            if (rec.type == QFILE_REC_CONT)
                vstr_ncat(seen, rec.data, rec.len);
        assert_int_equal(qfile_read_rec(reader, &rec, why), 0);
        qfile_reader_free(reader);
        close(fd);
        assert_int_equal(vstr_len(seen), sizeof(prefix) - 1 + sizes[i] + 5);
        assert_memory_equal(vstr_str(seen), prefix, sizeof(prefix) - 1);
        assert_int_equal(vstr_str(seen)[sizeof(prefix) - 1], 'x');
        assert_memory_equal(vstr_str(seen) + vstr_len(seen) - 6, "\ntail\n", 6);
        test_out_check(test_out_path("P1"), vstr_len(seen));
        assert_int_equal(unlink(test_out_path("P1")), 0);
        vstr_free(seen);
        vstr_free(why);
    }
}

/* The names callers put in their log lines. */
static void test_step_names(void **state)
{
    assert_string_equal(qfile_step_name(QFILE_STEP_WRITE), "write");
    assert_string_equal(qfile_step_name(QFILE_STEP_FSYNC), "fsync");
    assert_string_equal(qfile_step_name(QFILE_STEP_RENAME), "rename");
    assert_string_equal(qfile_step_name(QFILE_STEP_DIR_FSYNC),
                        "directory fsync");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_null_sender_and_big_content),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_corrupt_records),
        cmocka_unit_test(test_info_read_new),
        cmocka_unit_test(test_flip_every_byte),
        cmocka_unit_test(test_mark_done),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_dump),
        cmocka_unit_test_setup_teardown(test_commit_order, test_out_setup,
                                        test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_order_big, test_out_setup,
                                        test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_fails_at_each_step,
                                        test_out_setup, test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_after_write_error,
                                        test_out_setup, test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_group, test_out_setup,
                                        test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_group_dir_fsync_fails,
                                        test_out_setup, test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_other_dir, test_out_setup,
                                        test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_syncfs_fallback,
                                        test_out_setup, test_out_teardown),
        cmocka_unit_test_setup_teardown(test_commit_syncfs_fails,
                                        test_out_setup, test_out_teardown),
        cmocka_unit_test_setup_teardown(test_abort, test_out_setup,
                                        test_out_teardown),
        cmocka_unit_test_setup_teardown(test_create_exclusive, test_out_setup,
                                        test_out_teardown),
        cmocka_unit_test(test_step_names),
        cmocka_unit_test_setup_teardown(test_prepend_content, test_out_setup,
                                        test_out_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
