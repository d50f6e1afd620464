/*
 * dns - asynchronous mail exchanger and address lookups on libunbound
 *
 * libunbound runs its resolver in a thread (ub_ctx_async); answers wait in
 * a pipe whose read end (ub_fd) an event watches, and ub_process() runs the
 * callbacks from the event loop. A lookup is a small state machine: the MX
 * query, then one A (and AAAA) query per MX host, all in flight at once,
 * and a timer that bounds the whole. When the last query is answered (or
 * the timer fires) the addresses are put in MX order and handed over.
 * A PTR lookup is the same machine with other steps: the PTR query, then
 * the A (or AAAA) query of the name it gave, then the comparison with the
 * address asked about.
 */
#include "sys_defs.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/event.h>
#include <unbound.h>

#include "argv.h"
#include "dns.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_PTR 12
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_TLSA 52
#define DNS_CLASS_IN 1
#define DNS_RCODE_NXDOMAIN 3
struct DNS_CTX {
    struct event_base *base;
    struct ub_ctx *ub; /* NULL when lookups are disabled */
    struct event *readable; /* ub_fd watch */
    bool ipv6; /* ask AAAA too */
    bool dnssec; /* a trust anchor is configured */
    size_t mx_host_limit; /* smtp_mx_host_limit: MX hosts resolved */
    uint32_t rnd_state; /* shuffle of equal preferences */
    DNS_LOOKUP *lookups; /* in flight, for dns_ctx_free */
};

/* One host of a lookup: the MX host, or the name itself. */
typedef struct DNS_HOST {
    char *name;
    int pref;
    DNS_ADDR *addrs;
    size_t count;
    bool temp_fail; /* an address query failed temporarily */
    bool asked; /* address queries were sent */
    bool insecure; /* an address answer was not DNSSEC-validated */
    char cname[DNS_NAME_SIZE]; /* the expanded name: host is an alias */
    bool cname_asked; /* its own CNAME record was asked for */
    bool alias_secure; /* ... and that answer was validated */
} DNS_HOST;

/* One libunbound query in flight. */
typedef struct DNS_QUERY {
    DNS_LOOKUP *lookup;
    int type;
    size_t host; /* index into hosts (A/AAAA) */
    int async_id;
    struct DNS_QUERY *next;
} DNS_QUERY;

struct DNS_LOOKUP {
    DNS_CTX *ctx;
    char *name;
    bool mx;
    bool ptr; /* dns_lookup_ptr: name is the reverse-lookup name */
    bool txt; /* dns_lookup_txt */
    bool tlsa; /* dns_lookup_tlsa */
    bool mx_secure; /* the MX answer (or its absence) was validated */
    int family; /* dns_lookup_ptr: of client_ip */
    char client_ip[INET6_ADDRSTRLEN]; /* dns_lookup_ptr: normalised */
    int timeout;
    DNS_CALLBACK callback;
    void *arg;
    struct event *timer; /* the deadline, or "answer now" */
    DNS_QUERY *queries; /* in flight */
    DNS_HOST *hosts;
    size_t host_count;
    DNS_REPLY reply;
    bool decided; /* reply.status/dsn/reason are final */
    DNS_LOOKUP *prev, *next; /* ctx->lookups */
};

/* dns_server_parse - "ip", "ip:port", "[ip]", "[ip]:port" to "ip@port" */
int dns_server_parse(const char *text, VSTR *out, VSTR *why)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    const char *end;
    size_t len;
    unsigned char buf[sizeof(struct in6_addr)];

    if (text[0] == '[') {
        if ((end = strchr(text, ']')) == NULL)
            goto bad;
        len = (size_t) (end - text - 1);
        if (len == 0 || len >= sizeof(host))
            goto bad;
        memcpy(host, text + 1, len);
        host[len] = 0;
        if (end[1] == ':')
            port = end + 2;
        else if (end[1] != 0)
            goto bad;
    } else {
        const char *colon = strchr(text, ':');

        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            len = (size_t) (colon - text); /* ipv4:port */
            port = colon + 1;
        } else {
            len = strlen(text); /* ipv4, or a bare ipv6 address */
        }
        if (len == 0 || len >= sizeof(host))
            goto bad;
        memcpy(host, text, len);
        host[len] = 0;
    }
    if (inet_pton(AF_INET, host, buf) != 1 &&
        inet_pton(AF_INET6, host, buf) != 1)
        goto bad;
    if (port != NULL) {
        char *stop;
        long num;

        errno = 0;
        num = strtol(port, &stop, 10);
        if (errno || stop == port || *stop || num < 1 || num > 65535)
            goto bad;
        vstr_sprintf(out, "%s@%ld", host, num);
    } else {
        vstr_cpy(out, host);
    }
    return 0;

bad:
    vstr_sprintf(why, "bad DNS server \"%s\" (want ip, ip:port or [ip]:port)",
                 text);
    return -1;
}

/* dns_name_parse - wire-format name to dotted text */
int dns_name_parse(const unsigned char *data, size_t len, VSTR *out)
{
    size_t pos = 0;

    vstr_reset(out);
    for (;;) {
        size_t label;

        if (pos >= len)
            return -1;
        label = data[pos++];
        if (label == 0)
            break;
        if (label > 63 || pos + label > len)
            return -1; /* compression or garbage */
        if (vstr_len(out) > 0)
            vstr_addch(out, '.');
        for (size_t i = 0; i < label; i++) {
            int ch = data[pos + i];

            if (ch == '.' || ch <= ' ' || ch >= 0x7f)
                return -1; /* no host name has these */
            vstr_addch(out, ch);
        }
        pos += label;
        if (vstr_len(out) > 253)
            return -1;
    }
    if (vstr_len(out) == 0)
        vstr_cpy(out, ".");
    return (int) pos;
}

