/*
 * api_mustache - Mustache templates for the HTTP API (issue #21)
 *
 * The language of the Mustache spec, less partials and set-delimiter tags
 * (both refused with a clear error): {{name}} (HTML-escaped when the
 * caller asks, as for an HTML part), {{{name}}} and {{& name}} (never
 * escaped), dotted names (a.b.c) looked up through the context stack,
 * {{.}} the current item, {{#name}}...{{/name}} sections (false, null, a
 * missing name and an empty list skip; a list repeats once per item; an
 * object or any other value is pushed and rendered once), {{^name}}
 * inverted sections, {{! comments}}. A template is compiled first, so an
 * unclosed or mismatched section, an empty or unknown tag is an error
 * naming the line, and rendering cannot fail on syntax. Sections nest at
 * most API_MUSTACHE_DEPTH deep, and rendering stops with an error past
 * the caller's output limit or API_MUSTACHE_STEPS tokens visited (nested
 * sections over lists multiply; the caller may set a lower bound), so a hostile template and data can make
 * neither a huge output nor an endless loop.
 */
#ifndef API_MUSTACHE_H
#define API_MUSTACHE_H

#include <jansson.h>

#include "sys_defs.h"
#include "vstr.h"

#define API_MUSTACHE_DEPTH 32
#define API_MUSTACHE_STEPS 1000000 /* tokens one rendering may visit */

typedef struct API_MUSTACHE API_MUSTACHE;

/* api_mustache_compile - a template, or NULL with why ("line 3: section
   \"items\" is not closed") */
extern API_MUSTACHE *api_mustache_compile(const char *text, size_t len,
                                          VSTR *why);
extern API_MUSTACHE *api_mustache_free(API_MUSTACHE *tmpl);

/* api_mustache_render - append the template rendered with data (a JSON
   value, the bottom of the context stack) to out; escape_html: {{name}}
   is HTML-escaped; 0, or with why -1 when the output would exceed max_out
   bytes, -2 when the rendering would visit more than max_steps tokens
   (0: API_MUSTACHE_STEPS) */
extern int api_mustache_render(const API_MUSTACHE *tmpl, json_t *data,
                               bool escape_html, size_t max_out,
                               size_t max_steps, VSTR *out, VSTR *why);

#endif
