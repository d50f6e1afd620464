/*
 * api_mime - the MIME encoders and decoders the HTTP API builds messages with
 *
 * Everything here writes LF line ends (cleanup's content convention) and
 * output that is 7-bit clean: quoted-printable bodies (RFC 2045 6.7) with
 * lines of at most API_MIME_QP_LINE characters, RFC 2047 encoded words for
 * header text that is not plain printable ASCII, and a strict base64
 * decoder for the raw MIME a client sends.
 */
#ifndef API_MIME_H
#define API_MIME_H

#include "sys_defs.h"
#include "vstr.h"

#define API_MIME_QP_LINE 76 /* RFC 2045's limit, soft break included */
#define API_MIME_HEADER_PLAIN_MAX 900 /* longer header text is encoded */

/* api_mime_qp_append - append text (UTF-8; CRLF, LF or CR line ends, all
   made LF) quoted-printable to out; a final line without its newline
   gets one */
extern void api_mime_qp_append(VSTR *out, const char *text, size_t len);

/* api_mime_header_text - append header text to out: as it is when it is
   printable ASCII and short, else as RFC 2047 "=?UTF-8?B?...?=" words of
   at most 75 characters, folded with "\n " between words, never cutting
   a UTF-8 sequence. The caller has refused CR and LF. */
extern void api_mime_header_text(VSTR *out, const char *text, size_t len);

/* api_mime_phrase - append a display name as an RFC 5322 phrase: a
   quoted string when it is printable ASCII, else encoded words */
extern void api_mime_phrase(VSTR *out, const char *name, size_t len);

/* api_mime_b64_value - the value of a base64 character (RFC 4648
   alphabet), or -1 for any other byte */
extern int api_mime_b64_value(unsigned char ch);

/* api_mime_base64_decode - decode base64 (white space ignored, padding
   optional at the very end) into out; 0, or -1 with why saying what is
   wrong (a bad character and its offset, a bad length) */
extern int api_mime_base64_decode(VSTR *out, const char *text, size_t len,
                                  VSTR *why);

/* api_mime_base64_append - append data base64 encoded on lines of 76 */
extern void api_mime_base64_append(VSTR *out, const unsigned char *data,
                                   size_t len);

/* api_mime_printable - is text printable ASCII (and tab, when tab_ok)? */
extern bool api_mime_printable(const char *text, size_t len, bool tab_ok);

#endif