/* dns_mx_parse - preference and host of one MX rdata */
int dns_mx_parse(const unsigned char *data, size_t len, DNS_MX *mx)
{
    VSTR *host;

    if (len < 3)
        return -1;
    host = vstr_alloc(64);
    if (dns_name_parse(data + 2, len - 2, host) < 0) {
        vstr_free(host);
        return -1;
    }
    mx->pref = (data[0] << 8) | data[1];
    mx->host = vstr_export(host);
    return 0;
}

/* dns_txt_parse - the character-strings of one TXT record, joined */
int dns_txt_parse(const unsigned char *data, size_t len, VSTR *out)
{
    size_t pos = 0;

    vstr_reset(out);
    while (pos < len) {
        size_t n = data[pos++];

        if (n > len - pos)
            return -1;
        vstr_ncat(out, (const char *) data + pos, n);
        pos += n;
    }
    return 0;
}

/* dns_ptr_query - the in-addr.arpa or ip6.arpa name of an address */
int dns_ptr_query(const char *addr, VSTR *out)
{
    unsigned char buf[sizeof(struct in6_addr)];
    static const char hex[] = "0123456789abcdef";

    vstr_reset(out);
    if (inet_pton(AF_INET, addr, buf) == 1) {
        vstr_sprintf(out, "%u.%u.%u.%u.in-addr.arpa", buf[3], buf[2], buf[1],
                     buf[0]);
        return 0;
    }
    if (inet_pton(AF_INET6, addr, buf) == 1) {
        for (int i = 15; i >= 0; i--) {
            vstr_addch(out, hex[buf[i] & 0xf]);
            vstr_addch(out, '.');
            vstr_addch(out, hex[buf[i] >> 4]);
            vstr_addch(out, '.');
        }
        vstr_cat(out, "ip6.arpa");
        return 0;
    }
    return -1;
}

/* dns_mx_null - is this the null MX of RFC 7505? */
bool dns_mx_null(const DNS_MX *mx, size_t count)
{
    return count == 1 && strcmp(mx[0].host, ".") == 0;
}

/* dns_mx_sort - by preference; equal preferences shuffled */
void dns_mx_sort(DNS_MX *mx, size_t count, unsigned (*rnd)(void *rnd_arg),
                 void *rnd_arg)
{
    DNS_MX tmp;

    /* Fisher-Yates, then a stable insertion sort by preference. */
    for (size_t i = count; i > 1; i--) {
        size_t j = rnd(rnd_arg) % i;

        tmp = mx[i - 1];
        mx[i - 1] = mx[j];
        mx[j] = tmp;
    }
    for (size_t i = 1; i < count; i++) {
        size_t j = i;

        tmp = mx[i];
        while (j > 0 && mx[j - 1].pref > tmp.pref) {
            mx[j] = mx[j - 1];
            j--;
        }
        mx[j] = tmp;
    }
}

/* dns_rnd - xorshift32, good enough for shuffling MX hosts */
static unsigned dns_rnd(void *arg)
{
    uint32_t *state = arg;
    uint32_t x = *state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* dns_have_ipv6 - does this machine have a global IPv6 address? */
static bool dns_have_ipv6(void)
{
    struct ifaddrs *list, *ifa;
    bool found = false;

    if (getifaddrs(&list) < 0)
        return false;
    for (ifa = list; ifa != NULL && !found; ifa = ifa->ifa_next) {
        const struct sockaddr_in6 *sin6;

        if (ifa->ifa_addr == NULL || ifa->ifa_addr->sa_family != AF_INET6 ||
            (ifa->ifa_flags & IFF_LOOPBACK))
            continue;
        sin6 = (const struct sockaddr_in6 *) ifa->ifa_addr;
        if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr) ||
            IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
            continue;
        found = true;
    }
    freeifaddrs(list);
    return found;
}

/* dns_readable - libunbound has answers: run their callbacks */
static void dns_readable(evutil_socket_t fd, short what, void *arg)
{
    DNS_CTX *ctx = arg;
    int err;

    if ((err = ub_process(ctx->ub)) != 0)
        msg_warn("DNS: ub_process: %s", ub_strerror(err));
}

/* dns_ctx_create - libunbound set up from main.cf */
DNS_CTX *dns_ctx_create(struct event_base *base, const MAIL_CONF *conf,
                        VSTR *why)
{
    return dns_ctx_create_opts(base, conf, NULL, why);
}

