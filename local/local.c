/*
 * local - the local delivery agent: aliases, .forward, mailboxes
 *
 * qmgr connects to private/local and sends one request (DELIVER, then its
 * RCPT lists; global/deliver_proto.h) for recipients in mydestination.
 * Each recipient goes through, in Postfix's order:
 *
 *   aliases   alias_maps, key = the local part without its extension;
 *             the value's destinations (addresses, |command, /file,
 *             :include:/file) are expanded again, up to
 *             LOCAL_EXPAND_DEPTH_MAX deep and LOCAL_DEST_MAX
 *             destinations in all (then 5.3.0); a name met again while
 *             it is being expanded is a loop or a self reference and
 *             goes on to its .forward and mailbox (a: b, b: a ends in
 *             a's mailbox); a name met again after its expansion is
 *             skipped, and each mailbox, file, command, forward address
 *             and :include: file is used once per original recipient
 *   .forward  each forward_path entry, as the user; a missing file is
 *             skipped, and so is one that is not a regular file owned
 *             by the user (or root) and writable by no one else; in
 *             INSTANCE mode $home is known for our own user only
 *   mailbox   home_mailbox under the home, else mail_spool_directory/USER;
 *             a Maildir when the value ends in '/'
 *
 * Addresses that are not ours are forwarded: one new message through
 * cleanup with the original sender (or owner-NAME) and Delivered-To: the
 * original recipient prepended. A message whose headers already have
 * Delivered-To: this recipient is bounced (a forwarding loop).
 *
 * One request at a time per process: a request blocks (files, commands),
 * so the process tells master it is busy while it works and master starts
 * siblings (up to maxproc) for the requests that queue up meanwhile.
 *
 * Privileges: started as root with a mail_owner that is not root (SYSTEM
 * mode), local keeps root only as its saved uid and delivers in a child
 * that becomes the recipient (mailbox, .forward, its commands and files)
 * or the owner of the alias table (alias commands and files; default_privs
 * when root owns it). Otherwise (an `sluice init` instance, or
 * local_system_users = no: INSTANCE mode) every local part is a user and
 * everything runs as ourselves. No |command ever runs as root: root's own
 * run as default_privs.
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

#include "argv.h"
#include "attr.h"
#include "cleanup_client.h"
#include "cleanup_proto.h"
#include "delay_format.h"
#include "deliver_proto.h"
#include "local.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "safe_file.h"
#include "smtp_addr.h"
#include "vstr.h"

#define LOCAL_FILE_MAX (1024 * 1024) /* a .forward or :include: file */
#define LOCAL_TIMEOUT_MAX_MS (3600 * 1000)
#define LOCAL_CHILD_MARGIN (2 * LOCAL_LOCK_WAIT + 60) /* seconds past
                                                    command_time_limit */

/* What main.cf says, read once. */
typedef struct LOCAL_CONF {
    char *queue_dir;
    char *cleanup_path;
    char *myorigin;
    char *delims; /* recipient_delimiter */
    char *spool_dir;
    char *home_mailbox;
    ARGV *forward_path; /* unexpanded entries */
    ARGV *allow_commands;
    ARGV *allow_files;
    ARGV *prepend_delivered;
    char *shell;
    int command_time_limit;
    char *default_privs;
    long long mailbox_size_limit;
    bool soft_bounce;
    int timeout_ms; /* ipc_timeout */
    MAPS *aliases; /* NULL: alias_error says why */
    VSTR *alias_error;
    MATCH_LIST *mydestination;
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

/* Where a destination came from: decides what it may do. */
typedef enum LOCAL_CLASS {
    LOCAL_CLASS_ALIAS,
    LOCAL_CLASS_FORWARD,
    LOCAL_CLASS_INCLUDE,
} LOCAL_CLASS;

static const char *const local_class_names[] = {"alias", "forward",
                                                "include"};

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

static void local_resolve(LOCAL_STATE *state, const char *user,
                          const char *ext, int depth);

/* --- privileges -------------------------------------------------------- */

/* local_priv_set - fill priv from a passwd entry */
static void local_priv_set(LOCAL_PRIV *priv, const struct passwd *pw)
{
    priv->uid = pw->pw_uid;
    priv->gid = pw->pw_gid;
    priv->name = mystrdup(pw->pw_name);
    priv->home = mystrdup(pw->pw_dir);
}

/* local_priv_free - release what local_priv_set made */
static void local_priv_free(LOCAL_PRIV *priv)
{
    myfree(priv->name);
    myfree(priv->home);
    priv->name = priv->home = NULL;
}

/* local_priv_user - the privileges for delivering to user; false with the
   result set (unknown user in SYSTEM mode) */
static bool local_priv_user(LOCAL_CTX *ctx, const char *user,
                            LOCAL_PRIV *priv, LOCAL_RESULT *res)
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
        priv->home = pw && pw->pw_uid == ctx->self.uid ? mystrdup(pw->pw_dir)
                                                       : NULL;
    }
    return true;
}

/* local_priv_copy - a copy of priv */
static void local_priv_copy(LOCAL_PRIV *to, const LOCAL_PRIV *from)
{
    *to = *from;
    to->name = mystrdup(from->name ? from->name : "");
    to->home = from->home ? mystrdup(from->home) : NULL;
}

typedef void (*LOCAL_ACTION)(void *arg, LOCAL_RESULT *res);

