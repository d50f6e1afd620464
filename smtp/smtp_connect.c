/*
 * smtp_connect - where a delivery goes: routes, next MX, connection cache
 *
 * The next hop names a domain (MX lookup), a host, or an [address]
 * (global/dns.h; an IP literal needs no DNS). Its addresses are tried in
 * order until one completes the greeting and EHLO: a refused connection,
 * a 4xx/5xx greeting, a broken EHLO or a timeout there moves on to the
 * next address (smtp_session.c reports it back here).
 *
 * A connection that delivered is kept (no RSET after a 2xx to the end of
 * data: RFC 5321 4.1.4; RSET after any other end) and waits idle in the
 * cache (keyed by next hop) for smtp_connection_cache_time_limit, and the
 * next request for that next hop takes it instead of looking up and
 * connecting again (only when that request's TLS and MTA-STS requirements
 * are those the connection was opened under, and the connection meets
 * them: smtp_cache_fits; else a new connection), at most smtp_connection_reuse_count_limit times (and
 * at most the request's conn_messages: shaping's messages_per_connection
 * for its destination, qmgr_shaping.c). A
 * cached connection found dead before its first reply is dropped and the
 * request starts afresh, so reuse never fails a delivery.
 *
 * A request may name a conn_group with its conn_max (qmgr's shaping
 * bucket and its max_connections): the connections of the group open in
 * this process, busy, idle in the cache or saying QUIT, are never more
 * than conn_max. qmgr keeps the deliveries in flight of the group within
 * conn_max, but the cache is keyed by next hop: a provider's domains are
 * several next hops, and one's idle connections would stay open while
 * another's deliveries open their own. So before a request opens a
 * connection it takes a slot: the group's connections, and the requests
 * that hold a slot but have no connection yet (a DNS lookup, a connect),
 * must be fewer than conn_max. When they are not, the group's idle
 * cached connections are closed and the request waits until a
 * connection of the group closes (or goes idle: it may be reused or
 * closed then), which is soon: each counted connection is closing or
 * busy with one of at most conn_max deliveries. Other smtp processes
 * (master starts one more only when one has SMTP_BUSY_REQUESTS) have
 * caches of their own that are not counted here.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "deliver_proto.h"
#include "dns.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtp.h"
#include "vstr.h"

/* smtp_req_dns - the addresses of the next hop are known */
static void smtp_req_dns(const DNS_REPLY *reply, void *arg)
{
    SMTP_REQ *req = arg;

    req->lookup = NULL;
    if (reply->status != DNS_OK) {
        msg_info("%s: %s", req->qid, vstr_str(reply->reason));
        smtp_req_fail_all(req,
                          reply->status == DNS_PERM ? DELIVER_ACTION_BOUNCED
                                                    : DELIVER_ACTION_DEFERRED,
                          reply->dsn, vstr_str(reply->reason), NULL, NULL,
                          NULL);
        smtp_req_done(req, 0, true, vstr_str(reply->reason));
        return;
    }
    req->addrs = mymalloc_array(reply->count, sizeof(DNS_ADDR));
    for (size_t i = 0; i < reply->count; i++) {
        req->addrs[i] = reply->addrs[i];
        req->addrs[i].host = mystrdup(reply->addrs[i].host);
    }
    req->addr_count = reply->count;
    req->addr_next = 0;
    if (!smtp_sts_filter(req))
        return;
    smtp_req_try_next(req);
}

/* smtp_req_policy_key - what a connection for req must satisfy: the
   next hop's TLS level (before DANE picks one per MX host), the names a
   certificate must match, the protocols, the MTA-STS mode and mx
   patterns. Two requests with the same key ask the same of a
   connection. */
void smtp_req_policy_key(const SMTP_REQ *req, VSTR *out)
{
    vstr_sprintf(out, "level=%s match=", tls_level_name(req->tls_level));
    for (size_t i = 0; req->tls_match && i < req->tls_match->argc; i++)
        vstr_sprintf_append(out, "%s%s", i ? ":" : "", req->tls_match->argv[i]);
    vstr_sprintf_append(out, " protocols=%s sts=%d mx=",
                        req->tls_protocols ? req->tls_protocols : "",
                        (int) req->sts_mode);
    for (size_t i = 0; req->sts_mx && i < req->sts_mx->argc; i++)
        vstr_sprintf_append(out, "%s%s", i ? ":" : "", req->sts_mx->argv[i]);
}

