/*
 * sluice - the admin command's shared internals
 *
 * sluice.c        main: options, dispatch; start, stop, reload, status
 * sluice_init.c   init: a self-contained instance
 * sluice_conf.c   conf: show, set and remove main.cf parameters (postconf)
 * sluice_check.c  check: validate the instance, repair the queue
 * sluice_queue.c  queue, cat, flush
 * sluice_admin.c  hold, release, delete, requeue (postsuper)
 * sluice_map.c    map: build, query and edit lookup tables (postmap)
 * sluice_events.c events: read the event journal (global/events.h), status
 * sluice_stats.c  stats: counts from the SQLite store (events_stats.h)
 * sluice_shaping.c shaping: qmgr's shaping buckets; suspend, resume
 * sluice_pool.c    pool: the source IP pools, their sources and state
 * sluice_suppress.c suppress: the suppression list (global/suppress.h)
 * sluice_why.c    why: a message's attempts, place and hold (events_index.h)
 *
 * Each subcommand is a function that returns the process exit status and
 * reports a failure as one line on stderr through sluice_fail().
 */
#ifndef SLUICE_H
#define SLUICE_H

#include "sys_defs.h"

#include <sys/types.h>

#define SLUICE_VERSION "0.1"

/* sluice_fail - print "sluice: text" on stderr; returns 1 */
extern int sluice_fail(const char *fmt, ...) SLUICE_PRINTF(1, 2);
/* sluice_exe_dir - the folder of the running sluice binary (static) */
extern const char *sluice_exe_dir(void);

extern int sluice_init(int argc, char **argv);
extern int sluice_conf(const char *config_dir, int argc, char **argv);
extern int sluice_check(const char *config_dir, int argc, char **argv);
extern int sluice_queue(const char *config_dir, int argc, char **argv);
extern int sluice_cat(const char *config_dir, int argc, char **argv);
extern int sluice_flush(const char *config_dir, int argc, char **argv);
extern int sluice_events(const char *config_dir, int argc, char **argv);
extern int sluice_stats(const char *config_dir, int argc, char **argv);
extern int sluice_shaping(const char *config_dir, int argc, char **argv);
/* sluice_pool.c: `sluice pool [--json]` */
extern int sluice_pool(const char *config_dir, int argc, char **argv);
/* sluice_suppress.c: `sluice suppress list|add|remove|check` */
extern int sluice_suppress(const char *config_dir, int argc, char **argv);
extern int sluice_why(const char *config_dir, int argc, char **argv);
extern int sluice_api(const char *config_dir, int argc, char **argv);
/* sluice_map.c: argv[0] is map */
extern int sluice_map(const char *config_dir, int argc, char **argv);
/* sluice_dkim.c: argv[0] is dkim (keygen, check) */
extern int sluice_dkim(const char *config_dir, int argc, char **argv);
/* sluice_tls.c: `sluice tls [-f LOGFILE]`, `sluice tls mta-sts DOMAIN` */
extern int sluice_tls(const char *config_dir, int argc, char **argv);
/* sluice_dkim_make - a new private key in path (0600, owned by uid/gid
   unless (uid_t) -1); prints the file's name and the DNS TXT record;
   0, or 1 after one line */
extern int sluice_dkim_make(const char *path, const char *domain,
                            const char *selector, bool ed25519, int bits,
                            uid_t uid, gid_t gid);
/* sluice_admin.c: argv[0] is hold, release, delete or requeue */
extern int sluice_admin(const char *config_dir, int argc, char **argv);
/* sluice_admin_locate - the queue a message is in now, or NULL */
extern const char *sluice_admin_locate(const char *queue_dir, const char *qid);
/* sluice_admin_master_down - is master (and so qmgr) not running? */
extern bool sluice_admin_master_down(const char *queue_dir);
/* sluice_queue.c: main.cf's queue_directory (caller frees), or NULL after
   one line; every queue ID of one queue (caller frees) */
extern char *sluice_queue_dir(const char *config_dir);
extern struct ARGV *sluice_queue_ids(const char *queue_dir, const char *queue);

#endif