/* local_now_ms - monotonic milliseconds */
static long long local_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* local_as_child - in the child: become priv, act, report through fd */
static void local_as_child(const LOCAL_PRIV *priv, LOCAL_ACTION action,
                           void *arg, LOCAL_RESULT *res, int fd)
{
    VSTR *wire = vstr_alloc(100);

    if (seteuid(0) < 0)
        msg_fatal("seteuid 0: %m");
    if (priv->uid != 0 &&
        (setgid(priv->gid) < 0 || initgroups(priv->name, priv->gid) < 0 ||
         setuid(priv->uid) < 0)) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "cannot become user %s: %s", priv->name,
                         strerror(errno));
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
static void local_as(LOCAL_CTX *ctx, const LOCAL_PRIV *priv,
                     LOCAL_ACTION action, void *arg, LOCAL_RESULT *res)
{
    VSTR *wire;
    long long deadline;
    bool timed_out = false;
    int fds[2];
    int status;
    pid_t pid;
    char buf[4096];
    ssize_t got;

    if (ctx->mode == LOCAL_MODE_INSTANCE) {
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
    deadline = local_now_ms() +
               ((long long) ctx->conf.command_time_limit +
                LOCAL_CHILD_MARGIN) * 1000;
    for (;;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        long long left = deadline - local_now_ms();
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

        if (sscanf(vstr_str(wire), "%d %15s %n", &stat_code, dsn, &used) >=
                2 &&
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

/* --- reading files as someone ---------------------------------------- */

typedef struct LOCAL_READ_ARG {
    const char *path;
    uid_t owner; /* whose file it must be (or root's) */
} LOCAL_READ_ARG;

#define LOCAL_READ_MISSING "5.0.0" /* dsn of a missing file */
#define LOCAL_READ_UNSAFE "5.7.1" /* dsn of a file not to be obeyed */

/* local_read_action - a .forward or :include: file into res->text: SENT
   read, BOUNCE missing or unsafe (skip it; dsn LOCAL_READ_MISSING or
   LOCAL_READ_UNSAFE), DEFER unreadable */
static void local_read_action(void *arg, LOCAL_RESULT *res)
{
    LOCAL_READ_ARG *ra = arg;
    LOCAL_FILE_STAT stat;
    VSTR *why = vstr_alloc(100);
    char *data = local_file_read(ra->path, ra->owner, LOCAL_FILE_MAX, &stat,
                                 why);

    if (data != NULL)
        local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "%s", data);
    else if (stat == LOCAL_FILE_MISSING)
        local_result_set(res, LOCAL_STAT_BOUNCE, LOCAL_READ_MISSING,
                         "missing");
    else if (stat == LOCAL_FILE_UNSAFE)
        local_result_set(res, LOCAL_STAT_BOUNCE, LOCAL_READ_UNSAFE, "%s",
                         vstr_str(why));
    else
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "%s", vstr_str(why));
    myfree(data);
    vstr_free(why);
}

/* --- results ----------------------------------------------------------- */

/* local_tv_diff - b - a in seconds, never negative */
static double local_tv_diff(const struct timeval *a, const struct timeval *b)
{
    double d = (double) (b->tv_sec - a->tv_sec) +
               (double) (b->tv_usec - a->tv_usec) / 1e6;

    return d > 0 ? d : 0;
}

/* local_log - one Postfix-style line for one final delivery */
static void local_log(LOCAL_REQ *req, const char *to, const char *orig_to,
                      const char *dsn, const char *status,
                      const char *reason)
{
    struct timeval now, active;
    char total[32], d0[32], d1[32], d3[32];
    const struct timeval *arrival;
    VSTR *orig = vstr_alloc(64);

    gettimeofday(&now, NULL);
    active.tv_sec = (time_t) (req->active_usec / 1000000);
    active.tv_usec = (suseconds_t) (req->active_usec % 1000000);
    arrival = req->info ? &req->info->arrival : &active;
    delay_format(local_tv_diff(arrival, &now), total, sizeof(total));
    delay_format(local_tv_diff(arrival, &active), d0, sizeof(d0));
    delay_format(local_tv_diff(&active, &req->t_request), d1,
                       sizeof(d1));
    delay_format(local_tv_diff(&req->t_request, &now), d3, sizeof(d3));
    if (orig_to != NULL && strcasecmp(orig_to, to) != 0)
        vstr_sprintf(orig, ", orig_to=<%s>", orig_to);
    msg_info("%s: to=<%s>%s, relay=local, delay=%s, delays=%s/%s/0/%s, "
             "dsn=%s, status=%s (%s)",
             req->qid, to, vstr_str(orig), total, d0, d1, d3, dsn, status,
             reason);
    vstr_free(orig);
}

/* local_stat_name - the deliver_proto action of a status */
static const char *local_stat_name(LOCAL_STAT stat)
{
    return stat == LOCAL_STAT_SENT    ? DELIVER_ACTION_SENT
           : stat == LOCAL_STAT_DEFER ? DELIVER_ACTION_DEFERRED
                                      : DELIVER_ACTION_BOUNCED;
}

/* local_soften - soft_bounce: a bounce becomes a deferral */
static void local_soften(LOCAL_CTX *ctx, LOCAL_RESULT *res)
{
    if (ctx->conf.soft_bounce && res->stat == LOCAL_STAT_BOUNCE) {
        res->stat = LOCAL_STAT_DEFER;
        if (res->dsn[0] == '5')
            res->dsn[0] = '4';
    }
}

/* local_outcome - one final delivery's result: log it, fold it into the
   recipient's outcome. what is the log text of a success
   ("delivered to mailbox"). */
static void local_outcome(LOCAL_STATE *state, const char *to,
                          LOCAL_RESULT *res, const char *what)
{
    LOCAL_CTX *ctx = state->req->ctx;
    const char *reason = res->stat == LOCAL_STAT_SENT && what
                             ? what : vstr_str(res->text);

    local_soften(ctx, res);
    local_log(state->req, to, state->rcpt->address, res->dsn,
              local_stat_name(res->stat), reason);
    if (res->stat == LOCAL_STAT_SENT) {
        state->sent++;
        if (!state->deferred && !state->bounced)
            local_result_set(&state->outcome, LOCAL_STAT_SENT, res->dsn, "%s",
                             reason);
    } else if (res->stat == LOCAL_STAT_DEFER) {
        if (!state->deferred)
            local_result_set(&state->outcome, LOCAL_STAT_DEFER, res->dsn,
                             "%s", reason);
        state->deferred = true;
    } else {
        if (!state->deferred && !state->bounced) {
            if (strcasecmp(to, state->rcpt->address) != 0)
                local_result_set(&state->outcome, LOCAL_STAT_BOUNCE, res->dsn,
                                 "%s: %s", to, reason);
            else
                local_result_set(&state->outcome, LOCAL_STAT_BOUNCE, res->dsn,
                                 "%s", reason);
        }
        state->bounced = true;
    }
}

/* local_send_result - the recipient's RESULT to qmgr */
static int local_send_result(LOCAL_REQ *req, LOCAL_RCPT *rcpt,
                             LOCAL_RESULT *res)
{
    ATTR_LIST *list = attr_list_alloc();
    int ret;

    attr_add_str(list, "request", DELIVER_REQ_RESULT);
    attr_add_int(list, "offset", rcpt->offset);
    attr_add_str(list, "action", local_stat_name(res->stat));
    attr_add_str(list, "dsn", res->dsn);
    attr_add_str(list, "reason", vstr_str(res->text));
    attr_add_str(list, "relay", "local");
    ret = attr_stream_write(req->stream, list, req->why);
    attr_list_free(list);
    return ret;
}

/* --- per-recipient sets -------------------------------------------- */

/* local_key_has - does set hold "kind:name"? */
static bool local_key_has(const ARGV *set, const char *kind, const char *name)
{
    size_t kind_len = strlen(kind);

    for (size_t i = 0; i < set->argc; i++)
        if (strncmp(set->argv[i], kind, kind_len) == 0 &&
            set->argv[i][kind_len] == ':' &&
            strcmp(set->argv[i] + kind_len + 1, name) == 0)
            return true;
    return false;
}

/* local_key_add - add "kind:name" to set; false when it was there */
static bool local_key_add(ARGV *set, const char *kind, const char *name)
{
    VSTR *key;

    if (local_key_has(set, kind, name))
        return false;
    key = vstr_alloc(64);
    vstr_sprintf(key, "%s:%s", kind, name);
    argv_add(set, vstr_str(key));
    vstr_free(key);
    return true;
}

/* local_key_pop - drop the last entries of set down to count */
static void local_key_pop(ARGV *set, size_t count)
{
    while (set->argc > count) {
        set->argc--;
        myfree(set->argv[set->argc]);
        set->argv[set->argc] = NULL;
    }
}

/* --- final deliveries -------------------------------------------------- */

/* local_address - "user@domain" of the recipient being handled */
static void local_address(LOCAL_STATE *state, const char *user,
                          const char *ext, VSTR *out)
{
    LOCAL_CONF *conf = &state->req->ctx->conf;

    vstr_cpy(out, user);
    if (*ext && *conf->delims) {
        vstr_addch(out, conf->delims[0]);
        vstr_cat(out, ext);
    }
    if (vstr_len(state->domain) > 0)
        vstr_sprintf_append(out, "@%s", vstr_str(state->domain));
}

/* local_msg_init - the message as this delivery writes it */
static void local_msg_init(LOCAL_STATE *state, LOCAL_MSG *msg,
                           const char *recipient, bool delivered_to)
{
    LOCAL_REQ *req = state->req;

    msg->sender = req->sender;
    msg->recipient = recipient;
    msg->content = vstr_str(req->content);
    msg->len = vstr_len(req->content);
    msg->arrival = req->info->arrival.tv_sec;
    msg->delivered_to = delivered_to;
}

typedef struct LOCAL_MAILBOX_ARG {
    LOCAL_CTX *ctx;
    const char *path;
    bool maildir;
    LOCAL_MSG *msg;
    uid_t uid;
    gid_t gid;
} LOCAL_MAILBOX_ARG;

/* local_mailbox_action - write to the mailbox (as the right user) */
static void local_mailbox_action(void *arg, LOCAL_RESULT *res)
{
    LOCAL_MAILBOX_ARG *ma = arg;
    long long limit = ma->ctx->conf.mailbox_size_limit;

    if (ma->maildir)
        local_maildir_deliver(ma->path, ma->msg, limit, res);
    else
        local_mbox_deliver(ma->path, ma->msg, limit, ma->uid, ma->gid,
                           LOCAL_LOCK_WAIT, res);
}

/* local_mailbox - deliver to user's own mailbox */
static void local_mailbox(LOCAL_STATE *state, const char *user,
                          const char *ext)
{
    LOCAL_CTX *ctx = state->req->ctx;
    LOCAL_CONF *conf = &ctx->conf;
    LOCAL_RESULT *res = &state->scratch;
    VSTR *to = vstr_alloc(64);
    VSTR *path = vstr_alloc(100);
    LOCAL_MAILBOX_ARG ma = {.ctx = ctx, .uid = (uid_t) -1,
                            .gid = (gid_t) -1};
    LOCAL_PRIV priv, as;
    LOCAL_MSG msg;
    const char *box;
    bool spool;

    local_address(state, user, ext, to);
    if (!local_key_add(state->delivered, "m", user))
        goto out;                       /* this mailbox has its copy */
    if (!local_priv_user(ctx, user, &priv, res)) {
        local_outcome(state, vstr_str(to), res, NULL);
        goto out;
    }
    spool = *conf->home_mailbox == 0 || priv.home == NULL;
    if (spool) {
        box = conf->spool_dir;
        vstr_sprintf(path, "%s%s%s", conf->spool_dir,
                     box[strlen(box) - 1] == '/' ? "" : "/", user);
    } else {
        box = conf->home_mailbox;
        vstr_sprintf(path, "%s/%s", priv.home, conf->home_mailbox);
    }
    ma.maildir = box[strlen(box) - 1] == '/';
    if (ma.maildir)
        while (vstr_len(path) > 1 && vstr_str(path)[vstr_len(path) - 1] == '/')
            vstr_truncate(path, vstr_len(path) - 1);
    ma.path = vstr_str(path);
    local_msg_init(state, &msg, vstr_str(to), true);
    ma.msg = &msg;
    /* The spool folder is root's: an mbox there is created by root for
       the user. Everything else is written as the user. */
    local_priv_copy(&as, &priv);
    if (ctx->mode == LOCAL_MODE_SYSTEM && spool && !ma.maildir) {
        ma.uid = priv.uid;
        ma.gid = priv.gid;
        as.uid = 0;
    }
    local_as(ctx, &as, local_mailbox_action, &ma, res);
    local_outcome(state, vstr_str(to), res,
                  ma.maildir ? "delivered to maildir"
                             : "delivered to mailbox");
    local_priv_free(&as);
    local_priv_free(&priv);
out:
    vstr_free(to);
    vstr_free(path);
}

typedef struct LOCAL_FILE_ARG {
    const char *path;
    LOCAL_MSG *msg;
    long long limit;
} LOCAL_FILE_ARG;

/* local_file_action - append to a /file destination */
static void local_file_action(void *arg, LOCAL_RESULT *res)
{
    LOCAL_FILE_ARG *fa = arg;

    local_mbox_deliver(fa->path, fa->msg, fa->limit, (uid_t) -1, (gid_t) -1,
                       LOCAL_LOCK_WAIT, res);
}

/* local_file - a /file destination */
static void local_file(LOCAL_STATE *state, const char *to, const char *path,
                       const LOCAL_PRIV *priv)
{
    LOCAL_CONF *conf = &state->req->ctx->conf;
    LOCAL_FILE_ARG fa = {.path = path,
                         .limit = conf->mailbox_size_limit};
    LOCAL_MSG msg;
    VSTR *what = vstr_alloc(100);

    local_msg_init(state, &msg, to,
                   local_allowed(conf->prepend_delivered, "file"));
    fa.msg = &msg;
    local_as(state->req->ctx, priv, local_file_action, &fa, &state->scratch);
    vstr_sprintf(what, "delivered to file: %s", path);
    local_outcome(state, to, &state->scratch, vstr_str(what));
    vstr_free(what);
}

typedef struct LOCAL_CMD_ARG {
    LOCAL_CMD *cmd;
    LOCAL_MSG *msg;
} LOCAL_CMD_ARG;

/* local_command_action - run a |command destination */
static void local_command_action(void *arg, LOCAL_RESULT *res)
{
    LOCAL_CMD_ARG *ca = arg;

    local_command_deliver(ca->cmd, ca->msg, res);
}

/* local_command - a |command destination */
static void local_command(LOCAL_STATE *state, const char *to,
                          const char *user, const char *ext,
                          const char *command, const LOCAL_PRIV *priv)
{
    LOCAL_REQ *req = state->req;
    LOCAL_CONF *conf = &req->ctx->conf;

    /* No command runs as root: root's own .forward commands run as
       default_privs, as the commands of a root-owned alias table do. */
    if (priv->uid == 0 && req->ctx->mode == LOCAL_MODE_SYSTEM)
        priv = &req->ctx->alias_owner;
    if (priv->uid == 0) {
        local_result_set(&state->scratch, LOCAL_STAT_DEFER, "4.3.0",
                         "refusing to run command %s as root", command);
        local_outcome(state, to, &state->scratch, "");
        return;
    }

    ARGV *env = argv_alloc(12);
    VSTR *buf = vstr_alloc(100);
    VSTR *local_part = vstr_alloc(64);
    LOCAL_CMD cmd = {.shell = conf->shell,
                     .command = command,
                     .home = priv->home,
                     .time_limit = conf->command_time_limit};
    LOCAL_CMD_ARG ca = {.cmd = &cmd};
    LOCAL_MSG msg;
    size_t local_len;

    (void) smtp_addr_split(to, &local_len);
    vstr_ncpy(local_part, to, local_len);
#define LOCAL_ENV(name, value)                                             \
    do {                                                                   \
        vstr_sprintf(buf, "%s=%s", (name), (value));                       \
        argv_add(env, vstr_str(buf));                                      \
    } while (0)
    LOCAL_ENV("HOME", priv->home ? priv->home : "/");
    LOCAL_ENV("USER", user);
    LOCAL_ENV("LOGNAME", user);
    LOCAL_ENV("LOCAL", vstr_str(local_part));
    LOCAL_ENV("EXTENSION", ext);
    LOCAL_ENV("SENDER", req->sender);
    LOCAL_ENV("RECIPIENT", to);
    LOCAL_ENV("DOMAIN", vstr_str(state->domain));
    LOCAL_ENV("ORIGINAL_RECIPIENT", state->rcpt->address);
    LOCAL_ENV("SHELL", conf->shell);
    LOCAL_ENV("PATH", "/usr/local/bin:/usr/bin:/bin");
#undef LOCAL_ENV
    cmd.env = (const char *const *) env->argv;
    local_msg_init(state, &msg, to,
                   local_allowed(conf->prepend_delivered, "command"));
    ca.msg = &msg;
    local_as(req->ctx, priv, local_command_action, &ca, &state->scratch);
    vstr_sprintf(buf, "delivered to command: %s", command);
    local_outcome(state, to, &state->scratch, vstr_str(buf));
    argv_free(env);
    vstr_free(buf);
    vstr_free(local_part);
}

/* --- expansion --------------------------------------------------------- */

/* local_is_ours - is domain one of mydestination? -1: the list failed */
static int local_is_ours(LOCAL_CTX *ctx, const char *domain)
{
    if (*domain == 0)
        return 1;
    return match_list_match(ctx->conf.mydestination, domain);
}

/* local_dests - handle each destination of an alias value or a file */
static void local_dests(LOCAL_STATE *state, const char *to, const char *user,
                        const char *ext, const char *value, LOCAL_CLASS cls,
                        const LOCAL_PRIV *priv, int depth)
{
    LOCAL_CTX *ctx = state->req->ctx;
    LOCAL_CONF *conf = &ctx->conf;
    ARGV *dests = local_dest_split(value);
    LOCAL_RESULT *res = &state->scratch;
    VSTR *addr = vstr_alloc(64);
    VSTR *duser = vstr_alloc(64);
    VSTR *dext = vstr_alloc(16);
    VSTR *ddomain = vstr_alloc(64);

    for (size_t i = 0; i < dests->argc && !state->too_many; i++) {
        const char *arg;
        LOCAL_DEST_TYPE type = local_dest_type(dests->argv[i], &arg);
        const char *cls_name = local_class_names[cls];

        /* A bound on the work one recipient can cause, whatever the
           tables and files say; a permanent condition, so a bounce
           (a deferral would repeat the deliveries made so far). */
        if (++state->dest_count > LOCAL_DEST_MAX) {
            local_result_set(res, LOCAL_STAT_BOUNCE, "5.3.0",
                             "alias expansion of %s: more than %d "
                             "destinations", state->rcpt->address,
                             LOCAL_DEST_MAX);
            local_outcome(state, to, res, NULL);
            state->too_many = true;
            break;
        }
        switch (type) {
        case LOCAL_DEST_COMMAND:
            if (!local_allowed(conf->allow_commands, cls_name)) {
                local_result_set(res, LOCAL_STAT_BOUNCE, "5.7.1",
                                 "mail to command is restricted (%s "
                                 "destination \"|%s\"; see "
                                 "allow_mail_to_commands)", cls_name, arg);
                local_outcome(state, to, res, NULL);
            } else if (local_key_add(state->delivered, "c", arg)) {
                local_command(state, to, user, ext, arg, priv);
            }
            break;
        case LOCAL_DEST_FILE:
            if (!local_allowed(conf->allow_files, cls_name)) {
                local_result_set(res, LOCAL_STAT_BOUNCE, "5.7.1",
                                 "mail to file is restricted (%s "
                                 "destination \"%s\"; see "
                                 "allow_mail_to_files)", cls_name, arg);
                local_outcome(state, to, res, NULL);
            } else if (local_key_add(state->delivered, "f", arg)) {
                local_file(state, to, arg, priv);
            }
            break;
        case LOCAL_DEST_INCLUDE: {
            LOCAL_READ_ARG ra = {.path = arg, .owner = priv->uid};

            if (depth >= LOCAL_EXPAND_DEPTH_MAX) {
                local_result_set(res, LOCAL_STAT_BOUNCE, "5.4.6",
                                 "alias expansion loop (deeper than %d)",
                                 LOCAL_EXPAND_DEPTH_MAX);
                local_outcome(state, to, res, NULL);
                break;
            }
            if (*arg != '/') {
                local_result_set(res, LOCAL_STAT_BOUNCE, "5.3.5",
                                 ":include: needs an absolute path, not "
                                 "\"%s\"", arg);
                local_outcome(state, to, res, NULL);
                break;
            }
            if (!local_key_add(state->includes, "i", arg))
                break;                  /* read once per recipient */
            local_as(ctx, priv, local_read_action, &ra, res);
            if (res->stat == LOCAL_STAT_SENT) {
                char *text = mystrdup(vstr_str(res->text));

                local_dests(state, to, user, ext, text, LOCAL_CLASS_INCLUDE,
                            priv, depth + 1);
                myfree(text);
            } else {
                if (res->stat == LOCAL_STAT_BOUNCE &&
                    strcmp(res->dsn, LOCAL_READ_UNSAFE) == 0) {
                    msg_warn("%s: ignoring :include: file: %s",
                             state->req->qid, vstr_str(res->text));
                    local_result_set(res, LOCAL_STAT_BOUNCE, "5.3.5",
                                     ":include: file %s is not safe to use",
                                     arg);
                } else if (res->stat == LOCAL_STAT_BOUNCE) {
                    local_result_set(res, LOCAL_STAT_BOUNCE, "5.3.5",
                                     ":include: file %s is missing", arg);
                }
                local_outcome(state, to, res, NULL);
            }
            break;
        }
        case LOCAL_DEST_MAILBOX:
            local_addr_split(arg, conf->delims, duser, dext, ddomain);
            if (!local_name_safe(vstr_str(duser)) || vstr_len(duser) == 0) {
                local_result_set(res, LOCAL_STAT_BOUNCE, "5.1.3",
                                 "bad mailbox name \"\\%s\"", arg);
                local_outcome(state, to, res, NULL);
            } else {
                local_mailbox(state, vstr_str(duser), vstr_str(dext));
            }
            break;
        case LOCAL_DEST_ADDR: {
            int ours;

            vstr_cpy(addr, arg);
            if (vstr_len(addr) >= 2 && vstr_str(addr)[0] == '<' &&
                vstr_str(addr)[vstr_len(addr) - 1] == '>') {
                vstr_cpy(duser, vstr_str(addr) + 1);
                vstr_truncate(duser, vstr_len(duser) - 1);
                vstr_cpy(addr, vstr_str(duser));
            }
            if (vstr_len(addr) == 0)
                break;
            local_addr_split(vstr_str(addr), conf->delims, duser, dext,
                             ddomain);
            if ((ours = local_is_ours(ctx, vstr_str(ddomain))) < 0) {
                local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                                 "mydestination lookup failure");
                local_outcome(state, to, res, NULL);
            } else if (ours) {
                local_resolve(state, vstr_str(duser), vstr_str(dext),
                              depth + 1);
            } else {
                bool dup = false;

                for (size_t j = 0; j < state->forward->argc; j++)
                    if (strcasecmp(state->forward->argv[j],
                                   vstr_str(addr)) == 0)
                        dup = true;
                if (!dup)
                    argv_add(state->forward, vstr_str(addr));
            }
            break;
        }
        }
    }
    argv_free(dests);
    vstr_free(addr);
    vstr_free(duser);
    vstr_free(dext);
    vstr_free(ddomain);
}

/* local_alias - expand user through alias_maps; true when it is an alias
   (handled, or failed with a result) */
static bool local_alias(LOCAL_STATE *state, const char *user, const char *ext,
                        const char *to, int depth)
{
    LOCAL_CTX *ctx = state->req->ctx;
    LOCAL_CONF *conf = &ctx->conf;
    LOCAL_RESULT *res = &state->scratch;
    const char *found = NULL;
    VSTR *key = vstr_alloc(64);
    char *value;
    int error = MAP_NOTFOUND;

    if (conf->aliases == NULL) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "alias table unavailable: %s",
                         vstr_str(conf->alias_error));
        local_outcome(state, to, res, NULL);
        vstr_free(key);
        return true;
    }
    if (*ext) {
        vstr_sprintf(key, "%s%c%s", user, conf->delims[0], ext);
        found = maps_find(conf->aliases, vstr_str(key), &error);
    }
    if (found == NULL && error != MAP_FAIL)
        found = maps_find(conf->aliases, user, &error);
    if (found == NULL) {
        vstr_free(key);
        if (error == MAP_FAIL) {
            local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                             "alias table lookup failure for %s", user);
            local_outcome(state, to, res, NULL);
            return true;
        }
        return false;
    }
    value = mystrdup(found);
    if (depth == 0 && state->owner_sender == NULL) {
        vstr_sprintf(key, "owner-%s", user);
        if (maps_find(conf->aliases, vstr_str(key), &error) != NULL) {
            vstr_sprintf_append(key, "@%s", conf->myorigin);
            state->owner_sender = mystrdup(vstr_str(key));
        }
    }
    if (depth >= LOCAL_EXPAND_DEPTH_MAX) {
        local_result_set(res, LOCAL_STAT_BOUNCE, "5.4.6",
                         "alias expansion loop (deeper than %d)",
                         LOCAL_EXPAND_DEPTH_MAX);
        local_outcome(state, to, res, NULL);
    } else {
        local_dests(state, to, user, ext, value, LOCAL_CLASS_ALIAS,
                    ctx->mode == LOCAL_MODE_SYSTEM ? &ctx->alias_owner
                                                   : &ctx->self,
                    depth);
    }
    myfree(value);
    vstr_free(key);
    return true;
}