/* smtp_cache_fits - may sess carry req's next message? Only when it was
   opened under the same TLS and MTA-STS requirements (a connection made
   at "may" while a policy fetch failed must not carry a message that
   MTA-STS enforce or DANE protects), and, to be sure, when what it
   became meets them: TLS when required, a certificate checked against
   TLSA records for DANE, an MX host the MTA-STS policy allows. */
static bool smtp_cache_fits(const SMTP_SESS *sess, const SMTP_REQ *req,
                            const char *key)
{
    if (strcmp(sess->policy_key, key) != 0)
        return false;
    if (tls_level_required(req->tls_level) && !sess->proto->tls_active)
        return false;
    if ((req->tls_level == TLS_LEV_DANE ||
         req->tls_level == TLS_LEV_DANE_ONLY) &&
        sess->tls_level != TLS_LEV_DANE)
        return false;
    if (req->sts_mode == MTA_STS_MODE_ENFORCE) {
        MTA_STS_POLICY view = {.mode = req->sts_mode, .mx = req->sts_mx};

        if (!sess->proto->tls_active ||
            !mta_sts_policy_allows(&view, sess->host))
            return false;
    }
    return true;
}

/* smtp_cache_take - an idle connection to the request's next hop that
   may carry one more of its messages, or NULL */
static SMTP_SESS *smtp_cache_take(SMTP_CTX *ctx, const SMTP_REQ *req)
{
    SMTP_SESS *found = NULL;
    VSTR *key;

    if (ctx->cache == NULL)
        return NULL;
    key = vstr_alloc(100);
    smtp_req_policy_key(req, key);
    for (SMTP_SESS **sp = &ctx->cache; *sp != NULL; sp = &(*sp)->next) {
        SMTP_SESS *sess = *sp;

        if (!sess->broken && strcmp(sess->nexthop, req->nexthop) == 0 &&
            strcmp(sess->source,
                   req->source_address ? req->source_address : "") == 0 &&
            (req->conn_messages == 0 || sess->uses < req->conn_messages) &&
            smtp_cache_fits(sess, req, vstr_str(key))) {
            *sp = sess->next;
            sess->next = NULL;
            found = sess;
            break;
        }
    }
    vstr_free(key);
    return found;
}

/* smtp_cache_remove - take sess out of the cache if it is there */
void smtp_cache_remove(SMTP_SESS *sess)
{
    for (SMTP_SESS **sp = &sess->ctx->cache; *sp != NULL; sp = &(*sp)->next) {
        if (*sp == sess) {
            *sp = sess->next;
            sess->next = NULL;
            return;
        }
    }
}

/* smtp_group_add - a connection of sess->conn_group opens */
void smtp_group_add(SMTP_SESS *sess)
{
    sess->group_next = sess->ctx->grouped;
    sess->ctx->grouped = sess;
}

/* smtp_group_remove - a connection leaves its group (closes, or serves
   another): the group's waiting requests try again */
void smtp_group_remove(SMTP_SESS *sess)
{
    if (sess->conn_group == NULL)
        return;
    for (SMTP_SESS **sp = &sess->ctx->grouped; *sp; sp = &(*sp)->group_next) {
        if (*sp == sess) {
            *sp = sess->group_next;
            break;
        }
    }
    sess->group_next = NULL;
    myfree(sess->conn_group);
    sess->conn_group = NULL;
    smtp_slot_wake(sess->ctx);
}

/* smtp_slot_unlink - take req off ctx->slot_reqs */
static void smtp_slot_unlink(SMTP_REQ *req)
{
    for (SMTP_REQ **rp = &req->ctx->slot_reqs; *rp; rp = &(*rp)->slot_next) {
        if (*rp == req) {
            *rp = req->slot_next;
            break;
        }
    }
    req->slot_next = NULL;
    req->slot = SMTP_SLOT_NONE;
}

/* smtp_slot_release - req needs its slot no more */
void smtp_slot_release(SMTP_REQ *req)
{
    SMTP_SLOT was = req->slot;

    if (was == SMTP_SLOT_NONE)
        return;
    smtp_slot_unlink(req);
    if (was == SMTP_SLOT_HELD)
        smtp_slot_wake(req->ctx);
}

/* smtp_slot_event - the waiting requests try again, in order */
static void smtp_slot_event(evutil_socket_t fd, short what, void *arg)
{
    SMTP_CTX *ctx = arg;
    SMTP_REQ *waiting = NULL;
    SMTP_REQ **tail = &waiting;
    SMTP_REQ **rp = &ctx->slot_reqs;

    /* Take them all off first: each may wait again. */
    while (*rp) {
        SMTP_REQ *req = *rp;

        if (req->slot == SMTP_SLOT_WAITING) {
            *rp = req->slot_next;
            req->slot_next = NULL;
            req->slot = SMTP_SLOT_NONE;
            *tail = req;
            tail = &req->slot_next;
        } else {
            rp = &req->slot_next;
        }
    }
    while (waiting) {
        SMTP_REQ *req = waiting;

        waiting = req->slot_next;
        req->slot_next = NULL;
        req->slot_resume(req);
    }
}