/* dns_ctx_create_opts - the same, with what the program decided */
DNS_CTX *dns_ctx_create_opts(struct event_base *base, const MAIL_CONF *conf,
                             const DNS_CTX_OPTS *opts, VSTR *why)
{
    DNS_CTX *ctx = mycalloc(1, sizeof(*ctx));
    ARGV *servers = NULL;
    VSTR *fwd = vstr_alloc(64);
    const char *anchor;
    const char *anchor_name;
    struct timeval now;
    int err;

    ctx->base = base;
    ctx->mx_host_limit = (size_t) mail_conf_int(conf, "smtp_mx_host_limit");
    if (ctx->mx_host_limit == 0)
        ctx->mx_host_limit = 1;
    gettimeofday(&now, NULL);
    ctx->rnd_state = (uint32_t) (now.tv_usec ^ (now.tv_sec << 8) ^ getpid());
    if (ctx->rnd_state == 0)
        ctx->rnd_state = 1;
    if ((opts && opts->disabled) ||
        (!(opts && opts->enabled) &&
         mail_conf_bool(conf, "disable_dns_lookups"))) {
        vstr_free(fwd);
        return ctx;
    }
    ctx->ipv6 = dns_have_ipv6();
    if ((ctx->ub = ub_ctx_create()) == NULL) {
        vstr_cpy(why, "cannot create a libunbound context");
        goto fail;
    }
    /* Tests and local caches run on loopback. Answers are validated only
       under dns_trust_anchor_file's anchors (below). */
    if ((err = ub_ctx_set_option(ctx->ub, "do-not-query-localhost:", "no")) !=
        0) {
        vstr_sprintf(why, "libunbound do-not-query-localhost: %s",
                     ub_strerror(err));
        goto fail;
    }
    /* libunbound answers the RFC 6761 name "test." itself (NXDOMAIN);
       let the forwarders answer it, so a resolver on loopback can serve
       test domains. Real resolvers answer NXDOMAIN for it anyway. */
    if ((err = ub_ctx_set_option(ctx->ub,
                                 "local-zone:", "test. transparent")) != 0) {
        vstr_sprintf(why, "libunbound local-zone: %s", ub_strerror(err));
        goto fail;
    }
    /* Reverse zones libunbound would answer itself (loopback, RFC 1918)
       go to the forwarders too: they know the site's own PTR records.
       127.0.0.1 and ::1 still come from the hosts file when one is read
       (dns_ctx_hosts). */
    if ((err = ub_ctx_set_option(
             ctx->ub, "local-zone:", "127.in-addr.arpa. transparent")) != 0 ||
        (err = ub_ctx_set_option(ctx->ub, "unblock-lan-zones:", "yes")) != 0 ||
        (err = ub_ctx_set_option(ctx->ub, "insecure-lan-zones:", "yes")) != 0) {
        vstr_sprintf(why, "libunbound reverse zones: %s", ub_strerror(err));
        goto fail;
    }
    servers = mail_conf_list(conf, "dns_servers");
    for (size_t i = 0; i < servers->argc; i++) {
        if (dns_server_parse(servers->argv[i], fwd, why) < 0)
            goto fail;
        if ((err = ub_ctx_set_fwd(ctx->ub, vstr_str(fwd))) != 0) {
            vstr_sprintf(why, "dns_servers: %s: %s", servers->argv[i],
                         ub_strerror(err));
            goto fail;
        }
    }
    if (servers->argc == 0 && (err = ub_ctx_resolvconf(ctx->ub, NULL)) != 0) {
        vstr_sprintf(why, "cannot read /etc/resolv.conf: %s", ub_strerror(err));
        goto fail;
    }
    anchor = opts && opts->anchor
                 ? opts->anchor
                 : mail_conf_str(conf, "dns_trust_anchor_file");
    anchor_name =
        opts && opts->anchor ? "trust anchor file" : "dns_trust_anchor_file";
    if (*anchor) {
        if (access(anchor, R_OK) < 0) {
            vstr_sprintf(why, "%s %s: %s", anchor_name, anchor,
                         strerror(errno));
            goto fail;
        }
        if ((err = ub_ctx_add_ta_file(ctx->ub, anchor)) != 0) {
            vstr_sprintf(why, "%s %s: %s", anchor_name, anchor,
                         ub_strerror(err));
            goto fail;
        }
        ctx->dnssec = true;
    }
    if ((err = ub_ctx_async(ctx->ub, 1)) != 0) {
        vstr_sprintf(why, "libunbound async mode: %s", ub_strerror(err));
        goto fail;
    }
    ctx->readable = event_new(base, ub_fd(ctx->ub), EV_READ | EV_PERSIST,
                              dns_readable, ctx);
    if (ctx->readable == NULL || event_add(ctx->readable, NULL) < 0) {
        vstr_cpy(why, "cannot watch the libunbound descriptor");
        goto fail;
    }
    argv_free(servers);
    vstr_free(fwd);
    return ctx;

fail:
    if (servers)
        argv_free(servers);
    vstr_free(fwd);
    dns_ctx_free(ctx);
    return NULL;
}

/* dns_hosts_ptr - PTR records from a hosts file: each address names its
   first host name (libunbound's ub_ctx_hosts gives the forward records
   only). An address listed twice keeps its first line's name. This
   completes the context's configuration (ub_ctx_data_add): it runs last. */
static int dns_hosts_ptr(DNS_CTX *ctx, const char *path, VSTR *why)
{
    FILE *fp;
    char line[1024];
    ARGV *seen = argv_alloc(10);
    VSTR *data = vstr_alloc(100);
    int ret = 0;

    if ((fp = fopen(path, "r")) == NULL) {
        vstr_sprintf(why, "cannot read %s: %m", path);
        argv_free(seen);
        vstr_free(data);
        return -1;
    }
    while (ret == 0 && fgets(line, sizeof(line), fp) != NULL) {
        char *field[2];
        char *cp = line;
        int count = 0;
        unsigned char buf[sizeof(struct in6_addr)];
        bool dup = false;
        int err;

        if ((cp = strchr(line, '#')) != NULL)
            *cp = 0;
        for (cp = line; count < 2;) {
            cp += strspn(cp, " \t\r\n");
            if (*cp == 0)
                break;
            field[count++] = cp;
            cp += strcspn(cp, " \t\r\n");
            if (*cp)
                *cp++ = 0;
        }
        if (count < 2 || (inet_pton(AF_INET, field[0], buf) != 1 &&
                          inet_pton(AF_INET6, field[0], buf) != 1))
            continue;
        for (size_t i = 0; i < seen->argc && !dup; i++)
            dup = strcmp(seen->argv[i], field[0]) == 0;
        if (dup)
            continue;
        argv_add(seen, field[0]);
        if (dns_ptr_query(field[0], data) < 0)
            continue;
        vstr_sprintf_append(data, ". PTR %s.", field[1]);
        if ((err = ub_ctx_data_add(ctx->ub, vstr_str(data))) != 0) {
            vstr_sprintf(why, "%s: \"%s\": %s", path, vstr_str(data),
                         ub_strerror(err));
            ret = -1;
        }
    }
    (void) fclose(fp);
    argv_free(seen);
    vstr_free(data);
    return ret;
}

/* dns_ctx_hosts - a hosts file answers first */
int dns_ctx_hosts(DNS_CTX *ctx, const char *path, VSTR *why)
{
    int err;

    if (ctx->ub == NULL)
        return 0; /* lookups disabled: nothing is asked anyway */
    if (path == NULL)
        path = "/etc/hosts";
    if ((err = ub_ctx_hosts(ctx->ub, path)) != 0) {
        vstr_sprintf(why, "cannot read %s: %s", path, ub_strerror(err));
        return -1;
    }
    return dns_hosts_ptr(ctx, path, why);
}

