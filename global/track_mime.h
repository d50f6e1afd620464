/*
 * track_mime - click tracking and the open pixel in a MIME message body
 *
 * track_mime_rewrite walks a body (what follows the header block) given
 * the message's Content-Type and Content-Transfer-Encoding: multipart
 * entities are walked part by part (up to TRACK_MIME_DEPTH deep), each
 * text/html part is decoded (quoted-printable, base64 or as it is),
 * rewritten by track_html_rewrite (the pixel goes into the first HTML
 * part only), and encoded again the way it came: quoted-printable lines
 * of at most 76 bytes, base64 lines of 76, 7bit/8bit within
 * TRACK_HTML_LINE_MAX of what the rewriting added. Every other byte
 * (headers of parts, preambles, other parts, message/rfc822 parts) is
 * copied unchanged. A part that cannot be decoded is left alone.
 */
#ifndef TRACK_MIME_H
#define TRACK_MIME_H

#include "sys_defs.h"

#include "track_html.h"
#include "vstr.h"

#define TRACK_MIME_DEPTH 16

/* track_mime_rewrite - append the rewritten body to out; the number of
   changes made (0: out holds the body unchanged) */
extern size_t track_mime_rewrite(const char *content_type, const char *cte,
                                 const char *body, size_t len, VSTR *out,
                                 const TRACK_HTML_OPTS *opts);

/* track_mime_type - the lower-case type/subtype of a Content-Type value
   (NULL or empty: text/plain) into type, its boundary parameter into
   boundary ("" when none) */
extern void track_mime_type(const char *value, VSTR *type, VSTR *boundary);

/* track_qp_decode, track_qp_encode, track_b64_decode (-1 on a bad byte),
   track_b64_encode - the transfer encodings, appending to out */
extern void track_qp_decode(const char *data, size_t len, VSTR *out);
extern void track_qp_encode(const char *data, size_t len, VSTR *out);
extern int track_b64_decode(const char *data, size_t len, VSTR *out);
extern void track_b64_encode(const char *data, size_t len, VSTR *out);

#endif
