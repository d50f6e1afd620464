/*
 * smtp_proto - the SMTP client's protocol pieces that need no I/O
 *
 * Reply parsing and the verdict table, EHLO keywords, enhanced status
 * codes, next-hop syntax and the content encoder. Nothing here reads or
 * writes a socket or a file, so all of it is unit tested
 * (smtp_proto_test.c).
 */
#ifndef SMTP_PROTO_H
#define SMTP_PROTO_H

#include "sys_defs.h"

#include "vstr.h"

#define SMTP_REPLY_LINE_MAX 4096 /* longer reply lines are cut */
#define SMTP_REPLY_LINES_MAX 100 /* more lines: malformed */

/* One server reply, possibly multi-line, as it is being read. */
typedef struct SMTP_REPLY {
    int code; /* 0 until the first line */
    VSTR *text; /* every line, without CRLF, joined by " " */
    VSTR *ehlo; /* the keyword part of each line, "\n" separated */
    int lines;
    bool done;
} SMTP_REPLY;

extern SMTP_REPLY *smtp_reply_alloc(void);
extern SMTP_REPLY *smtp_reply_free(SMTP_REPLY *reply);
extern void smtp_reply_reset(SMTP_REPLY *reply);
/* smtp_reply_line - add one line (no CRLF); 1 when the reply is complete,
   0 when more lines follow, -1 when the line is not a reply line (no
   three-digit code 200..599 followed by space, '-' or nothing; a code
   that differs from the first line's; more than SMTP_REPLY_LINES_MAX
   lines) */
extern int smtp_reply_line(SMTP_REPLY *reply, const char *line, size_t len);

/* The commands whose replies a session waits for. */
typedef enum SMTP_CMD {
    SMTP_CMD_GREETING,
    SMTP_CMD_EHLO,
    SMTP_CMD_HELO,
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_DOT,
    SMTP_CMD_RSET,
    SMTP_CMD_QUIT,
    SMTP_CMD_STARTTLS,
    SMTP_CMD_AUTH, /* AUTH and each answer to a 334 challenge */
} SMTP_CMD;

/* What a complete reply means for the command it answers. */
typedef enum SMTP_VERDICT {
    SMTP_VERDICT_OK, /* the positive reply the command expects */
    SMTP_VERDICT_TEMP, /* 4xx */
    SMTP_VERDICT_PERM, /* 5xx */
    SMTP_VERDICT_PROTO, /* a code this command cannot get: protocol error */
} SMTP_VERDICT;

/* smtp_reply_verdict - the meaning of code after cmd: 2xx is the positive
   reply of every command but DATA, whose only one is 354; any other 2xx or
   3xx is a protocol error (RFC 5321 4.3.2) */
extern SMTP_VERDICT smtp_reply_verdict(SMTP_CMD cmd, int code);

/* Features from the EHLO reply. */
#define SMTP_FEATURE_PIPELINING 0x01
#define SMTP_FEATURE_SIZE 0x02
#define SMTP_FEATURE_8BITMIME 0x04
#define SMTP_FEATURE_DSN 0x08
#define SMTP_FEATURE_STARTTLS 0x10
#define SMTP_FEATURE_AUTH 0x20

/* smtp_ehlo_features - parse the keywords; *size_limit is the SIZE value
   (0: none announced) */
extern int smtp_ehlo_features(const SMTP_REPLY *reply, long long *size_limit);
/* smtp_ehlo_auth - the mechanisms of "AUTH a b" (or the old "AUTH=a b"),
   upper case, one space between them, into mechs ("" when none) */
extern void smtp_ehlo_auth(const SMTP_REPLY *reply, VSTR *mechs);

/* smtp_reply_dsn - the enhanced status code of a reply text ("550 5.1.1
   no"), or one derived from the code (4xx: 4.0.0, 5xx: 5.0.0, 2xx:
   2.0.0) */
extern void smtp_reply_dsn(int code, const char *text, char *dsn, size_t len);

