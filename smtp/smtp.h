/*
 * smtp - internals shared by the SMTP delivery agent's modules
 *
 * smtp.c          main: main.cf, the server skeleton's callbacks
 * smtp_request.c  the qmgr side: reading a delivery request (DELIVER, its
 *                 RCPT lists) with the reader every agent shares
 *                 (global/deliver_agent.h, global/deliver_proto.h), each
 *                 recipient's RESULT with its log line
 *                 (global/deliver_log.h), then DONE
 * smtp_connect.c  where to: the next hop's addresses (global/dns.h),
 *                 trying them in order (next MX), the connection cache
 * smtp_dane.c     DANE (RFC 7672, global/dane.h): each MX host's TLSA
 *                 records and the level of a connection to it
 * smtp_sts.c      MTA-STS (global/mta_sts.h): the recipient domain's
 *                 policy before routing; which MX hosts it allows
 * smtp_session.c  one connection's I/O: a libevent bufferevent, the timer
 *                 of each phase, the content read from the queue file;
 *                 it feeds server replies to the conversation and does
 *                 what it says
 * smtp_proto.c    everything without I/O (smtp_proto.h): the conversation
 *                 (SMTP_PROTO: states, commands, per-recipient outcomes),
 *                 reply parsing, the verdict table, EHLO keywords,
 *                 enhanced status codes, next-hop syntax, the content
 *                 encoder; unit tested by smtp_proto_test.c (the pieces)
 *                 and smtp_machine_test.c (the conversation, with
 *                 scripted replies)
 */
#ifndef SMTP_H
#define SMTP_H

#include "sys_defs.h"

#include <arpa/inet.h>
#include <sys/time.h>

#include "attr.h"
#include "attr_conn.h"
#include "bounce_class.h"
#include "conn_stats.h"
#include "dane.h"
#include "deliver_agent.h"
#include "dns.h"
#include "mail_server.h"
#include "maps.h"
#include "mta_sts.h"
#include "qfile.h"
#include "smtp_proto.h"
#include "tls_client.h"
#include "vstr.h"

struct bufferevent;
struct event;

#define SMTP_BUSY_REQUESTS 500 /* requests in hand: tell master busy */
#define SMTP_QUIT_WAIT_MAX 5 /* at most this long for a reply to QUIT */
#define SMTP_CONTENT_HIGH (256 * 1024) /* content queued to a server */
#define SMTP_CONTENT_LOW (64 * 1024) /* refill below this */
#define SMTP_LINE_MAX (2 * SMTP_REPLY_LINE_MAX) /* unterminated reply line */
#define SMTP_BAD_LINE_SHOWN 100 /* of a malformed reply line, in the log */

/* What main.cf says, read once. */
typedef struct SMTP_CONF {
    char *queue_dir;
    char *helo_name;
    char *bind_address;
    int tcp_port;
    int connect_timeout;
    int helo_timeout;
    int mail_timeout;
    int rcpt_timeout;
    int data_init_timeout;
    int data_xfer_timeout;
    int data_done_timeout;
    int quit_timeout;
    int rset_timeout;
    int dns_timeout;
    int ipc_timeout;
    int cache_time;
    int reuse_limit;
    bool soft_bounce;
    /* TLS (global/tls_client.h) and AUTH */
    TLS_LEVEL tls_level;
    char *tls_protocols;
    char *tls_mandatory_protocols;
    ARGV *tls_verify_match;
    ARGV *tls_secure_match;
    TLS_DNS_SUPPORT dns_support; /* smtp_dns_support_level, resolved */
    char *tls_fprint_digest; /* smtp_tls_fingerprint_digest */
    ARGV *tls_fprint_match; /* smtp_tls_fingerprint_cert_match, canonical */
    int starttls_timeout;
    int tls_loglevel; /* 0: no summary line */
    bool mta_sts; /* smtp_mta_sts_enable */
    bool sasl_enable;
    bool sasl_noplain; /* smtp_sasl_security_options has noplaintext */
    bool sasl_tls_noplain; /* ... smtp_sasl_tls_security_options */
    /* bounce_verp_domain and the feedback key: NULL when VERP is off */
    char *verp_domain;
    VSTR *verp_key;
} SMTP_CONF;

typedef struct SMTP_SESS SMTP_SESS;
typedef struct SMTP_REQ SMTP_REQ;

typedef struct SMTP_CTX {
    SMTP_CONF conf;
    MAIL_SERVER *server;
    DNS_CTX *dns;
    int req_count;
    bool busy;
    /* Every request and every connection, whatever its state: listed so
       that they stay reachable at exit (a SIGTERM leaves them as they are,
       hanging on the event base mail_server_main() frees; leak checkers) */
    SMTP_REQ *reqs;
    SMTP_SESS *sessions;
    SMTP_SESS *cache; /* idle connections */
    SMTP_SESS *grouped; /* every connection with a conn_group */
    SMTP_REQ *slot_reqs; /* requests holding or waiting for a slot */
    struct event *slot_ev; /* waiting requests try again */
    TLS_CLIENT *tls;
    MAPS *tls_policy; /* smtp_tls_policy_maps */
    MAPS *sasl_passwd; /* smtp_sasl_password_maps */
    MTA_STS_CTX *sts; /* NULL: MTA-STS off (or no DNS) */
    BOUNCE_CLASS_RULES *bounce_classes; /* bounce_classes_file */
    CONN_STATS *conn_stats; /* open connections for the metrics; NULL:
                               not counted */
} SMTP_CTX;

