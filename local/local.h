/*
 * local - internals shared by the local delivery agent's modules
 *
 * local.c          main: main.cf read once, the server skeleton's
 *                  callbacks
 * local_request.c  the qmgr side: reading a delivery request (DELIVER, its
 *                  RCPT lists) with the reader every agent shares
 *                  (global/deliver_agent.h, global/deliver_proto.h) and
 *                  the queue file's content, the Delivered-To loop check,
 *                  each final delivery's log line (global/deliver_log.h),
 *                  each recipient's outcome and RESULT, then DONE
 * local_expand.c   aliases, .forward and :include: files: the expansion
 *                  tree of one recipient (LOCAL_STATE), loop and duplicate
 *                  detection, the depth and destination limits
 * local_deliver.c  the final deliveries as the daemon makes them: the
 *                  mailbox path, a /file, a |command's environment, and
 *                  forwarding through cleanup
 * local_priv.c     who a delivery runs as: SYSTEM vs INSTANCE mode,
 *                  the delivery child that becomes the recipient (or the
 *                  alias table's owner, default_privs), no command as
 *                  root; unit tested by local_priv_test.c
 * local_rules.c    the rules without I/O: address splitting, alias value
 *                  parsing, forward_path expansion, mbox quoting, the
 *                  Delivered-To loop check, exit status meanings, Maildir
 *                  names, the privilege rules; unit tested by
 *                  local_rules_test.c, fuzzed by fuzz/fuzz_local_rules.c
 * local_mbox.c     mbox files (locks, From_ lines) and Maildirs; unit
 *                  tested by local_mbox_test.c (concurrent writers)
 * local_command.c  |command destinations: a shell with the message on
 *                  stdin, a time limit, the output kept for the reason
 * local_file.c     reading a .forward or :include: file only when it is
 *                  safe to obey (regular, owner, mode); unit tested by
 *                  local_file_test.c
 * local_virtual.c  the virtual delivery agent's recipients (the same
 *                  program run as `virtual`, virtual.c): the mailbox from
 *                  virtual_mailbox_maps under virtual_mailbox_base,
 *                  written as the uid and gid of virtual_uid_maps and
 *                  virtual_gid_maps
 * local_main.c, virtual.c   the two main()s
 */
#ifndef LOCAL_H
#define LOCAL_H

#include "bounce_class.h"
#include "sys_defs.h"

#include <sys/time.h>

#include "argv.h"
#include "attr.h"
#include "mail_conf.h"
#include "mail_server.h"
#include "maps.h"
#include "match_list.h"
#include "qfile.h"
#include "vstr.h"

#define LOCAL_EXPAND_DEPTH_MAX 100 /* nested aliases and includes */
#define LOCAL_DEST_MAX 1000 /* destinations per recipient */

/* What one delivery attempt came to. */
typedef enum LOCAL_STAT {
    LOCAL_STAT_SENT,
    LOCAL_STAT_DEFER,
    LOCAL_STAT_BOUNCE,
} LOCAL_STAT;

typedef struct LOCAL_RESULT {
    LOCAL_STAT stat;
    char dsn[16];
    VSTR *text; /* the reason, or what was delivered ("mailbox") */
    const char *category; /* bounce_class of a failure, NULL: not yet */
    bool hard;
} LOCAL_RESULT;

extern void local_result_set(LOCAL_RESULT *res, LOCAL_STAT stat,
                             const char *dsn, const char *fmt, ...)
    SLUICE_PRINTF(4, 5);

/* --- local_rules.c --------------------------------------------------- */

/* local_addr_split - "User+Ext@Domain": user "user", ext "ext" (after the
   first character of delims found; "" without), domain "domain"; all
   folded to lower case. The local part is what precedes the last '@'. */
extern void local_addr_split(const char *addr, const char *delims, VSTR *user,
                             VSTR *ext, VSTR *domain);

/* local_name_safe - may this local part (or extension) name a mailbox or
   fill $user in a path? No '/', no leading '.', no control characters */
extern bool local_name_safe(const char *name);

/* Kinds of alias / .forward / :include: destinations. */
typedef enum LOCAL_DEST_TYPE {
    LOCAL_DEST_ADDR, /* an address: local ones expand again */
    LOCAL_DEST_MAILBOX, /* \user: that user's mailbox, no expansion */
    LOCAL_DEST_COMMAND, /* |command */
    LOCAL_DEST_FILE, /* /path */
    LOCAL_DEST_INCLUDE, /* :include:/path */
} LOCAL_DEST_TYPE;

/* local_dest_split - the destinations of an alias value or a file:
   separated by commas or newlines, white space trimmed, a destination in
   double quotes kept whole (commas included) and unquoted, lines starting
   with '#' skipped */
