/*
 * api_request - the JSON body of POST /v1/messages, checked and made MIME
 *
 * The request (issue #21's names):
 *
 *   from       string, required   "addr@dom" or "Name <addr@dom>"
 *   to         string or array    required, at least one address
 *   cc, bcc    string or array    more recipients (bcc: envelope only)
 *   reply_to   string or array    the Reply-To: header
 *   subject    string             the Subject: header
 *   text, html string             the body: text/plain, text/html, or
 *                                 multipart/alternative with both
 *   headers    object             more header fields: NAME: string
 *   attachments array of objects  {"filename", "content" (base64),
 *                                 "content_type"}: the message becomes
 *                                 multipart/mixed, each part base64
 *   raw        string             base64 of a whole MIME message
 *                                 (excludes subject, text, html, headers,
 *                                 reply_to, attachments; from and
 *                                 to/cc/bcc are then the envelope only)
 *   tags       array of strings   at most 20, each 1 to 64 characters
 *                                 without control characters: kept in the
 *                                 queue file and put into every event
 *   metadata   object             flat: keys 1 to 64 of [A-Za-z0-9._-],
 *                                 string values, at most 4096 bytes of
 *                                 keys and values; like tags
 *   pool       string             1 to 64 of [A-Za-z0-9._-]: the message
 *                                 gets "X-Sluice-Pool: NAME" first, which
 *                                 cleanup honours for api mail; the
 *                                 api daemon answers 403 when the
 *                                 tenant may not name it
 *                                 (smtp_source_pool_allow_maps)
 *   send_at    string             an RFC 3339 time at most 30 days ahead:
 *                                 queued now, not delivered before then
 *                                 (a time past is at once)
 *
 * Anything else is refused by name (template, data and recipients are
 * the api daemon's: it turns them into the fields above, one request per
 * batch recipient, before this parser sees them): a reader that skips
 * what it does not know would send mail the client did not mean. Every header
 * value is refused when it holds CR or LF (header injection); text that
 * is not printable ASCII becomes RFC 2047 words, bodies quoted-printable.
 * Bad input never panics: the result is an API_ERROR with the HTTP status,
 * a stable code, the field at fault and a message.
 *
 *   status code                 when
 *   400    invalid_json         the body is not one JSON object
 *   400    missing_field        a required field is absent
 *   400    invalid_field        wrong type, unknown field, bad base64, CR/LF
 *   413    message_too_large    the message exceeds message_size_limit
 *   422    invalid_address      an address is not a valid mailbox
 *   422    too_many_recipients  more than api_max_recipients
 *   422    invalid_value        tags, metadata, pool or send_at not as
 *                               above
 */
#ifndef API_REQUEST_H
#define API_REQUEST_H

#include "sys_defs.h"
#include "argv.h"
#include "vstr.h"

/* How far ahead a request's send_at may be (feedback bounds its journal
   scans by it too). */
#define API_REQUEST_SEND_AHEAD (30 * 86400)

typedef struct API_ERROR {
    int status; /* HTTP status */
    const char *code; /* stable, machine-readable */
    VSTR *field; /* the field at fault ("to[2]"), "" for none */
    VSTR *message; /* for people */
} API_ERROR;

typedef struct API_LIMITS {
    size_t max_recipients; /* api_max_recipients */
    size_t max_message_size; /* message_size_limit (0: none) */
} API_LIMITS;

typedef struct API_MESSAGE {
    char *sender; /* envelope sender, bare address */
    ARGV *rcpts; /* envelope recipients: to, cc, bcc in order */
    VSTR *content; /* header block, empty line, body; LF lines */
    bool eight_bit; /* content has bytes above 0x7f (raw only) */
    bool raw; /* content is the client's raw MIME (cleanup takes a header
                 block that ends at a line that is no header) */
    char *tags; /* "tags" as compact JSON text, NULL: none */
    char *metadata; /* "metadata" as compact JSON text, NULL: none */
    long long not_before; /* send_at, Unix seconds; 0: send at once */
    char *pool; /* "pool" (also the X-Sluice-Pool header), NULL: none */
    const char *hold; /* NULL, or why cleanup commits it into hold/ (the
                         render service's two-step commit; borrowed) */
} API_MESSAGE;

/* api_error_init - an API_ERROR with empty strings; api_error_free */
extern void api_error_init(API_ERROR *err);
extern void api_error_free(API_ERROR *err);

/* api_error_json - append {"error":{"code":..,"message":..,"field":..}} */
extern void api_error_json(const API_ERROR *err, VSTR *out);

/* api_request_parse - the message a request body asks for, or NULL with
   err filled in */
extern API_MESSAGE *api_request_parse(const char *body, size_t len,
                                      const API_LIMITS *limits, API_ERROR *err);
extern API_MESSAGE *api_message_free(API_MESSAGE *msg);

/* api_request_check_mailbox - is text (a JSON string's bytes) one valid
   "addr" or "Name <addr>"? 0 with the bare address in addr, or -1 with
   err naming field (as api_request_parse checks "to") */
extern int api_request_check_mailbox(const char *field, const char *text,
                                     size_t len, VSTR *addr, API_ERROR *err);

#endif
