/*
 * qfile - queue file records: the writer, the strict reader, in-place marks
 *
 * A queue file is a sequence of typed records. Each record is
 *
 *     TYPE    one byte, a letter (the table below)
 *     LENGTH  four bytes, big-endian unsigned, at most QFILE_REC_MAX
 *     DATA    LENGTH bytes, any byte allowed (8-bit clean, NUL included)
 *
 * and the records come in this order (anything else is corrupt):
 *
 *   S  SIZE      always first, fixed QFILE_SIZE_LEN bytes of ASCII:
 *                "%3d %15lld %15lld %15lld" = format version (1), content
 *                size in bytes (sum of the C records), file offset of the
 *                first C record (just after the M record), recipient count
 *                (R and D records). Written as a placeholder and rewritten
 *                in place when the writer finishes; the reader checks all
 *                four against what it found.
 *   envelope     in any order:
 *   T  TIME      arrival time, "SECONDS.MICROSECONDS"; exactly one
 *   F  FROM      envelope sender, "" for the null sender <>; exactly one
 *   A  ATTR      "name=value", name in [a-z0-9_]{1,64}; any number. Names
 *                in use: client_name client_addr helo_name protocol origin
 *                ret envid sasl_username size (SIZE=) body_type
 *                (8BITMIME) smtputf8 (yes); of api mail only: tenant
 *                tags (JSON array) metadata (JSON object) not_before
 *                (send_at, Unix seconds: qmgr delivers nothing before);
 *                pool (cleanup's choice of
 *                source pool, global/source_pool.h); traceparent (the
 *                message's trace, global/trace.h)
 *   R  RCPT      a recipient not yet done: "address\0orcpt\0notify" (three
 *                fields separated by exactly two NULs; orcpt is the DSN
 *                ORCPT= value "type;xtext" or empty, notify the DSN
 *                NOTIFY= list or empty)
 *   D  DONE      a recipient that is finished (delivered, bounced with its
 *                DSN queued, or expired): the same data as R. A recipient
 *                becomes done by overwriting the one type byte of its R
 *                record with 'D' in place (qfile_mark_done), so a crash
 *                can never leave half a mark behind.
 *   M  MESSAGE   empty; the content starts after it; exactly one
 *   C  CONTENT   a chunk of the message content, any length 0..REC_MAX:
 *                header lines, an empty line, the body; lines end in LF
 *                (no CR), no dot stuffing; concatenate all C records to get
 *                the message
 *   E  END       empty; must be the very last bytes of the file
 *
 * A file that is cut anywhere, has an unknown type, a length over the limit
 * or past the end of file, a misplaced or missing record, bytes after END,
 * or a SIZE record that disagrees with the rest is rejected with a reason,
 * so qmgr can move it to corrupt/.
 */
#ifndef QFILE_H
#define QFILE_H

#include "sys_defs.h"

#include <sys/time.h>

#include "dir_sync.h"
#include "vstr.h"

#define QFILE_VERSION 1
#define QFILE_REC_MAX (1024 * 1024) /* largest record data */
#define QFILE_HDR_LEN 5 /* type byte + 4 length bytes */
#define QFILE_SIZE_LEN 51 /* data of the S record */

#define QFILE_REC_SIZE 'S'
#define QFILE_REC_TIME 'T'
#define QFILE_REC_FROM 'F'
#define QFILE_REC_ATTR 'A'
#define QFILE_REC_RCPT 'R'
#define QFILE_REC_DONE 'D'
#define QFILE_REC_MESG 'M'
#define QFILE_REC_CONT 'C'
#define QFILE_REC_END 'E'

/*
 * Writer: appends records to a descriptor opened for writing at offset 0,
 * buffering them. Errors are sticky: after the first failed write every
 * call is a no-op and qfile_writer_finish() returns -1 with that errno.
 */
typedef struct QFILE_WRITER QFILE_WRITER;

/* qfile_writer_alloc - start a queue file on fd (writes the S placeholder) */
extern QFILE_WRITER *qfile_writer_alloc(int fd);
/* qfile_writer_free - release the writer; fd stays open; returns NULL */
extern QFILE_WRITER *qfile_writer_free(QFILE_WRITER *writer);
/* qfile_put_rec - append one raw record (data longer than QFILE_REC_MAX is
   a bug: panic) */
extern void qfile_put_rec(QFILE_WRITER *writer, int type, const void *data,
                          size_t len);
extern void qfile_put_time(QFILE_WRITER *writer, const struct timeval *tv);
extern void qfile_put_sender(QFILE_WRITER *writer, const char *sender);
extern void qfile_put_attr(QFILE_WRITER *writer, const char *name,
                           const char *value);
