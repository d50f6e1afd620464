/*
 * safe_file - file operations that survive a crash
 *
 * The durable way to publish a file: write it under a temporary name in the
 * same directory, fsync it, rename it into place, fsync the directory. Only
 * then may anyone be told it exists. Every function returns -1 with errno
 * set (and logs nothing) on failure, so the caller decides what it means.
 */
#ifndef SAFE_FILE_H
#define SAFE_FILE_H

#include "sys_defs.h"

/* safe_file_write_all - write(2) all of data, retrying EINTR and short writes */
extern int safe_file_write_all(int fd, const void *data, size_t len);
/* safe_file_pwrite_all - pwrite(2) all of data at offset, retrying EINTR
   and short writes */
extern int safe_file_pwrite_all(int fd, const void *data, size_t len,
                                off_t offset);
/* safe_file_fsync - fdatasync (or fsync) a descriptor */
extern int safe_file_fsync(int fd);
/* safe_file_start_writeback - ask the kernel to start writing fd's dirty
   pages now, without waiting (sync_file_range(2) where there is one): a
   hint that lets the writes of several files overlap before each is
   fsynced. It makes nothing durable; errors are ignored. */
extern void safe_file_start_writeback(int fd);
/* safe_file_fsync_dir - fsync the directory dir itself */
extern int safe_file_fsync_dir(const char *dir);
/* safe_file_fsync_dir_or_fs - fsync the directory dir; when dir cannot be
   opened for want of permission (EACCES, EPERM: a setgid program may write
   a directory it cannot read), syncfs(2) the file system of fd, a file in
   that directory, instead (sync(2) where there is no syncfs). With fd < 0,
   just safe_file_fsync_dir(). */
extern int safe_file_fsync_dir_or_fs(const char *dir, int fd);
/* safe_file_fsync_parent_or_fs - the same for the directory that holds
   path */
extern int safe_file_fsync_parent_or_fs(const char *path, int fd);
/* safe_file_fsync_parent - fsync the directory that holds path */
extern int safe_file_fsync_parent(const char *path);
/* safe_file_rename - rename(2), then fsync the directory of to (and of from
   when that is another directory) */
extern int safe_file_rename(const char *from, const char *to);
/* safe_file_write - replace path with data durably: temporary file beside
   it (same directory), write, fsync, rename, fsync directory. The temporary
   file is removed on failure. */
extern int safe_file_write(const char *path, const void *data, size_t len,
                           mode_t mode);
/* safe_file_read - read a whole file of at most max_len bytes into a new
   NUL-terminated buffer (*len_out gets the length; may be NULL). NULL with
   errno set (EFBIG when larger than max_len). */
extern char *safe_file_read(const char *path, size_t max_len, size_t *len_out);

#endif
