/*
 * smtpd - internals shared by the SMTP server's modules
 *
 * smtpd.c        the daemon: configuration, client connections (libevent
 *                bufferevents), reading command lines and message content,
 *                the connection to cleanup, logging
 * smtpd_proto.c  the protocol without I/O: the command parser and the
 *                session state machine (SMTPD_PROTO), and the DATA content
 *                decoder (SMTPD_DATA); unit tested by smtpd_proto_test.c
 * smtpd_sasl.c   SMTP AUTH through Cyrus SASL (libsasl2)
 * smtpd_milter.c the milter client (smtpd_milters): events to each
 *                milter, its verdicts, its header and body changes
 * smtpd_check.c  the access restrictions (smtpd_*_restrictions, access
 *                tables, local_recipient_maps), evaluated at RCPT; also
 *                unit tested by smtpd_proto_test.c
 *
 * The I/O layer hands smtpd_proto_command() one command line at a time
 * (without its line ending) and gets back the reply text and an action.
 * Actions that need cleanup (a recipient, the end of DATA) are completed
 * later with smtpd_proto_rcpt_done() / smtpd_proto_data_done(), which
 * write the reply that the client then sees, so replies stay in order.
 */
#ifndef SMTPD_H
#define SMTPD_H

#include "sys_defs.h"

#include "argv.h"
#include "maps.h"
#include "match_list.h"
#include "vstr.h"

/* The restriction lists, in the order they are evaluated at RCPT TO (as
   Postfix does with smtpd_delay_reject = yes). */
typedef enum SMTPD_LIST {
    SMTPD_LIST_CLIENT, /* smtpd_client_restrictions */
    SMTPD_LIST_HELO, /* smtpd_helo_restrictions */
    SMTPD_LIST_SENDER, /* smtpd_sender_restrictions */
    SMTPD_LIST_RELAY, /* smtpd_relay_restrictions */
    SMTPD_LIST_RECIPIENT, /* smtpd_recipient_restrictions */
    SMTPD_LIST_COUNT,
} SMTPD_LIST;

/* One compiled restriction list (smtpd_check.c). */
typedef struct SMTPD_RESTRICTIONS SMTPD_RESTRICTIONS;
/* A list of tables opened one by one, each opened again later when it
   cannot be now (smtpd_check.c). */
typedef struct SMTPD_MAPS SMTPD_MAPS;
/* virtual_alias_domains and virtual_alias_maps (smtpd_check.c). */
typedef struct SMTPD_VIRTUAL SMTPD_VIRTUAL;
/* smtpd_authentication_checks, authserv_id, the spf service
   (smtpd_check.c); the SPF result of a session (smtpd_check.c). */
typedef struct SMTPD_AUTH_CONF SMTPD_AUTH_CONF;
typedef struct SMTPD_SPF SMTPD_SPF;
struct MAIL_CONF;
struct SPF_REQUEST;
struct SPF_REPLY;
struct DKIM_REPLY;
/* One SASL server session (smtpd_sasl.c). */
typedef struct SMTPD_SASL SMTPD_SASL;

/* smtpd_tls_security_level */
typedef enum SMTPD_TLS_LEVEL {
    SMTPD_TLS_NONE,
    SMTPD_TLS_MAY, /* offer STARTTLS */
    SMTPD_TLS_ENCRYPT, /* require it before MAIL and AUTH */
} SMTPD_TLS_LEVEL;

/* What the daemon reads from main.cf once. */
/* The last look at the queue file system's free space (queue_minfree):
   one statvfs() a second per process, not one per MAIL. */
typedef struct SMTPD_SPACE_CACHE {
    unsigned long long avail; /* bytes free to us */
    long long when_usec; /* CLOCK_MONOTONIC of the look; -1: none yet */
} SMTPD_SPACE_CACHE;

#define SMTPD_SPACE_CACHE_USEC 1000000 /* how long a look is good for */