/*
 * The conversation: an SMTP client session as a state machine without
 * I/O, in the manner of smtpd's smtpd_proto. The session (smtp_session.c)
 * feeds it each complete server reply and gets back
 * - the commands to send next, in proto->out (CRLF-ended; a whole
 *   pipelined group at once when the server offered PIPELINING),
 * - the recipients the reply decided, in proto->decided (indexes into the
 *   transaction's recipients; all decided by that one reply: its code,
 *   text and command; a 2xx is "sent", 4xx deferred, 5xx bounced),
 * - what happens to the session as a whole, as the return value.
 * The machine remembers which command each awaited reply answers, so a
 * pipelined group's replies are matched in order, and what the server
 * offered in its EHLO reply (proto->caps).
 *
 * STARTTLS and AUTH sit between EHLO and READY. With proto->tls_wanted
 * set before the greeting, an EHLO reply that offers STARTTLS gets
 * STARTTLS; its 220 is EV_STARTTLS (the caller discards whatever else
 * the server sent, does the handshake and calls smtp_proto_tls_started(),
 * which sends EHLO again), a refusal EV_STARTTLS_REFUSED (state READY,
 * the plain text EHLO reply's capabilities kept). EV_GREETED comes once
 * EHLO needs nothing more; the caller may then call smtp_proto_auth(),
 * whose outcome is EV_AUTH_OK or EV_AUTH_FAILED.
 */
typedef enum SMTP_PROTO_STATE {
    SMTP_PROTO_ST_CONNECTING, /* nothing due yet */
    SMTP_PROTO_ST_GREETING, /* connected, the greeting is due */
    SMTP_PROTO_ST_EHLO, /* EHLO sent */
    SMTP_PROTO_ST_HELO, /* EHLO refused with 5xx: HELO sent */
    SMTP_PROTO_ST_STARTTLS, /* STARTTLS sent */
    SMTP_PROTO_ST_TLS, /* 220 to STARTTLS: the caller's handshake */
    SMTP_PROTO_ST_AUTH, /* AUTH sent (or an answer to a challenge) */
    SMTP_PROTO_ST_READY, /* greeted, no transaction */
    SMTP_PROTO_ST_TXN, /* MAIL, RCPT..., DATA: with PIPELINING all of
                          them at once, so which reply comes next is the
                          head of the expect queue, not a state */
    SMTP_PROTO_ST_CONTENT, /* 354: the caller sends the content */
    SMTP_PROTO_ST_DOT, /* end of data sent */
    SMTP_PROTO_ST_RSET, /* RSET sent after a transaction */
    SMTP_PROTO_ST_QUIT, /* QUIT sent */
    SMTP_PROTO_ST_CLOSED, /* QUIT answered, or a protocol error */
} SMTP_PROTO_STATE;

/* What a step means for the session as a whole. */
typedef enum SMTP_PROTO_EVENT {
    SMTP_PROTO_EV_NONE, /* send proto->out, wait for more replies */
    SMTP_PROTO_EV_REFUSED, /* 4xx/5xx greeting, EHLO or HELO: next MX */
    SMTP_PROTO_EV_GREETED, /* ready for a transaction */
    SMTP_PROTO_EV_CONTENT, /* 354: send the content, then
                              smtp_proto_data_end() */
    SMTP_PROTO_EV_TXN_DONE, /* the transaction is over; proto->reusable */
    SMTP_PROTO_EV_RSET_OK, /* RSET answered: ready for a transaction */
    SMTP_PROTO_EV_RSET_FAILED, /* RSET refused: not reusable */
    SMTP_PROTO_EV_ERROR, /* protocol error (proto->error): close now,
                            defer whoever is undecided with 4.5.0 */
    SMTP_PROTO_EV_CLOSED, /* QUIT answered */
    SMTP_PROTO_EV_STARTTLS, /* 220 to STARTTLS: do the handshake */
    SMTP_PROTO_EV_STARTTLS_REFUSED, /* 4xx/5xx to STARTTLS: READY, plain */
    SMTP_PROTO_EV_AUTH_OK, /* 235: ready for a transaction */
    SMTP_PROTO_EV_AUTH_FAILED, /* 4xx/5xx to AUTH, or a challenge the
                                  mechanism cannot answer: proto->code,
                                  proto->error */
} SMTP_PROTO_EVENT;

