/*
 * cleanup_checks - header_checks and body_checks, as Postfix's
 *
 * Each logical header (its folded lines joined: the line breaks removed,
 * the white space that starts a continuation line kept) is looked up in
 * header_checks as "Name: value"; each body line, without its newline, in
 * body_checks. MIME parts are not told apart. The first word of the value
 * found (any case) is the action:
 *
 *   REJECT [text]   refuse the message: 550 "5.7.1 text" (or "5.7.1 message
 *                   content rejected"; a text that starts with its own
 *                   4.x.x / 5.x.x code keeps it, 4.x.x answers 451)
 *   DISCARD [text]  the client is told 250, nothing is queued
 *   HOLD [text]     the message goes into hold/ instead of incoming/
 *   WARN [text]     log "warning: ..." only (INFO the same as "info:")
 *   REPLACE text    the header (body line) is replaced by text
 *   PREPEND text    text goes in before the header (body line)
 *   IGNORE          the header (body line) is dropped
 *   DUNNO, OK       nothing
 *
 * The first REJECT or DISCARD decides: nothing is checked after it. Each
 * action but IGNORE, DUNNO and OK is logged as Postfix does:
 *
 *   QID: reject: header Subject: xyz from host[addr]; from=<s> to=<r>
 *       proto=ESMTP helo=<h>: 5.7.1 text
 *
 * A table that cannot be read fails the message with 451 4.3.0.
 */
#include "sys_defs.h"

#include <ctype.h>

#include "cleanup.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "vstr.h"

#define CLEANUP_CHECKS_LOG_MAX 200 /* bytes of the item in a log line */

/* cleanup_checks_log - one Postfix-style action log line */
static void cleanup_checks_log(CLEANUP_MSG *msg, const char *action,
                               const char *class_name, const char *what,
                               const char *text)
{
    VSTR *line = vstr_alloc(256);

    vstr_sprintf(line, "%s: %s: %s %.*s from %s;", msg->qid, action, class_name,
                 CLEANUP_CHECKS_LOG_MAX, what, msg->client_info);
    vstr_sprintf_append(line, " from=<%s>", msg->sender);
    if (msg->first_rcpt)
        vstr_sprintf_append(line, " to=<%s>", msg->first_rcpt);
    if (msg->protocol)
        vstr_sprintf_append(line, " proto=%s", msg->protocol);
    if (msg->helo_name)
        vstr_sprintf_append(line, " helo=<%s>", msg->helo_name);
    if (text && *text)
        vstr_sprintf_append(line, ": %s", text);
    /* No control characters from the message in our log. */
    for (size_t i = 0; i < vstr_len(line); i++)
        if ((unsigned char) vstr_str(line)[i] < ' ')
            vstr_str(line)[i] = ' ';
    msg_info("%s", vstr_str(line));
    vstr_free(line);
}

/* cleanup_checks_has_code - does text start with an enhanced status code
   "4.x.x" or "5.x.x" followed by a space or its end */
static bool cleanup_checks_has_code(const char *text)
{
    const char *cp = text;

    if (*cp != '4' && *cp != '5')
        return false;
    cp++;
    for (int part = 0; part < 2; part++) {
        int digits = 0;

        if (*cp++ != '.')
            return false;
        while (isdigit((unsigned char) *cp) && digits < 4) {
            cp++;
            digits++;
        }
        if (digits == 0 || digits > 3)
            return false;
    }
    return *cp == 0 || *cp == ' ';
}

/* cleanup_checks_is_header - is text a header line "Name: ..." */
static bool cleanup_checks_is_header(const char *text)
{
    const char *cp;

    for (cp = text; *cp && *cp != ':'; cp++)
        if ((unsigned char) *cp < 33 || (unsigned char) *cp > 126)
            return false;
    return *cp == ':' && cp > text && strchr(cp, '\n') == NULL;
}

/* cleanup_check_action - apply one table value to item (a header with its
 * newline(s), or a body line with or without its newline); false when the
 * item is to be dropped. class_name is "header" or "body", what the item
 * as matched (for the log). */