extern ARGV *local_dest_split(const char *value);
/* local_dest_type - classify dest; *arg is what follows the marker (the
   command, the path, the address without <>) */
extern LOCAL_DEST_TYPE local_dest_type(const char *dest, const char **arg);

/* local_allowed - does list (allow_mail_to_commands / _files, split)
   name class ("alias", "forward", "include")? */
extern bool local_allowed(const ARGV *list, const char *class_name);

/* Values for $home $user $local $extension $domain $recipient. NULL:
   unknown (an entry that uses it is skipped). */
typedef struct LOCAL_VARS {
    const char *home;
    const char *user;
    const char *local;
    const char *extension;
    const char *domain;
    const char *recipient;
} LOCAL_VARS;

/* local_expand_path - expand $name and ${name} in one forward_path entry;
   0, or -1 when it uses a variable that is NULL or unknown */
extern int local_expand_path(const char *tmpl, const LOCAL_VARS *vars,
                             VSTR *out);

/* local_header_len - length of the header block (through its empty line,
   or all of content when there is none) */
extern size_t local_header_len(const char *content, size_t len);
/* local_delivered_to_seen - has the header block a Delivered-To: whose
   value is addr (without case)? */
extern bool local_delivered_to_seen(const char *content, size_t len,
                                    const char *addr);

/* local_mbox_quote - append data to out with ">" before each line that
   starts with "From "; *bol carries "at the beginning of a line" between
   calls (start it true) */
extern void local_mbox_quote(const char *data, size_t len, bool *bol,
                             VSTR *out);
/* local_from_line - "From sender Sun Nov 29 09:33:57 2026\n" (sender ""
   becomes MAILER-DAEMON) */
extern void local_from_line(VSTR *out, const char *sender, time_t when);

/* local_exit_result - what a command's wait status means: 0 sent;
   EX_TEMPFAIL, EX_OSERR and signals deferred; other sysexits and unknown
   codes bounced, with the sysexits text */
extern void local_exit_result(int wait_status, LOCAL_RESULT *res);

/* local_maildir_name - "SECONDS.MUSECP<pid>Q<n>.host" ('/' and ':' in
   host written as \057 and \072) */
extern void local_maildir_name(VSTR *out, const struct timeval *tv, long pid,
                               unsigned long count, const char *host);

/* local_virtual_path - base + "/" + value, or -1 with why when value
   would leave base (absolute, a ".." part, empty) or base is not an
   absolute path (nor "/"): a virtual mailbox */
extern int local_virtual_path(const char *base, const char *value, VSTR *out,
                              VSTR *why);

/* Privilege modes. */
typedef enum LOCAL_MODE {
    LOCAL_MODE_SYSTEM, /* started as root, mail_owner is not root: each
                          delivery runs as the recipient */
    LOCAL_MODE_INSTANCE, /* everything runs as ourselves; every local part
                            is a user */
} LOCAL_MODE;

/* local_mode - the mode for our euid and mail_owner's uid */
extern LOCAL_MODE local_mode(uid_t euid, uid_t owner_uid);
/* local_user_check - may a local part with (or without) a passwd entry
   get mail? true, or false with the bounce in res (SYSTEM mode, no
   entry: 5.1.1 unknown user) */
extern bool local_user_check(LOCAL_MODE mode, const char *user, bool found,
                             LOCAL_RESULT *res);

/* --- local_mbox.c ---------------------------------------------------- */

/* What a mailbox, file or command delivery writes. */
typedef struct LOCAL_MSG {
    const char *sender; /* envelope sender, "" for <> */
    const char *recipient; /* for Delivered-To */
    const char *content; /* headers, empty line, body; LF lines */
    size_t len;
    time_t arrival;
    bool delivered_to; /* prepend Delivered-To and Return-Path */
} LOCAL_MSG;

/* Seconds local_mbox_deliver waits for a mailbox's locks (dot lock and
   fcntl lock together) before it defers "mailbox is locked": Postfix
   waits deliver_lock_attempts (20) x deliver_lock_delay (1s); a little
   more here for many writers on a slow disk. */
#define LOCAL_LOCK_WAIT 30

/* local_mbox_deliver - append msg in mbox format to path under an fcntl
   lock and a dot lock (path.lock), both taken within lock_wait seconds;
   path must be a regular file (opened without blocking); create the file
   (mode 0600, owner uid/gid when they are not -1) when missing, fsyncing
   its folder; with a uid, an existing file must be uid's (or an empty one
   of root's) with one link, else DEFER; fsync; truncate back on a write
   error. size_limit 0: none. */
extern void local_mbox_deliver(const char *path, const LOCAL_MSG *msg,
                               long long size_limit, uid_t uid, gid_t gid,
                               int lock_wait, LOCAL_RESULT *res);
/* local_maildir_deliver - msg into dir/new/ through dir/tmp/, creating the
   Maildir (and dir's parent) when missing */
