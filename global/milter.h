/*
 * milter - the Sendmail milter protocol, as the MTA side speaks it
 *
 * A milter (OpenDKIM, rspamd, ClamAV, anything built on libmilter) is a
 * server on a TCP or UNIX socket. The MTA sends it one packet per SMTP
 * event and reads one reply per packet (except for the packets the milter
 * said it needs no reply to). Each packet is a 4-byte big-endian length
 * (of what follows), one command byte, and its data; strings in the data
 * end in NUL. Protocol version 6 (Sendmail 8.14, libmilter's current one):
 *
 *   MTA -> milter   'O' OPTNEG  version, actions offered, steps offered
 *                   'D' MACRO   the command it precedes, name NUL value NUL..
 *                   'C' CONNECT host NUL, family ('4' '6' 'L' 'U'), port
 *                               (2 bytes), address NUL
 *                   'H' HELO    name NUL
 *                   'M' MAIL    <sender> NUL [ESMTP args NUL ..]
 *                   'R' RCPT    <recipient> NUL [args NUL ..]
 *                   'T' DATA    -
 *                   'L' HEADER  name NUL value NUL
 *                   'N' EOH     -
 *                   'B' BODY    a piece of the body (at most 64 KiB)
 *                   'E' EOM     -   (the milter's modifications come now)
 *                   'A' ABORT   -   (the transaction ends: no reply)
 *                   'Q' QUIT    -   (no reply)
 *   milter -> MTA   'O' OPTNEG  version, actions wanted, steps to skip
 *                   'c' continue  'a' accept  'r' reject  't' tempfail
 *                   'd' discard   'y' reply code (text NUL)  'p' progress
 *                   'h' add header (name NUL value NUL)
 *                   'i' insert header (index, name NUL value NUL)
 *                   'm' change header (index, name NUL value NUL; an
 *                       empty value deletes)
 *                   'b' replace body (a piece)  'q' quarantine (reason)
 *                   '+' add recipient  '-' delete recipient
 *                   'e' change sender  's' skip  'f' connection failed
 *                   '4' shut down
 *
 * This module only encodes and decodes (no I/O): smtpd/smtpd_milter.c
 * drives the conversation. Everything read from a milter is checked here:
 * a malformed reply is an error with a reason, never a crash.
 */
#ifndef MILTER_H
#define MILTER_H

#include "sys_defs.h"

#include <stdint.h>

#include "vstr.h"

#define MILTER_PROTO_VERSION 6
#define MILTER_PACKET_MAX (2 * 1024 * 1024) /* what we accept from a milter */
#define MILTER_CHUNK_MAX 65535 /* a BODY packet's data */

/* MTA -> milter commands. */
#define MILTER_CMD_OPTNEG 'O'
#define MILTER_CMD_MACRO 'D'
#define MILTER_CMD_CONNECT 'C'
#define MILTER_CMD_HELO 'H'
#define MILTER_CMD_MAIL 'M'
#define MILTER_CMD_RCPT 'R'
#define MILTER_CMD_DATA 'T'
#define MILTER_CMD_HEADER 'L'
#define MILTER_CMD_EOH 'N'
#define MILTER_CMD_BODY 'B'
#define MILTER_CMD_EOM 'E'
#define MILTER_CMD_ABORT 'A'
#define MILTER_CMD_QUIT 'Q'

/* milter -> MTA replies. */
#define MILTER_REP_OPTNEG 'O'
#define MILTER_REP_CONTINUE 'c'
#define MILTER_REP_ACCEPT 'a'
#define MILTER_REP_REJECT 'r'
#define MILTER_REP_TEMPFAIL 't'
#define MILTER_REP_DISCARD 'd'
#define MILTER_REP_REPLYCODE 'y'
#define MILTER_REP_PROGRESS 'p'
#define MILTER_REP_ADDHEADER 'h'
#define MILTER_REP_INSHEADER 'i'
#define MILTER_REP_CHGHEADER 'm'
#define MILTER_REP_REPLBODY 'b'
#define MILTER_REP_QUARANTINE 'q'
#define MILTER_REP_ADDRCPT '+'
#define MILTER_REP_DELRCPT '-'
#define MILTER_REP_ADDRCPT_PAR '2'
#define MILTER_REP_CHGFROM 'e'
#define MILTER_REP_SKIP 's'
#define MILTER_REP_CONN_FAIL 'f'
#define MILTER_REP_SHUTDOWN '4'
#define MILTER_REP_SETSYMLIST 'l'

/* Actions (OPTNEG): what the milter may do at the end of a message. */
#define MILTER_ACT_ADDHDRS 0x01
#define MILTER_ACT_CHGBODY 0x02
#define MILTER_ACT_ADDRCPT 0x04
#define MILTER_ACT_DELRCPT 0x08
#define MILTER_ACT_CHGHDRS 0x10
#define MILTER_ACT_QUARANTINE 0x20
#define MILTER_ACT_CHGFROM 0x40
#define MILTER_ACT_ADDRCPT_PAR 0x80
#define MILTER_ACT_SETSYMLIST 0x100

/* Protocol steps (OPTNEG): NO_x the milter wants no x event, NR_x it
   sends no reply to x. */