/* dns_lookup_free - release a lookup and its queries (no callback) */
static void dns_lookup_free(DNS_LOOKUP *lookup)
{
    DNS_CTX *ctx = lookup->ctx;
    DNS_QUERY *query;

    while ((query = lookup->queries) != NULL) {
        lookup->queries = query->next;
        (void) ub_cancel(ctx->ub, query->async_id);
        myfree(query);
    }
    if (lookup->prev)
        lookup->prev->next = lookup->next;
    else
        ctx->lookups = lookup->next;
    if (lookup->next)
        lookup->next->prev = lookup->prev;
    event_free(lookup->timer);
    for (size_t i = 0; i < lookup->host_count; i++) {
        for (size_t j = 0; j < lookup->hosts[i].count; j++)
            myfree(lookup->hosts[i].addrs[j].host);
        myfree(lookup->hosts[i].addrs);
        myfree(lookup->hosts[i].name);
    }
    myfree(lookup->hosts);
    for (size_t i = 0; i < lookup->reply.count; i++)
        myfree(lookup->reply.addrs[i].host);
    myfree(lookup->reply.addrs);
    myfree(lookup->reply.name);
    myfree(lookup->reply.ptr_name);
    if (lookup->reply.texts)
        argv_free(lookup->reply.texts);
    for (size_t i = 0; i < lookup->reply.rr_count; i++)
        myfree(lookup->reply.rrs[i].data);
    myfree(lookup->reply.rrs);
    vstr_free(lookup->reply.reason);
    myfree(lookup->name);
    myfree(lookup);
}

/* dns_ctx_free - cancel everything and free */
DNS_CTX *dns_ctx_free(DNS_CTX *ctx)
{
    while (ctx->lookups != NULL)
        dns_lookup_free(ctx->lookups);
    if (ctx->readable)
        event_free(ctx->readable);
    if (ctx->ub)
        ub_ctx_delete(ctx->ub);
    myfree(ctx);
    return NULL;
}

/* dns_lookup_cancel - forget a lookup */
void dns_lookup_cancel(DNS_LOOKUP *lookup)
{
    dns_lookup_free(lookup);
}

/* dns_decide - set the outcome (the first decision wins) */
static void dns_decide(DNS_LOOKUP *lookup, DNS_STATUS status, const char *dsn,
                       const char *fmt, ...) SLUICE_PRINTF(4, 5);

static void dns_decide(DNS_LOOKUP *lookup, DNS_STATUS status, const char *dsn,
                       const char *fmt, ...)
{
    va_list ap;

    if (lookup->decided)
        return;
    lookup->decided = true;
    lookup->reply.status = status;
    snprintf(lookup->reply.dsn, sizeof(lookup->reply.dsn), "%s", dsn);
    vstr_reset(lookup->reply.reason);
    va_start(ap, fmt);
    vstr_vsprintf_append(lookup->reply.reason, fmt, ap);
    va_end(ap);
}

/* dns_type_name - for messages */
static const char *dns_type_name(int type)
{
    return type == DNS_TYPE_MX      ? "MX"
           : type == DNS_TYPE_PTR   ? "PTR"
           : type == DNS_TYPE_TXT   ? "TXT"
           : type == DNS_TYPE_A     ? "A"
           : type == DNS_TYPE_TLSA  ? "TLSA"
           : type == DNS_TYPE_CNAME ? "CNAME"
                                    : "AAAA";
}

/* dns_finish - hand the outcome over soon, from the loop */
static void dns_finish(DNS_LOOKUP *lookup)
{
    static const struct timeval now = {0, 0};
    DNS_QUERY *query;

    while ((query = lookup->queries) != NULL) {
        lookup->queries = query->next;
        (void) ub_cancel(lookup->ctx->ub, query->async_id);
        myfree(query);
    }
    event_del(lookup->timer);
    event_add(lookup->timer, &now);
}

/* dns_assemble - the addresses of every host, in host order */
static void dns_assemble(DNS_LOOKUP *lookup)
{
    bool temp = false;
    size_t total = 0;
    size_t pos = 0;

    for (size_t i = 0; i < lookup->host_count; i++) {
        total += lookup->hosts[i].count;
        temp |= lookup->hosts[i].temp_fail || !lookup->hosts[i].asked;
    }
    if (total == 0) {
        const char *name =
            lookup->host_count > 0 ? lookup->hosts[0].name : lookup->name;

        if (temp)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=A: Host not found, try again",
                       name);
        else
            dns_decide(lookup, DNS_PERM, "5.4.4",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=A: No address record",
                       name);
        return;
    }
    lookup->reply.addrs = mymalloc_array(total, sizeof(DNS_ADDR));
    for (size_t i = 0; i < lookup->host_count; i++) {
        for (size_t j = 0; j < lookup->hosts[i].count; j++) {
            lookup->reply.addrs[pos] = lookup->hosts[i].addrs[j];
            lookup->reply.addrs[pos].dnssec =
                lookup->mx_secure && !lookup->hosts[i].insecure;
            memcpy(lookup->reply.addrs[pos].cname, lookup->hosts[i].cname,
                   sizeof(lookup->hosts[i].cname));
            lookup->reply.addrs[pos].alias_secure =
                lookup->mx_secure && lookup->hosts[i].alias_secure;
            lookup->hosts[i].addrs[j].host = NULL; /* moved */
            pos++;
        }
    }
    lookup->reply.count = total;
    dns_decide(lookup, DNS_OK, "2.0.0", "%zu addresses", total);
}

