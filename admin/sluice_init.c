/*
 * sluice_init - `sluice init DIR`: a self-contained instance
 *
 * DIR gets main.cf, master.cf, bounce-classes (a copy of the built-in
 * rules, which main.cf's bounce_classes_file names), queue/ (every queue
 * directory), log/ and
 * data/. The instance runs entirely as the user who made it, listens on
 * 127.0.0.1:PORT (default 2525), does no DNS (disable_dns_lookups) and runs
 * the daemons that stand beside this sluice binary (../libexec of a build
 * tree), so a build that was never installed works. master.cf lists only
 * the daemons that exist there. DIR must be missing or empty: init never
 * overwrites anything.
 *
 * No sluice daemon runs as root. An instance that root makes runs its
 * daemons as SLUICE_INIT_ROOT_OWNER (mail_owner): master stays root's, and
 * so do DIR and its files, but the queue and the Maildirs are that user's,
 * and that user must be able to reach DIR (init checks).
 *
 * Local delivery works at once: DIR/aliases (built into DIR/aliases.db)
 * sends postmaster to root, and mail to any user@localhost lands in the
 * Maildir DIR/mail/user/ (every local part is a user of the instance).
 */
#include "sys_defs.h"

#include <ctype.h>
#include <dirent.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "bounce_class.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "sign_token.h"
#include "sluice.h"
#include "vstr.h"

#define SLUICE_DEF_SMTP_PORT 2525
#define SLUICE_INIT_ROOT_OWNER "nobody" /* mail_owner when root makes one */
#define SLUICE_INIT_DKIM_SELECTOR "sluice" /* the key init makes */
#define SLUICE_INIT_DKIM_BITS 2048

/* The services an instance runs, when their program exists. */
typedef struct SLUICE_INIT_SERV {
    const char *program;
    const char *fields; /* the rest of its master.cf line */
} SLUICE_INIT_SERV;

static const SLUICE_INIT_SERV sluice_init_servs[] = {
    {"smtpd", "inet  n       -       n       -       -       smtpd"},
    {"cleanup", "unix  -       -       n       -       0       cleanup"},
    {"qmgr", "unix  n       -       n       300     1       qmgr"},
    {"pickup", "unix  n       -       n       60      1       pickup"},
    {"smtp", "unix  -       -       n       -       -       smtp"},
    {"bounce", "unix  -       -       n       -       0       bounce"},
    {"spf", "unix  -       -       n       -       -       spf"},
    {"local", "unix  -       n       n       -       -       local"},
    {"virtual", "unix  -       n       n       -       -       virtual"},
    /* DSNs to bounce_verp_domain, ARF reports to complaint_addresses,
       mailto unsubscribes to unsubscribe_mailto_domain */
    {"feedback", "unix  -       -       n       -       -       feedback"},
    /* public: mailq run by any local user connects to it */
    {"showq", "unix  n       -       n       -       -       showq"},
    /* follows the event journal for its exporters (events_webhook_urls) */
    {"events", "unix  -       -       n       -       1       events"},
    /* the HTTP API: idle until api_listen is set (sluice conf, reload) */
    {"api", "unix  n       -       n       -       1       api"},
    /* the api's spooled batches, rendered and queued (api_batch.h) */
    {"render", "unix  -       -       n       -       2       render"},
    /* Prometheus's GET /metrics: idle until metrics_listen is set */
    {"metrics", "unix  n       -       n       -       1       metrics"},
};