#define MILTER_P_NOCONNECT 0x01
#define MILTER_P_NOHELO 0x02
#define MILTER_P_NOMAIL 0x04
#define MILTER_P_NORCPT 0x08
#define MILTER_P_NOBODY 0x10
#define MILTER_P_NOHDRS 0x20
#define MILTER_P_NOEOH 0x40
#define MILTER_P_NR_HDR 0x80
#define MILTER_P_NOUNKNOWN 0x100
#define MILTER_P_NODATA 0x200
#define MILTER_P_SKIP 0x400
#define MILTER_P_RCPT_REJ 0x800
#define MILTER_P_NR_CONN 0x1000
#define MILTER_P_NR_HELO 0x2000
#define MILTER_P_NR_MAIL 0x4000
#define MILTER_P_NR_RCPT 0x8000
#define MILTER_P_NR_DATA 0x10000
#define MILTER_P_NR_UNKN 0x20000
#define MILTER_P_NR_EOH 0x40000
#define MILTER_P_NR_BODY 0x80000
#define MILTER_P_HDR_LEADSPC 0x100000

/* What the MTA offers: the header actions, a new body, added recipients
   (applied by smtpd, which holds the message until the end) and
   quarantine (cleanup commits the message into hold/);
   no deleted recipients, no new sender. Every NO_ and NR_ step it can
   honour. */
#define MILTER_ACTIONS_OFFERED                                                 \
    (MILTER_ACT_ADDHDRS | MILTER_ACT_CHGHDRS | MILTER_ACT_CHGBODY |            \
     MILTER_ACT_ADDRCPT | MILTER_ACT_QUARANTINE)
#define MILTER_STEPS_OFFERED                                                   \
    (MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL |                  \
     MILTER_P_NORCPT | MILTER_P_NOBODY | MILTER_P_NOHDRS | MILTER_P_NOEOH |    \
     MILTER_P_NR_HDR | MILTER_P_NOUNKNOWN | MILTER_P_NODATA |                  \
     MILTER_P_NR_CONN | MILTER_P_NR_HELO | MILTER_P_NR_MAIL |                  \
     MILTER_P_NR_RCPT | MILTER_P_NR_DATA | MILTER_P_NR_UNKN |                  \
     MILTER_P_NR_EOH | MILTER_P_NR_BODY)

/* One reply, decoded: pointers into the packet (valid while it is). */
typedef struct MILTER_REPLY {
    int cmd; /* MILTER_REP_* */
    const char *text; /* 'y': "550 5.7.1 text" (checked: see below);
                         'q': the reason; '+' '-' 'e': the address */
    const char *name; /* 'h' 'i' 'm': a header name (printable, no ':') */
    const char *value; /* 'h' 'i' 'm': its value (no NUL) */
    uint32_t index; /* 'i': position among all headers (0: first);
                       'm': the index-th header of that name (1: first) */
    const char *data; /* 'b': body bytes */
    size_t len;
    uint32_t version; /* 'O' */
    uint32_t actions;
    uint32_t steps;
} MILTER_REPLY;

/* milter_packet - append one packet (cmd and len bytes of data) to out */
extern void milter_packet(VSTR *out, int cmd, const char *data, size_t len);
/* milter_packet_strs - one packet whose data is the NUL-ended strings
   given (a NULL ends the list) */
extern void milter_packet_strs(VSTR *out, int cmd, ...);
/* milter_optneg - the MTA's OPTNEG packet */
extern void milter_optneg(VSTR *out);
/* milter_connect - the CONNECT packet: family '4' or '6' with addr and
   port, or 'U' (unknown: a local submission) */
extern void milter_connect(VSTR *out, const char *host, int family, int port,
                           const char *addr);
/* milter_packet_length - the length a packet header (4 bytes) announces:
   -1 when it is 0 or over MILTER_PACKET_MAX */
extern long milter_packet_length(const unsigned char hdr[4]);
/* milter_reply_parse - one packet's command byte and data (buf, len >= 1,
   the length prefix removed): 0, or -1 with why */
extern int milter_reply_parse(const char *buf, size_t len, MILTER_REPLY *rep,
                              VSTR *why);
/* milter_replycode_ok - text is an SMTP reply a milter may give: one or
   more lines (CR LF between them), each "4xx" or "5xx", the same code,
   '-' between lines and ' ' or nothing after the last, printable text */
extern bool milter_replycode_ok(const char *text);

/* A milter's address: inet:host:port, inet:[v6addr]:port, inet:port@host
   (Sendmail's form), unix:/path or local:/path. */
typedef struct MILTER_ADDR {
    bool is_unix;
    char *host; /* inet */
    char *port; /* inet: digits */
    char *path; /* unix */
} MILTER_ADDR;

/* milter_addr_parse - 0, or -1 with why */
extern int milter_addr_parse(const char *spec, MILTER_ADDR *addr, VSTR *why);
extern void milter_addr_free(MILTER_ADDR *addr);

/* milter_default_action values. */
typedef enum MILTER_DEFAULT {
    MILTER_DEFAULT_TEMPFAIL,
    MILTER_DEFAULT_ACCEPT,
    MILTER_DEFAULT_REJECT,
} MILTER_DEFAULT;

/* milter_default_parse - "tempfail", "accept", "reject": 0, or -1 */
extern int milter_default_parse(const char *value, MILTER_DEFAULT *out);

#endif