/* smtp_slot_wake - waiting requests try again on the next loop pass */
void smtp_slot_wake(SMTP_CTX *ctx)
{
    if (ctx->slot_ev != NULL)
        event_active(ctx->slot_ev, EV_TIMEOUT, 0);
}

/* smtp_slot_take - may req open a connection now? true: yes (it holds a
   slot); false: its group is full, idle connections of the group are
   closing, and resume(req) runs when one has closed */
static bool smtp_slot_take(SMTP_REQ *req, void (*resume)(SMTP_REQ *req))
{
    SMTP_CTX *ctx = req->ctx;
    long long open = 0;

    if (req->conn_group == NULL || req->slot == SMTP_SLOT_HELD)
        return true;
    for (SMTP_SESS *sess = ctx->grouped; sess; sess = sess->group_next)
        if (strcmp(sess->conn_group, req->conn_group) == 0)
            open++;
    for (SMTP_REQ *other = ctx->slot_reqs; other; other = other->slot_next)
        if (other->slot == SMTP_SLOT_HELD &&
            strcmp(other->conn_group, req->conn_group) == 0)
            open++;
    if (open < req->conn_max) {
        req->slot = SMTP_SLOT_HELD;
        req->slot_next = ctx->slot_reqs;
        ctx->slot_reqs = req;
        return true;
    }
    /* Full: close idle ones of the group (QUIT, or at once while RSET is
       unanswered), enough to make room; wait for them to go. */
    for (long long excess = open - req->conn_max + 1; excess > 0; excess--) {
        SMTP_SESS *idle = NULL;

        for (SMTP_SESS *sess = ctx->cache; sess; sess = sess->next)
            if (sess->conn_group &&
                strcmp(sess->conn_group, req->conn_group) == 0)
                idle = sess;
        if (idle == NULL)
            break;
        if (idle->proto->expect_count > 0)
            smtp_sess_free(idle);
        else
            smtp_sess_quit(idle);
    }
    if (ctx->slot_ev == NULL &&
        (ctx->slot_ev = event_new(mail_server_base(ctx->server), -1, 0,
                                  smtp_slot_event, ctx)) == NULL)
        msg_fatal("cannot create an event");
    if (msg_verbose_get())
        msg_info("%s: %s has %lld connections open (at most %lld): waiting",
                 req->qid, req->conn_group, open, req->conn_max);
    req->slot = SMTP_SLOT_WAITING;
    req->slot_resume = resume;
    /* At the end: first come, first served. */
    {
        SMTP_REQ **rp = &ctx->slot_reqs;

        while (*rp)
            rp = &(*rp)->slot_next;
        *rp = req;
    }
    return false;
}

/* smtp_policy_find - smtp_tls_policy_maps: the next hop as written
   ("[host]:port", "domain"), then for a domain its parents as ".parent" */
static const char *smtp_policy_find(SMTP_REQ *req, int *error)
{
    MAPS *maps = req->ctx->tls_policy;
    const char *value;
    const char *dot;

    if ((value = maps_find(maps, req->nexthop, error)) != NULL ||
        *error != MAP_NOTFOUND || !req->mx)
        return value;
    for (dot = strchr(vstr_str(req->host), '.'); dot != NULL;
         dot = strchr(dot + 1, '.')) {
        if ((value = maps_find_fixed(maps, dot, error)) != NULL ||
            *error != MAP_NOTFOUND)
            return value;
    }
    return NULL;
}

/* smtp_req_policy - the next hop's TLS level and what goes with it: a
   policy map entry, else smtp_tls_security_level. false when the request
   was deferred (a table that cannot be read, a bad or unsupported
   entry) */