/* Why smtp_proto_mail() refused a transaction before sending anything. */
typedef enum SMTP_PROTO_REFUSAL {
    SMTP_PROTO_REFUSE_NONE,
    SMTP_PROTO_REFUSE_8BIT, /* 8-bit content, no 8BITMIME: 5.6.3 */
    SMTP_PROTO_REFUSE_SIZE, /* over the server's SIZE: 5.3.4 */
} SMTP_PROTO_REFUSAL;

/* One recipient of a transaction. */
typedef struct SMTP_PROTO_RCPT {
    const char *address;
    const char *notify; /* DSN NOTIFY, "" when none */
    const char *orcpt; /* DSN ORCPT, "" when none */
    bool done; /* decided already: not sent */
} SMTP_PROTO_RCPT;

/* One mail transaction; the caller keeps it alive until it is over. */
typedef struct SMTP_PROTO_TXN {
    const char *sender;
    long long size; /* content size, for SIZE= */
    bool body_8bit; /* BODY=8BITMIME in the queue file */
    bool content_8bit; /* 8-bit bytes in the content (the caller need
                          only look when neither 8BITMIME nor body_8bit) */
    const char *ret; /* DSN RET, "" or NULL when none */
    const char *envid; /* DSN ENVID, decoded; "" or NULL when none */
    const SMTP_PROTO_RCPT *rcpts;
    size_t rcpt_count;
} SMTP_PROTO_TXN;

typedef struct SMTP_PROTO_EXPECT {
    SMTP_CMD cmd;
    size_t rcpt; /* RCPT: which recipient */
} SMTP_PROTO_EXPECT;

typedef struct SMTP_PROTO {
    SMTP_PROTO_STATE state;
    char *helo_name;
    int caps; /* SMTP_FEATURE_* from EHLO; 0 after HELO */
    long long size_limit; /* SIZE value, 0: none */
    bool greeted; /* EHLO or HELO accepted */
    bool reusable; /* no reason yet not to reuse the connection */
    bool tls_wanted; /* STARTTLS when offered (set before the greeting) */
    bool tls_active; /* the handshake after STARTTLS is done */
    VSTR *auth_mechs; /* from EHLO: "PLAIN LOGIN ..." */
    char *auth_mech; /* smtp_proto_auth(): "PLAIN" or "LOGIN" */
    char *auth_user;
    char *auth_pass;
    int auth_step; /* 334 challenges answered */
    /* The transaction. */
    const SMTP_PROTO_TXN *txn;
    unsigned char *rcpt_state; /* per recipient: SMTP_PROTO_RCPT_* */
    size_t rcpt_cap;
    size_t accepted; /* recipients RCPT accepted */
    bool mail_failed;
    bool txn_reply; /* a reply to MAIL, RCPT, DATA or end of data came */
    /* Replies awaited, in order. */
    SMTP_PROTO_EXPECT *expect;
    size_t expect_head;
    size_t expect_count;
    size_t expect_cap;
    /* The output of the last step. */
    VSTR *out; /* commands to send; the caller empties it */
    size_t *decided; /* recipients the last reply decided */
    size_t decided_count;
    size_t decided_cap;
    int code; /* the last reply's code */
    SMTP_CMD cmd; /* the command it answered */
    SMTP_PROTO_REFUSAL refusal; /* smtp_proto_mail() said no */
    VSTR *error; /* EV_ERROR: what was wrong */
} SMTP_PROTO;

extern SMTP_PROTO *smtp_proto_alloc(const char *helo_name);
extern SMTP_PROTO *smtp_proto_free(SMTP_PROTO *proto);
/* smtp_proto_connected - the connection is up: the greeting is due */
extern void smtp_proto_connected(SMTP_PROTO *proto);
/* smtp_proto_reply - one complete reply: the next step */
extern SMTP_PROTO_EVENT smtp_proto_reply(SMTP_PROTO *proto,
                                         const SMTP_REPLY *reply);
/* smtp_proto_mail - start a transaction (state READY): MAIL, and with
   PIPELINING every RCPT and DATA; EV_NONE, or EV_TXN_DONE with every
   recipient decided by proto->refusal */
extern SMTP_PROTO_EVENT smtp_proto_mail(SMTP_PROTO *proto,
                                        const SMTP_PROTO_TXN *txn);