/* orcpt and notify may be NULL */
extern void qfile_put_rcpt(QFILE_WRITER *writer, const char *address,
                           const char *orcpt, const char *notify);
/* qfile_put_content_begin - the M record: envelope ends, content starts */
extern void qfile_put_content_begin(QFILE_WRITER *writer);
/* qfile_put_content - content bytes (split into records as needed) */
extern void qfile_put_content(QFILE_WRITER *writer, const void *data,
                              size_t len);
/* qfile_writer_finish - write END, flush, rewrite the S record, fsync the
   file. 0, or -1 with errno (the first error seen, e.g. ENOSPC). */
extern int qfile_writer_finish(QFILE_WRITER *writer);
/* qfile_writer_error - the sticky errno, 0 when all went well so far */
extern int qfile_writer_error(const QFILE_WRITER *writer);
/* qfile_writer_offset - bytes written so far (buffered included) */
extern off_t qfile_writer_offset(const QFILE_WRITER *writer);
extern long long qfile_writer_content_size(const QFILE_WRITER *writer);
extern int qfile_writer_rcpt_count(const QFILE_WRITER *writer);

/*
 * Producer: the one way to make a queue file. qfile_create() opens a new
 * file exclusively under a temporary name (one that no reader takes for a
 * queue file, in the target directory or a staging one on the same file
 * system); the records go through its writer; qfile_commit() then does,
 * in this order and nothing else: write out the records (END, the S
 * record), fsync the file, rename it into place, fsync the directory.
 * Only after it returns 0 may anyone be told the file exists. A failure
 * names its step and leaves nothing behind: the temporary file is removed
 * (and the renamed file, when only the directory fsync failed: it is not
 * known to be durable, so the caller answers 4xx and the client retries).
 */
typedef struct QFILE_OUT QFILE_OUT;

typedef enum QFILE_STEP {
    QFILE_STEP_NONE, /* nothing failed */
    QFILE_STEP_WRITE, /* writing the records out */
    QFILE_STEP_FSYNC, /* fsync of the file */
    QFILE_STEP_RENAME, /* rename into place */
    QFILE_STEP_DIR_FSYNC, /* fsync of the directory (or syncfs) */
} QFILE_STEP;

/* qfile_create() flag: when the directory cannot be opened (EACCES,
   EPERM), syncfs(2) the file's file system instead of fsyncing it */
#define QFILE_CREATE_SYNCFS (1 << 0)

/* qfile_create - create path exclusively (O_EXCL) with mode (less the
   umask) and start its records; NULL with errno when the open fails */
extern QFILE_OUT *qfile_create(const char *path, mode_t mode, int flags);
struct QFILE_REUSE;

/* qfile_create_reuse - like qfile_create(path, mode, 0), but writing a free
   file of reuse (global/qfile_reuse.h) when it has one, under that file's
   name (qfile_out_path); reuse NULL: qfile_create. A reused file is never
   removed on failure: it stays free */
extern QFILE_OUT *qfile_create_reuse(struct QFILE_REUSE *reuse,
                                     const char *path, mode_t mode);
/* qfile_out_writer - the writer for the records (qfile_put_*); it belongs
   to out and goes with it */
extern QFILE_WRITER *qfile_out_writer(QFILE_OUT *out);
/* qfile_out_path - the temporary name */
extern const char *qfile_out_path(const QFILE_OUT *out);
/* qfile_commit - make the file durable and visible as path (any directory
   on the same file system). Always releases out. 0, or -1 with errno and
   the failed step in *failed_step (may be NULL; QFILE_STEP_NONE on
   success) */
extern int qfile_commit(QFILE_OUT *out, const char *path,
                        QFILE_STEP *failed_step);
/*
 * Group commit: qfile_commit() for several files at once, sharing the
 * directory fsync. Each file is written out, fsynced and renamed, in that
 * order, as qfile_commit() does; then each directory that received a file
 * is fsynced once, which makes every rename into it done before durable.
 * When that fsync fails, every file renamed into that directory is taken
 * back (removed) and fails with QFILE_STEP_DIR_FSYNC. Only an item whose
 * step is QFILE_STEP_NONE afterwards may be acknowledged.
 */
typedef struct QFILE_COMMIT {
    QFILE_OUT *out; /* in: released by the commit (NULL after) */
    const char *path; /* in: the final name */
    QFILE_STEP step; /* out: QFILE_STEP_NONE or the step that failed */
    int error; /* out: its errno */
    bool synced; /* internal: false on the way in */
} QFILE_COMMIT;

/* qfile_commit_group - commit count items; see above */
extern void qfile_commit_group(QFILE_COMMIT *items, size_t count);
/* qfile_commit_group_shared - the same, but the fsync of
   dir_sync_dir(shared), when items went there, is shared with the other
   processes committing into it (global/dir_sync.h): an fsync of it begun
   after this group's renames, by any of them, stands for this group's.
   shared may be NULL (qfile_commit_group) */