/* One connection to a server. What the conversation stands at is in
   proto (smtp_proto.h); the rest is I/O. */
struct SMTP_SESS {
    SMTP_CTX *ctx;
    SMTP_REQ *req; /* NULL when idle or closing */
    struct bufferevent *bev;
    struct event *timer;
    char *nexthop; /* the cache key, with source */
    char *source; /* the local address it is bound to, "": any */
    char *policy_key; /* the TLS and MTA-STS requirements it was opened
                         under (smtp_req_policy_key): reused only for a
                         request with the same */
    char *host;
    char ip[INET6_ADDRSTRLEN];
    int port;
    VSTR *label; /* "host[ip]" */
    bool connected;
    int uses; /* transactions started */
    long long conn_messages; /* of the request of the last one: close
                                after that many, 0: no such limit */
    SMTP_REPLY *reply; /* the reply being read */
    SMTP_PROTO *proto; /* the conversation */
    SMTP_PROTO_TXN txn; /* the transaction, for proto */
    SMTP_PROTO_RCPT *txn_rcpts;
    bool broken; /* never reuse */
    off_t content_pos;
    SMTP_ENC enc;
    VSTR *out;
    SMTP_SESS *next; /* the cache */
    SMTP_SESS *all_prev; /* ctx->sessions */
    SMTP_SESS *all_next;
    char *conn_group; /* its request's conn_group, NULL: none */
    SMTP_SESS *group_next; /* ctx->grouped */
    TLS_LEVEL tls_level; /* this connection's (none after a fallback) */
    bool tls_handshake; /* the handshake after STARTTLS is under way */
    const char *tls_word; /* once TLS is up and accepted: Verified,
                             Trusted, Untrusted or Anonymous (for the
                             events); NULL: plain text */
    char tls_version[32]; /* ... its protocol and cipher */
    char tls_cipher[64];
    DANE_TLSA *tlsa; /* at TLS_LEV_DANE: the host's TLSA records */
    size_t tlsa_count;
    char *tlsa_base; /* ... their TLSA base domain (the host, or the name
                        its CNAME chain ends at); NULL: not DANE */
    bool auth_done; /* AUTH tried on this connection */
    bool setup_reported; /* its setup time went with a RESULT (once) */
    bool stats_counted; /* an open connection in ctx->conn_stats */
    const char *fail_reply; /* the reply a site failure is about (set
                               around smtp_sess_site_fail), NULL: none */
};

typedef enum SMTP_RCPT_STATE {
    SMTP_RCPT_PENDING, /* no RESULT sent yet */
    SMTP_RCPT_DONE, /* RESULT sent */
} SMTP_RCPT_STATE;

typedef struct SMTP_RCPT {
    long long offset;
    char *address;
    char *orcpt;
    char *notify;
    SMTP_RCPT_STATE state;
} SMTP_RCPT;

/* A request and the conn_max of its conn_group (smtp_connect.c). */
typedef enum SMTP_SLOT {
    SMTP_SLOT_NONE, /* none needed or none held */
    SMTP_SLOT_HELD, /* may open a connection: counted until it has one */
    SMTP_SLOT_WAITING, /* the group is full: resumes when one closes */
} SMTP_SLOT;

typedef enum SMTP_REQ_STAGE {
    SMTP_REQ_READ_DELIVER,
    SMTP_REQ_READ_RCPT,
    SMTP_REQ_WORKING,
    SMTP_REQ_DONE, /* DONE queued: free when it is out */
} SMTP_REQ_STAGE;