bool cleanup_check_action(CLEANUP_MSG *msg, const char *class_name,
                          const char *what, const char *value, VSTR *item,
                          VSTR *prepend)
{
    bool is_header = strcmp(class_name, "header") == 0;
    const char *cp = value;
    const char *text;
    size_t word_len;
    VSTR *reason;

    while (*cp == ' ' || *cp == '\t')
        cp++;
    for (word_len = 0;
         cp[word_len] && cp[word_len] != ' ' && cp[word_len] != '\t';)
        word_len++;
    for (text = cp + word_len; *text == ' ' || *text == '\t';)
        text++;

#define CLEANUP_ACT_IS(name)                                                   \
    (word_len == sizeof(name) - 1 && strncasecmp(cp, name, word_len) == 0)

    if (CLEANUP_ACT_IS("REJECT")) {
        int status = 550;

        reason = vstr_alloc(64);
        if (*text == 0)
            vstr_cpy(reason, "5.7.1 message content rejected");
        else if (cleanup_checks_has_code(text))
            vstr_cpy(reason, text);
        else
            vstr_sprintf(reason, "5.7.1 %s", text);
        if (vstr_str(reason)[0] == '4')
            status = 451;
        cleanup_checks_log(msg, "reject", class_name, what, vstr_str(reason));
        cleanup_msg_fail(msg, status, vstr_str(reason));
        vstr_free(reason);
        return false;
    }
    if (CLEANUP_ACT_IS("DISCARD")) {
        cleanup_checks_log(msg, "discard", class_name, what, text);
        msg->discard = true;
        return false;
    }
    if (CLEANUP_ACT_IS("HOLD")) {
        cleanup_checks_log(msg, "hold", class_name, what, text);
        msg->hold = true;
        return true;
    }
    if (CLEANUP_ACT_IS("WARN")) {
        cleanup_checks_log(msg, "warning", class_name, what, text);
        return true;
    }
    if (CLEANUP_ACT_IS("INFO")) {
        cleanup_checks_log(msg, "info", class_name, what, text);
        return true;
    }
    if (CLEANUP_ACT_IS("IGNORE"))
        return false;
    if (CLEANUP_ACT_IS("DUNNO") || CLEANUP_ACT_IS("OK"))
        return true;
    if (CLEANUP_ACT_IS("REPLACE") || CLEANUP_ACT_IS("PREPEND")) {
        bool replace = CLEANUP_ACT_IS("REPLACE");

        if (*text == 0 || strchr(text, '\n') != NULL ||
            (is_header && !cleanup_checks_is_header(text))) {
            msg_warn("%s: %s_checks: bad %s text \"%.100s\": ignored", msg->qid,
                     class_name, replace ? "REPLACE" : "PREPEND", text);
            return true;
        }
        cleanup_checks_log(msg, replace ? "replace" : "prepend", class_name,
                           what, text);
        if (replace) {
            bool newline = vstr_len(item) > 0 &&
                           vstr_str(item)[vstr_len(item) - 1] == '\n';

            vstr_cpy(item, text);
            if (newline || is_header)
                vstr_addch(item, '\n');
        } else {
            vstr_cat(prepend, text);
            vstr_addch(prepend, '\n');
        }
        return true;
    }
#undef CLEANUP_ACT_IS
    msg_warn("%s: %s_checks: unknown action \"%.100s\": ignored", msg->qid,
             class_name, value);
    return true;
}

/* cleanup_check_lookup - look key up in maps and act on it */
static bool cleanup_check_lookup(CLEANUP_MSG *msg, MAPS *maps,
                                 const char *class_name, const char *key,
                                 VSTR *item, VSTR *prepend)
{
    const char *found;
    char *value;
    int error = MAP_NOTFOUND;
    bool keep;

    found = maps_find(maps, key, &error);
    if (found == NULL) {
        if (error == MAP_FAIL) {
            msg_warn("%s: %s_checks lookup failed; message not accepted,"
                     " try again later",
                     msg->qid, class_name);
            cleanup_msg_fail(msg, 451,
                             strcmp(class_name, "header") == 0
                                 ? "4.3.0 header_checks table"
                                   " lookup failed"
                                 : "4.3.0 body_checks table"
                                   " lookup failed");
            return false;
        }
        return true;
    }
    value = mystrdup(found); /* valid until the next lookup only */
    keep = cleanup_check_action(msg, class_name, key, value, item, prepend);
    myfree(value);
    return keep;
}

/* cleanup_check_header - header_checks on one header (all its lines) */
bool cleanup_check_header(CLEANUP_MSG *msg, VSTR *header, VSTR *prepend)
{
    VSTR *joined;
    bool keep;

    if (msg->status || msg->discard || msg->conf->header_checks == NULL ||
        maps_count(msg->conf->header_checks) == 0)
        return msg->status == 0 && !msg->discard;
    joined = vstr_alloc(vstr_len(header));
    for (size_t i = 0; i < vstr_len(header); i++) {
        char ch = vstr_str(header)[i];

        if (ch != '\n' && ch != '\r')
            vstr_addch(joined, ch);
    }
    keep = cleanup_check_lookup(msg, msg->conf->header_checks, "header",
                                vstr_str(joined), header, prepend);
    vstr_free(joined);
    return keep;
}

/* cleanup_check_body - body_checks on one line (with or without its
   newline) */
bool cleanup_check_body(CLEANUP_MSG *msg, VSTR *line, VSTR *prepend)
{
    char *key;
    size_t len = vstr_len(line);
    bool keep;

    if (msg->status || msg->discard || msg->conf->body_checks == NULL ||
        maps_count(msg->conf->body_checks) == 0)
        return msg->status == 0 && !msg->discard;
    if (len > 0 && vstr_str(line)[len - 1] == '\n')
        len--;
    key = mystrndup(vstr_str(line), len);
    keep = cleanup_check_lookup(msg, msg->conf->body_checks, "body", key, line,
                                prepend);
    myfree(key);
    return keep;
}