/* local_dotforward - the user's .forward; true when one was used */
static bool local_dotforward(LOCAL_STATE *state, const char *user,
                             const char *ext, const char *to, int depth)
{
    LOCAL_CTX *ctx = state->req->ctx;
    LOCAL_CONF *conf = &ctx->conf;
    LOCAL_RESULT *res = &state->scratch;
    VSTR *path = vstr_alloc(100);
    VSTR *local_part = vstr_alloc(64);
    LOCAL_PRIV priv;
    LOCAL_VARS vars;
    size_t local_len;
    bool used = false;

    if (conf->forward_path->argc == 0 || !local_priv_user(ctx, user, &priv,
                                                          res)) {
        vstr_free(path);
        vstr_free(local_part);
        return false;                   /* an unknown user bounces later */
    }
    (void) smtp_addr_split(to, &local_len);
    vstr_ncpy(local_part, to, local_len);
    vars.home = priv.home;
    vars.user = user;
    vars.local = vstr_str(local_part);
    vars.extension = ext;
    vars.domain = vstr_str(state->domain);
    vars.recipient = to;
    for (size_t i = 0; i < conf->forward_path->argc && !used; i++) {
        LOCAL_READ_ARG ra;

        if (local_expand_path(conf->forward_path->argv[i], &vars, path) < 0)
            continue;
        ra.path = vstr_str(path);
        ra.owner = priv.uid;
        local_as(ctx, &priv, local_read_action, &ra, res);
        if (res->stat == LOCAL_STAT_BOUNCE &&
            strcmp(res->dsn, LOCAL_READ_UNSAFE) == 0)
            msg_warn("%s: ignoring .forward file: %s", state->req->qid,
                     vstr_str(res->text));
        if (res->stat == LOCAL_STAT_BOUNCE)
            continue;                   /* no such file, or not to obey */
        used = true;
        if (res->stat == LOCAL_STAT_DEFER) {
            local_outcome(state, to, res, NULL);
        } else if (depth >= LOCAL_EXPAND_DEPTH_MAX) {
            local_result_set(res, LOCAL_STAT_BOUNCE, "5.4.6",
                             "alias expansion loop (deeper than %d)",
                             LOCAL_EXPAND_DEPTH_MAX);
            local_outcome(state, to, res, NULL);
        } else {
            char *text = mystrdup(vstr_str(res->text));
            ARGV *dests = local_dest_split(text);

            if (dests->argc == 0)
                used = false;           /* an empty .forward: mailbox */
            else
                local_dests(state, to, user, ext, text, LOCAL_CLASS_FORWARD,
                            &priv, depth);
            argv_free(dests);
            myfree(text);
        }
    }
    local_priv_free(&priv);
    vstr_free(path);
    vstr_free(local_part);
    return used;
}