typedef struct SMTPD_CONF {
    const char *myhostname;
    const char *mail_name; /* "sluice", for the Received: header */
    const char *banner; /* smtpd_banner, expanded */
    const char *queue_dir;
    const char *myorigin; /* cleanup's domain for an address without one */
    MATCH_LIST *mydestination; /* domains we are the final destination for */
    /* bounce_verp_domain, unsubscribe_mailto_domain, complaint_addresses
       (global/verp_addr.h): their recipients are ours, whatever the other
       lists say; NULL: none */
    const char *verp_domain;
    const char *unsub_domain;
    const char *complaint_addresses;
    MATCH_LIST *relay_domains; /* domains (and subdomains) we relay to */
    MATCH_LIST *mynetworks;
    /* Access control (smtpd_check.c); NULL lists are empty. */
    SMTPD_RESTRICTIONS *restrictions[SMTPD_LIST_COUNT];
    SMTPD_MAPS *local_recipient_maps; /* NULL or empty: every local user */
    SMTPD_VIRTUAL *virtual_alias; /* NULL: no virtual alias domains */
    SMTPD_AUTH_CONF *auth; /* NULL (unit tests): no SPF at all */
    const char *recipient_delimiter; /* "" for none */
    long long message_size_limit; /* bytes; 0: none */
    long long queue_minfree; /* bytes; 0: no check (smtpd keeps at least
                                1.5 x message_size_limit) */
    SMTPD_SPACE_CACHE *space; /* the process's last look; NULL: none kept */
    long long line_length_limit; /* command line bytes */
    int timeout; /* smtpd_timeout, seconds */
    int recipient_limit; /* smtpd_recipient_limit; 0: none */
    int hard_error_limit; /* smtpd_hard_error_limit */
    int soft_error_limit; /* smtpd_soft_error_limit */
    int junk_command_limit; /* smtpd_junk_command_limit; 0: none */
    int error_sleep_ms; /* smtpd_error_sleep_time, milliseconds */
    int session_deadline; /* smtpd_session_deadline, seconds; 0: none */
    int process_connection_limit; /* connections one process serves */
    /* Per-client limits (0: off), counted per smtpd process. */
    int client_connection_count_limit; /* concurrent sessions per IP */
    int client_connection_rate_limit; /* connects per IP per time unit */
    int client_connection_rate_time_unit; /* seconds */
    MATCH_LIST *event_limit_exceptions; /* exempt from the limits */
    bool forbid_bare_newline; /* refuse content with bare LF */
    bool disable_vrfy; /* disable_vrfy_command */
    int unknown_client_code; /* unknown_client_reject_code */
    /* TLS: tls_level is what main.cf asks; tls_offer says STARTTLS can be
       offered (a certificate was loaded). */
    SMTPD_TLS_LEVEL tls_level;
    bool tls_offer;
    bool tls_wrappermode; /* smtps: TLS before the greeting */
    bool tls_received_header; /* (using TLSv1.3 with cipher ...) */
    bool tls_auth_only; /* AUTH only over TLS */
    /* SASL (smtpd_sasl.c); sasl_enable is false when the library could
       not be set up. */
    bool sasl_enable;
    const char *sasl_service; /* smtpd_sasl_service */
    const char *sasl_local_domain; /* "" for none */
    const char *sasl_security_options; /* smtpd_sasl_security_options */
    const char *sasl_tls_security_options;
    int auth_failure_limit; /* smtpd_auth_failure_limit */
    struct SMTPD_MILTER_CONF *milters; /* smtpd_milters; NULL: none */
} SMTPD_CONF;

/* What the I/O layer must do after smtpd_proto_command(). */
typedef enum SMTPD_ACT {
    SMTPD_ACT_REPLY, /* send the reply, go on */
    SMTPD_ACT_RCPT, /* hand proto->rcpt to cleanup, then rcpt_done() */
    SMTPD_ACT_DATA, /* send the 354 reply, then read content */
    SMTPD_ACT_CLOSE, /* send the reply, then close (QUIT, 421) */
    SMTPD_ACT_STARTTLS, /* send the 220 reply, drop the input in hand
                           (CVE-2011-0411), then the TLS handshake */
    SMTPD_ACT_SPF, /* RCPT needs the SPF answer: ask the spf service
                      (smtpd_spf_request), store it (smtpd_spf_store),
                      then smtpd_proto_spf_done() */
} SMTPD_ACT;