bool smtp_req_policy(SMTP_REQ *req)
{
    const SMTP_CONF *conf = &req->ctx->conf;
    TLS_POLICY policy;
    const char *value;
    int error = MAP_NOTFOUND;

    req->tls_level = conf->tls_level;
    value = smtp_policy_find(req, &error);
    if (value == NULL && error != MAP_NOTFOUND) {
        vstr_sprintf(req->why, "smtp_tls_policy_maps: lookup of %s failed",
                     req->nexthop);
        goto defer;
    }
    if (value != NULL) {
        if (tls_policy_parse(value, conf->tls_fprint_digest, &policy,
                             req->why) < 0) {
            VSTR *tmp = vstr_alloc(100);

            vstr_sprintf(tmp, "smtp_tls_policy_maps entry for %s: %s",
                         req->nexthop, vstr_str(req->why));
            vstr_cpy(req->why, vstr_str(tmp));
            vstr_free(tmp);
            goto defer;
        }
        if (!tls_level_supported(policy.level)) {
            vstr_sprintf(req->why,
                         "smtp_tls_policy_maps entry for %s: TLS security "
                         "level \"%s\" is not supported yet",
                         req->nexthop, tls_level_name(policy.level));
            tls_policy_free(&policy);
            goto defer;
        }
        req->tls_level = policy.level;
        req->tls_match = policy.match;
        req->tls_protocols = policy.protocols;
        req->tls_from_map = true;
    }
    /* DANE without DNSSEC (Postfix's dane_incompat): dane is may, with a
       warning; dane-only cannot be met. */
    if ((req->tls_level == TLS_LEV_DANE ||
         req->tls_level == TLS_LEV_DANE_ONLY) &&
        conf->dns_support != TLS_DNS_DNSSEC) {
        vstr_sprintf(req->why,
                     "%s: %s configured with dnssec lookups disabled "
                     "(smtp_dns_support_level = %s)",
                     req->nexthop, tls_level_name(req->tls_level),
                     tls_dns_support_name(conf->dns_support));
        if (req->tls_level == TLS_LEV_DANE_ONLY)
            goto defer;
        msg_warn("%s; using TLS security level may", vstr_str(req->why));
        vstr_reset(req->why);
        req->tls_level = TLS_LEV_MAY;
    }
    /* fingerprint: the policy's own, else main.cf's; they go into the
       connection cache key (smtp_req_policy_key) with the level. */
    if (req->tls_level == TLS_LEV_FPRINT) {
        if (req->tls_match == NULL) {
            req->tls_match = argv_alloc(2);
            for (size_t i = 0; i < conf->tls_fprint_match->argc; i++)
                argv_add(req->tls_match, conf->tls_fprint_match->argv[i]);
        }
        if (req->tls_match->argc == 0) {
            vstr_sprintf(req->why,
                         "TLS security level fingerprint for %s, but no "
                         "fingerprint to match: neither match= in "
                         "smtp_tls_policy_maps nor "
                         "smtp_tls_fingerprint_cert_match",
                         req->nexthop);
            goto defer;
        }
    }
    if (req->tls_match == NULL && tls_level_verifies(req->tls_level))
        req->tls_match = argv_split("", " ");
    if (req->tls_match != NULL && req->tls_match->argc == 0) {
        const ARGV *dflt = req->tls_level == TLS_LEV_SECURE
                               ? conf->tls_secure_match
                               : conf->tls_verify_match;

        for (size_t i = 0; i < dflt->argc; i++)
            argv_add(req->tls_match, dflt->argv[i]);
    }
    if (req->tls_protocols == NULL)
        req->tls_protocols = mystrdup(tls_level_required(req->tls_level)
                                          ? conf->tls_mandatory_protocols
                                          : conf->tls_protocols);
    return true;

defer:
    msg_warn("%s: %s", req->qid, vstr_str(req->why));
    smtp_req_fail_all(req, DELIVER_ACTION_DEFERRED, "4.7.5", vstr_str(req->why),
                      NULL, NULL, NULL);
    smtp_req_done(req, 0, false, vstr_str(req->why));
    return false;
}

/* smtp_req_route - a cached connection, else DNS and a new one */
void smtp_req_route(SMTP_REQ *req)
{
    SMTP_SESS *sess = smtp_cache_take(req->ctx, req);

    if (sess != NULL) {
        smtp_sess_reuse(sess, req);
        return;
    }
    if (!smtp_slot_take(req, smtp_req_route))
        return;
    req->from_cache = false;
    req->lookup = dns_lookup(req->ctx->dns, vstr_str(req->host), req->mx,
                             req->ctx->conf.dns_timeout, smtp_req_dns, req);
}

/* smtp_connect_addr - start a connection to one address; false (with the
   reason in why) when it cannot even start */