/* local_resolve - one local name: alias, .forward, mailbox */
static void local_resolve(LOCAL_STATE *state, const char *user,
                          const char *ext, int depth)
{
    VSTR *to = vstr_alloc(64);

    local_address(state, user, ext, to);
    if (!local_name_safe(user) || !local_name_safe(ext)) {
        /* It would name files: spool/USER, forward_path's $user. */
        local_result_set(&state->scratch, LOCAL_STAT_BOUNCE, "5.1.3",
                         "bad local part in <%s>: no '/', leading '.' or "
                         "control characters allowed", vstr_str(to));
        local_outcome(state, vstr_str(to), &state->scratch, NULL);
    } else if (depth > LOCAL_EXPAND_DEPTH_MAX) {
        local_result_set(&state->scratch, LOCAL_STAT_BOUNCE, "5.4.6",
                         "alias expansion loop (deeper than %d)",
                         LOCAL_EXPAND_DEPTH_MAX);
        local_outcome(state, vstr_str(to), &state->scratch, NULL);
    } else if (local_key_has(state->done, "u", user)) {
        /* reached before by another path: its deliveries are made */
    } else {
        size_t mark = state->path->argc;

        /* A name on the path being expanded is a loop or a self
           reference: it goes on to its .forward, then its mailbox. */
        if (local_key_add(state->path, "a", user) &&
            local_alias(state, user, ext, vstr_str(to), depth)) {
            /* expanded */
        } else if (local_key_add(state->path, "f", user) &&
                   local_dotforward(state, user, ext, vstr_str(to), depth)) {
            /* forwarded by the user */
        } else {
            local_mailbox(state, user, ext);
        }
        local_key_pop(state->path, mark);
        (void) local_key_add(state->done, "u", user);
    }
    vstr_free(to);
}

