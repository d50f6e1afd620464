/*
 * sluice_suppress - `sluice suppress list|add|remove|check`: the
 * suppression list (global/suppress.h)
 *
 *   list [--tenant T | --global] [--json]   every unexpired entry (of T;
 *       of the global list), one line each: ADDRESS TENANT SOURCE
 *       CREATED EXPIRES REASON (tenant "-" for global, expires "never");
 *       --json prints {"entries": [{"address", "tenant", "reason",
 *       "source", "created", "expires"}]} (times as Unix seconds, expires
 *       null for never, tenant "" for global)
 *   add ADDRESS [--tenant T] [--reason TEXT] [--expires DURATION]
 *       a manual entry (replacing the one there was); DURATION as main.cf
 *       times (90s, 30m, 12h, 7d, 2w), more than 0
 *   remove ADDRESS [--tenant T]   exit 1 when there was none
 *   check ADDRESS [--tenant T] [--json]   exit 0 and print the reason when
 *       the address is suppressed (for T: its list or the global one), 1
 *       when it is not, 2 (one line on stderr) when the question cannot be
 *       answered (bad address, unreadable database)
 *
 * Without --tenant, add and remove work on the global list, which holds
 * for every tenant and for mail without one (SMTP).
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <pwd.h>

#include "mail_conf.h"
#include "mymalloc.h"
#include "sluice.h"
#include "suppress.h"
#include "vstr.h"

#define SLUICE_SUPPRESS_USAGE                                                  \
    "usage: sluice suppress list [--tenant T|--global] [--json] | add "        \
    "ADDRESS [--tenant T] [--reason TEXT] [--expires DURATION] | remove "      \
    "ADDRESS [--tenant T] | check ADDRESS [--tenant T] [--json]"

typedef struct SLUICE_SUPPRESS_ARGS {
    const char *command;
    const char *address;
    const char *tenant; /* NULL: none given */
    const char *reason;
    const char *expires; /* NULL: never */
    bool global;
    bool json;
} SLUICE_SUPPRESS_ARGS;

/* sluice_suppress_fail - one line on stderr; returns code */
static int sluice_suppress_fail(int code, const char *text)
{
    (void) sluice_fail("suppress: %s", text);
    return code;
}

/* sluice_suppress_parse - the arguments; -1 after a usage line */
static int sluice_suppress_parse(int argc, char **argv,
                                 SLUICE_SUPPRESS_ARGS *args)
{
    if (argc < 2)
        return -1;
    args->command = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];

        if (strcmp(arg, "--json") == 0) {
            args->json = true;
        } else if (strcmp(arg, "--global") == 0) {
            args->global = true;
        } else if ((strcmp(arg, "--tenant") == 0 ||
                    strcmp(arg, "--reason") == 0 ||
                    strcmp(arg, "--expires") == 0) &&
                   i + 1 < argc) {
            const char *value = argv[++i];

            if (arg[2] == 't')
                args->tenant = value;
            else if (arg[2] == 'r')
                args->reason = value;
            else
                args->expires = value;
        } else if (arg[0] == '-' && arg[1] != 0) {
            return -1;
        } else if (args->address == NULL) {
            args->address = arg;
        } else {
            return -1;
        }
    }
    return 0;
}

/* sluice_suppress_time - Unix seconds as 2026-12-05T13:00:00Z */
static void sluice_suppress_time(char *buf, size_t len, long long when)
{
    time_t secs = (time_t) when;
    struct tm tm;

    gmtime_r(&secs, &tm);
    if (strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        (void) snprintf(buf, len, "%lld", when);
}

/* sluice_suppress_json - one entry as a JSON object */
static json_t *sluice_suppress_json(const SUPPRESS_ENTRY *entry)
{
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:o}", "address", entry->address, "tenant",
        entry->tenant, "reason", entry->reason, "source", entry->source,
        "created", (json_int_t) entry->created, "expires",
        entry->expires ? json_integer(entry->expires) : json_null());
}

/* sluice_suppress_line - one entry as a line */
static void sluice_suppress_line(const SUPPRESS_ENTRY *entry, void *arg)
{
    char created[40];
    char expires[40];

    if (arg != NULL) {
        (void) json_array_append_new((json_t *) arg,
                                     sluice_suppress_json(entry));
        return;
    }
    sluice_suppress_time(created, sizeof(created), entry->created);
    if (entry->expires)
        sluice_suppress_time(expires, sizeof(expires), entry->expires);
    else
        (void) snprintf(expires, sizeof(expires), "never");
    printf("%s %s %s %s %s %s\n", entry->address,
           *entry->tenant ? entry->tenant : "-", entry->source, created,
           expires, entry->reason);
}