extern void local_maildir_deliver(const char *dir, const LOCAL_MSG *msg,
                                  long long size_limit, LOCAL_RESULT *res);
/* local_mkdir_p - mkdir with parents (mode 0700), each new folder made
   durable in its parent; 0 or -1 (errno) */
extern int local_mkdir_p(const char *dir);

/* --- local_command.c ------------------------------------------------- */

typedef struct LOCAL_CMD {
    const char *shell; /* local_command_shell */
    const char *command;
    const char *home; /* cwd, may be NULL */
    const char *const *env; /* "NAME=value" list, NULL-terminated */
    int time_limit; /* seconds */
} LOCAL_CMD;

/* local_command_deliver - run cmd with msg on stdin (no From_ line); the
   caller ignores SIGPIPE */
extern void local_command_deliver(const LOCAL_CMD *cmd, const LOCAL_MSG *msg,
                                  LOCAL_RESULT *res);

/* --- local_file.c ---------------------------------------------------- */

typedef enum LOCAL_FILE_STAT {
    LOCAL_FILE_OK,
    LOCAL_FILE_MISSING, /* no such file: skip it */
    LOCAL_FILE_UNSAFE, /* not regular, foreign owner, writable by others */
    LOCAL_FILE_ERROR, /* cannot read it now, or too large */
} LOCAL_FILE_STAT;

/* local_file_read - the text of a .forward or :include: file: a regular
   file owned by owner or root, not group- or world-writable, at most
   max_len bytes; opened without blocking. NULL with *why_stat and the
   reason in why otherwise. */
extern char *local_file_read(const char *path, uid_t owner, size_t max_len,
                             LOCAL_FILE_STAT *why_stat, VSTR *why);

/* local_msg_text - the message as a command or forward gets it: the
   optional Delivered-To/Return-Path headers, then the content */
extern void local_msg_text(const LOCAL_MSG *msg, VSTR *out);

/* --- the daemon: local.c, local_request.c, local_expand.c,
   local_deliver.c, local_priv.c ----------------------------------------- */

/* What main.cf says, read once. */
typedef struct LOCAL_CONF {
    char *queue_dir;
    char *cleanup_path;
    char *myorigin;
    char *delims; /* recipient_delimiter */
    char *spool_dir;
    char *home_mailbox;
    char *mailbox_command; /* "": none */
    ARGV *forward_path; /* unexpanded entries */
    ARGV *allow_commands;
    ARGV *allow_files;
    ARGV *prepend_delivered;
    char *shell;
    int command_time_limit;
    char *default_privs;
    long long mailbox_size_limit;
    bool soft_bounce;
    BOUNCE_CLASS_RULES *bounce_classes; /* bounce_classes_file */
    int timeout_ms; /* ipc_timeout */
    MAPS *aliases; /* NULL: alias_error says why */
    VSTR *alias_error;
    MATCH_LIST *mydestination;
    /* The virtual delivery agent (NULL maps: the error says why). */
    MAPS *virtual_maps; /* virtual_mailbox_maps */
    MAPS *virtual_uid_maps;
    MAPS *virtual_gid_maps;
    VSTR *virtual_error;
    char *virtual_base; /* virtual_mailbox_base */
    long long virtual_minimum_uid;
    long long virtual_limit; /* virtual_mailbox_limit */
} LOCAL_CONF;

/* Who an action runs as. */
typedef struct LOCAL_PRIV {
    uid_t uid;
    gid_t gid;
    char *name;
    char *home; /* NULL: none known */
} LOCAL_PRIV;

typedef struct LOCAL_CTX {
    LOCAL_CONF conf;
    MAIL_SERVER *server;
    bool virtual; /* run as virtual: mailboxes of virtual_mailbox_maps */
    LOCAL_MODE mode;
    LOCAL_PRIV self; /* INSTANCE: ourselves */
    LOCAL_PRIV alias_owner; /* SYSTEM: alias commands and files */
} LOCAL_CTX;

typedef struct LOCAL_RCPT {
    long long offset;
    char *address;
    char *orcpt;
    char *notify;
} LOCAL_RCPT;

typedef struct LOCAL_REQ {
    LOCAL_CTX *ctx;
    ATTR_STREAM *stream;
    char *queue_name;
    char *qid;
    char *nexthop;
    char *sender;
    long long active_usec;
    LOCAL_RCPT *rcpts;
    size_t rcpt_count;
    QFILE_INFO *info;
    VSTR *content;
    struct timeval t_request;
    VSTR *why;
} LOCAL_REQ;