/* local_forward - one new message to every non-local destination */
static void local_forward(LOCAL_STATE *state)
{
    LOCAL_REQ *req = state->req;
    LOCAL_CONF *conf = &req->ctx->conf;
    LOCAL_RESULT *res = &state->scratch;
    const char *sender = state->owner_sender ? state->owner_sender
                                             : req->sender;
    CLEANUP_CLIENT *client;
    VSTR *head = vstr_alloc(100);
    VSTR *what = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    bool ok = false;

    client = cleanup_client_open(conf->cleanup_path, conf->timeout_ms, 0,
                                 sender, "local", why);
    if (client != NULL) {
        vstr_cpy(what, cleanup_client_queue_id(client));
        ok = true;
        for (size_t i = 0; ok && i < state->forward->argc; i++)
            ok = cleanup_client_rcpt(client, state->forward->argv[i], NULL,
                                     NULL, why) == 0;
        if (local_allowed(conf->prepend_delivered, "forward"))
            vstr_sprintf(head, "Delivered-To: %s\n", state->rcpt->address);
        ok = ok &&
             cleanup_client_write(client, vstr_str(head), vstr_len(head),
                                  why) == 0 &&
             cleanup_client_write(client, vstr_str(req->content),
                                  vstr_len(req->content), why) == 0;
        if (ok)
            ok = cleanup_client_commit(client, why) == 0;
        else
            cleanup_client_abort(client);
    }
    if (ok) {
        vstr_sprintf(head, "forwarded as %s", vstr_str(what));
        local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "%s", vstr_str(head));
    } else {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "cannot forward: %s", vstr_str(why));
    }
    local_outcome(state, state->rcpt->address, res, NULL);
    vstr_free(head);
    vstr_free(what);
    vstr_free(why);
}