/* dns_timer - deadline reached, or an outcome to deliver */
static void dns_timer(evutil_socket_t fd, short what, void *arg)
{
    DNS_LOOKUP *lookup = arg;

    if (!lookup->decided) {
        DNS_QUERY *query;
        bool have = false;

        while ((query = lookup->queries) != NULL) {
            lookup->queries = query->next;
            (void) ub_cancel(lookup->ctx->ub, query->async_id);
            myfree(query);
        }
        for (size_t i = 0; i < lookup->host_count; i++)
            have |= lookup->hosts[i].count > 0;
        if (lookup->txt || lookup->tlsa)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "Name service error for name=%s type=%s: DNS lookup "
                       "timed out after %ds",
                       lookup->name, lookup->txt ? "TXT" : "TLSA",
                       lookup->timeout);
        else if (lookup->ptr)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "%s: host name lookup timed out after %ds%s%s",
                       lookup->client_ip, lookup->timeout,
                       lookup->reply.ptr_name ? " checking " : "",
                       lookup->reply.ptr_name ? lookup->reply.ptr_name : "");
        else if (have)
            dns_assemble(lookup);
        else
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=%s: Host not found, try again "
                       "(DNS lookup timed out after %ds)",
                       lookup->name, lookup->mx ? "MX" : "A", lookup->timeout);
    }
    lookup->callback(&lookup->reply, lookup->arg);
    dns_lookup_free(lookup);
}

static void dns_answer(void *arg, int err, struct ub_result *result);

/* dns_ask - send one query; false when libunbound refused it */
static bool dns_ask(DNS_LOOKUP *lookup, const char *name, int type, size_t host)
{
    DNS_QUERY *query = mycalloc(1, sizeof(*query));
    int err;

    query->lookup = lookup;
    query->type = type;
    query->host = host;
    if ((err = ub_resolve_async(lookup->ctx->ub, name, type, DNS_CLASS_IN,
                                query, dns_answer, &query->async_id)) != 0) {
        myfree(query);
        dns_decide(lookup, DNS_TEMP, "4.4.3",
                   "Name service error for name=%s type=%s: %s", name,
                   dns_type_name(type), ub_strerror(err));
        return false;
    }
    query->next = lookup->queries;
    lookup->queries = query;
    return true;
}

/* dns_ask_hosts - A (and AAAA) of every host */
static void dns_ask_hosts(DNS_LOOKUP *lookup)
{
    for (size_t i = 0; i < lookup->host_count; i++) {
        if (!dns_ask(lookup, lookup->hosts[i].name, DNS_TYPE_A, i))
            return;
        if (lookup->ctx->ipv6 &&
            !dns_ask(lookup, lookup->hosts[i].name, DNS_TYPE_AAAA, i))
            return;
        lookup->hosts[i].asked = true;
    }
}

/* dns_add_host - one more host to resolve */
static void dns_add_host(DNS_LOOKUP *lookup, const char *name, int pref)
{
    DNS_HOST *host;

    lookup->hosts = myrealloc_array(lookup->hosts, lookup->host_count + 1,
                                    sizeof(DNS_HOST));
    host = lookup->hosts + lookup->host_count++;
    memset(host, 0, sizeof(*host));
    host->name = mystrdup(name);
    host->pref = pref;
}

/* dns_mx_answer - the MX records are in: which hosts to resolve */
static void dns_mx_answer(DNS_LOOKUP *lookup, struct ub_result *result)
{
    DNS_MX *mx;
    size_t count = 0;
    size_t n = 0;

    lookup->mx_secure = result->secure;
    while (result->havedata && result->data[count] != NULL)
        count++;
    if (count == 0) {
        /* No MX: the name's own addresses (RFC 5321 5.1). */
        dns_add_host(lookup, lookup->name, 0);
        dns_ask_hosts(lookup);
        return;
    }
    mx = mymalloc_array(count, sizeof(DNS_MX));
    for (size_t i = 0; i < count; i++) {
        if (dns_mx_parse((const unsigned char *) result->data[i],
                         (size_t) result->len[i], mx + n) == 0)
            n++;
        else
            msg_warn("DNS: %s: malformed MX record ignored", lookup->name);
    }
    if (dns_mx_null(mx, n)) {
        dns_decide(lookup, DNS_PERM, "5.1.10",
                   "%s: null MX: domain accepts no mail", lookup->name);
    } else {
        dns_mx_sort(mx, n, dns_rnd, &lookup->ctx->rnd_state);
        for (size_t i = 0;
             i < n && lookup->host_count < lookup->ctx->mx_host_limit; i++)
            if (strcmp(mx[i].host, ".") != 0)
                dns_add_host(lookup, mx[i].host, mx[i].pref);
        if (lookup->host_count == 0)
            dns_decide(lookup, DNS_PERM, "5.4.4", "%s: MX records name no host",
                       lookup->name);
        else
            dns_ask_hosts(lookup);
    }
    for (size_t i = 0; i < n; i++)
        myfree(mx[i].host);
    myfree(mx);
}

/* dns_addr_answer - A or AAAA records of one host */
static void dns_addr_answer(DNS_LOOKUP *lookup, const DNS_QUERY *query,
                            struct ub_result *result)
{
    DNS_HOST *host = lookup->hosts + query->host;
    int family = query->type == DNS_TYPE_A ? AF_INET : AF_INET6;
    size_t want = family == AF_INET ? 4 : 16;

    if (!result->secure)
        host->insecure = true;
    if (result->canonname != NULL && host->cname[0] == 0) {
        size_t len = strlen(result->canonname);

        if (len > 1 && result->canonname[len - 1] == '.')
            len--;
        if (len < sizeof(host->cname) &&
            (strncasecmp(result->canonname, host->name, len) != 0 ||
             (host->name[len] != 0 && strcmp(host->name + len, ".") != 0))) {
            memcpy(host->cname, result->canonname, len);
            host->cname[len] = 0;
        }
    }
    /* An alias whose chain ends unvalidated: is its own CNAME record
       validated? (RFC 7672 2.2.2: then TLSA records are looked up at the
       alias.) Asked once, only where answers can be validated. */
    if (host->cname[0] && host->insecure && !host->cname_asked &&
        lookup->ctx->dnssec && lookup->mx_secure) {
        host->cname_asked = true;
        (void) dns_ask(lookup, host->name, DNS_TYPE_CNAME, query->host);
    }
    for (size_t i = 0; result->havedata && result->data[i] != NULL; i++) {
        DNS_ADDR *addr;

        if ((size_t) result->len[i] != want)
            continue;
        host->addrs =
            myrealloc_array(host->addrs, host->count + 1, sizeof(DNS_ADDR));
        addr = host->addrs + host->count++;
        addr->host = mystrdup(host->name);
        addr->pref = host->pref;
        addr->family = family;
        if (inet_ntop(family, result->data[i], addr->ip, sizeof(addr->ip)) ==
            NULL)
            msg_panic("%s: inet_ntop: %m", __func__);
    }
}

