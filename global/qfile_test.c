/*
 * qfile_test - unit tests for queue file records: round trip, strictness
 * (a file cut at every byte, corrupt records), in-place done marks, write
 * errors, the dump
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <sys/mman.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_null_sender_and_big_content),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_corrupt_records),
        cmocka_unit_test(test_flip_every_byte),
        cmocka_unit_test(test_mark_done),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_dump),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
