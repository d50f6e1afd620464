/*
 * local_priv - who a local delivery runs as
 *
 * Started as root with a mail_owner that is not root (SYSTEM mode), local
 * keeps root only as its saved uid (local_choose_mode, before the server
 * skeleton would drop it) and delivers in a child that becomes the
 * recipient (mailbox, .forward, its commands and files) or the owner of
 * the alias table (alias commands and files; default_privs when root owns
 * it; local_alias_owner). Otherwise (an `sluice init` instance, or
 * local_system_users = no: INSTANCE mode) every local part is a user and
 * everything runs as ourselves (local_as runs the action in-process). No
 * |command or /file delivery ever runs as root (local_priv_unroot). The I/O-free rules
 * (local_mode, local_user_check) are in local_rules.c.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "argv.h"
#include "local.h"
#include "mail_conf.h"
#include "mono_ms.h"
#include "msg.h"
#include "mymalloc.h"
#include "safe_file.h"
#include "vstr.h"

/* Seconds a delivery child may run past command_time_limit. */
#define LOCAL_CHILD_MARGIN (2 * LOCAL_LOCK_WAIT + 60)

/* local_priv_set - fill priv from a passwd entry */
void local_priv_set(LOCAL_PRIV *priv, const struct passwd *pw)
{
    priv->uid = pw->pw_uid;
    priv->gid = pw->pw_gid;
    priv->name = mystrdup(pw->pw_name);
    priv->home = mystrdup(pw->pw_dir);
}

/* local_priv_free - release what local_priv_set made */
void local_priv_free(LOCAL_PRIV *priv)
{
    myfree(priv->name);
    myfree(priv->home);
    priv->name = priv->home = NULL;
}

/* local_priv_user - the privileges for delivering to user; false with the
   result set (unknown user in SYSTEM mode) */
bool local_priv_user(LOCAL_CTX *ctx, const char *user, LOCAL_PRIV *priv,
                     LOCAL_RESULT *res)
{
    struct passwd *pw = getpwnam(user);

    memset(priv, 0, sizeof(*priv));
    if (!local_user_check(ctx->mode, user, pw != NULL, res))
        return false;
    if (ctx->mode == LOCAL_MODE_SYSTEM) {
        local_priv_set(priv, pw);
    } else {
        priv->uid = ctx->self.uid;
        priv->gid = ctx->self.gid;
        priv->name = mystrdup(ctx->self.name);
        /* Only our own home: someone else's .forward is not ours to obey
           (its |commands would run as us). */
        priv->home =
            pw && pw->pw_uid == ctx->self.uid ? mystrdup(pw->pw_dir) : NULL;
    }
    return true;
}

/* local_priv_copy - a copy of priv */
void local_priv_copy(LOCAL_PRIV *to, const LOCAL_PRIV *from)
{
    *to = *from;
    to->name = mystrdup(from->name ? from->name : "");
    to->home = from->home ? mystrdup(from->home) : NULL;
}

/* local_priv_unroot - who a |command or /file destination runs as:
   neither ever runs as root; in SYSTEM mode root's own .forward commands
   and files run as alias_owner (the alias table's owner, default_privs
   when root owns it), as alias commands and files do */
const LOCAL_PRIV *local_priv_unroot(const LOCAL_CTX *ctx,
                                    const LOCAL_PRIV *priv)
{
    if (priv->uid == 0 && ctx->mode == LOCAL_MODE_SYSTEM)
        priv = &ctx->alias_owner;
    return priv->uid == 0 ? NULL : priv;
}

/* local_as_child - in the child: become priv, act, report through fd */
static void local_as_child(const LOCAL_PRIV *priv, LOCAL_ACTION action,
                           void *arg, LOCAL_RESULT *res, int fd)
{
    VSTR *wire = vstr_alloc(100);

    if (seteuid(0) < 0)
        msg_fatal("seteuid 0: %m");
    /* virtual's ids have no name: the gid is the only group. */
    if (priv->uid != 0 && (setgid(priv->gid) < 0 ||
                           (priv->name ? initgroups(priv->name, priv->gid)
                                       : setgroups(1, &priv->gid)) < 0 ||
                           setuid(priv->uid) < 0)) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "cannot become uid %ld gid %ld (%s): %s",
                         (long) priv->uid, (long) priv->gid,
                         priv->name ? priv->name : "virtual", strerror(errno));
    } else {
        action(arg, res);
    }
    vstr_sprintf(wire, "%d %s ", (int) res->stat, res->dsn);
    vstr_ncat(wire, vstr_str(res->text), vstr_len(res->text));
    (void) safe_file_write_all(fd, vstr_str(wire), vstr_len(wire));
    _exit(0);
}

/* local_as - run action as priv: SYSTEM mode in a child that changes uid,
   INSTANCE mode right here */