struct SMTP_REQ {
    SMTP_CTX *ctx;
    ATTR_CONN *qmgr;
    /* A kept connection waiting for qmgr's next DELIVER (after a DONE):
       not counted in req_count until that DELIVER comes. */
    bool idle;
    SMTP_REQ *all_prev; /* ctx->reqs */
    SMTP_REQ *all_next;
    SMTP_REQ_STAGE stage;
    DELIVER_READER reader; /* the request while it is read */
    char *queue_name;
    char *qid;
    char *nexthop;
    char *sender;
    char *verp_sender; /* MAIL FROM with VERP (global/verp.h), or NULL */
    long long active_usec;
    long long rcpt_want;
    long long conn_messages; /* messages per connection, 0: no limit */
    char *conn_group; /* NULL: none */
    long long conn_max; /* connections of conn_group, 0: no limit */
    char *source_address; /* qmgr's source: bind to it; NULL: the
                             configured smtp_bind_address */
    char *source_helo; /* its EHLO name; NULL: smtp_helo_name */
    bool source_failed; /* source_address could not be bound */
    SMTP_SLOT slot;
    void (*slot_resume)(SMTP_REQ *req); /* when a waiting one goes on */
    SMTP_REQ *slot_next; /* ctx->slot_reqs */
    SMTP_RCPT *rcpts;
    size_t rcpt_count;
    int fd; /* the queue file, -1 */
    QFILE_INFO *info;
    /* The content is read through this window of the file (one pread per
       SMTP_WINDOW_SIZE, not two per record): bytes from window_off on.
       NULL until the content is first read. */
    VSTR *window;
    off_t window_off;
    VSTR *host;
    int port;
    bool mx;
    DNS_LOOKUP *lookup;
    DNS_ADDR *addrs;
    size_t addr_count;
    size_t addr_next;
    SMTP_SESS *sess;
    bool from_cache; /* sess came from the cache */
    struct timeval t_request;
    struct timeval t_conn; /* setup done; 0 until then */
    VSTR *site_reason; /* the last address's failure */
    VSTR *site_diag; /* ... "smtp; REPLY" when a server said it, else "" */
    char site_dsn[16];
    VSTR *why;
    VSTR *wire; /* lists for qmgr not yet sent */
    struct event *flush_ev; /* sends wire after this loop pass */
    /* The next hop's TLS policy (smtp_req_policy). */
    TLS_LEVEL tls_level;
    ARGV *tls_match; /* NULL: the level's default */
    char *tls_protocols;
    bool tls_plain_retry; /* the next connection goes without TLS */
    bool tls_from_map; /* smtp_tls_policy_maps had an entry */
    TLS_LEVEL conn_level; /* the next connection's (dane: per MX host) */
    /* DANE (smtp_dane.c): the TLSA records of the last MX host asked */
    DNS_LOOKUP *tlsa_lookup;
    char *tlsa_host; /* NULL: none asked yet */
    char *tlsa_base; /* where the records came from: tlsa_host or the
                        end of its secure CNAME chain (RFC 7672 2.2.2) */
    bool tlsa_then_host; /* the lookup under way is at the chain's end:
                            no records there, ask at tlsa_host */
    DANE_TLSA_STATE tlsa_state;
    DANE_TLSA *tlsa;
    size_t tlsa_count;
    /* The recipient domain's MTA-STS policy (smtp_sts.c). */
    MTA_STS_LOOKUP *sts_lookup;
    MTA_STS_MODE sts_mode; /* NONE: no policy applies */
    ARGV *sts_mx; /* its mx patterns */
};

/* smtp_request.c */
extern void smtp_accept(MAIL_SERVER *server, int fd, void *arg);
extern void smtp_req_result(SMTP_REQ *req, size_t index, const char *action,
                            const char *dsn_in, const char *reason,
                            const char *relay, const char *diagnostic,
                            const char *remote_mta);
extern void smtp_req_fail_all(SMTP_REQ *req, const char *action,
                              const char *dsn, const char *reason,
                              const char *relay, const char *diagnostic,
                              const char *remote_mta);
extern void smtp_req_done(SMTP_REQ *req, int status, bool site_failed,
                          const char *reason);
extern void smtp_req_site_failed(SMTP_REQ *req);

/* smtp_connect.c */
extern bool smtp_req_policy(SMTP_REQ *req);
extern void smtp_req_route(SMTP_REQ *req);
extern void smtp_req_try_next(SMTP_REQ *req);
extern void smtp_cache_remove(SMTP_SESS *sess);
/* smtp_req_policy_key - what a connection for req must satisfy, as a
   string: level, match names, protocols, MTA-STS mode and mx patterns */
extern void smtp_req_policy_key(const SMTP_REQ *req, VSTR *out);
/* smtp_slot_release - req needs its slot no more (it has a connection,
   is done or freed) */
extern void smtp_slot_release(SMTP_REQ *req);
/* smtp_group_add, smtp_group_remove - a connection of sess->conn_group
   opens, closes (the waiting requests of the group try again) */
extern void smtp_group_add(SMTP_SESS *sess);
extern void smtp_group_remove(SMTP_SESS *sess);
/* smtp_slot_wake - a connection went idle into the cache: waiting
   requests try again (they may close it, or reuse it) */
extern void smtp_slot_wake(SMTP_CTX *ctx);

/* smtp_sts.c */
extern void smtp_req_sts(SMTP_REQ *req);
extern bool smtp_sts_filter(SMTP_REQ *req);
extern void smtp_sts_tls_check(SMTP_SESS *sess, SSL *ssl);
extern void smtp_sts_no_tls(SMTP_SESS *sess);

/* smtp_dane.c */
extern int smtp_dane_level(SMTP_REQ *req, const DNS_ADDR *addr, VSTR *why);
extern void smtp_dane_forget(SMTP_REQ *req);

/* smtp_session.c */
extern SMTP_SESS *smtp_sess_open(SMTP_REQ *req, const DNS_ADDR *addr, int fd,
                                 VSTR *why);
extern void smtp_sess_reuse(SMTP_SESS *sess, SMTP_REQ *req);
extern void smtp_sess_free(SMTP_SESS *sess);
extern void smtp_sess_quit(SMTP_SESS *sess);

#endif
