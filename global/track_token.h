/*
 * track_token - the payloads of tracking and unsubscribe tokens
 *
 * Open, click and unsubscribe links carry a token of global/sign_token.h
 * whose payload is a few text fields separated by NUL bytes (none of them
 * may hold a NUL or a control character):
 *
 *   purpose "open"   qid, recipient, tenant
 *   purpose "click"  qid, recipient, tenant, url
 *   purpose "unsub"  qid, recipient, tenant, list
 *
 * An empty field is unknown: recipient is empty in the per-message tokens
 * of a message with several recipients, tenant for mail that did not come
 * through the API, list when the message named none. The https URL
 * (BASE/u/TOKEN) carries the "unsub" token; the api checks it with
 * track_token_parse.
 *
 * The mailto address carries a short form instead, so that its local part
 * stays within RFC 5321's 64 octets (the "unsub" token is about 85
 * characters for a short address and no tenant, and grows with both):
 *
 *   unsubscribe+QID-MAC@DOMAIN      (12 + 16 + 1 + 20 = 49 octets)
 *
 * QID is the message's queue ID (lower case in the address, either case
 * accepted); MAC the first TRACK_MAILTO_TAG_LEN bytes (96 bits, 20 base32
 * characters) of sign_token's HMAC, purpose "unsub-mailto", over
 *
 *   QID NUL lower-case(recipient) NUL tenant
 *
 * The address names neither recipient nor tenant: the MAC binds them, and
 * feedback/ finds them. Mail to the address comes from the subscriber, so
 * the candidates are first the unsubscribe mail's envelope sender, From:,
 * Sender: and Reply-To: (no journal read; this works after the journal
 * forgot the message) with no tenant or one of api_keys_file, then the
 * recipients and tenants the journal still names for QID (which works
 * from a forwarding mailbox or another address). A
 * pair is believed only when its MAC matches, so a forged or altered
 * address, or someone else's address in From:, unsubscribes nobody. The
 * list is not in the short form. The mailto URL therefore asks for the
 * subject "unsubscribe TOKEN" (RFC 6068 ?subject=), TOKEN the "unsub"
 * token of the https URL: when the mail's Subject: holds it, for the same
 * queue ID and a recipient and tenant the MAC fits, it is believed as the
 * https URL is (from any address, the journal not needed) and the event
 * names the list too. A program that drops the subject loses only the
 * list: suppression is per tenant and address, not per list.
 *
 * The long form unsubscribe+TOKEN (the "unsub" token, as mail sent
 * before the short form carries it) is still accepted by
 * unsub_token_parse.
 */
#ifndef TRACK_TOKEN_H
#define TRACK_TOKEN_H

#include "sys_defs.h"

#include "events.h"
#include "qid.h"
#include "vstr.h"

#define TRACK_PURPOSE_OPEN "open"
#define TRACK_PURPOSE_CLICK "click"
#define TRACK_PURPOSE_UNSUB "unsub"
#define TRACK_PURPOSE_UNSUB_MAILTO "unsub-mailto"
#define TRACK_UNSUB_PREFIX "unsubscribe+" /* the mailto local part's */
#define TRACK_MAILTO_TAG_LEN 12 /* MAC bytes in the mailto short form */
#define TRACK_MAILTO_TAG_CHARS 20 /* their base32 characters */
#define TRACK_MAILTO_SEP '-' /* between QID and MAC */
#define TRACK_UNSUB_SUBJECT "unsubscribe " /* the mailto's subject: */
#define TRACK_UNSUB_SUBJECT_URL "unsubscribe%20" /* ... in the URL */
#define TRACK_FIELD_MAX 2048 /* bytes of one field (a URL) */

/* What a token says; the strings point into the TRACK_TOKEN's buffer. */
typedef struct TRACK_TOKEN {
    const char *qid;
    const char *recipient; /* "" when unknown */
    const char *tenant; /* "" when unknown */
    const char *extra; /* click: the url; unsub: the list ("": none) */
    VSTR *buf; /* the payload, owned */
} TRACK_TOKEN;

/* track_token_make - append the token of purpose for these fields (NULL
   counts as ""; extra is ignored for "open"); -1 when a field holds a
   control character or is longer than TRACK_FIELD_MAX (no token made) */
extern int track_token_make(VSTR *out, const VSTR *key, const char *purpose,
                            const char *qid, const char *recipient,
                            const char *tenant, const char *extra);

/* track_token_parse - 0 with tok filled (release with track_token_free)
   when token is a good token of purpose under key with the right number
   of fields, a non-empty qid and (click) an http or https url; -1 when it
   is not (nothing to release) */
extern int track_token_parse(const VSTR *key, const char *purpose,
                             const char *token, TRACK_TOKEN *tok);

/* track_token_free - release what track_token_parse filled */
extern void track_token_free(TRACK_TOKEN *tok);

/* unsub_token_parse - the long form of a mailto unsubscribe address
   ("unsubscribe+TOKEN", any letter case, with or without "@domain"): 0
   with tok filled as track_token_parse does, -1 when it is not one */
extern int unsub_token_parse(const VSTR *key, const char *local_part,
                             TRACK_TOKEN *tok);

/* unsub_mailto_make - append the short form's local part
   "unsubscribe+QID-MAC" for this message, recipient and tenant (NULL
   counts as ""); -1 when qid is no queue ID or a field holds a control
   character or is longer than TRACK_FIELD_MAX (nothing appended) */
extern int unsub_mailto_make(VSTR *out, const VSTR *key, const char *qid,
                             const char *recipient, const char *tenant);

/* unsub_mailto_split - the short form's parts of address (a local part,
   with or without "@domain", any letter case): 0 with the queue ID (upper
   case) in qid and the MAC text in mac; -1 when it is not the short form
   (the MAC is not checked) */
extern int unsub_mailto_split(const char *address, char qid[QID_SIZE],
                              VSTR *mac);

/* unsub_mailto_check - is mac the short form's MAC of qid, recipient (any
   letter case) and tenant ("" none)? */
extern bool unsub_mailto_check(const VSTR *key, const char *qid,
                               const char *mac, const char *recipient,
                               const char *tenant);

/* track_token_event - event (events_event_init'ed, with seq) of kind
   EVENTS_OPENED, _CLICKED or _UNSUBSCRIBED for what tok says: its qid,
   recipient and tenant (NULL when ""), the url (clicked) or list
   (unsubscribed). The api (a link followed, a One-Click POST) and
   feedback (a mailto unsubscribe) record the same fields this way. The
   strings stay tok's and seq's. */
extern void track_token_event(EVENT *event, const char *kind,
                              const TRACK_TOKEN *tok, const char *seq);

/* track_url_ok - is url an absolute http or https URL of printable ASCII
   (no space, quote or angle bracket) that may be signed and redirected to */
extern bool track_url_ok(const char *url);

#endif