/* Per-command counters for the "disconnect from" log line. */
typedef enum SMTPD_CMD {
    SMTPD_CMD_HELO,
    SMTPD_CMD_EHLO,
    SMTPD_CMD_MAIL,
    SMTPD_CMD_RCPT,
    SMTPD_CMD_DATA,
    SMTPD_CMD_RSET,
    SMTPD_CMD_NOOP,
    SMTPD_CMD_VRFY,
    SMTPD_CMD_HELP,
    SMTPD_CMD_QUIT,
    SMTPD_CMD_STARTTLS,
    SMTPD_CMD_AUTH,
    SMTPD_CMD_UNKNOWN,
    SMTPD_CMD_COUNT,
} SMTPD_CMD;

/*
 * One SMTP session, as the protocol sees it. The I/O layer reads the
 * envelope fields (sender, rcpt, ...) when it talks to cleanup.
 */
/* How a client name lookup ended (Postfix's SMTPD_PEER_CODE_*). */
typedef enum SMTPD_PEER_CODE {
    SMTPD_PEER_OK,
    SMTPD_PEER_TEMP, /* DNS failed or timed out: try again later */
    SMTPD_PEER_PERM, /* no name, or no lookup made */
} SMTPD_PEER_CODE;

typedef struct SMTPD_PROTO {
    const SMTPD_CONF *conf;
    char *client_name; /* "unknown" until DNS lookups exist */
    SMTPD_PEER_CODE name_status; /* the forward-confirmed name */
    SMTPD_PEER_CODE reverse_status; /* the PTR alone */
    char *client_addr; /* numeric; "local" for sendmail -bs */
    long local_uid; /* sendmail -bs: the submitting user */
    bool client_trusted; /* client_addr is in mynetworks */
    bool local; /* sendmail -bs: local submission, no client address */
    char *helo_name; /* NULL before HELO/EHLO */
    bool esmtp;
    /* The transaction. */
    bool have_sender;
    VSTR *sender; /* "" for <> */
    long long size; /* SIZE=, -1 when absent */
    bool body_8bit; /* BODY=8BITMIME */
    char *ret; /* RET=FULL|HDRS or NULL */
    char *envid; /* ENVID=, xtext decoded, or NULL */
    int rcpt_count; /* recipients cleanup accepted */
    char *first_rcpt; /* for the Received: header */
    /* The recipient of the last SMTPD_ACT_RCPT. */
    VSTR *rcpt;
    VSTR *orcpt; /* "" when absent */
    VSTR *notify; /* "" when absent */
    /* Session counters; error_count and junk_count restart when a message
       is accepted (Postfix: "errors ... without delivering mail"). */
    int error_count;
    int junk_count; /* NOOP, VRFY, RSET */
    int cmd_total[SMTPD_CMD_COUNT];
    int cmd_ok[SMTPD_CMD_COUNT];
    SMTPD_CMD last_cmd; /* the command being answered */
    /* TLS: tls_info is "TLSv1.3 with cipher X (256/256 bits)" once the
       handshake is done (the I/O layer sets both, smtpd_proto_tls()). */
    bool tls;
    char *tls_info;
    /* SASL: sasl is the library's session (made at EHLO), auth_step true
       while an AUTH exchange waits for the client's next line. */
    SMTPD_SASL *sasl;
    bool auth_step;
    char *auth_mech; /* the mechanism of the exchange in progress */
    char *sasl_method; /* set once authenticated */
    char *sasl_username;
    int auth_failures; /* failed AUTH commands this session */
    bool auth_failed; /* the last AUTH failed: wait before the next reply */
    VSTR *reply; /* the reply text, CRLF after each line */
    VSTR *why; /* scratch */
    SMTPD_SPF *spf; /* the last SPF check (smtpd_check.c); NULL: none */
} SMTPD_PROTO;

extern SMTPD_PROTO *smtpd_proto_alloc(const SMTPD_CONF *conf,
                                      const char *client_name,
                                      const char *client_addr);
extern SMTPD_PROTO *smtpd_proto_free(SMTPD_PROTO *proto);
/* smtpd_proto_set_local - a sendmail -bs session: trusted, may relay, no
   client address (Received: names the user ID instead) */
extern void smtpd_proto_set_local(SMTPD_PROTO *proto, long uid);
/* smtpd_proto_command - one command line (no CR LF; may hold NUL bytes) */
extern SMTPD_ACT smtpd_proto_command(SMTPD_PROTO *proto, const char *line,
                                     size_t len);