void local_as(LOCAL_CTX *ctx, const LOCAL_PRIV *priv, LOCAL_ACTION action,
              void *arg, LOCAL_RESULT *res)
{
    VSTR *wire;
    long long deadline;
    bool timed_out = false;
    bool same;
    int fds[2];
    int status;
    pid_t pid;
    char buf[4096];
    ssize_t got;

    /* local's INSTANCE privs are always our own; virtual's are the
       tables', which only root can become. */
    same = priv->uid == geteuid() && priv->gid == getegid();
    if (ctx->mode == LOCAL_MODE_INSTANCE &&
        (!ctx->virtual || same || geteuid() != 0)) {
        if (ctx->virtual && !same)
            local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                             "cannot deliver as uid %ld gid %ld: the delivery"
                             " agent does not run as root",
                             (long) priv->uid, (long) priv->gid);
        else
            action(arg, res);
        return;
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "pipe: %s",
                         strerror(errno));
        return;
    }
    if ((pid = fork()) < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "fork: %s",
                         strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        local_as_child(priv, action, arg, res, fds[1]);
    }
    close(fds[1]);
    wire = vstr_alloc(200);
    /* The child's own limits (command_time_limit, LOCAL_LOCK_WAIT) should
       end it first; this one keeps a stuck child from stalling us. */
    deadline =
        mono_ms() +
        ((long long) ctx->conf.command_time_limit + LOCAL_CHILD_MARGIN) * 1000;
    for (;;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        long long left = deadline - mono_ms();
        int n;

        if (left <= 0) {
            timed_out = true;
            break;
        }
        n = poll(&pfd, 1, left > 1000 ? 1000 : (int) left);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0)
            continue;
        if ((got = read(fds[0], buf, sizeof(buf))) == 0)
            break;
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            break;
        }
        vstr_ncat(wire, buf, (size_t) got);
    }
    close(fds[0]);
    if (timed_out) {
        msg_warn("delivery process %ld ran out of time: killed", (long) pid);
        (void) kill(pid, SIGKILL);
        vstr_reset(wire);
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (timed_out) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "delivery process ran out of time");
    } else {
        int stat_code;
        char dsn[16];
        int used = 0;

        if (sscanf(vstr_str(wire), "%d %15s %n", &stat_code, dsn, &used) >= 2 &&
            used > 0 && stat_code >= LOCAL_STAT_SENT &&
            stat_code <= LOCAL_STAT_BOUNCE) {
            local_result_set(res, (LOCAL_STAT) stat_code, dsn, "%s",
                             vstr_str(wire) + used);
        } else {
            local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                             "delivery process died");
        }
    }
    vstr_free(wire);
}

/* local_alias_owner - SYSTEM mode: who alias commands and files run as:
   the owner of the first alias table's file, default_privs for root */
void local_alias_owner(LOCAL_CTX *ctx, const MAIL_CONF *conf)
{
    ARGV *maps = mail_conf_list(conf, "alias_maps");
    const char *def = mail_conf_str(conf, "default_privs");
    struct passwd *pw = NULL;
    struct stat st;

    if (maps->argc > 0) {
        const char *colon = strchr(maps->argv[0], ':');
        VSTR *path = vstr_alloc(100);

        if (colon != NULL && colon[1] == '/') {
            vstr_sprintf(path, "%s.db", colon + 1);
            if (stat(vstr_str(path), &st) == 0 || stat(colon + 1, &st) == 0)
                if (st.st_uid != 0)
                    pw = getpwuid(st.st_uid);
        }
        vstr_free(path);
    }
    argv_free(maps);
    if (pw == NULL && (pw = getpwnam(def)) == NULL)
        msg_fatal("default_privs: unknown user %s", def);
    if (pw->pw_uid == 0)
        msg_fatal("default_privs: %s is root; it must not be", def);
    local_priv_set(&ctx->alias_owner, pw);
}

/* local_choose_mode - before the skeleton drops privileges: in SYSTEM
   mode keep root as the saved uid and run as mail_owner, so the skeleton
   leaves us alone and a delivery child can become the recipient */
LOCAL_MODE local_choose_mode(int argc, char **argv, bool virtual)
{
    const char *config_dir = getenv("SLUICE_CONFIG");
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf;
    struct passwd *pw;
    LOCAL_MODE mode = LOCAL_MODE_INSTANCE;

    if (geteuid() != 0) {
        vstr_free(why);
        return mode;
    }
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "-c") == 0)
            config_dir = argv[i + 1];
    if (config_dir == NULL || *config_dir == 0)
        config_dir = DEF_CONFIG_DIR;
    if ((conf = mail_conf_read(config_dir, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if ((pw = getpwnam(mail_conf_str(conf, "mail_owner"))) == NULL)
        msg_fatal("mail_owner %s: no such user",
                  mail_conf_str(conf, "mail_owner"));
    mode = local_mode(geteuid(), pw->pw_uid);
    /* An instance whose local parts are its own, not the system's users:
       nothing to become, so it runs as mail_owner like every daemon. */
    if (!virtual && !mail_conf_bool(conf, "local_system_users"))
        mode = LOCAL_MODE_INSTANCE;
    if (mode == LOCAL_MODE_SYSTEM &&
        (setgroups(0, NULL) < 0 || setegid(pw->pw_gid) < 0 ||
         seteuid(pw->pw_uid) < 0))
        msg_fatal("cannot run as mail_owner %s: %m", pw->pw_name);
    mail_conf_free(conf);
    vstr_free(why);
    return mode;
}
