/*
 * fuzz_qfile - the queue-file reader: record by record and the envelope
 *
 * The input is a queue file, put in a memfd. The strict reader must end
 * with 0 or -1 (never crash, never loop), and qfile_info_read() must agree
 * that a file the record reader finds corrupt is corrupt.
 */
#define _GNU_SOURCE
#include "sys_defs.h"

#include <stdint.h>
#include <sys/mman.h>

#include "fuzz_common.h"
#include "qfile.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one queue file */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *why = vstr_alloc(64);
    QFILE_READER *reader;
    QFILE_INFO *info;
    QFILE_REC rec;
    size_t count = 0;
    int ret;
    int fd;

    fuzz_init("fuzz_qfile");
    if ((fd = memfd_create("qfile", MFD_CLOEXEC)) < 0)
        abort();
    for (size_t done = 0; done < size;) {
        ssize_t put = write(fd, data + done, size - done);

        if (put <= 0)
            abort();
        done += (size_t) put;
    }
    if (lseek(fd, 0, SEEK_SET) < 0)
        abort();
    reader = qfile_reader_alloc(fd);
    while ((ret = qfile_read_rec(reader, &rec, why)) == 1) {
        if (rec.data == NULL || rec.data[rec.len] != 0)
            abort();
        if (++count > size + 1)
            abort(); /* more records than bytes: a loop */
    }
    if (qfile_read_rec(reader, &rec, why) != ret)
        abort(); /* after the end, the same answer */
    qfile_reader_free(reader);

    if (lseek(fd, 0, SEEK_SET) < 0)
        abort();
    info = qfile_info_read(fd, why);
    if (info != NULL) {
        (void) qfile_info_attr(info, "origin");
        qfile_info_free(info);
    }
    close(fd);
    vstr_free(why);
    return 0;
}