/* sluice_init_dir_empty - is dir missing or empty? */
static int sluice_init_dir_state(const char *dir)
{
    DIR *dp;
    struct dirent *de;
    int state = 0; /* 0 empty, 1 busy, -1 missing */

    if ((dp = opendir(dir)) == NULL)
        return errno == ENOENT ? -1 : -2;
    while ((de = readdir(dp)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            state = 1;
    closedir(dp);
    return state;
}

/* sluice_init_daemon_dir - where the daemons stand: beside us, or installed */
static char *sluice_init_daemon_dir(void)
{
    VSTR *path = vstr_alloc(100);
    char real[PATH_MAX];

    vstr_sprintf(path, "%s/../libexec", sluice_exe_dir());
    if (realpath(vstr_str(path), real) != NULL) {
        vstr_sprintf(path, "%s/master", real);
        if (access(vstr_str(path), X_OK) == 0) {
            vstr_free(path);
            return mystrdup(real);
        }
    }
    vstr_free(path);
    return mystrdup(DEF_DAEMON_DIR);
}

/* sluice_init_port - parse a TCP port */
static int sluice_init_port(const char *text)
{
    char *end;
    long port;

    errno = 0;
    port = strtol(text, &end, 10);
    if (errno || end == text || *end || port < 1 || port > 65535)
        return -1;
    return (int) port;
}

/* sluice_init_relayhost - HOST:PORT as Postfix writes it: [HOST]:PORT */
static int sluice_init_relayhost(VSTR *out, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    const char *host = arg;
    size_t host_len;

    if (colon == NULL || sluice_init_port(colon + 1) < 0)
        return -1;
    host_len = (size_t) (colon - arg);
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
    }
    if (host_len == 0 || memchr(host, '[', host_len) ||
        memchr(host, ']', host_len) || strcspn(host, " \t,") < host_len)
        return -1;
    vstr_cpy(out, "[");
    vstr_ncat(out, host, host_len);
    vstr_sprintf_append(out, "]:%s", colon + 1);
    return 0;
}

/* sluice_init_write - write one file of the instance */
static int sluice_init_write(const char *dir, const char *name, VSTR *text);

/* sluice_init_dkim_domain_ok - can name be a DKIM d= (a DNS name) */
static bool sluice_init_dkim_domain_ok(const char *name)
{
    if (*name == 0 || *name == '.' || strstr(name, "..") != NULL ||
        strlen(name) > 253)
        return false;
    for (const char *cp = name; *cp; cp++)
        if (!isalnum((unsigned char) *cp) && *cp != '-' && *cp != '.')
            return false;
    return true;
}

/* sluice_init_dkim - a signing key for $myorigin in data/dkim/ and the
   table dkim_signing that names it (main.cf already points there); the
   key's TXT record is printed. 0, or -1 after one line. */
static int sluice_init_dkim(const char *dir, uid_t uid, gid_t gid)
{
    VSTR *why = vstr_alloc(100);
    VSTR *text = vstr_alloc(400);
    VSTR *path = vstr_alloc(100);
    MAIL_CONF *conf;
    char *domain = NULL;
    int status = -1;

    if ((conf = mail_conf_read(dir, why)) == NULL) {
        sluice_fail("init: %s", vstr_str(why));
        goto out;
    }
    vstr_cpy(why, mail_conf_str(conf, "myorigin"));
    vstr_lower(why);
    domain = mystrdup(vstr_str(why));
    vstr_cpy(
        text,
        "# dkim_signing - dkim_signing_maps of this instance: a sender\n"
        "# domain (From:, else the envelope sender's), then one or more\n"
        "# selector:/path/to/key.pem (RSA or Ed25519; several sign twice).\n"
        "# Make keys with: sluice dkim keygen DOMAIN SELECTOR [--ed25519]\n");
    if (sluice_init_dkim_domain_ok(domain)) {
        vstr_sprintf(path, "%s/dkim/%s.%s.pem",
                     mail_conf_str(conf, "data_directory"), domain,
                     SLUICE_INIT_DKIM_SELECTOR);
        if (sluice_dkim_make(vstr_str(path), domain, SLUICE_INIT_DKIM_SELECTOR,
                             false, SLUICE_INIT_DKIM_BITS, uid, gid) != 0)
            goto out;
        vstr_sprintf_append(text, "%s %s:%s\n", domain,
                            SLUICE_INIT_DKIM_SELECTOR, vstr_str(path));
    } else {
        printf("sluice: no DKIM key: myorigin \"%s\" is no domain\n", domain);
    }
    if (sluice_init_write(dir, "dkim_signing", text) < 0)
        goto out;
    status = 0;

out:
    if (conf != NULL)
        mail_conf_free(conf);
    myfree(domain);
    vstr_free(why);
    vstr_free(text);
    vstr_free(path);
    return status;
}

/* sluice_init_write - write one file of the instance */
static int sluice_init_write(const char *dir, const char *name, VSTR *text)
{
    VSTR *path = vstr_alloc(100);
    int status;

    vstr_sprintf(path, "%s/%s", dir, name);
    status =
        safe_file_write(vstr_str(path), vstr_str(text), vstr_len(text), 0644);
    if (status < 0)
        sluice_fail("init: write %s: %s", vstr_str(path), strerror(errno));
    vstr_free(path);
    return status;
}

/* sluice_init_mkdir - mkdir that accepts an existing folder */
static int sluice_init_mkdir(const char *dir, const char *sub)
{
    VSTR *path = vstr_alloc(100);
    int status = 0;

    vstr_sprintf(path, "%s/%s", dir, sub);
    if (mkdir(vstr_str(path), 0755) < 0 && errno != EEXIST) {
        sluice_fail("init: mkdir %s: %s", vstr_str(path), strerror(errno));
        status = -1;
    }
    vstr_free(path);
    return status;
}

/* sluice_init_reach - can uid/gid search dir (every folder above it)? */
static bool sluice_init_reach(const char *dir, uid_t uid, gid_t gid)
{
    int status;
    pid_t pid;

    if ((pid = fork()) < 0)
        return false;
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
            _exit(2);
        _exit(access(dir, X_OK) == 0 ? 0 : 1);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* sluice_init_give - chown path to uid/gid; 0, or -1 after one line */
static int sluice_init_give(const char *path, uid_t uid, gid_t gid)
{
    if (lchown(path, uid, gid) < 0) {
        sluice_fail("init: chown %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* sluice_init_key - data/feedback.key, made and given to uid/gid; 0, or
   -1 after one line */
static int sluice_init_key(const char *dir, uid_t uid, gid_t gid)
{
    VSTR *path = vstr_alloc(100);
    VSTR *key = vstr_alloc(SIGN_TOKEN_KEY_LEN);
    VSTR *why = vstr_alloc(100);
    int ret = 0;

    vstr_sprintf(path, "%s/data/feedback.key", dir);
    if (sign_token_key_load(vstr_str(path), key, why) < 0) {
        sluice_fail("init: %s", vstr_str(why));
        ret = -1;
    } else if (uid != geteuid()) {
        ret = sluice_init_give(vstr_str(path), uid, gid);
    }
    vstr_free(path);
    vstr_free(key);
    vstr_free(why);
    return ret;
}

/* sluice_init_give_queue - every queue folder to uid/gid, as `sluice
   check` would make them */
static int sluice_init_give_queue(const char *queue, uid_t uid, gid_t gid)
{
    VSTR *path = vstr_alloc(100);
    VSTR *hash_path = vstr_alloc(100);
    int status = 0;

    for (const char *const *name = mail_queue_names; *name && status == 0;
         name++) {
        vstr_sprintf(path, "%s/%s", queue, *name);
        /* root's master keeps its pid file in a folder of root's */
        if (strcmp(*name, MAIL_QUEUE_PID) == 0) {
            if (chmod(vstr_str(path), 0755) < 0)
                status = sluice_fail("init: chmod %s: %s", vstr_str(path),
                                     strerror(errno));
            continue;
        }
        status = sluice_init_give(vstr_str(path), uid, gid);
        if (!mail_queue_hashed(*name))
            continue;
        for (const char *hash = mail_queue_hash_chars; *hash && status == 0;
             hash++) {
            vstr_sprintf(hash_path, "%s/%c", vstr_str(path), *hash);
            status = sluice_init_give(vstr_str(hash_path), uid, gid);
        }
    }
    /* queue_directory itself stays root's, open to mail_owner (0755) */
    if (status == 0 && chmod(queue, 0755) < 0)
        status = sluice_fail("init: chmod %s: %s", queue, strerror(errno));
    vstr_free(hash_path);
    vstr_free(path);
    return status;
}

/* sluice_init - `sluice init DIR [--smtp-port N] [--relayhost HOST:PORT]` */
int sluice_init(int argc, char **argv)
{
    const char *target = NULL;
    int port = SLUICE_DEF_SMTP_PORT;
    VSTR *relayhost = vstr_alloc(40);
    VSTR *text = vstr_alloc(2000);
    VSTR *queue = vstr_alloc(100);
    VSTR *listener = vstr_alloc(40);
    VSTR *why = vstr_alloc(100);
    struct passwd *pw;
    char *owner = NULL;
    uid_t owner_uid;
    gid_t owner_gid;
    char dir[PATH_MAX];
    char *daemon_dir = NULL;
    char stamp[64];
    time_t now = time(NULL);
    int status = 1;
    int state;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--smtp-port") == 0 && i + 1 < argc) {
            if ((port = sluice_init_port(argv[++i])) < 0) {
                sluice_fail("init: bad --smtp-port \"%s\"", argv[i]);
                goto out;
            }
        } else if (strcmp(argv[i], "--relayhost") == 0 && i + 1 < argc) {
            if (sluice_init_relayhost(relayhost, argv[++i]) < 0) {
                sluice_fail("init: bad --relayhost \"%s\" (want HOST:PORT)",
                            argv[i]);
                goto out;
            }
        } else if (argv[i][0] == '-' || target != NULL) {
            sluice_fail("init: unexpected argument \"%s\" (usage: sluice init "
                        "DIR [--smtp-port N] [--relayhost HOST:PORT])",
                        argv[i]);
            goto out;
        } else {
            target = argv[i];
        }
    }
    if (target == NULL) {
        sluice_fail(
            "usage: sluice init DIR [--smtp-port N] [--relayhost HOST:PORT]");
        goto out;
    }
    if (geteuid() == 0) {
        /* No daemon runs as root: root's instance gets a stand-in. */
        if ((pw = getpwnam(SLUICE_INIT_ROOT_OWNER)) == NULL ||
            pw->pw_uid == 0) {
            sluice_fail("init: run as root, the instance needs the "
                        "unprivileged user " SLUICE_INIT_ROOT_OWNER
                        " for its daemons, and there is none");
            goto out;
        }
    } else if ((pw = getpwuid(geteuid())) == NULL) {
        sluice_fail("init: who am I? no passwd entry for uid %ld",
                    (long) geteuid());
        goto out;
    }
    owner = mystrdup(pw->pw_name);
    owner_uid = pw->pw_uid;
    owner_gid = pw->pw_gid;
    state = sluice_init_dir_state(target);
    if (state == 1) {
        sluice_fail("init: %s exists and is not empty; refusing to touch it",
                    target);
        goto out;
    }
    if (state == -2) {
        sluice_fail("init: %s: %s", target, strerror(errno));
        goto out;
    }
    if (state == -1 && mkdir(target, 0755) < 0) {
        sluice_fail("init: mkdir %s: %s", target, strerror(errno));
        goto out;
    }
    if (realpath(target, dir) == NULL) {
        sluice_fail("init: %s: %s", target, strerror(errno));
        goto out;
    }
    if (owner_uid != geteuid() &&
        !sluice_init_reach(dir, owner_uid, owner_gid)) {
        sluice_fail("init: %s, the user the daemons of an instance made by "
                    "root run as, cannot reach %s: a folder above it is closed "
                    "to other users (open it with chmod o+x, or make the "
                    "instance elsewhere)",
                    owner, dir);
        goto out;
    }
    daemon_dir = sluice_init_daemon_dir();
    vstr_sprintf(queue, "%s/queue", dir);
    if (sluice_init_mkdir(dir, "log") < 0 ||
        sluice_init_mkdir(dir, "data") < 0 ||
        sluice_init_mkdir(dir, "data/mta-sts") < 0 ||
        sluice_init_mkdir(dir, "data/sources") < 0 ||
        sluice_init_mkdir(dir, "data/suppression") < 0 ||
        sluice_init_mkdir(dir, "mail") < 0)
        goto out;
    if (mail_queue_create_dirs(vstr_str(queue), 0700, why) < 0) {
        sluice_fail("init: %s", vstr_str(why));
        goto out;
    }
    /* The key of VERP and link tokens (global/sign_token.h): made now,
       for data/ is not the daemons' to write in. */
    if (sluice_init_key(dir, owner_uid, owner_gid) < 0)
        goto out;
    if (owner_uid != geteuid()) {
        vstr_sprintf(why, "%s/mail", dir);
        if (sluice_init_give_queue(vstr_str(queue), owner_uid, owner_gid) < 0 ||
            sluice_init_give(vstr_str(why), owner_uid, owner_gid) < 0)
            goto out;
        /* smtp's MTA-STS policy cache (global/mta_sts.h) */
        vstr_sprintf(why, "%s/data/mta-sts", dir);
        if (sluice_init_give(vstr_str(why), owner_uid, owner_gid) < 0)
            goto out;
        /* qmgr's reputation pauses and warm-up counts (qmgr_source.c) */
        vstr_sprintf(why, "%s/data/sources", dir);
        if (sluice_init_give(vstr_str(why), owner_uid, owner_gid) < 0)
            goto out;
        /* the suppression list (global/suppress.h): cleanup, events, api */
        vstr_sprintf(why, "%s/data/suppression", dir);
        if (sluice_init_give(vstr_str(why), owner_uid, owner_gid) < 0)
            goto out;
    }

    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&now));
    vstr_sprintf(
        text,
        "# main.cf - a sluice instance, made by `sluice init` on %s.\n"
        "#\n"
        "# Parameter names follow Postfix. `sluice -c %s conf` shows\n"
        "# every value, `conf -d` the defaults, `conf name=value` edits\n"
        "# this file in place. The SMTP listener is in master.cf.\n"
        "\n"
        "# Everything of this instance lives under its folder.\n"
        "queue_directory = %s/queue\n"
        "data_directory = %s/data\n"
        "maillog_file = %s/log/maillog\n"
        "\n"
        "# The programs of the build that made it.\n"
        "daemon_directory = %s\n"
        "command_directory = %s\n"
        "\n"
        "%s"
        "mail_owner = %s\n"
        "# Every local part is a user of this instance (see below).\n"
        "local_system_users = no\n"
        "\n"
        "# Mail for these domains is ours; clients on loopback may relay.\n"
        "mydestination = $myhostname, localhost\n"
        "mynetworks = 127.0.0.0/8 [::1]/128\n"
        "inet_interfaces = 127.0.0.1\n"
        "\n"
        "# No DNS at all until you say so: then set disable_dns_lookups\n"
        "# to no, and dns_servers to your resolvers (empty: the system's).\n"
        "# Tests point dns_servers at a resolver of their own on loopback.\n"
        "disable_dns_lookups = yes\n"
        "dns_servers =\n"
        "\n"
        "# Local delivery: every local part is a user of this instance;\n"
        "# mail to user@localhost lands in the Maildir mail/user/.\n"
        "# newaliases (or `sluice map -a hash:%s/aliases`) rebuilds them.\n"
        "alias_maps = hash:%s/aliases\n"
        "alias_database = hash:%s/aliases\n"
        "local_recipient_maps =\n"
        "mail_spool_directory = %s/mail/\n"
        "\n"
        "# DKIM: mail from $myorigin is signed with the key init made\n"
        "# (data/dkim/); publish the TXT record init printed, then\n"
        "# `sluice dkim check DOMAIN " SLUICE_INIT_DKIM_SELECTOR
        "` compares. More domains and keys:\n"
        "# `sluice dkim keygen`, and a line in dkim_signing.\n"
        "dkim_signing_maps = texthash:%s/dkim_signing\n",
        stamp, dir, dir, dir, dir, daemon_dir, sluice_exe_dir(),
        owner_uid == geteuid()
            ? "# It runs entirely as the user who made it.\n"
            : "# Made by root: master runs as root, every daemon as\n"
              "# mail_owner (no sluice daemon runs as root).\n",
        owner, dir, dir, dir, dir, dir);
    if (vstr_len(relayhost) > 0)
        vstr_sprintf_append(
            text,
            "\n# Every message goes to this host ([] means no MX lookup).\n"
            "relayhost = %s\n",
            vstr_str(relayhost));
    vstr_sprintf_append(
        text,
        "\n# How failures are classified (logs, events, DSNs): a copy of\n"
        "# the built-in rules, yours to edit; `sluice check` checks it.\n"
        "bounce_classes_file = %s/bounce-classes\n",
        dir);
    if (sluice_init_write(dir, "main.cf", text) < 0)
        goto out;

    if (sluice_init_dkim(dir, owner_uid != geteuid() ? owner_uid : (uid_t) -1,
                         owner_gid) < 0)
        goto out;

    vstr_cpy(
        text,
        "# aliases - local aliases of this instance: \"name: destination, ...\"\n"
        "#\n"
        "# A destination is an address, \"|command\", /file, or\n"
        "# :include:/file. After a change: newaliases (or\n"
        "# sluice map -a hash:THIS_FILE).\n"
        "\n"
        "postmaster: root\n"
        "mailer-daemon: postmaster\n");
    if (sluice_init_write(dir, "aliases", text) < 0)
        goto out;
    /* The built-in rules (conf/bounce-classes, compiled in). */
    vstr_cpy(text, bounce_class_builtin());
    if (sluice_init_write(dir, "bounce-classes", text) < 0)
        goto out;
    vstr_sprintf(text, "hash:%s/aliases", dir);
    if (map_build(vstr_str(text), MAP_FLAG_ALIAS, why) < 0) {
        sluice_fail("init: %s", vstr_str(why));
        goto out;
    }

    vstr_sprintf(listener, "127.0.0.1:%d", port);
    vstr_sprintf(
        text,
        "# master.cf - the services of this instance, one per line.\n"
        "# A line that starts with white space continues the previous one.\n"
        "# '-' takes the default. Programs come from daemon_directory.\n"
        "#\n"
        "# service          type  private unpriv  chroot  wakeup  maxproc command + args\n");
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(sluice_init_servs); i++) {
        const SLUICE_INIT_SERV *sp = &sluice_init_servs[i];
        VSTR *prog = vstr_alloc(100);

        vstr_sprintf(prog, "%s/%s", daemon_dir, sp->program);
        if (access(vstr_str(prog), X_OK) == 0)
            vstr_sprintf_append(text, "%-18s %s\n",
                                strcmp(sp->program, "smtpd") == 0
                                    ? vstr_str(listener)
                                    : sp->program,
                                sp->fields);
        vstr_free(prog);
    }
    if (sluice_init_write(dir, "master.cf", text) < 0)
        goto out;
    printf("sluice: created an instance in %s (SMTP on %s)\n"
           "sluice: start it with: %s/sluice -c %s start\n",
           dir, vstr_str(listener), sluice_exe_dir(), dir);
    status = 0;

out:
    myfree(owner);
    myfree(daemon_dir);
    vstr_free(relayhost);
    vstr_free(text);
    vstr_free(queue);
    vstr_free(listener);
    vstr_free(why);
    return status;
}