/* smtpd_proto_line_too_long - the reply to an overlong command line */
extern SMTPD_ACT smtpd_proto_line_too_long(SMTPD_PROTO *proto);
/* smtpd_proto_tls - the TLS handshake is done (info: the protocol and
   cipher summary): the session starts over, EHLO first (RFC 3207) */
extern void smtpd_proto_tls(SMTPD_PROTO *proto, const char *info);
/* smtpd_proto_protocol - "SMTP", "ESMTP", "ESMTPS", "ESMTPSA" (RFC 3848) */
extern const char *smtpd_proto_protocol(const SMTPD_PROTO *proto);
/* smtpd_proto_spf_done - the SPF answer is stored: the recipient of the
   SMTPD_ACT_SPF is evaluated again (SMTPD_ACT_RCPT, or a reply) */
extern SMTPD_ACT smtpd_proto_spf_done(SMTPD_PROTO *proto);
/* smtpd_proto_rcpt_done - cleanup took the recipient (ok) or failed */
extern SMTPD_ACT smtpd_proto_rcpt_done(SMTPD_PROTO *proto, bool ok);

/* How a message's content ended, for smtpd_proto_data_done(). */
typedef enum SMTPD_DATA_STATUS {
    SMTPD_DATA_OK, /* committed: queue_id is set */
    SMTPD_DATA_TOO_BIG, /* over message_size_limit */
    SMTPD_DATA_BARE_LF, /* bare LF and smtpd_forbid_bare_newline */
    SMTPD_DATA_CLEANUP, /* cleanup failed or went away */
    SMTPD_DATA_REJECT, /* cleanup refused: reason holds "5.x.y text" */
} SMTPD_DATA_STATUS;

/* smtpd_proto_data_done - the reply to the end of DATA; resets the
   transaction. status_code and reason are cleanup's (SMTPD_DATA_REJECT). */
extern SMTPD_ACT smtpd_proto_data_done(SMTPD_PROTO *proto,
                                       SMTPD_DATA_STATUS status,
                                       const char *queue_id, int status_code,
                                       const char *reason);
/* smtpd_proto_milter_reply - a milter refused what the last command
   did: its reply (text: one or more lines, CR LF between them) replaces
   the one in hand; a refused MAIL or end of DATA ends the transaction */
extern SMTPD_ACT smtpd_proto_milter_reply(SMTPD_PROTO *proto, SMTPD_CMD cmd,
                                          const char *text);
/* smtpd_proto_reset - forget the transaction (RSET, EHLO, after DATA) */
extern void smtpd_proto_reset(SMTPD_PROTO *proto);
/* smtpd_proto_received - the Received: header, LF line endings */
extern void smtpd_proto_received(const SMTPD_PROTO *proto, const char *queue_id,
                                 time_t when, VSTR *out);
/* smtpd_proto_slow - past smtpd_soft_error_limit: the next reply waits
   smtpd_error_sleep_time */
extern bool smtpd_proto_slow(const SMTPD_PROTO *proto);
/* smtpd_proto_counts - " ehlo=1 mail=1 ... commands=5" for the log */
extern void smtpd_proto_counts(const SMTPD_PROTO *proto, VSTR *out);
/* smtpd_proto_relay_ok - may this session send to address (a trusted
   client, or a destination of ours)? 1 yes, 0 no, -1 a table failed */
extern int smtpd_proto_relay_ok(const SMTPD_PROTO *proto, const char *address);

/*
 * Access restrictions (smtpd_check.c). A list holds the words permit,
 * reject, defer, permit_mynetworks, permit_sasl_authenticated,
 * reject_unauth_destination, permit_auth_destination,
 * reject_unlisted_recipient, reject_unknown_client_hostname,
 * reject_unknown_reverse_client_hostname, reject_spf_fail, and
 * check_{client,helo,sender,recipient}_access type:table. Access tables
 * answer as Postfix's access(5): OK, REJECT [text], DEFER [text], DUNNO,
 * 4NN/5NN text.
 */
/* smtpd_check_parse - compile param's value (the words above). Never
   NULL: a bad word becomes an item that answers 451 4.3.5 when reached, a
   table that cannot be opened is tried again at lookup (451 4.3.0 until
   it opens); why is then set, naming the parameter and the first bad word
   or table, for the caller to log, and is empty otherwise */
extern SMTPD_RESTRICTIONS *smtpd_check_parse(const char *param,
                                             const char *value, VSTR *why);