/* dns_ptr_answer - the PTR records are in: ask for the name's address */
static void dns_ptr_answer(DNS_LOOKUP *lookup, struct ub_result *result)
{
    VSTR *name = vstr_alloc(64);
    unsigned char buf[sizeof(struct in6_addr)];
    bool found = false;

    for (size_t i = 0; result->havedata && result->data[i] != NULL; i++) {
        if (dns_name_parse((const unsigned char *) result->data[i],
                           (size_t) result->len[i], name) > 0 &&
            strcmp(vstr_str(name), ".") != 0) {
            found = true;
            break;
        }
    }
    if (!found) {
        dns_decide(lookup, DNS_PERM, "5.7.25", "%s: no usable PTR record",
                   lookup->client_ip);
    } else if (inet_pton(AF_INET, vstr_str(name), buf) == 1 ||
               inet_pton(AF_INET6, vstr_str(name), buf) == 1) {
        /* A name that is an address proves nothing (Postfix refuses it
           too). */
        dns_decide(lookup, DNS_PERM, "5.7.25", "%s: numeric host name %s",
                   lookup->client_ip, vstr_str(name));
    } else {
        lookup->reply.ptr_name = mystrdup(vstr_str(name));
        dns_add_host(lookup, vstr_str(name), 0);
        if (dns_ask(lookup, vstr_str(name),
                    lookup->family == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA, 0))
            lookup->hosts[0].asked = true;
    }
    vstr_free(name);
}

/* dns_ptr_step - one answer of a PTR lookup: the PTR, or the address */
static void dns_ptr_step(DNS_LOOKUP *lookup, const DNS_QUERY *query, int err,
                         struct ub_result *result)
{
    bool nxdomain =
        err == 0 && (result->nxdomain || result->rcode == DNS_RCODE_NXDOMAIN);

    if (query->type == DNS_TYPE_PTR) {
        if (err != 0)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "%s: PTR lookup of %s failed: %s", lookup->client_ip,
                       lookup->name, ub_strerror(err));
        else if (nxdomain)
            dns_decide(lookup, DNS_PERM, "5.7.25", "%s: no PTR record",
                       lookup->client_ip);
        else if (result->rcode != 0)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "%s: PTR lookup of %s failed: server error (rcode %d)",
                       lookup->client_ip, lookup->name, result->rcode);
        else
            dns_ptr_answer(lookup, result);
    } else if (err != 0 || (!nxdomain && result->rcode != 0)) {
        lookup->hosts[0].temp_fail = true;
    } else if (!nxdomain) {
        dns_addr_answer(lookup, query, result);
    }
}

/* dns_ptr_confirm - does the PTR name lead back to the address? */
static void dns_ptr_confirm(DNS_LOOKUP *lookup)
{
    const DNS_HOST *host = lookup->hosts;

    for (size_t i = 0; i < host->count; i++) {
        if (strcmp(host->addrs[i].ip, lookup->client_ip) == 0) {
            lookup->reply.name = mystrdup(host->name);
            dns_decide(lookup, DNS_OK, "2.0.0", "%s is %s", lookup->client_ip,
                       host->name);
            return;
        }
    }
    if (host->temp_fail)
        dns_decide(lookup, DNS_TEMP, "4.4.3",
                   "hostname %s verification failed: address lookup failed,"
                   " try again",
                   host->name);
    else
        dns_decide(lookup, DNS_PERM, "5.7.25",
                   "hostname %s does not resolve to address %s", host->name,
                   lookup->client_ip);
}

/* dns_txt_answer - the TXT query of dns_lookup_txt was answered */
static void dns_txt_answer(DNS_LOOKUP *lookup, int err,
                           struct ub_result *result)
{
    VSTR *text;

    if (err != 0) {
        dns_decide(lookup, DNS_TEMP, "4.4.3",
                   "Name service error for name=%s type=TXT: %s", lookup->name,
                   ub_strerror(err));
        return;
    }
    if (result->nxdomain || result->rcode == DNS_RCODE_NXDOMAIN) {
        dns_decide(lookup, DNS_PERM, "5.1.2",
                   "Name service error for name=%s type=TXT: Host not found",
                   lookup->name);
        return;
    }
    if (result->rcode != 0) {
        dns_decide(lookup, DNS_TEMP, "4.4.3",
                   "Name service error for name=%s type=TXT: server error "
                   "(rcode %d)",
                   lookup->name, result->rcode);
        return;
    }
    text = vstr_alloc(100);
    lookup->reply.texts = argv_alloc(4);
    for (size_t i = 0; result->havedata && result->data[i] != NULL; i++) {
        if (dns_txt_parse((const unsigned char *) result->data[i],
                          (size_t) result->len[i], text) == 0)
            argv_addn(lookup->reply.texts, vstr_str(text), vstr_len(text));
        else
            msg_warn("DNS: %s: malformed TXT record ignored", lookup->name);
    }
    vstr_free(text);
    dns_decide(lookup, DNS_OK, "2.0.0", "%zu TXT records",
               lookup->reply.texts->argc);
}

/* dns_tlsa_answer - the TLSA query of dns_lookup_tlsa was answered */
static void dns_tlsa_answer(DNS_LOOKUP *lookup, int err,
                            struct ub_result *result)
{
    size_t count = 0;