extern void qfile_commit_group_shared(QFILE_COMMIT *items, size_t count,
                                      DIR_SYNC *shared);
/* qfile_abort - close and remove the temporary file, release out; NULL.
   NULL is a no-op. */
extern QFILE_OUT *qfile_abort(QFILE_OUT *out);
/* qfile_out_content - hand the content written so far to fn, piece by
   piece in order (a signer reads what will be committed); 0, fn's nonzero
   return, or -1 with errno when the file cannot be written out or read */
typedef int (*QFILE_CONTENT_FN)(void *ctx, const char *data, size_t len);
extern int qfile_out_content(QFILE_OUT *out, QFILE_CONTENT_FN fn, void *ctx);
/* qfile_out_prepend_content - put data (at most QFILE_REC_MAX bytes) before
   all the content written so far (a DKIM-Signature: header): the file is
   copied under a sibling name that then replaces the temporary one. 0, or
   -1 with errno (the writer's error is then set: the commit fails) */
extern int qfile_out_prepend_content(QFILE_OUT *out, const void *data,
                                     size_t len);
/* qfile_out_set_attr - the A record name=value in place of the first A
   record of that name, or (none) just before the M record, once the
   content has begun (a pool chosen by a header): copied as
   qfile_out_prepend_content does. 0, or -1 with errno (the writer's error
   is then set) */
extern int qfile_out_set_attr(QFILE_OUT *out, const char *name,
                              const char *value);
/* qfile_step_name - "write", "fsync", "rename", "directory fsync", for
   log lines */
extern const char *qfile_step_name(QFILE_STEP step);

/*
 * Strict reader: one record at a time, checking order and lengths as it
 * goes, and the S record and the END at the end.
 */
typedef struct QFILE_READER QFILE_READER;

typedef struct QFILE_REC {
    int type; /* QFILE_REC_* */
    const char *data; /* valid until the next read; a NUL
                         follows the data */
    size_t len;
    off_t offset; /* where the record starts */
} QFILE_REC;

/* qfile_reader_alloc - read the queue file on fd from its current offset
   (normally 0); the reader does its own buffering */
extern QFILE_READER *qfile_reader_alloc(int fd);
extern QFILE_READER *qfile_reader_free(QFILE_READER *reader);
/* qfile_read_rec - the next record: 1 and *rec set; 0 after the END record
   when the file is whole; -1 when the file is corrupt or cannot be read,
   with the reason in why ("offset 123: unknown record type 0x51"). After
   0 or -1 every further call returns the same. */
extern int qfile_read_rec(QFILE_READER *reader, QFILE_REC *rec, VSTR *why);

/*
 * The whole envelope, for qmgr, `sluice queue` and delivery agents.
 */
typedef struct QFILE_RCPT {
    char *address;
    char *orcpt; /* "" when absent */
    char *notify; /* "" when absent */
    bool done;
    off_t offset; /* for qfile_mark_done() */
} QFILE_RCPT;

typedef struct QFILE_ATTR {
    char *name;
    char *value;
} QFILE_ATTR;

typedef struct QFILE_INFO {
    int version;
    struct timeval arrival;
    char *sender;
    QFILE_ATTR *attrs;
    size_t attr_count;
    QFILE_RCPT *rcpts;
    size_t rcpt_count;
    size_t rcpt_done; /* how many are done */
    off_t content_offset; /* first C record */
    long long content_size;
} QFILE_INFO;

/* qfile_info_read - read and check the whole file from fd's current offset
   (the content is checked, not kept); NULL with the reason in why */
extern QFILE_INFO *qfile_info_read(int fd, VSTR *why);

/* qfile_info_read_new - qfile_info_read() of a regular file just open()ed
   (offset 0: no lseek; a read that gives less than asked is taken as the
   end of the file, so no second read to find it) */
extern QFILE_INFO *qfile_info_read_new(int fd, VSTR *why);
extern QFILE_INFO *qfile_info_free(QFILE_INFO *info);
/* qfile_info_attr - the value of attribute name, NULL when absent */
extern const char *qfile_info_attr(const QFILE_INFO *info, const char *name);

/* qfile_mark_done - turn the R record at offset into D in place and
   fdatasync; 0 (also when it was already D), or -1 with the reason in why
   (no R/D record there, I/O error). */
extern int qfile_mark_done(int fd, off_t offset, VSTR *why);

/* qfile_dump - print the queue file on fd in readable form (envelope,
   content, done marks), like postcat; 0, or -1 after printing what it
   could and the reason the file is corrupt */
extern int qfile_dump(int fd, FILE *out);

#endif