extern SMTPD_RESTRICTIONS *smtpd_check_free(SMTPD_RESTRICTIONS *list);
/* smtpd_maps_create - local_recipient_maps: each table opened alone; one
   that cannot be opened is logged, opened again at most once a second by
   lookups, and fails them (451) until then. NULL only for unbalanced
   braces, with why */
extern SMTPD_MAPS *smtpd_maps_create(const char *param, const char *value,
                                     VSTR *why);
extern SMTPD_MAPS *smtpd_maps_free(SMTPD_MAPS *maps);
extern size_t smtpd_maps_count(const SMTPD_MAPS *maps);
/* smtpd_virtual_create - virtual_alias_domains (a domain list; a table in
   it matches a domain that is a key) and virtual_alias_maps, whose
   addresses are the known recipients of those domains; the same for
   virtual_mailbox_domains and virtual_mailbox_maps. A list or table
   that cannot be opened now is logged and tried again by lookups (451
   until then). Never NULL. */
extern SMTPD_VIRTUAL *smtpd_virtual_create(const struct MAIL_CONF *conf);
extern SMTPD_VIRTUAL *smtpd_virtual_free(SMTPD_VIRTUAL *virt);
/* smtpd_check_rcpt - every restriction list, then local_recipient_maps,
   for recipient rcpt of the session's transaction: 0 accept, the reply
   code with the whole reply line ("554 5.7.1 <a@b>: Relay access
   denied") in reply, or SMTPD_CHECK_NEED_SPF: the evaluation needs the
   transaction's SPF result, which the I/O layer must get first (the
   checks never block) */
#define SMTPD_CHECK_NEED_SPF (-1)
extern int smtpd_check_rcpt(const SMTPD_PROTO *proto, const char *rcpt,
                            VSTR *reply);
/* smtpd_auth_create - smtpd_authentication_checks and authserv_id, the
   spf service under queue_dir; a word it does not implement (dkim, dmarc)
   is logged and ignored. Never NULL (reject_spf_fail may ask even when
   smtpd_authentication_checks is empty). */
extern SMTPD_AUTH_CONF *smtpd_auth_create(const struct MAIL_CONF *conf);
extern SMTPD_AUTH_CONF *smtpd_auth_free(SMTPD_AUTH_CONF *auth);
/* smtpd_spf_free - a session's SPF result; NULL */
extern SMTPD_SPF *smtpd_spf_free(SMTPD_SPF *spf);
/* smtpd_spf_request - the question for the transaction (pointers into
   proto); smtpd_spf_timeout - the seconds it may take (spf_lookup_timeout
   and a slack); smtpd_spf_queue_dir - where the service listens */
extern void smtpd_spf_request(const SMTPD_PROTO *proto,
                              struct SPF_REQUEST *req);
extern int smtpd_spf_timeout(const SMTPD_PROTO *proto);
extern const char *smtpd_spf_queue_dir(const SMTPD_PROTO *proto);
/* smtpd_spf_store - the service's answer for the transaction, or NULL
   when it could not answer (logged with why; recipients then get 451
   4.3.0 until the transaction ends) */
extern void smtpd_spf_store(SMTPD_PROTO *proto, const struct SPF_REPLY *reply,
                            const char *why);
/* smtpd_spf_reset - the transaction ended (forgets an unavailable
   service) */
extern void smtpd_spf_reset(SMTPD_PROTO *proto);
/* smtpd_dkim_wanted - the session's messages are DKIM-verified (dkim in
   smtpd_authentication_checks, DNS on, a remote client); then the
   Authentication-Results: header comes from smtpd_auth_results at the
   end of DATA, not from smtpd_auth_headers */
extern bool smtpd_dkim_wanted(const SMTPD_PROTO *proto);
/* smtpd_dmarc_begin - with dmarc in smtpd_authentication_checks, set
   the DMARC fields of the verifier's BEGIN (strings in proto and
   scratch); false without */
struct DKIM_REQUEST;
extern bool smtpd_dmarc_begin(const SMTPD_PROTO *proto,
                              struct DKIM_REQUEST *begin, VSTR *scratch);
/* smtpd_dmarc_reject - dmarc_enforce = yes and the message fails the
   DMARC policy p=reject (or sp=): true with "5.7.1 ..." in reason */
