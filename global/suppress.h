/*
 * suppress - the suppression list: addresses mail is not sent to
 *
 * One SQLite database (suppression_database, by default
 * $data_directory/suppression/list.sqlite) in WAL mode, so cleanup reads while
 * the events daemon, the api and `sluice suppress` write. One row per
 * (tenant, address): tenant "" is the global list, which holds for every
 * tenant and for mail that has none (SMTP, sendmail). An address is
 * suppressed for a tenant when the global list or that tenant's holds it
 * with no expiry or one still to come; an expired row stops counting at
 * once and is removed by the next write (suppress_add, suppress_remove).
 *
 * Addresses are compared without regard to case, in the domain (DNS) and
 * in the local part too: RFC 5321 lets a host tell "Bob" from "bob", but
 * no mailbox provider does, and a complaint from Bob@ must not let mail
 * through to bob@. Each is stored as its key (suppress_key: lower case,
 * <> removed), so a lookup is one probe of the primary key.
 *
 * Sources: hard_bounce, complaint and unsubscribe are added by the events
 * daemon from the journal (events/suppress.c); manual by `sluice
 * suppress add`; api by PUT /v1/suppressions/ADDRESS. An entry added
 * again replaces the older one, except that a hard bounce (which may
 * expire) never shortens an entry that does not.
 *
 * Its folder belongs to mail_owner (`sluice init` makes it; `sluice
 * suppress add` makes it when it is missing): WAL mode makes the -wal and
 * -shm files beside the database, as whichever process opens it first.
 *
 * Who opens it: cleanup opens it lazily (a missing file is an empty list,
 * looked for again at the next lookup, so an instance that never
 * suppressed anything pays one stat a recipient) and keeps it open.
 *
 * The rows mark, PATH-rows beside the database: "0\n" while the table
 * has no row, "1\n" when it may have some. A reader keeps it open and
 * reads it at each lookup (one pread: not mapped, as a mark cut short
 * under a mapping would kill the reader with SIGBUS); while it says
 * "0\n", the reader answers "not suppressed" without asking SQLite (no
 * lock); otherwise (or a mark cut short: no answer) a lookup is one
 * statement, so one read transaction. Writers keep it true, always
 * holding SQLite's write lock (BEGIN IMMEDIATE), so a mark write and a
 * row commit cannot cross:
 * "1" is written (and made durable) before a row can be committed, "0"
 * only in a transaction that sees the table empty after a removal was
 * committed; a writer that opens the database sets it as the table
 * stands (a database older than the mark, a crash). A crash can leave
 * "1" over an empty table (lookups then ask SQLite), never "0" over a
 * row. So an add that returned is seen by every lookup begun after it.
 * Every writer must go through this module; a database written by other
 * means is right again once a writer of ours opens it. A reader that
 * finds no mark asks SQLite at each lookup and looks for the mark again.
 * Like the reader's SQLite connection, its open mark follows the files it
 * opened: a database deleted and made anew under a running reader is
 * not seen until that reader reopens it (cleanup processes are
 * recycled).
 */
#ifndef SUPPRESS_H
#define SUPPRESS_H

#include "sys_defs.h"

#include "vstr.h"

#define SUPPRESS_SRC_HARD_BOUNCE "hard_bounce"
#define SUPPRESS_SRC_COMPLAINT "complaint"
#define SUPPRESS_SRC_UNSUBSCRIBE "unsubscribe"
#define SUPPRESS_SRC_MANUAL "manual"
#define SUPPRESS_SRC_API "api"

#define SUPPRESS_ADDRESS_MAX 320 /* bytes of an address */
#define SUPPRESS_REASON_MAX 500 /* bytes of a reason */
#define SUPPRESS_TENANT_MAX 64