/* sluice_suppress_chown - give the folder root made to owner without
   following a link (its parent may be writable by mail_owner): opened
   with O_NOFOLLOW | O_DIRECTORY, refused unless it is a folder owned by
   root or owner, changed through the descriptor (fchown) */
static void sluice_suppress_chown(const char *path, const struct passwd *owner)
{
    struct stat st;
    int fd;

    if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC)) <
        0) {
        fprintf(stderr, "sluice: warning: %s: not changed to %s: %s\n", path,
                owner->pw_name,
                errno == ELOOP ? "a symbolic link" : strerror(errno));
        return;
    }
    if (fstat(fd, &st) < 0)
        fprintf(stderr, "sluice: warning: fstat %s: %s\n", path,
                strerror(errno));
    else if (st.st_uid != 0 && st.st_uid != owner->pw_uid)
        fprintf(stderr,
                "sluice: warning: %s: not changed to %s: owned by uid %ld\n",
                path, owner->pw_name, (long) st.st_uid);
    else if (fchown(fd, owner->pw_uid, owner->pw_gid) < 0)
        fprintf(stderr, "sluice: warning: chown %s: %s\n", path,
                strerror(errno));
    (void) close(fd);
}

/* sluice_suppress_owner - the folder root made belongs to mail_owner, as
   the daemons that read and write the list run as that user */
static void sluice_suppress_owner(const MAIL_CONF *conf, const char *path)
{
    const struct passwd *owner;
    VSTR *why = vstr_alloc(100);

    if ((owner = mail_conf_owner(conf, why)) != NULL)
        sluice_suppress_chown(path, owner);
    vstr_free(why);
}

/* sluice_suppress_become_owner - root works on the list as mail_owner:
   SQLite opens (and, as root, hands to the database's owner) the -wal
   and -shm files in a folder mail_owner can write, so root would follow
   a link planted there. 0, or -1 with why */
static int sluice_suppress_become_owner(const MAIL_CONF *conf, VSTR *why)
{
    const struct passwd *owner;

    if (geteuid() != 0)
        return 0;
    if ((owner = mail_conf_owner(conf, why)) == NULL)
        return -1;
    if (initgroups(owner->pw_name, owner->pw_gid) < 0 ||
        setgid(owner->pw_gid) < 0 || setuid(owner->pw_uid) < 0) {
        vstr_sprintf(why, "cannot become %s (mail_owner): %s", owner->pw_name,
                     strerror(errno));
        return -1;
    }
    return 0;
}

/* sluice_suppress_mkdir - the database's folder, when it is missing (an
   instance made before the list), mail_owner's */
static void sluice_suppress_mkdir(const MAIL_CONF *conf, const char *path)
{
    const char *slash = strrchr(path, '/');
    VSTR *dir;

    if (slash == NULL || slash == path)
        return;
    dir = vstr_alloc(100);
    vstr_ncpy(dir, path, (size_t) (slash - path));
    if (mkdir(vstr_str(dir), 0755) == 0)
        sluice_suppress_owner(conf, vstr_str(dir));
    vstr_free(dir);
}