/* One original recipient being expanded. */
typedef struct LOCAL_STATE {
    LOCAL_REQ *req;
    LOCAL_RCPT *rcpt;
    VSTR *domain; /* of the original recipient */
    ARGV *path; /* "a:name" aliases, "f:name" .forward files being
                   expanded (a name met again here is a loop) */
    ARGV *done; /* names fully expanded: met again, they are skipped */
    ARGV *delivered; /* final deliveries made: "m:user" mailbox, "f:path"
                        file, "c:command" (Postfix's been_here) */
    ARGV *includes; /* :include: files read */
    size_t dest_count; /* destinations handled, up to LOCAL_DEST_MAX */
    bool too_many;
    ARGV *forward; /* addresses to forward to */
    char *owner_sender; /* owner-NAME@myorigin, or NULL */
    int sent;
    bool deferred;
    bool bounced;
    LOCAL_RESULT outcome; /* the worst so far */
    LOCAL_RESULT scratch;
} LOCAL_STATE;

/* local_request.c */

/* local_serve - one connection from qmgr: one request */
extern void local_serve(LOCAL_CTX *ctx, int fd);
/* local_outcome - one final delivery's result: log it, fold it into the
   recipient's outcome. what is the log text of a success
   ("delivered to mailbox"). */
extern void local_outcome(LOCAL_STATE *state, const char *to, LOCAL_RESULT *res,
                          const char *what);

/* local_expand.c */

/* local_resolve - one local name: alias, .forward, mailbox */
extern void local_resolve(LOCAL_STATE *state, const char *user, const char *ext,
                          int depth);
/* local_key_add - add "kind:name" to set; false when it was there */
extern bool local_key_add(ARGV *set, const char *kind, const char *name);

/* local_deliver.c */

/* local_address - "user@domain" of the recipient being handled */
extern void local_address(LOCAL_STATE *state, const char *user, const char *ext,
                          VSTR *out);
/* local_mailbox - deliver to user's own mailbox, or pipe to
   mailbox_command as the user when that is set */
extern void local_mailbox(LOCAL_STATE *state, const char *user,
                          const char *ext);
/* local_file - a /file destination */
extern void local_file(LOCAL_STATE *state, const char *to, const char *path,
                       const LOCAL_PRIV *priv);
/* local_command - a |command destination */
extern void local_command(LOCAL_STATE *state, const char *to, const char *user,
                          const char *ext, const char *command,
                          const LOCAL_PRIV *priv);
/* local_forward - one new message to every non-local destination */
extern void local_forward(LOCAL_STATE *state);

/* local_virtual.c */

/* local_virtual - the virtual delivery of one recipient: its mailbox in
   virtual_mailbox_maps, written as its virtual_uid_maps and
   virtual_gid_maps ids */
extern void local_virtual(LOCAL_STATE *state);

/* local.c */

/* local_daemon - the delivery agent's main, as local or as virtual */
extern int local_daemon(int argc, char **argv, bool virtual);

/* local_priv.c */

struct passwd;

/* local_priv_set - fill priv from a passwd entry */
extern void local_priv_set(LOCAL_PRIV *priv, const struct passwd *pw);
/* local_priv_free - release what local_priv_set made */
extern void local_priv_free(LOCAL_PRIV *priv);
/* local_priv_user - the privileges for delivering to user; false with the
   result set (unknown user in SYSTEM mode) */
extern bool local_priv_user(LOCAL_CTX *ctx, const char *user, LOCAL_PRIV *priv,
                            LOCAL_RESULT *res);
/* local_priv_copy - a copy of priv */
extern void local_priv_copy(LOCAL_PRIV *to, const LOCAL_PRIV *from);
/* local_priv_unroot - who a |command or /file given priv runs as;
   NULL: it would run as root, refuse it */
extern const LOCAL_PRIV *local_priv_unroot(const LOCAL_CTX *ctx,
                                           const LOCAL_PRIV *priv);

typedef void (*LOCAL_ACTION)(void *arg, LOCAL_RESULT *res);

/* local_as - run action as priv: SYSTEM mode in a child that changes uid;
   INSTANCE mode right here when priv is who we are, in such a child when
   we are root (virtual's ids), else deferred (we cannot become them). A
   priv without a name gets gid as its only group. */
extern void local_as(LOCAL_CTX *ctx, const LOCAL_PRIV *priv,
                     LOCAL_ACTION action, void *arg, LOCAL_RESULT *res);
/* local_alias_owner - SYSTEM mode: who alias commands and files run as:
   the owner of the first alias table's file, default_privs for root */
extern void local_alias_owner(LOCAL_CTX *ctx, const MAIL_CONF *conf);
/* local_choose_mode - before the skeleton drops privileges: in SYSTEM
   mode keep root as the saved uid and run as mail_owner, so the skeleton
   leaves us alone and a delivery child can become the recipient; for
   virtual whatever local_system_users says (its ids come from tables) */
extern LOCAL_MODE local_choose_mode(int argc, char **argv, bool virtual);

#endif