    if (err != 0) {
        dns_decide(lookup, DNS_TEMP, "4.4.3",
                   "Name service error for name=%s type=TLSA: %s", lookup->name,
                   ub_strerror(err));
        return;
    }
    if (result->bogus) {
        lookup->reply.bogus = true;
        dns_decide(lookup, DNS_TEMP, "4.7.5",
                   "DNSSEC validation failed for name=%s type=TLSA: %s",
                   lookup->name,
                   result->why_bogus ? result->why_bogus : "bogus answer");
        return;
    }
    if (result->rcode != 0 && !result->nxdomain &&
        result->rcode != DNS_RCODE_NXDOMAIN) {
        dns_decide(lookup, DNS_TEMP, "4.4.3",
                   "Name service error for name=%s type=TLSA: server error "
                   "(rcode %d)",
                   lookup->name, result->rcode);
        return;
    }
    lookup->reply.secure = result->secure;
    while (result->havedata && result->data[count] != NULL)
        count++;
    if (count > 0) {
        lookup->reply.rrs = mymalloc_array(count, sizeof(DNS_RR));
        for (size_t i = 0; i < count; i++) {
            lookup->reply.rrs[i].len = (size_t) result->len[i];
            lookup->reply.rrs[i].data = mymalloc(lookup->reply.rrs[i].len + 1);
            memcpy(lookup->reply.rrs[i].data, result->data[i],
                   lookup->reply.rrs[i].len);
        }
        lookup->reply.rr_count = count;
    }
    dns_decide(lookup, DNS_OK, "2.0.0", "%zu TLSA records (%s)", count,
               result->secure ? "secure" : "insecure");
}

/* dns_answer - libunbound callback for one query */
static void dns_answer(void *arg, int err, struct ub_result *result)
{
    DNS_QUERY *query = arg;
    DNS_LOOKUP *lookup = query->lookup;
    DNS_QUERY **qp;

    for (qp = &lookup->queries; *qp != NULL; qp = &(*qp)->next) {
        if (*qp == query) {
            *qp = query->next;
            break;
        }
    }
    if (lookup->txt) {
        dns_txt_answer(lookup, err, result);
    } else if (lookup->tlsa) {
        dns_tlsa_answer(lookup, err, result);
    } else if (lookup->ptr) {
        dns_ptr_step(lookup, query, err, result);
    } else if (err != 0) {
        if (query->type == DNS_TYPE_MX)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=MX: %s",
                       lookup->name, ub_strerror(err));
        else
            lookup->hosts[query->host].temp_fail = true;
    } else if (query->type == DNS_TYPE_CNAME) {
        /* a host's own CNAME record (dns_addr_answer) */
        lookup->hosts[query->host].alias_secure =
            result->secure && !result->bogus && result->havedata;
    } else if (query->type == DNS_TYPE_MX) {
        if (result->bogus)
            dns_decide(lookup, DNS_TEMP, "4.7.5",
                       "DNSSEC validation failed for name=%s type=MX: %s",
                       lookup->name,
                       result->why_bogus ? result->why_bogus : "bogus answer");
        else if (result->nxdomain || result->rcode == DNS_RCODE_NXDOMAIN)
            dns_decide(lookup, DNS_PERM, "5.1.2",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=MX: Host not found",
                       lookup->name);
        else if (result->rcode != 0)
            dns_decide(lookup, DNS_TEMP, "4.4.3",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=MX: Host not found, try again",
                       lookup->name);
        else
            dns_mx_answer(lookup, result);
    } else {
        if (result->bogus) {
            msg_warn("DNS: DNSSEC validation failed for name=%s type=%s: %s",
                     lookup->hosts[query->host].name,
                     dns_type_name(query->type),
                     result->why_bogus ? result->why_bogus : "bogus answer");
            lookup->hosts[query->host].temp_fail = true;
        } else if (result->rcode != 0 && !result->nxdomain &&
                   result->rcode != DNS_RCODE_NXDOMAIN)
            lookup->hosts[query->host].temp_fail = true;
        else if (!lookup->mx &&
                 (result->nxdomain || result->rcode == DNS_RCODE_NXDOMAIN))
            dns_decide(lookup, DNS_PERM, "5.1.2",
                       "Host or domain name not found. Name service error "
                       "for name=%s type=%s: Host not found",
                       lookup->name, dns_type_name(query->type));
        else
            dns_addr_answer(lookup, query, result);
    }
    if (result)
        ub_resolve_free(result);
    myfree(query);
    if (lookup->decided) {
        dns_finish(lookup);
    } else if (lookup->queries == NULL) {
        if (lookup->ptr)
            dns_ptr_confirm(lookup);
        else
            dns_assemble(lookup);
        dns_finish(lookup);
    }
}

/* dns_lookup_ptr - start a forward-confirmed reverse lookup */
DNS_LOOKUP *dns_lookup_ptr(DNS_CTX *ctx, const char *addr, int timeout,
                           DNS_CALLBACK callback, void *arg)
{
    DNS_LOOKUP *lookup = mycalloc(1, sizeof(*lookup));
    unsigned char buf[sizeof(struct in6_addr)];
    struct timeval deadline = {timeout > 0 ? timeout : 1, 0};
    VSTR *query = vstr_alloc(80);

    lookup->ctx = ctx;
    lookup->ptr = true;
    lookup->timeout = (int) deadline.tv_sec;
    lookup->callback = callback;
    lookup->arg = arg;
    lookup->reply.reason = vstr_alloc(100);
    lookup->timer = evtimer_new(ctx->base, dns_timer, lookup);
    if (lookup->timer == NULL)
        msg_fatal("cannot create a DNS timer");
    if ((lookup->next = ctx->lookups) != NULL)
        lookup->next->prev = lookup;
    ctx->lookups = lookup;

    lookup->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    if (dns_ptr_query(addr, query) < 0 ||
        inet_pton(lookup->family, addr, buf) != 1 ||
        inet_ntop(lookup->family, buf, lookup->client_ip,
                  sizeof(lookup->client_ip)) == NULL) {
        snprintf(lookup->client_ip, sizeof(lookup->client_ip), "%s", "?");
        lookup->name = mystrdup(addr);
        dns_decide(lookup, DNS_PERM, "5.7.25", "\"%s\" is not an IP address",
                   addr);
        dns_finish(lookup);
    } else if (ctx->ub == NULL) {
        lookup->name = vstr_export(query);
        query = NULL;
        dns_decide(
            lookup, DNS_TEMP, "4.4.3",
            "%s: DNS lookups are disabled (disable_dns_lookups = yes, or "
            "smtp_dns_support_level = disabled in smtp)",
            addr);
        dns_finish(lookup);
    } else {
        lookup->name = vstr_export(query);
        query = NULL;
        if (dns_ask(lookup, lookup->name, DNS_TYPE_PTR, 0))
            event_add(lookup->timer, &deadline);
        else
            dns_finish(lookup);
    }
    if (query)
        vstr_free(query);
    return lookup;
}