/* sluice_suppress_run - the command on an open database */
static int sluice_suppress_run(const MAIL_CONF *conf, SUPPRESS *sup,
                               const SLUICE_SUPPRESS_ARGS *args, VSTR *why)
{
    const char *tenant = args->tenant ? args->tenant : "";
    long long now = (long long) time(NULL);
    SUPPRESS_ENTRY entry;
    int rc;

    if (strcmp(args->command, "list") == 0) {
        json_t *list = args->json ? json_array() : NULL;
        const char *only = args->global ? "" : args->tenant;

        if (suppress_list(sup, only, NULL, now, 0, sluice_suppress_line, list,
                          why) < 0) {
            json_decref(list);
            return sluice_suppress_fail(1, vstr_str(why));
        }
        if (list != NULL) {
            json_t *obj = json_pack("{s:o}", "entries", list);
            char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);

            printf("%s\n", text ? text : "{}");
            free(text);
            json_decref(obj);
        }
        return 0;
    }
    if (strcmp(args->command, "add") == 0) {
        SUPPRESS_ENTRY add = {.tenant = tenant,
                              .address = args->address,
                              .reason =
                                  args->reason ? args->reason : "added by hand",
                              .source = SUPPRESS_SRC_MANUAL,
                              .created = now};

        if (args->expires != NULL) {
            struct timeval tv;
            bool ok;
            long long secs = mail_conf_parse_time(args->expires, &ok);

            if (!ok || secs <= 0) {
                vstr_sprintf(why,
                             "bad duration \"%.40s\" (like 3600, 90s, 30m, "
                             "12h, 7d, 2w; more than 0)",
                             args->expires);
                return sluice_suppress_fail(1, vstr_str(why));
            }
            /* Rounded up: the entry lasts at least DURATION. */
            gettimeofday(&tv, NULL);
            add.expires = (long long) tv.tv_sec + secs + (tv.tv_usec > 0);
        }
        if (suppress_add(sup, &add, now, why) < 0)
            return sluice_suppress_fail(1, vstr_str(why));
        return 0;
    }
    if (strcmp(args->command, "remove") == 0) {
        if ((rc = suppress_remove(sup, tenant, args->address, now, why)) < 0)
            return sluice_suppress_fail(1, vstr_str(why));
        if (rc == 0) {
            vstr_sprintf(why, "%s is not on the %s%s list", args->address,
                         *tenant ? "tenant's " : "global",
                         *tenant ? tenant : "");
            return sluice_suppress_fail(1, vstr_str(why));
        }
        return 0;
    }
    /* check: the tenant's own entry first, then the global one. */
    rc = 0;
    if (*tenant)
        rc = suppress_get(sup, tenant, args->address, now, &entry, why);
    if (rc == 0)
        rc = suppress_get(sup, "", args->address, now, &entry, why);
    if (rc < 0)
        return sluice_suppress_fail(2, vstr_str(why));
    if (args->json) {
        json_t *obj = rc ? sluice_suppress_json(&entry) : NULL;
        json_t *out = json_pack("{s:b, s:o}", "suppressed", rc == 1, "entry",
                                obj ? obj : json_null());
        char *text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);

        printf("%s\n", text ? text : "{}");
        free(text);
        json_decref(out);
    } else if (rc) {
        printf("%s: suppressed (%s%s%s): %s\n", args->address, entry.source,
               *entry.tenant ? ", tenant " : ", global",
               *entry.tenant ? entry.tenant : "", entry.reason);
    } else {
        printf("%s: not suppressed\n", args->address);
    }
    return rc ? 0 : 1;
}

/* sluice_suppress - `sluice suppress ...` */
int sluice_suppress(const char *config_dir, int argc, char **argv)
{
    SLUICE_SUPPRESS_ARGS args = {0};
    VSTR *why;
    VSTR *key;
    MAIL_CONF *conf;
    SUPPRESS *sup;
    const char *path;
    bool list;
    bool add;
    int err_code;
    int status;

    if (sluice_suppress_parse(argc, argv, &args) < 0)
        return sluice_fail("%s", SLUICE_SUPPRESS_USAGE);
    list = strcmp(args.command, "list") == 0;
    add = strcmp(args.command, "add") == 0;
    err_code = strcmp(args.command, "check") == 0 ? 2 : 1;
    if (!list && !add && strcmp(args.command, "remove") != 0 && err_code != 2)
        return sluice_fail("%s", SLUICE_SUPPRESS_USAGE);
    if (list ? args.address != NULL : args.address == NULL) {
        (void) sluice_fail("%s", SLUICE_SUPPRESS_USAGE);
        return err_code;
    }
    if ((!add && (args.reason || args.expires)) ||
        (!list && (args.global || (args.json && err_code != 2)))) {
        (void) sluice_fail("%s", SLUICE_SUPPRESS_USAGE);
        return err_code;
    }
    why = vstr_alloc(100);
    key = vstr_alloc(64);
    if (args.tenant &&
        (*args.tenant == 0 || !suppress_tenant_ok(args.tenant))) {
        vstr_sprintf(why,
                     "bad tenant name \"%.80s\" ([A-Za-z0-9._-], at most "
                     "%d; not \".\" or \"..\")",
                     args.tenant, SUPPRESS_TENANT_MAX);
        status = sluice_suppress_fail(err_code, vstr_str(why));
        goto out;
    }
    if (args.address && suppress_key(key, args.address, why) < 0) {
        status = sluice_suppress_fail(err_code, vstr_str(why));
        goto out;
    }
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        status = sluice_suppress_fail(err_code, vstr_str(why));
        goto out;
    }
    path = mail_conf_str(conf, "suppression_database");
    if (add)
        sluice_suppress_mkdir(conf, path);
    if (sluice_suppress_become_owner(conf, why) < 0 ||
        (sup = suppress_open(path, add ? SUPPRESS_CREATE : SUPPRESS_LAZY,
                             why)) == NULL) {
        status = sluice_suppress_fail(err_code, vstr_str(why));
    } else {
        status = sluice_suppress_run(conf, sup, &args, why);
        sup = suppress_close(sup);
    }
    conf = mail_conf_free(conf);
out:
    vstr_free(why);
    vstr_free(key);
    return status;
}
