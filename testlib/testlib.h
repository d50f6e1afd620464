/*
 * testlib - what the cmocka unit tests of every folder share
 *
 * A temporary folder under /tmp that is removed with all it holds, a file
 * writer and reader in it, and the log of the code under test captured in
 * a file of the folder so a test can look for a line. Tests only: the
 * archive is linked into the TESTS of each folder (rules.mk), never into a
 * program. Failures inside are cmocka failures of the calling test.
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#include "sys_defs.h"

#include "vstr.h"

typedef struct TESTLIB_DIR {
    char path[64]; /* /tmp/PREFIX.XXXXXX */
    VSTR *scratch; /* the last path made by testlib_path() */
} TESTLIB_DIR;

/* testlib_dir_create - a fresh folder /tmp/PREFIX.XXXXXX; NULL on failure
   (for a cmocka setup function, which returns -1 then) */
extern TESTLIB_DIR *testlib_dir_create(const char *prefix);
/* testlib_dir_remove - remove the folder with all it holds, stop capturing
   the log there, free dir; 0, or -1 when something could not be removed */
extern int testlib_dir_remove(TESTLIB_DIR *dir);
/* testlib_path - "DIR/name", valid until the next call on dir */
extern const char *testlib_path(TESTLIB_DIR *dir, const char *name);
/* testlib_write - write DIR/name with text (replacing it); its path, valid
   until the next call on dir */
extern const char *testlib_write(TESTLIB_DIR *dir, const char *name,
                                 const char *text);
/* testlib_read - the whole of a file, NUL-terminated, length in *len when
   len is not NULL; NULL (errno set) when it cannot be read; caller frees */
extern char *testlib_read(const char *path, size_t *len);
/* testlib_log_capture - msg_init(prog) and log to DIR/log; 0 or -1 */
extern int testlib_log_capture(TESTLIB_DIR *dir, const char *prog);
/* testlib_log_has - does DIR/log hold text; when it does, the log is
   emptied, so the next check sees only what is logged from then on */
extern bool testlib_log_has(TESTLIB_DIR *dir, const char *text);

#endif
