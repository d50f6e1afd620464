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

/* smtp_ehlo_features - parse the keywords; *size_limit is the SIZE value
   (0: none announced) */
extern int smtp_ehlo_features(const SMTP_REPLY *reply, long long *size_limit);

/* smtp_reply_dsn - the enhanced status code of a reply text ("550 5.1.1
   no"), or one derived from the code (4xx: 4.0.0, 5xx: 5.0.0, 2xx:
   2.0.0) */
extern void smtp_reply_dsn(int code, const char *text, char *dsn, size_t len);

/* smtp_nexthop_parse - "domain", "host:port", "[host]", "[host]:port";
   host gets the name, *port the port (default_port when none), *mx whether
   MX records are looked up. 0, or -1 with the reason in why. */
extern int smtp_nexthop_parse(const char *nexthop, int default_port,
                              VSTR *host, int *port, bool *mx, VSTR *why);

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
