/*
 * track_html - click tracking and the open pixel in one HTML document
 *
 * track_html_rewrite copies HTML, replacing the href of each <a> and
 * <area> tag whose value (entities decoded, white space trimmed) is an
 * absolute http or https URL by what the caller's link function makes of
 * it, and puts a 1x1 image before the last </body> (at the end when there
 * is none). Everything else is copied byte for byte: comments, the
 * content of <script> and <style>, links that are mailto:, anchors or
 * anything but http(s), and hrefs the link function declines. A tag that
 * does not end (no '>', an unclosed quote) ends the rewriting: the rest
 * is copied as it is. A line the rewriting would make longer than
 * TRACK_HTML_LINE_MAX gets a line break inside the tag (white space to
 * HTML), so 7bit and 8bit parts stay within SMTP's 998 bytes.
 */
#ifndef TRACK_HTML_H
#define TRACK_HTML_H

#include "sys_defs.h"

#include "vstr.h"

#define TRACK_HTML_LINE_MAX 900

/* A link function: append the tracking URL for url to newurl and return
   true, or return false to leave the link as it is. */
typedef bool (*TRACK_HTML_LINK_FN)(void *ctx, const char *url, VSTR *newurl);

typedef struct TRACK_HTML_OPTS {
    TRACK_HTML_LINK_FN link; /* NULL: no click tracking */
    void *ctx;
    const char *pixel_url; /* NULL: no open pixel */
} TRACK_HTML_OPTS;

/* track_html_rewrite - append html[0..len) rewritten to out; the number of
   changes made (links rewritten, plus one for the pixel) */
extern size_t track_html_rewrite(const char *html, size_t len, VSTR *out,
                                 const TRACK_HTML_OPTS *opts);

/* track_html_unescape - append text with the HTML character references
   &amp; &lt; &gt; &quot; &apos; &#N; &#xH; (ASCII ones only) decoded;
   others are kept as written */
extern void track_html_unescape(const char *text, size_t len, VSTR *out);

#endif