extern bool smtpd_dmarc_reject(const SMTPD_PROTO *proto,
                               const struct DKIM_REPLY *dkim, VSTR *reason);
/* smtpd_dkim_timeout - seconds the verifier may take after the content */
extern int smtpd_dkim_timeout(const SMTPD_PROTO *proto);
/* smtpd_auth_results - the Authentication-Results: header (LF ends) with
   the transaction's SPF result and the DKIM verifier's reply (NULL: it
   could not verify, why is logged, dkim=temperror), appended to out */
extern void smtpd_auth_results(const SMTPD_PROTO *proto,
                               const struct DKIM_REPLY *dkim, const char *why,
                               VSTR *out);
/* smtpd_auth_headers - the Authentication-Results: (unless DKIM is
   verified: smtpd_dkim_wanted) and Received-SPF: headers (LF line
   endings) of the transaction's SPF check, appended to out; nothing when
   no check was made */
extern void smtpd_auth_headers(const SMTPD_PROTO *proto, VSTR *out);
/* smtpd_check_auth_destination - address's domain ($myorigin when it has
   none) is in mydestination or relay_domains; 1 yes, 0 no, -1 a table
   failed */
extern int smtpd_check_auth_destination(const SMTPD_CONF *conf,
                                        const char *address);

/*
 * SMTP AUTH with Cyrus SASL (smtpd_sasl.c). smtpd_sasl_init runs once a
 * process; each session gets its own SMTPD_SASL at EHLO.
 */
typedef enum SMTPD_SASL_STATUS {
    SMTPD_SASL_DONE, /* authenticated */
    SMTPD_SASL_CONTINUE, /* send 334 and the challenge, read a line */
    SMTPD_SASL_FAIL, /* 535: bad credentials */
    SMTPD_SASL_TEMP, /* 454: the library or its database failed */
    SMTPD_SASL_BADMECH, /* 504: unknown or refused mechanism */
    SMTPD_SASL_SYNTAX, /* 501: not base64 */
} SMTPD_SASL_STATUS;

/* smtpd_sasl_init - the library, once: 0, or -1 with why */
extern int smtpd_sasl_init(const struct MAIL_CONF *conf, VSTR *why);
extern void smtpd_sasl_done(void);
/* smtpd_sasl_new - a session; NULL with why */
extern SMTPD_SASL *smtpd_sasl_new(const SMTPD_CONF *conf, bool tls, VSTR *why);
extern SMTPD_SASL *smtpd_sasl_free(SMTPD_SASL *sasl);
/* smtpd_sasl_mechs - the mechanisms to offer, space separated, in out */
extern int smtpd_sasl_mechs(SMTPD_SASL *sasl, VSTR *out);
/* smtpd_sasl_start - AUTH mech [initial]: out is the base64 challenge
   (CONTINUE) and why the reason (FAIL, TEMP) */
extern SMTPD_SASL_STATUS smtpd_sasl_start(SMTPD_SASL *sasl, const char *mech,
                                          const char *initial, VSTR *out,
                                          VSTR *why);
/* smtpd_sasl_step - the client's next base64 line */
extern SMTPD_SASL_STATUS smtpd_sasl_step(SMTPD_SASL *sasl, const char *line,
                                         VSTR *out, VSTR *why);
/* smtpd_sasl_username - the authenticated user ("" before) */
extern const char *smtpd_sasl_username(SMTPD_SASL *sasl);

/*
 * The milter client (smtpd_milter.c). A session's SMTPD_MILTERS holds its
 * connections to the milters of smtpd_milters; each SMTP event is built
 * (begin, add, macros, message) and run; done is called once the milters
 * decided (status, and the reply text of SMTPD_MILTER_REPLY). done may
 * be called from inside smtpd_milters_run.
 */
