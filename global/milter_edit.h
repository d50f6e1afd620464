/*
 * milter_edit - a milter's changes to a message, collected and applied
 *
 * At the end of a message a milter may add a header ('h'), insert one at
 * a position among all headers ('i', 0 is the first), change or delete
 * the index-th header of a name ('m', 1 is the first; an empty value
 * deletes, and a change of a header that is not there adds it) and
 * replace the body ('b', in pieces). The changes are collected in the
 * order the milter sent them and applied to the message held in memory
 * (LF line endings: headers, an empty line, the body), never to a queue
 * file. What a milter may add is bounded: a milter that sends more than
 * the limit (message_size_limit) of headers, body and whatever else the
 * caller counts (smtpd: the recipients it adds) is refused, and so is a
 * header change larger than the header limit (header_size_limit) when
 * one is set.
 *
 * pickup applies non_smtpd_milters' changes with it, smtpd_milter.c
 * smtpd_milters'.
 */
#ifndef MILTER_EDIT_H
#define MILTER_EDIT_H

#include "sys_defs.h"

#include <stdint.h>

#include "vstr.h"

typedef struct MILTER_EDIT MILTER_EDIT;

/* milter_edit_alloc - no changes yet; limit bounds the bytes of headers
   and body a milter may add (0: no bound) */
extern MILTER_EDIT *milter_edit_alloc(size_t limit);
extern MILTER_EDIT *milter_edit_free(MILTER_EDIT *edit);
/* milter_edit_header_limit - bound each header change to limit bytes (0,
   the default: no bound of its own) */
extern void milter_edit_header_limit(MILTER_EDIT *edit, size_t limit);
/* milter_edit_reserve - count len more bytes the milter adds outside
   headers and body (recipients) toward the limit; -1 past it */
extern int milter_edit_reserve(MILTER_EDIT *edit, size_t len);
/* milter_edit_exceeded - the bound the last refused change crossed
   ("message_size_limit" or "header_size_limit"), or NULL */
extern const char *milter_edit_exceeded(const MILTER_EDIT *edit);
/* milter_edit_header - one header change: cmd 'h', 'i' or 'm' (the
   MILTER_REP_* byte), index as the milter gave it, name and value as
   milter_reply_parse checked them; -1 past the limit */
extern int milter_edit_header(MILTER_EDIT *edit, int cmd, uint32_t index,
                              const char *name, const char *value);
/* milter_edit_body - a piece of the new body (CR LF line endings); -1
   past the limit */
extern int milter_edit_body(MILTER_EDIT *edit, const char *data, size_t len);
/* milter_edit_count - the changes collected */
extern size_t milter_edit_count(const MILTER_EDIT *edit);
/* milter_edit_apply - the changes, applied to content in place (LF line
   endings); the count of changes applied */
extern size_t milter_edit_apply(const MILTER_EDIT *edit, VSTR *content);

#endif
