/*
 * local_deliver - the final deliveries of local delivery: a mailbox (mbox
 * or Maildir, home_mailbox or mail_spool_directory), a /file, a |command
 * (its environment), each run as the right user (local_priv.c) and each
 * result logged (local_outcome); and forwarding: one new message through
 * cleanup, with the original sender (or owner-NAME) and Delivered-To:
 * the original recipient prepended, to every address that is not ours.
 * The writing itself is in local_mbox.c and local_command.c.
 */
#include "sys_defs.h"

#include "argv.h"
#include "cleanup_client.h"
#include "local.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"
#include "xtext.h"

/* local_address - "user@domain" of the recipient being handled */
void local_address(LOCAL_STATE *state, const char *user, const char *ext,
                   VSTR *out)
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

/* local_mailbox - deliver to user's own mailbox, or pipe to
   mailbox_command */
void local_mailbox(LOCAL_STATE *state, const char *user, const char *ext)
{
    LOCAL_CTX *ctx = state->req->ctx;
    LOCAL_CONF *conf = &ctx->conf;
    LOCAL_RESULT *res = &state->scratch;
    VSTR *to = vstr_alloc(64);
    VSTR *path = vstr_alloc(100);
    LOCAL_MAILBOX_ARG ma = {.ctx = ctx, .uid = (uid_t) -1, .gid = (gid_t) -1};
    LOCAL_PRIV priv, as;
    LOCAL_MSG msg;
    const char *box;
    bool spool;

    local_address(state, user, ext, to);
    if (!local_key_add(state->delivered, "m", user))
        goto out; /* this mailbox has its copy */
    if (!local_priv_user(ctx, user, &priv, res)) {
        local_outcome(state, vstr_str(to), res, NULL);
        goto out;
    }
    if (*conf->mailbox_command != 0) {
        /* Postfix's mailbox_command: the admin's, so allow_mail_to_commands
           does not apply; run as the user (root's as default_privs). */
        local_command(state, vstr_str(to), user, ext, conf->mailbox_command,
                      &priv);
        local_priv_free(&priv);
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
                  ma.maildir ? "delivered to maildir" : "delivered to mailbox");
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
void local_file(LOCAL_STATE *state, const char *to, const char *path,
                const LOCAL_PRIV *priv)
{
    LOCAL_CONF *conf = &state->req->ctx->conf;
    LOCAL_FILE_ARG fa = {.path = path, .limit = conf->mailbox_size_limit};
    LOCAL_MSG msg;
    VSTR *what;
    const LOCAL_PRIV *run_as = local_priv_unroot(state->req->ctx, priv);

    if (run_as == NULL) {
        local_result_set(&state->scratch, LOCAL_STAT_DEFER, "4.3.0",
                         "refusing to write file %s as root", path);
        local_outcome(state, to, &state->scratch, "");
        return;
    }
    what = vstr_alloc(100);
    local_msg_init(state, &msg, to,
                   local_allowed(conf->prepend_delivered, "file"));
    fa.msg = &msg;
    local_as(state->req->ctx, run_as, local_file_action, &fa, &state->scratch);
    vstr_sprintf(what, "delivered to file: %s", path);
    local_outcome(state, to, &state->scratch, vstr_str(what));
    vstr_free(what);
}

/* local_original_recipient - the address the recipient had when it came
   in: the DSN ORCPT when it is an rfc822 one (cleanup puts the client's
   address there when virtual_alias_maps changed it), else the recipient
   as queued */
static void local_original_recipient(LOCAL_STATE *state, VSTR *out)
{
    const char *orcpt = state->rcpt->orcpt;
    static const char prefix[] = "rfc822;";

    if (orcpt != NULL && strncasecmp(orcpt, prefix, sizeof(prefix) - 1) == 0) {
        const char *text = orcpt + sizeof(prefix) - 1;

        while (*text == ' ')
            text++;
        if (xtext_decode(out, text) == 0 && vstr_len(out) > 0 &&
            strpbrk(vstr_str(out), "\r\n") == NULL)
            return;
    }
    vstr_cpy(out, state->rcpt->address);
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
void local_command(LOCAL_STATE *state, const char *to, const char *user,
                   const char *ext, const char *command, const LOCAL_PRIV *priv)
{
    LOCAL_REQ *req = state->req;
    LOCAL_CONF *conf = &req->ctx->conf;

    const LOCAL_PRIV *run_as = local_priv_unroot(req->ctx, priv);

    if (run_as == NULL) {
        local_result_set(&state->scratch, LOCAL_STAT_DEFER, "4.3.0",
                         "refusing to run command %s as root", command);
        local_outcome(state, to, &state->scratch, "");
        return;
    }
    priv = run_as;

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
    /* local_part is reused for ORIGINAL_RECIPIENT after LOCAL is set. */
#define LOCAL_ENV(name, value)                                                 \
    do {                                                                       \
        vstr_sprintf(buf, "%s=%s", (name), (value));                           \
        argv_add(env, vstr_str(buf));                                          \
    } while (0)
    LOCAL_ENV("HOME", priv->home ? priv->home : "/");
    LOCAL_ENV("USER", user);
    LOCAL_ENV("LOGNAME", user);
    LOCAL_ENV("LOCAL", vstr_str(local_part));
    LOCAL_ENV("EXTENSION", ext);
    LOCAL_ENV("SENDER", req->sender);
    LOCAL_ENV("RECIPIENT", to);
    LOCAL_ENV("DOMAIN", vstr_str(state->domain));
    local_original_recipient(state, local_part);
    LOCAL_ENV("ORIGINAL_RECIPIENT", vstr_str(local_part));
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

/* local_forward - one new message to every non-local destination */
void local_forward(LOCAL_STATE *state)
{
    LOCAL_REQ *req = state->req;
    LOCAL_CONF *conf = &req->ctx->conf;
    LOCAL_RESULT *res = &state->scratch;
    const char *sender =
        state->owner_sender ? state->owner_sender : req->sender;
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
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "cannot forward: %s",
                         vstr_str(why));
    }
    local_outcome(state, state->rcpt->address, res, NULL);
    vstr_free(head);
    vstr_free(what);
    vstr_free(why);
}