typedef struct SMTPD_MILTER_CONF SMTPD_MILTER_CONF;
typedef struct SMTPD_MILTERS SMTPD_MILTERS;
typedef enum SMTPD_MILTER_STAGE {
    SMTPD_MILTER_CONNECT,
    SMTPD_MILTER_HELO,
    SMTPD_MILTER_MAIL,
    SMTPD_MILTER_RCPT,
    SMTPD_MILTER_DATA,
    SMTPD_MILTER_EOM, /* headers, body and the end of the message */
} SMTPD_MILTER_STAGE;
typedef enum SMTPD_MILTER_STATUS {
    SMTPD_MILTER_CONTINUE,
    SMTPD_MILTER_REJECT, /* 550 5.7.1 */
    SMTPD_MILTER_TEMPFAIL, /* 451 4.7.1 */
    SMTPD_MILTER_DISCARD, /* accept and drop the message */
    SMTPD_MILTER_REPLY, /* the milter's own 4xx/5xx reply */
} SMTPD_MILTER_STATUS;
typedef void (*SMTPD_MILTER_DONE)(void *arg, SMTPD_MILTER_STATUS status,
                                  const char *reply);
struct event_base;
/* smtpd_milter_conf - smtpd_milters and the milter_* parameters, the
   addresses resolved; NULL when smtpd_milters is empty */
extern SMTPD_MILTER_CONF *smtpd_milter_conf(const struct MAIL_CONF *conf);
extern SMTPD_MILTER_CONF *smtpd_milter_conf_free(SMTPD_MILTER_CONF *mc);
extern SMTPD_MILTERS *smtpd_milters_new(struct event_base *base,
                                        const SMTPD_MILTER_CONF *mc,
                                        SMTPD_MILTER_DONE done, void *arg);
extern SMTPD_MILTERS *smtpd_milters_free(SMTPD_MILTERS *ms);
extern void smtpd_milters_begin(SMTPD_MILTERS *ms, SMTPD_MILTER_STAGE stage);
extern void smtpd_milters_add(SMTPD_MILTERS *ms, int cmd, const char *data,
                              size_t len);
/* smtpd_milters_macros - name, value, ..., NULL (a NULL value is left
   out) for the command cmd */
extern void smtpd_milters_macros(SMTPD_MILTERS *ms, int cmd, ...);
/* smtpd_milters_message - the end-of-message event of content (LF line
   endings) */
extern void smtpd_milters_message(SMTPD_MILTERS *ms, const char *content,
                                  size_t len, const char *queue_id);
extern void smtpd_milters_run(SMTPD_MILTERS *ms);
/* smtpd_milters_cancel - stop waiting (the session closes) */
extern void smtpd_milters_cancel(SMTPD_MILTERS *ms);
/* smtpd_milters_abort - the transaction ended before its end of message */
extern void smtpd_milters_abort(SMTPD_MILTERS *ms);
/* smtpd_milters_active - a milter still wants the transaction's events */
extern bool smtpd_milters_active(const SMTPD_MILTERS *ms);
/* smtpd_milters_apply - the header and body changes of the last end of
   message applied to content; the number of changes */
extern int smtpd_milters_apply(SMTPD_MILTERS *ms, VSTR *content);
/* smtpd_milters_rcpts - the recipients the last end of message added */
extern const ARGV *smtpd_milters_rcpts(const SMTPD_MILTERS *ms);
/* smtpd_milters_quarantine - why a milter quarantined the last message
   (it then goes into hold/), or NULL */
extern const char *smtpd_milters_quarantine(const SMTPD_MILTERS *ms);

/*
 * The DATA content decoder: bytes as they come from the client in, the
 * content cleanup wants out (CR LF and bare LF both become LF, dot
 * stuffing undone). Only CR LF . CR LF ends the content, where the CR LF
 * before the dot may be the one that ended the DATA command.
 */
typedef struct SMTPD_DATA {
    bool bol; /* at the start of a line */
    bool last_crlf; /* the last line ended in CR LF */
    bool after_dot; /* the line so far is "." */
    bool dot_cr; /* the line so far is ".\r" */
    bool pending_cr; /* a CR, not yet known to end the line */
    bool bare_lf; /* a bare LF was seen */
    bool done; /* the end marker was seen */
    long long size; /* content bytes decoded */
    long long limit; /* 0: none */
    bool too_big; /* size passed limit: output stops */
} SMTPD_DATA;

/* smtpd_data_init - ready for a message of at most limit bytes (0: any) */
extern void smtpd_data_init(SMTPD_DATA *data, long long limit);
/* smtpd_data_feed - decode buf[0..len) into out; stops at the end marker
   (data->done) or when out holds max bytes; returns the bytes consumed */
extern size_t smtpd_data_feed(SMTPD_DATA *data, const char *buf, size_t len,
                              VSTR *out, size_t max);

#endif