/* local_deliver_rcpt - everything for one original recipient */
static void local_deliver_rcpt(LOCAL_REQ *req, LOCAL_RCPT *rcpt)
{
    LOCAL_CONF *conf = &req->ctx->conf;
    LOCAL_STATE state = {.req = req, .rcpt = rcpt};
    VSTR *user = vstr_alloc(64);
    VSTR *ext = vstr_alloc(16);

    state.domain = vstr_alloc(64);
    state.path = argv_alloc(8);
    state.done = argv_alloc(8);
    state.delivered = argv_alloc(8);
    state.includes = argv_alloc(4);
    state.forward = argv_alloc(4);
    state.outcome.text = vstr_alloc(100);
    state.scratch.text = vstr_alloc(100);
    local_addr_split(rcpt->address, conf->delims, user, ext, state.domain);
    if (local_delivered_to_seen(vstr_str(req->content),
                                vstr_len(req->content), rcpt->address)) {
        local_result_set(&state.scratch, LOCAL_STAT_BOUNCE, "5.4.6",
                         "mail forwarding loop for %s", rcpt->address);
        local_outcome(&state, rcpt->address, &state.scratch, NULL);
    } else if (vstr_len(user) == 0) {
        local_result_set(&state.scratch, LOCAL_STAT_BOUNCE, "5.1.3",
                         "empty local part in %s", rcpt->address);
        local_outcome(&state, rcpt->address, &state.scratch, NULL);
    } else {
        local_resolve(&state, vstr_str(user), vstr_str(ext), 0);
        if (state.forward->argc > 0)
            local_forward(&state);
    }
    if (state.sent == 0 && !state.deferred && !state.bounced)
        local_result_set(&state.outcome, LOCAL_STAT_BOUNCE, "5.1.1",
                         "alias expands to nothing");
    if (local_send_result(req, rcpt, &state.outcome) < 0)
        msg_warn("%s: RESULT to qmgr: %s", req->qid, vstr_str(req->why));
    vstr_free(user);
    vstr_free(ext);
    vstr_free(state.domain);
    argv_free(state.path);
    argv_free(state.done);
    argv_free(state.delivered);
    argv_free(state.includes);
    argv_free(state.forward);
    myfree(state.owner_sender);
    vstr_free(state.outcome.text);
    vstr_free(state.scratch.text);
}

/* --- requests ---------------------------------------------------------- */

