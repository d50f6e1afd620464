/*
 * master_cf - parse master.cf, one service per line
 *
 *   # service  type  private unpriv  chroot  wakeup  maxproc command + args
 *   127.0.0.1:2525 inet n   -        n       -       -       smtpd
 *   qmgr       unix  n       -       n       300     1       qmgr
 *
 * '#' starts a comment line; a line that starts with white space continues
 * the previous one. '-' takes the default: private y, unpriv y, chroot n,
 * wakeup 0 (none), maxproc default_process_limit. A wakeup may end in '?'
 * (Postfix: only when the service is used); it is accepted and ignored. A
 * maxproc of 0 means no limit. The command is looked up in daemon_directory
 * unless it is an absolute path. Types: inet, unix. A service is identified
 * by name and type together: two entries with the same pair are an error.
 */
#ifndef MASTER_CF_H
#define MASTER_CF_H

#include "sys_defs.h"
#include "argv.h"
#include "vstr.h"

typedef enum MASTER_SERV_TYPE {
    MASTER_SERV_INET,
    MASTER_SERV_UNIX,
} MASTER_SERV_TYPE;

typedef struct MASTER_ENT {
    char *name; /* "smtp", "127.0.0.1:2525", "qmgr" */
    MASTER_SERV_TYPE type;
    bool private_service; /* unix: private/ (y) or public/ (n) */
    bool unpriv;
    bool chroot;
    int wakeup; /* seconds between triggers, 0: none */
    int maxproc; /* 0: no limit */
    ARGV *argv; /* command and arguments */
    int line; /* where it was defined */
} MASTER_ENT;

typedef struct MASTER_CF {
    MASTER_ENT *ents;
    size_t count;
} MASTER_CF;

/* master_cf_parse - parse text; NULL with "PATH line N: reason" in why */
extern MASTER_CF *master_cf_parse(const char *text, const char *path,
                                  int default_maxproc, VSTR *why);
/* master_cf_read - read and parse a file */
extern MASTER_CF *master_cf_read(const char *path, int default_maxproc,
                                 VSTR *why);
extern MASTER_CF *master_cf_free(MASTER_CF *cf);
extern const char *master_serv_type_name(MASTER_SERV_TYPE type);

/* master_cf_runs - does a service of cf run program (its command's last
   path component), or is one named program (a wrapper may run it)? */
extern bool master_cf_runs(const MASTER_CF *cf, const char *program);

#endif
