/*
 * local_expand - aliases, .forward and :include: for one recipient
 *
 * alias_maps first (key: the local part without its extension, then with
 * it), then the user's .forward (each forward_path entry, read as the
 * user), then the mailbox (local_deliver.c). A value's destinations
 * (addresses, \\user, |command, /file, :include:/file) are handled in
 * turn; local addresses are expanded again, up to LOCAL_EXPAND_DEPTH_MAX
 * deep and LOCAL_DEST_MAX destinations in all (then 5.3.0). The expansion
 * tree of one original recipient is its LOCAL_STATE: a name met again
 * while it is being expanded (state->path) is a loop or a self reference
 * and goes on to its .forward and mailbox; a name met again after its
 * expansion (state->done) is skipped; each mailbox, file, command,
 * forward address and :include: file is used once (state->delivered,
 * state->includes). Non-local addresses are collected in state->forward
 * for local_forward.
 */
#include "sys_defs.h"

#include "argv.h"
#include "local.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"

#define LOCAL_FILE_MAX (1024 * 1024) /* a .forward or :include: file */

/* Where a destination came from: decides what it may do. */
typedef enum LOCAL_CLASS {
    LOCAL_CLASS_ALIAS,
    LOCAL_CLASS_FORWARD,
    LOCAL_CLASS_INCLUDE,
} LOCAL_CLASS;

static const char *const local_class_names[] = {"alias", "forward", "include"};

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
    char *data =
        local_file_read(ra->path, ra->owner, LOCAL_FILE_MAX, &stat, why);

    if (data != NULL)
        local_result_set(res, LOCAL_STAT_SENT, "2.0.0", "%s", data);
    else if (stat == LOCAL_FILE_MISSING)
        local_result_set(res, LOCAL_STAT_BOUNCE, LOCAL_READ_MISSING, "missing");
    else if (stat == LOCAL_FILE_UNSAFE)
        local_result_set(res, LOCAL_STAT_BOUNCE, LOCAL_READ_UNSAFE, "%s",
                         vstr_str(why));
    else
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "%s", vstr_str(why));
    myfree(data);
    vstr_free(why);
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
bool local_key_add(ARGV *set, const char *kind, const char *name)
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
                             "destinations",
                             state->rcpt->address, LOCAL_DEST_MAX);
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
                                 "allow_mail_to_commands)",
                                 cls_name, arg);
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
                                 "allow_mail_to_files)",
                                 cls_name, arg);
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
                                 "\"%s\"",
                                 arg);
                local_outcome(state, to, res, NULL);
                break;
            }
            if (!local_key_add(state->includes, "i", arg))
                break; /* read once per recipient */
            local_as(ctx, priv, local_read_action, &ra, res);
            if (res->stat == LOCAL_STAT_SENT) {
                char *text = mystrdup(vstr_str(res->text));

                local_dests(state, to, user, ext, text, LOCAL_CLASS_INCLUDE,
                            priv, depth + 1);
                myfree(text);
            } else {
                if (res->stat == LOCAL_STAT_BOUNCE &&
                    strcmp(res->dsn, LOCAL_READ_UNSAFE) == 0) {
                    msg_warn("%s: ignoring :include: file: %s", state->req->qid,
                             vstr_str(res->text));
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
                    if (strcasecmp(state->forward->argv[j], vstr_str(addr)) ==
                        0)
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

    if (conf->forward_path->argc == 0 ||
        !local_priv_user(ctx, user, &priv, res)) {
        vstr_free(path);
        vstr_free(local_part);
        return false; /* an unknown user bounces later */
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
            continue; /* no such file, or not to obey */
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
                used = false; /* an empty .forward: mailbox */
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
void local_resolve(LOCAL_STATE *state, const char *user, const char *ext,
                   int depth)
{
    VSTR *to = vstr_alloc(64);

    local_address(state, user, ext, to);
    if (!local_name_safe(user) || !local_name_safe(ext)) {
        /* It would name files: spool/USER, forward_path's $user. */
        local_result_set(&state->scratch, LOCAL_STAT_BOUNCE, "5.1.3",
                         "bad local part in <%s>: no '/', leading '.' or "
                         "control characters allowed",
                         vstr_str(to));
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