/* local_read_content - the whole content of the queue file on fd */
static int local_read_content(int fd, VSTR *out, VSTR *why)
{
    QFILE_READER *reader;
    QFILE_REC rec;
    int got;

    if (lseek(fd, 0, SEEK_SET) < 0) {
        vstr_sprintf(why, "seek: %s", strerror(errno));
        return -1;
    }
    reader = qfile_reader_alloc(fd);
    while ((got = qfile_read_rec(reader, &rec, why)) > 0)
        if (rec.type == QFILE_REC_CONT)
            vstr_ncat(out, rec.data, rec.len);
    qfile_reader_free(reader);
    return got < 0 ? -1 : 0;
}

/* local_req_read - DELIVER and its RCPT lists; 0 or -1 (why) */
static int local_req_read(LOCAL_REQ *req)
{
    ATTR_LIST *list = NULL;
    long long want = 0;
    const char *value;

    if (attr_stream_read(req->stream, &list, req->why) < 0)
        return -1;
    value = attr_get_str(list, "request");
    if (value == NULL || strcmp(value, DELIVER_REQ_DELIVER) != 0 ||
        attr_list_check(list, deliver_request_spec,
                        SLUICE_ARRAY_LEN(deliver_request_spec),
                        req->why) < 0) {
        if (value && strcmp(value, DELIVER_REQ_DELIVER) != 0)
            vstr_sprintf(req->why, "expected DELIVER, got \"%s\"", value);
        attr_list_free(list);
        return -1;
    }
    req->queue_name = mystrdup(attr_get_str(list, "queue_name"));
    req->qid = mystrdup(attr_get_str(list, "queue_id"));
    req->nexthop = mystrdup(attr_get_str(list, "nexthop"));
    req->sender = mystrdup(attr_get_str(list, "sender"));
    (void) attr_get_int(list, "active_usec", &req->active_usec);
    (void) attr_get_int(list, "rcpt_count", &want);
    attr_list_free(list);
    if (want < 1 || want > 100000 || strchr(req->qid, '/') ||
        strchr(req->queue_name, '/') || strcmp(req->qid, "..") == 0 ||
        strcmp(req->qid, ".") == 0) {
        vstr_cpy(req->why, "bad rcpt_count, queue_id or queue_name");
        return -1;
    }
    req->rcpts = mycalloc((size_t) want, sizeof(LOCAL_RCPT));
    while ((long long) req->rcpt_count < want) {
        LOCAL_RCPT *rcpt = req->rcpts + req->rcpt_count;

        if (attr_stream_read(req->stream, &list, req->why) < 0)
            return -1;
        value = attr_get_str(list, "request");
        if (value == NULL || strcmp(value, DELIVER_REQ_RCPT) != 0 ||
            attr_list_check(list, deliver_rcpt_spec,
                            SLUICE_ARRAY_LEN(deliver_rcpt_spec),
                            req->why) < 0) {
            if (value && strcmp(value, DELIVER_REQ_RCPT) != 0)
                vstr_sprintf(req->why, "expected RCPT, got \"%s\"", value);
            attr_list_free(list);
            return -1;
        }
        (void) attr_get_int(list, "offset", &rcpt->offset);
        rcpt->address = mystrdup(attr_get_str(list, "address"));
        value = attr_get_str(list, "orcpt");
        rcpt->orcpt = mystrdup(value ? value : "");
        value = attr_get_str(list, "notify");
        rcpt->notify = mystrdup(value ? value : "");
        req->rcpt_count++;
        attr_list_free(list);
    }
    return 0;
}

/* local_req_done - the DONE list */
static void local_req_done(LOCAL_REQ *req, int status, const char *reason)
{
    ATTR_LIST *list = attr_list_alloc();

    attr_add_str(list, "request", DELIVER_REQ_DONE);
    attr_add_int(list, "status", status);
    attr_add_int(list, "site_failed", 0);
    if (reason != NULL && *reason)
        attr_add_str(list, "reason", reason);
    if (attr_stream_write(req->stream, list, req->why) < 0)
        msg_warn("%s: DONE to qmgr: %s", req->qid ? req->qid : "?",
                 vstr_str(req->why));
    attr_list_free(list);
}

/* local_req_free - release a request */
static void local_req_free(LOCAL_REQ *req)
{
    for (size_t i = 0; i < req->rcpt_count; i++) {
        myfree(req->rcpts[i].address);
        myfree(req->rcpts[i].orcpt);
        myfree(req->rcpts[i].notify);
    }
    myfree(req->rcpts);
    myfree(req->queue_name);
    myfree(req->qid);
    myfree(req->nexthop);
    myfree(req->sender);
    if (req->info)
        qfile_info_free(req->info);
    vstr_free(req->content);
    vstr_free(req->why);
    attr_stream_close(req->stream);
    myfree(req);
}

/* local_serve - one connection from qmgr: one request */
static void local_serve(LOCAL_CTX *ctx, int fd)
{
    LOCAL_REQ *req = mycalloc(1, sizeof(*req));
    VSTR *path = vstr_alloc(100);
    int qfd = -1;

    req->ctx = ctx;
    req->stream = attr_stream_open(fd, DELIVER_LIST_MAX, ctx->conf.timeout_ms);
    req->why = vstr_alloc(100);
    req->content = vstr_alloc(8192);
    if (local_req_read(req) < 0) {
        msg_warn("%s%sqmgr connection: %s", req->qid ? req->qid : "",
                 req->qid ? ": " : "", vstr_str(req->why));
        goto out;
    }
    gettimeofday(&req->t_request, NULL);
    mail_queue_path(path, ctx->conf.queue_dir, req->queue_name, req->qid);
    if ((qfd = open(vstr_str(path), O_RDONLY | O_CLOEXEC)) < 0) {
        vstr_sprintf(req->why, "open %s: %s", vstr_str(path), strerror(errno));
    } else if ((req->info = qfile_info_read(qfd, req->why)) == NULL ||
               local_read_content(qfd, req->content, req->why) < 0) {
        VSTR *reason = vstr_alloc(100);

        vstr_sprintf(reason, "%s: %s", vstr_str(path), vstr_str(req->why));
        vstr_cpy(req->why, vstr_str(reason));
        vstr_free(reason);
        if (req->info)
            req->info = qfile_info_free(req->info);
    }
    if (qfd >= 0)
        (void) close(qfd);
    if (req->info == NULL) {
        msg_warn("%s: cannot read the queue file: %s", req->qid,
                 vstr_str(req->why));
        local_req_done(req, 1, vstr_str(req->why));
        goto out;
    }
    for (size_t i = 0; i < req->rcpt_count; i++)
        local_deliver_rcpt(req, req->rcpts + i);
    local_req_done(req, 0, NULL);

out:
    vstr_free(path);
    local_req_free(req);
}

