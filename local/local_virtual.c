/*
 * local_virtual - the virtual delivery agent's recipients
 *
 * The program runs as virtual (virtual.c) for virtual_mailbox_domains.
 * Each recipient, after local_request.c's Delivered-To loop check:
 *
 *   mailbox  virtual_mailbox_maps, looked up as Postfix's virtual(8) does
 *            (user+ext@domain, user@domain, then the "@domain"
 *            catch-all); not found: 5.1.1 User unknown in virtual mailbox
 *            table. The value is a path under virtual_mailbox_base: a
 *            Maildir when it ends in '/', else an mbox file; one that
 *            would leave the base (absolute, a ".." part) is a
 *            configuration error and the mail waits (4.3.5).
 *   ids      virtual_uid_maps and virtual_gid_maps, the same keys
 *            (static:N answers every key); a uid below
 *            virtual_minimum_uid, a gid 0 or a value that is not a number
 *            is a configuration error (4.3.5), as is a missing entry.
 *   writing  in a child that has become exactly that uid and gid (the gid
 *            its only group; local_as), so the mailbox can reach nothing
 *            that uid could not. A part of the path below the base that
 *            is a symbolic link is refused, and so are a Maildir's tmp/
 *            and new/ as links; the file itself is opened O_NOFOLLOW by
 *            the writers (local_mbox.c). Missing folders are made (0700),
 *            the mbox's parent too. virtual_mailbox_limit bounds an mbox
 *            file and a Maildir message.
 *
 * A table that cannot be opened or read defers (4.3.0).
 */
#include "sys_defs.h"

#include <sys/stat.h>

#include "local.h"
#include "maps.h"
#include "mymalloc.h"
#include "vstr.h"

typedef struct LOCAL_VIRTUAL_ARG {
    const char *base; /* virtual_mailbox_base, absolute */
    const char *rel; /* the table's value, under base */
    const char *path; /* base/rel, without a Maildir's trailing '/' */
    bool maildir;
    const LOCAL_MSG *msg;
    long long limit;
} LOCAL_VIRTUAL_ARG;

/* local_virtual_nolink - 0 when path is missing or not a symbolic link,
   else -1 with the deferral in res */
static int local_virtual_nolink(const char *path, const char *mailbox,
                                LOCAL_RESULT *res)
{
    struct stat st;

    if (lstat(path, &st) < 0 || !S_ISLNK(st.st_mode))
        return 0;
    local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                     "mailbox %s: %s is a symbolic link: not followed", mailbox,
                     path);
    return -1;
}

/* local_virtual_links - refuse a symbolic link anywhere below the base on
   the way to the mailbox (and a Maildir's tmp/ and new/) */
static int local_virtual_links(const LOCAL_VIRTUAL_ARG *va, LOCAL_RESULT *res)
{
    size_t base_len = strlen(va->base);
    VSTR *part = vstr_alloc(100);
    const char *path = va->path;
    int ret = 0;

    while (base_len > 0 && va->base[base_len - 1] == '/')
        base_len--; /* as local_virtual_path wrote it */
    for (const char *cp = path + base_len + 1; ret == 0; cp++) {
        if (*cp == '/' || *cp == 0) {
            vstr_ncpy(part, path, (size_t) (cp - path));
            ret = local_virtual_nolink(vstr_str(part), path, res);
            if (*cp == 0)
                break;
        }
    }
    for (size_t i = 0; ret == 0 && va->maildir && i < 2; i++) {
        vstr_sprintf(part, "%s/%s", path, i == 0 ? "tmp" : "new");
        ret = local_virtual_nolink(vstr_str(part), path, res);
    }
    vstr_free(part);
    return ret;
}

/* local_virtual_action - as the mailbox's uid and gid: write it */
static void local_virtual_action(void *arg, LOCAL_RESULT *res)
{
    LOCAL_VIRTUAL_ARG *va = arg;
    const char *slash;

    if (local_virtual_links(va, res) < 0)
        return;
    if (va->maildir) {
        local_maildir_deliver(va->path, va->msg, va->limit, res);
        return;
    }
    if ((slash = strrchr(va->path, '/')) != NULL && slash > va->path) {
        char *parent = mystrndup(va->path, (size_t) (slash - va->path));
        int made = local_mkdir_p(parent);

        if (made < 0)
            local_result_set(res, LOCAL_STAT_DEFER, "4.2.0",
                             "cannot create folder %s: %s", parent,
                             strerror(errno));
        myfree(parent);
        if (made < 0)
            return;
    }
    local_mbox_deliver(va->path, va->msg, va->limit, (uid_t) -1, (gid_t) -1,
                       LOCAL_LOCK_WAIT, res);
}