static bool smtp_connect_addr(SMTP_REQ *req, const DNS_ADDR *addr, VSTR *why)
{
    SMTP_CTX *ctx = req->ctx;
    const char *bind_address =
        req->source_address ? req->source_address : ctx->conf.bind_address;
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd;

    memset(&ss, 0, sizeof(ss));
    if (addr->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t) req->port);
        if (inet_pton(AF_INET6, addr->ip, &sin6->sin6_addr) != 1)
            goto bad_addr;
        sslen = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t) req->port);
        if (inet_pton(AF_INET, addr->ip, &sin->sin_addr) != 1)
            goto bad_addr;
        sslen = sizeof(*sin);
    }
    if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                     0)) < 0) {
        vstr_sprintf(why, "socket: %s", strerror(errno));
        return false;
    }
    /* Every write here is a whole command group or the end of the
       message, followed by a wait for the reply: Nagle would only hold the
       last small segment back until the server's delayed ACK. */
    {
        int on = 1;

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
    if (*bind_address) {
        struct sockaddr_storage bs;
        socklen_t bslen = 0;

        memset(&bs, 0, sizeof(bs));
        if (ss.ss_family == AF_INET &&
            inet_pton(AF_INET, bind_address,
                      &((struct sockaddr_in *) &bs)->sin_addr) == 1) {
            bs.ss_family = AF_INET;
            bslen = sizeof(struct sockaddr_in);
        } else if (ss.ss_family == AF_INET6 &&
                   inet_pton(AF_INET6, bind_address,
                             &((struct sockaddr_in6 *) &bs)->sin6_addr) == 1) {
            bs.ss_family = AF_INET6;
            bslen = sizeof(struct sockaddr_in6);
        }
        if (bslen == 0 && req->source_address != NULL) {
            /* A pool's source never falls back to another address. */
            vstr_sprintf(why,
                         "connect to %s[%s]:%d: not reachable from source %s "
                         "(another address family)",
                         addr->host, addr->ip, req->port, bind_address);
            (void) close(fd);
            return false;
        }
        if (bslen > 0 && bind(fd, (struct sockaddr *) &bs, bslen) < 0) {
            vstr_sprintf(why, "bind %s: %s", bind_address, strerror(errno));
            /* qmgr's source is not this machine's (any more): qmgr leaves
               it out for a while and sends from another one. */
            if (req->source_address != NULL &&
                (errno == EADDRNOTAVAIL || errno == EINVAL))
                req->source_failed = true;
            (void) close(fd);
            return false;
        }
    }
    if (connect(fd, (struct sockaddr *) &ss, sslen) < 0 &&
        errno != EINPROGRESS) {
        vstr_sprintf(why, "connect to %s[%s]:%d: %s", addr->host, addr->ip,
                     req->port, strerror(errno));
        (void) close(fd);
        return false;
    }
    return smtp_sess_open(req, addr, fd, why) != NULL;

bad_addr:
    vstr_sprintf(why, "bad address %s", addr->ip);
    return false;
}

/* smtp_req_try_next - connect to the next address, or give up */
void smtp_req_try_next(SMTP_REQ *req)
{
    while (req->addr_next < req->addr_count) {
        const DNS_ADDR *addr = req->addrs + req->addr_next;

        req->conn_level = req->tls_level;
        if ((req->tls_level == TLS_LEV_DANE ||
             req->tls_level == TLS_LEV_DANE_ONLY) &&
            !req->tls_plain_retry) {
            int ok = smtp_dane_level(req, addr, req->why);

            if (ok == 0)
                return; /* the TLSA lookup calls again */
            if (ok < 0) {
                req->addr_next++;
                msg_info("%s: %s: %s[%s] skipped", req->qid, vstr_str(req->why),
                         addr->host, addr->ip);
                vstr_cpy(req->site_reason, vstr_str(req->why));
                vstr_reset(req->site_diag);
                snprintf(req->site_dsn, sizeof(req->site_dsn), "4.7.5");
                continue;
            }
        }
        if (!smtp_slot_take(req, smtp_req_try_next))
            return;
        req->addr_next++;

        if (smtp_connect_addr(req, addr, req->why))
            return;
        if (req->source_failed) {
            /* Not the destination's fault: qmgr tries another source. */
            msg_warn("%s: %s", req->qid, vstr_str(req->why));
            smtp_req_done(req, 1, false, vstr_str(req->why));
            return;
        }
        req->tls_plain_retry = false; /* meant for that address only */
        msg_info("%s", vstr_str(req->why));
        vstr_cpy(req->site_reason, vstr_str(req->why));
        vstr_reset(req->site_diag);
        snprintf(req->site_dsn, sizeof(req->site_dsn), "4.4.1");
    }
    smtp_req_site_failed(req);
}