/* local_accept - a request from qmgr: blocking work, so say busy */
static void local_accept(MAIL_SERVER *server, int fd, void *arg)
{
    mail_server_busy(server, true);
    local_serve(arg, fd);
    mail_server_busy(server, false);
}

/* --- the daemon -------------------------------------------------------- */

/* local_alias_owner - SYSTEM mode: who alias commands and files run as:
   the owner of the first alias table's file, default_privs for root */
static void local_alias_owner(LOCAL_CTX *ctx, const MAIL_CONF *conf)
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
            if (stat(vstr_str(path), &st) == 0 ||
                stat(colon + 1, &st) == 0)
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

/* local_conf_time - a time parameter as int seconds */
static int local_conf_time(const MAIL_CONF *conf, const char *name)
{
    long long value = mail_conf_time(conf, name);

    return value < 0 ? 0 : value > INT32_MAX ? INT32_MAX : (int) value;
}

/* local_forward_path - forward_path unexpanded: $home and friends are
   ours, not main.cf's */
static ARGV *local_forward_path(const MAIL_CONF *conf)
{
    const char *raw = mail_conf_raw(conf, "forward_path");
    const MAIL_PARAM *param;

    if (raw == NULL && (param = mail_param_find("forward_path")) != NULL)
        raw = param->def;
    return argv_split(raw ? raw : "", ", \t\n");
}

/* local_pre_loop - read main.cf once, open the tables */
static void local_pre_loop(MAIL_SERVER *server, void *arg)
{
    LOCAL_CTX *ctx = arg;
    const MAIL_CONF *conf = mail_server_conf(server);
    LOCAL_CONF *lc = &ctx->conf;
    VSTR *why = vstr_alloc(100);
    long long timeout = mail_conf_time(conf, "ipc_timeout") * 1000;
    struct passwd *pw;

    ctx->server = server;
    signal(SIGPIPE, SIG_IGN);
    lc->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*lc->queue_dir == 0)
        msg_fatal("queue_directory is not set");
    vstr_sprintf(why, "%s/%s/%s", lc->queue_dir, MAIL_QUEUE_PRIVATE,
                 CLEANUP_SERVICE);
    lc->cleanup_path = mystrdup(vstr_str(why));
    lc->myorigin = mystrdup(mail_conf_str(conf, "myorigin"));
    lc->delims = mystrdup(mail_conf_str(conf, "recipient_delimiter"));
    lc->spool_dir = mystrdup(mail_conf_str(conf, "mail_spool_directory"));
    if (*lc->spool_dir == 0)
        msg_fatal("mail_spool_directory is empty");
    lc->home_mailbox = mystrdup(mail_conf_str(conf, "home_mailbox"));
    lc->forward_path = local_forward_path(conf);
    lc->allow_commands = mail_conf_list(conf, "allow_mail_to_commands");
    lc->allow_files = mail_conf_list(conf, "allow_mail_to_files");
    lc->prepend_delivered = mail_conf_list(conf, "prepend_delivered_header");
    lc->shell = mystrdup(mail_conf_str(conf, "local_command_shell"));
    lc->command_time_limit = local_conf_time(conf, "command_time_limit");
    lc->default_privs = mystrdup(mail_conf_str(conf, "default_privs"));
    lc->mailbox_size_limit = mail_conf_size(conf, "mailbox_size_limit");
    lc->soft_bounce = mail_conf_bool(conf, "soft_bounce");
    if (timeout <= 0 || timeout > LOCAL_TIMEOUT_MAX_MS)
        timeout = LOCAL_TIMEOUT_MAX_MS;
    lc->timeout_ms = (int) timeout;
    lc->alias_error = vstr_alloc(100);
    lc->aliases = maps_create("alias_maps", mail_conf_str(conf, "alias_maps"),
                              MAP_FLAG_NONE, lc->alias_error);
    if (lc->aliases == NULL)
        msg_warn("%s: local deliveries are deferred until it is fixed",
                 vstr_str(lc->alias_error));
    if ((lc->mydestination = match_list_create(
             "mydestination", mail_conf_str(conf, "mydestination"),
             MATCH_LIST_DOMAIN, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if ((pw = getpwuid(getuid())) == NULL)
        msg_fatal("no passwd entry for uid %ld", (long) getuid());
    if (ctx->mode == LOCAL_MODE_SYSTEM)
        local_alias_owner(ctx, conf);
    else
        local_priv_set(&ctx->self, pw);
    vstr_free(why);
}

/* local_ctx_release - free what pre_loop made (ASan leak reports) */
static void local_ctx_release(LOCAL_CTX *ctx)
{
    LOCAL_CONF *lc = &ctx->conf;

    myfree(lc->queue_dir);
    myfree(lc->cleanup_path);
    myfree(lc->myorigin);
    myfree(lc->delims);
    myfree(lc->spool_dir);
    myfree(lc->home_mailbox);
    if (lc->forward_path)
        argv_free(lc->forward_path);
    if (lc->allow_commands)
        argv_free(lc->allow_commands);
    if (lc->allow_files)
        argv_free(lc->allow_files);
    if (lc->prepend_delivered)
        argv_free(lc->prepend_delivered);
    myfree(lc->shell);
    myfree(lc->default_privs);
    if (lc->aliases)
        maps_free(lc->aliases);
    if (lc->alias_error)
        vstr_free(lc->alias_error);
    if (lc->mydestination)
        match_list_free(lc->mydestination);
    local_priv_free(&ctx->self);
    local_priv_free(&ctx->alias_owner);
}

/* local_choose_mode - before the skeleton drops privileges: in SYSTEM
   mode keep root as the saved uid and run as mail_owner, so the skeleton
   leaves us alone and a delivery child can become the recipient */
static LOCAL_MODE local_choose_mode(int argc, char **argv)
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
    if (!mail_conf_bool(conf, "local_system_users"))
        mode = LOCAL_MODE_INSTANCE;
    if (mode == LOCAL_MODE_SYSTEM &&
        (setgroups(0, NULL) < 0 || setegid(pw->pw_gid) < 0 ||
         seteuid(pw->pw_uid) < 0))
        msg_fatal("cannot run as mail_owner %s: %m", pw->pw_name);
    mail_conf_free(conf);
    vstr_free(why);
    return mode;
}

/* main - the local delivery agent */
int main(int argc, char **argv)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = local_pre_loop,
        .on_accept = local_accept,
    };
    static LOCAL_CTX ctx;
    int status;

    msg_init("sluice", "local");
    ctx.mode = local_choose_mode(argc, argv);
    status = mail_server_main(argc, argv, "local", &ops, &ctx);
    local_ctx_release(&ctx);
    return status;
}