/* local_virtual_find - look address up in maps (virtual(8)'s order);
   1 found (*value), 0 not, -1 the table failed */
static int local_virtual_find(LOCAL_CONF *conf, MAPS *maps, const char *address,
                              const char **value)
{
    int error = MAP_OK;

    *value = maps_find_addr(maps, address, conf->delims, 0, &error);
    if (*value != NULL)
        return 1;
    return error == MAP_FAIL ? -1 : 0;
}

/* local_virtual_id - the uid or gid of address from maps, at least min;
   -1 with the deferral in res */
static long long local_virtual_id(LOCAL_CONF *conf, MAPS *maps,
                                  const char *param, const char *address,
                                  long long min, LOCAL_RESULT *res)
{
    const char *value;
    char *end;
    long long id;
    int found = local_virtual_find(conf, maps, address, &value);

    if (found < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "%s lookup failed",
                         param);
        return -1;
    }
    if (found == 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.5",
                         "mail system configuration error: no entry for %s in"
                         " %s",
                         address, param);
        return -1;
    }
    errno = 0;
    id = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != 0 || id < min ||
        id > (long long) INT32_MAX) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.5",
                         "mail system configuration error: bad %s \"%s\" for"
                         " %s (at least %lld)",
                         param, value, address, min);
        return -1;
    }
    return id;
}

/* local_virtual - the virtual delivery of one recipient */
void local_virtual(LOCAL_STATE *state)
{
    LOCAL_REQ *req = state->req;
    LOCAL_CTX *ctx = req->ctx;
    LOCAL_CONF *conf = &ctx->conf;
    const char *address = state->rcpt->address;
    LOCAL_RESULT *res = &state->scratch;
    LOCAL_VIRTUAL_ARG va = {.base = conf->virtual_base,
                            .limit = conf->virtual_limit};
    LOCAL_PRIV priv = {.name = NULL};
    VSTR *path = vstr_alloc(100);
    LOCAL_MSG msg;
    long long uid, gid;
    int found;

    if (conf->virtual_maps == NULL || conf->virtual_uid_maps == NULL ||
        conf->virtual_gid_maps == NULL) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0", "%s",
                         vstr_str(conf->virtual_error));
        goto done;
    }
    found = local_virtual_find(conf, conf->virtual_maps, address, &va.rel);
    if (found < 0) {
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.0",
                         "virtual_mailbox_maps lookup failed");
        goto done;
    }
    if (found == 0) {
        local_result_set(res, LOCAL_STAT_BOUNCE, "5.1.1",
                         "User unknown in virtual mailbox table");
        goto done;
    }
    if (local_virtual_path(conf->virtual_base, va.rel, path, res->text) < 0) {
        VSTR *why = vstr_alloc(100);

        vstr_cpy(why, vstr_str(res->text));
        local_result_set(res, LOCAL_STAT_DEFER, "4.3.5",
                         "mail system configuration error: %s", vstr_str(why));
        vstr_free(why);
        goto done;
    }
    if ((uid =
             local_virtual_id(conf, conf->virtual_uid_maps, "virtual_uid_maps",
                              address, conf->virtual_minimum_uid, res)) < 0 ||
        (gid = local_virtual_id(conf, conf->virtual_gid_maps,
                                "virtual_gid_maps", address, 1, res)) < 0)
        goto done;
    va.maildir = va.rel[strlen(va.rel) - 1] == '/';
    while (va.maildir && vstr_str(path)[vstr_len(path) - 1] == '/')
        vstr_truncate(path, vstr_len(path) - 1);
    va.path = vstr_str(path);
    msg.sender = req->sender;
    msg.recipient = address;
    msg.content = vstr_str(req->content);
    msg.len = vstr_len(req->content);
    msg.arrival = req->info->arrival.tv_sec;
    msg.delivered_to = true;
    va.msg = &msg;
    priv.uid = (uid_t) uid;
    priv.gid = (gid_t) gid;
    local_as(ctx, &priv, local_virtual_action, &va, res);

done:
    local_outcome(state, address, res,
                  va.maildir ? "delivered to maildir" : "delivered to mailbox");
    vstr_free(path);
}
