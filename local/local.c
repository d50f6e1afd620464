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
 *
 * The same program runs as virtual (virtual.c): see local_virtual.c.
 *
 * This file is the daemon (local_daemon, which local_main.c and virtual.c
 * call): main.cf read once (local_pre_loop) and the server skeleton's
 * callbacks. The modules are listed in local.h: the request
 * from qmgr in local_request.c, the expansion in local_expand.c, the
 * final deliveries in local_deliver.c (the writing in local_mbox.c and
 * local_command.c), the privileges in local_priv.c, the rules without I/O
 * in local_rules.c, the .forward and :include: files in local_file.c.
 */
#include "sys_defs.h"

#include <pwd.h>
#include <signal.h>
#include <stdint.h>

#include "argv.h"
#include "cleanup_proto.h"
#include "local.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "mail_server.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

/* ipc_timeout (at least 1s by the table) is taken up to an hour, in ms. */
#define LOCAL_TIMEOUT_MAX_MS (3600 * 1000)

/* local_accept - a request from qmgr: blocking work, so say busy */
static void local_accept(MAIL_SERVER *server, int fd, void *arg)
{
    mail_server_busy(server, true);
    local_serve(arg, fd);
    mail_server_busy(server, false);
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

/* local_virtual_conf - what virtual reads besides local's parameters; a
   table that cannot be opened defers its deliveries (the error says why) */
static void local_virtual_conf(LOCAL_CONF *lc, const MAIL_CONF *conf)
{
    static const char *const names[] = {"virtual_mailbox_maps",
                                        "virtual_uid_maps", "virtual_gid_maps"};
    MAPS **maps[] = {&lc->virtual_maps, &lc->virtual_uid_maps,
                     &lc->virtual_gid_maps};

    lc->virtual_error = vstr_alloc(100);
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(names); i++) {
        VSTR *why = vstr_alloc(100);

        *maps[i] = maps_create(names[i], mail_conf_str(conf, names[i]),
                               MAP_FLAG_NONE, why);
        if (*maps[i] == NULL) {
            msg_warn("%s: virtual deliveries are deferred until it is fixed",
                     vstr_str(why));
            if (vstr_len(lc->virtual_error) == 0)
                vstr_cpy(lc->virtual_error, vstr_str(why));
        }
        vstr_free(why);
    }
    lc->virtual_base = mystrdup(mail_conf_str(conf, "virtual_mailbox_base"));
    lc->virtual_minimum_uid = mail_conf_int(conf, "virtual_minimum_uid");
    lc->virtual_limit = mail_conf_size(conf, "virtual_mailbox_limit");
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
    const char *raw;

    ctx->server = server;
    signal(SIGPIPE, SIG_IGN);
    lc->queue_dir = mystrdup(mail_conf_str(conf, "queue_directory"));
    if (*lc->queue_dir == 0)
        msg_fatal("queue_directory is not set");
    mail_queue_service(why, lc->queue_dir, MAIL_QUEUE_PRIVATE, CLEANUP_SERVICE);
    lc->cleanup_path = mystrdup(vstr_str(why));
    lc->myorigin = mystrdup(mail_conf_str(conf, "myorigin"));
    lc->delims = mystrdup(mail_conf_str(conf, "recipient_delimiter"));
    lc->spool_dir = mystrdup(mail_conf_str(conf, "mail_spool_directory"));
    if (*lc->spool_dir == 0)
        msg_fatal("mail_spool_directory is empty");
    lc->home_mailbox = mystrdup(mail_conf_str(conf, "home_mailbox"));
    /* As Postfix: not $name-expanded ($EXTENSION is the shell's). */
    raw = mail_conf_raw(conf, "mailbox_command");
    lc->mailbox_command = mystrdup(raw ? raw : "");
    lc->forward_path = local_forward_path(conf);
    lc->allow_commands = mail_conf_list(conf, "allow_mail_to_commands");
    lc->allow_files = mail_conf_list(conf, "allow_mail_to_files");
    lc->prepend_delivered = mail_conf_list(conf, "prepend_delivered_header");
    lc->shell = mystrdup(mail_conf_str(conf, "local_command_shell"));
    /* The table keeps command_time_limit within 1s..INT32_MAX. */
    lc->command_time_limit = (int) mail_conf_time(conf, "command_time_limit");
    lc->default_privs = mystrdup(mail_conf_str(conf, "default_privs"));
    lc->mailbox_size_limit = mail_conf_size(conf, "mailbox_size_limit");
    lc->soft_bounce = mail_conf_bool(conf, "soft_bounce");
    lc->bounce_classes = bounce_class_rules_conf(conf);
    if (timeout > LOCAL_TIMEOUT_MAX_MS)
        timeout = LOCAL_TIMEOUT_MAX_MS;
    lc->timeout_ms = (int) timeout;
    lc->alias_error = vstr_alloc(100);
    /* virtual has no aliases: its recipients are mailboxes. */
    lc->aliases = ctx->virtual ? NULL
                               : maps_create("alias_maps",
                                             mail_conf_str(conf, "alias_maps"),
                                             MAP_FLAG_NONE, lc->alias_error);
    if (lc->aliases == NULL && !ctx->virtual)
        msg_warn("%s: local deliveries are deferred until it is fixed",
                 vstr_str(lc->alias_error));
    if (ctx->virtual)
        local_virtual_conf(lc, conf);
    if ((lc->mydestination = match_list_create(
             "mydestination", mail_conf_str(conf, "mydestination"),
             MATCH_LIST_DOMAIN, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    if ((pw = getpwuid(getuid())) == NULL)
        msg_fatal("no passwd entry for uid %ld", (long) getuid());
    /* virtual runs nothing as an alias owner: its ids are its tables'. */
    if (ctx->mode == LOCAL_MODE_INSTANCE)
        local_priv_set(&ctx->self, pw);
    else if (!ctx->virtual)
        local_alias_owner(ctx, conf);
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
    myfree(lc->mailbox_command);
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
    if (lc->virtual_maps)
        maps_free(lc->virtual_maps);
    if (lc->virtual_uid_maps)
        maps_free(lc->virtual_uid_maps);
    if (lc->virtual_gid_maps)
        maps_free(lc->virtual_gid_maps);
    if (lc->virtual_error)
        vstr_free(lc->virtual_error);
    myfree(lc->virtual_base);
    local_priv_free(&ctx->self);
    local_priv_free(&ctx->alias_owner);
}

/* local_daemon - the delivery agent's main, as local or as virtual */
int local_daemon(int argc, char **argv, bool virtual)
{
    static const MAIL_SERVER_OPS ops = {
        .pre_loop = local_pre_loop,
        .on_accept = local_accept,
    };
    static LOCAL_CTX ctx;
    const char *name = virtual ? "virtual" : "local";
    int status;

    mail_server_hold_stop(); /* local_choose_mode() reads main.cf */
    msg_init("sluice", name);
    ctx.virtual = virtual;
    ctx.mode = local_choose_mode(argc, argv, virtual);
    status = mail_server_main(argc, argv, name, &ops, &ctx);
    local_ctx_release(&ctx);
    return status;
}