/* smtp_proto_data_end - the caller sent the content and its end */
extern void smtp_proto_data_end(SMTP_PROTO *proto);
/* smtp_proto_txn_closed - the last transaction ended with a 2xx to the
   end of data and nothing is awaited: MAIL may follow without RSET */
extern bool smtp_proto_txn_closed(const SMTP_PROTO *proto);
/* smtp_proto_rset - after a transaction: RSET, to keep the connection */
extern void smtp_proto_rset(SMTP_PROTO *proto);
/* smtp_proto_quit - QUIT; replies still awaited are forgotten */
extern void smtp_proto_quit(SMTP_PROTO *proto);
/* smtp_proto_tls_started - the handshake after STARTTLS is done: EHLO
   again, the old capabilities forgotten (RFC 3207 4.2) */
extern void smtp_proto_tls_started(SMTP_PROTO *proto);
/* smtp_proto_auth - after EV_GREETED: AUTH with mech ("PLAIN": the
   credentials in the initial response; "LOGIN": user and password as
   answers to the two challenges), base64 encoded (RFC 4954) */
extern void smtp_proto_auth(SMTP_PROTO *proto, const char *mech,
                            const char *user, const char *pass);
/* smtp_base64_encode - RFC 4648 base64 of data, appended to out */
extern void smtp_base64_encode(VSTR *out, const char *data, size_t len);
/* smtp_base64_decode - decode text into out; -1 when it is not base64 */
extern int smtp_base64_decode(VSTR *out, const char *text, size_t len);
/* smtp_proto_waiting - the command whose reply is awaited n-th (0: the
   next), or -1 */
extern int smtp_proto_waiting(const SMTP_PROTO *proto, size_t n);
/* smtp_proto_cmd_name - for "(in reply to X command)" */
extern const char *smtp_proto_cmd_name(SMTP_CMD cmd);

/* smtp_nexthop_parse - "domain", "host:port", "[host]", "[host]:port";
   host gets the name, *port the port (default_port when none), *mx whether
   MX records are looked up. 0, or -1 with the reason in why. */
extern int smtp_nexthop_parse(const char *nexthop, int default_port, VSTR *host,
                              int *port, bool *mx, VSTR *why);

/*
 * The content encoder: queue file content (LF lines) to SMTP DATA. An
 * SMTP client sends CR and LF only as the CRLF line end (RFC 5321 2.3.8)
 * and no NUL (RFC 5321 4.5.2, RFC 6152), whatever path put them in the
 * queue file:
 * - LF ends a line: CRLF (the queue file's line end; smtpd and sendmail
 *   store a bare LF of their input as one).
 * - CR right before LF: part of that line end (one CRLF, not two).
 * - any other CR, in the header block (up to the first empty line): a
 *   space, so no header line appears that cleanup never saw; in the body:
 *   CRLF, so the line break the sender meant stays one and the text is
 *   not glued together. The next line is dot-stuffed like any other, so
 *   "<CR>.<CR>" cannot end the data early at the next hop.
 * - NUL: removed and counted, for a log line. It has no meaning in mail
 *   text, and bouncing would not reach the sender either (the bounce
 *   quotes the same content).
 */
typedef struct SMTP_ENC {
    bool bol; /* at the beginning of a line */
    bool header; /* still in the header block */
    bool pending_cr; /* a CR whose fate the next byte decides */
    size_t nul_count; /* NUL bytes removed */
    size_t cr_count; /* bare CRs rewritten */
} SMTP_ENC;

extern void smtp_enc_init(SMTP_ENC *enc);
/* smtp_enc_feed - append the wire form of data to out */
extern void smtp_enc_feed(SMTP_ENC *enc, const char *data, size_t len,
                          VSTR *out);
/* smtp_enc_finish - end an unfinished line, then ".\r\n" */
extern void smtp_enc_finish(SMTP_ENC *enc, VSTR *out);

/* smtp_has_8bit - any byte with the high bit set? */
extern bool smtp_has_8bit(const char *data, size_t len);

/* smtp_soft_dsn - with soft_bounce: "5.x.y" becomes "4.x.y" */
extern void smtp_soft_dsn(char *dsn);

#endif