/* dns_lookup_one - start a lookup of one record type (TXT, TLSA) */
static DNS_LOOKUP *dns_lookup_one(DNS_CTX *ctx, const char *name, int type,
                                  int timeout, DNS_CALLBACK callback, void *arg)
{
    DNS_LOOKUP *lookup = mycalloc(1, sizeof(*lookup));
    struct timeval deadline = {timeout > 0 ? timeout : 1, 0};

    lookup->ctx = ctx;
    lookup->name = mystrdup(name);
    lookup->txt = type == DNS_TYPE_TXT;
    lookup->tlsa = type == DNS_TYPE_TLSA;
    lookup->timeout = (int) deadline.tv_sec;
    lookup->callback = callback;
    lookup->arg = arg;
    lookup->reply.reason = vstr_alloc(100);
    lookup->timer = evtimer_new(ctx->base, dns_timer, lookup);
    if (lookup->timer == NULL)
        msg_fatal("cannot create a DNS timer");
    if ((lookup->next = ctx->lookups) != NULL)
        lookup->next->prev = lookup;
    ctx->lookups = lookup;

    if (ctx->ub == NULL) {
        dns_decide(
            lookup, DNS_TEMP, "4.4.3",
            "%s: DNS lookups are disabled (disable_dns_lookups = yes, or "
            "smtp_dns_support_level = disabled in smtp)",
            name);
        dns_finish(lookup);
    } else if (dns_ask(lookup, name, type, 0)) {
        event_add(lookup->timer, &deadline);
    } else {
        dns_finish(lookup);
    }
    return lookup;
}

/* dns_lookup_txt - start a TXT lookup */
DNS_LOOKUP *dns_lookup_txt(DNS_CTX *ctx, const char *name, int timeout,
                           DNS_CALLBACK callback, void *arg)
{
    return dns_lookup_one(ctx, name, DNS_TYPE_TXT, timeout, callback, arg);
}

/* dns_lookup_tlsa - start a TLSA lookup */
DNS_LOOKUP *dns_lookup_tlsa(DNS_CTX *ctx, const char *name, int timeout,
                            DNS_CALLBACK callback, void *arg)
{
    return dns_lookup_one(ctx, name, DNS_TYPE_TLSA, timeout, callback, arg);
}

/* dns_ctx_dnssec - is anything validated? */
bool dns_ctx_dnssec(const DNS_CTX *ctx)
{
    return ctx->dnssec;
}

/* dns_lookup - start a lookup */
DNS_LOOKUP *dns_lookup(DNS_CTX *ctx, const char *name, bool mx, int timeout,
                       DNS_CALLBACK callback, void *arg)
{
    DNS_LOOKUP *lookup = mycalloc(1, sizeof(*lookup));
    unsigned char buf[sizeof(struct in6_addr)];
    struct timeval deadline = {timeout > 0 ? timeout : 1, 0};

    lookup->ctx = ctx;
    lookup->name = mystrdup(name);
    lookup->mx = mx;
    lookup->mx_secure = !mx; /* set by the MX answer */
    lookup->timeout = (int) deadline.tv_sec;
    lookup->callback = callback;
    lookup->arg = arg;
    lookup->reply.reason = vstr_alloc(100);
    lookup->timer = evtimer_new(ctx->base, dns_timer, lookup);
    if (lookup->timer == NULL)
        msg_fatal("cannot create a DNS timer");
    if ((lookup->next = ctx->lookups) != NULL)
        lookup->next->prev = lookup;
    ctx->lookups = lookup;

    if (inet_pton(AF_INET, name, buf) == 1 ||
        inet_pton(AF_INET6, name, buf) == 1) {
        /* An address needs no DNS. */
        lookup->reply.addrs = mycalloc(1, sizeof(DNS_ADDR));
        lookup->reply.addrs[0].host = mystrdup(name);
        lookup->reply.addrs[0].family = strchr(name, ':') ? AF_INET6 : AF_INET;
        snprintf(lookup->reply.addrs[0].ip, sizeof(lookup->reply.addrs[0].ip),
                 "%s", name);
        lookup->reply.count = 1;
        dns_decide(lookup, DNS_OK, "2.0.0", "address literal");
        dns_finish(lookup);
    } else if (ctx->ub == NULL) {
        dns_decide(
            lookup, DNS_TEMP, "4.4.3",
            "%s: DNS lookups are disabled (disable_dns_lookups = yes, or "
            "smtp_dns_support_level = disabled in smtp)",
            name);
        dns_finish(lookup);
    } else if (mx) {
        if (dns_ask(lookup, name, DNS_TYPE_MX, 0))
            event_add(lookup->timer, &deadline);
        else
            dns_finish(lookup);
    } else {
        dns_add_host(lookup, name, 0);
        dns_ask_hosts(lookup);
        if (lookup->decided)
            dns_finish(lookup);
        else
            event_add(lookup->timer, &deadline);
    }
    return lookup;
}