/* open flags */
#define SUPPRESS_CREATE 0x01 /* make the database when it is missing */
#define SUPPRESS_LAZY 0x02 /* missing: a handle that looks again later */
/* Read-only: lookups only, no schema made, never waits for a writer's
   transaction (WAL); a handle is returned even when the file cannot be
   opened, and each lookup tries again (-1 while it cannot, 0 while the
   file or its table is missing). */
#define SUPPRESS_READONLY 0x04

typedef struct SUPPRESS SUPPRESS;

typedef struct SUPPRESS_ENTRY {
    const char *tenant; /* "" global */
    const char *address; /* the key (suppress_key) */
    const char *reason;
    const char *source; /* SUPPRESS_SRC_* */
    long long created; /* Unix seconds */
    long long expires; /* Unix seconds; 0: never */
} SUPPRESS_ENTRY;

/* suppress_open - the database at path; NULL with why when it cannot be
   opened (without SUPPRESS_CREATE or SUPPRESS_LAZY, a missing file is
   that, errno ENOENT) */
extern SUPPRESS *suppress_open(const char *path, int flags, VSTR *why);

/* suppress_close - close, free; returns NULL */
extern SUPPRESS *suppress_close(SUPPRESS *sup);

/* suppress_key - the stored form of address into key: <> removed, lower
   case; -1 (why says) when it is not an address (empty local part or
   domain, no '@', a control byte or space, too long) */
extern int suppress_key(VSTR *key, const char *address, VSTR *why);

/* suppress_tenant_ok - "" or [A-Za-z0-9._-]{1,64}, not "." or ".." */
extern bool suppress_tenant_ok(const char *tenant);

/* suppress_reason_ok - printable, at most SUPPRESS_REASON_MAX bytes */
extern bool suppress_reason_ok(const char *reason);

/* suppress_source_ok - one of SUPPRESS_SRC_* */
extern bool suppress_source_ok(const char *source);

/* suppress_lookup - is address suppressed for tenant (NULL or "": only
   the global list) at now? 1 yes (reason, when not NULL, gets the
   entry's reason and source gets its source), 0 no, -1 (why says) when
   the database fails */
extern int suppress_lookup(SUPPRESS *sup, const char *tenant,
                           const char *address, long long now, VSTR *reason,
                           VSTR *source, VSTR *why);

/* suppress_add - add or replace entry (address taken through
   suppress_key; a lazy handle makes the database); 0, or -1 with why */
extern int suppress_add(SUPPRESS *sup, const SUPPRESS_ENTRY *entry,
                        long long now, VSTR *why);

/* suppress_remove - remove tenant's entry of address: 1 removed, 0 there
   was none (or it had expired), -1 with why */
extern int suppress_remove(SUPPRESS *sup, const char *tenant,
                           const char *address, long long now, VSTR *why);

/* suppress_get - tenant's own entry of address (not the global one for a
   tenant), unexpired: 1 with *entry (valid until the next call), 0 none,
   -1 with why */
extern int suppress_get(SUPPRESS *sup, const char *tenant, const char *address,
                        long long now, SUPPRESS_ENTRY *entry, VSTR *why);

typedef void (*SUPPRESS_LIST_FN)(const SUPPRESS_ENTRY *entry, void *arg);

/* suppress_list - call fn for each unexpired entry of tenant (NULL: of
   every tenant and the global list), by tenant and address, at most limit
   (<= 0: all) of them starting after address after (NULL: from the
   start); how many, or -1 with why */
extern int suppress_list(SUPPRESS *sup, const char *tenant, const char *after,
                         long long now, int limit, SUPPRESS_LIST_FN fn,
                         void *arg, VSTR *why);

/* suppress_begin, suppress_commit, suppress_rollback - a transaction
   around several adds (the events daemon: one per batch); 0 or -1 */
extern int suppress_begin(SUPPRESS *sup, VSTR *why);
extern int suppress_commit(SUPPRESS *sup, VSTR *why);
extern void suppress_rollback(SUPPRESS *sup);

#endif
