/*
 * cleanup_rewrite - canonical address mapping, envelope and headers
 *
 * As Postfix's canonical(5): the envelope sender goes through
 * sender_canonical_maps then canonical_maps, each recipient through
 * recipient_canonical_maps then canonical_maps, and so do the addresses in
 * the sender headers (From, Sender, Reply-To, Errors-To, Return-Path,
 * Resent-From, Resent-Sender) and recipient headers (To, Cc, Bcc,
 * Resent-To, Resent-Cc). Each table list is asked once per address, in
 * maps_find_addr()'s order (user+ext@domain, user@domain, and for our own
 * domains user+ext, user, @domain). The value replaces the address; a value
 * "@domain" replaces only the domain; when the hit was on the address
 * without its extension (recipient_delimiter), the extension carries over
 * (user+ext@a -> new+ext@b). A table that cannot be read fails the message
 * with 451 4.3.0: an address is never passed on unmapped by accident.
 *
 * In headers only plain addr-spec ("u@d", "u@d (Name)") and angle forms
 * ("Name <u@d>", "\"Doe, J\" <u@d>") are rewritten; the rest of the text,
 * folding included, stays byte for byte. A header that cannot be parsed
 * (group syntax "list: a@b;", unbalanced quotes, comments or brackets) is
 * left untouched, and so is an element with a quoted local part or a
 * source route.
 *
 * Then virtual_alias_maps (virtual(5)) on each envelope recipient, never
 * on headers: the same lookup order and "@domain" and extension rules, but
 * a value may name several addresses (separated by commas or white space)
 * and each is looked up again, to virtual_alias_recursion_limit levels and
 * virtual_alias_expansion_limit addresses (more fails the message with
 * 451 4.3.0, as Postfix does not accept it); an address that maps to
 * itself (among others) is kept and not looked up again. "@domain" applies
 * to every address of a value, not only the first as in Postfix.
 *
 * Locally submitted mail (CLEANUP_FLAG_LOCAL: pickup, sendmail -bs) also
 * gets its bare addresses qualified in those headers, with or without
 * tables, as Postfix does for local clients: "To: root" becomes
 * "To: root@$myorigin". Mail from SMTP clients keeps what they wrote.
 */
#include "sys_defs.h"

#include "argv.h"
#include "cleanup.h"
#include "cleanup_proto.h"
#include "maps.h"
#include "match_list.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "vstr.h"

#define CLEANUP_REWRITE_FAILED "4.3.0 address rewriting table lookup failed"
#define CLEANUP_REWRITE_MAX_ADDRS 1000 /* per header; more: untouched */

/* The header classes, as Postfix's canonical_classes. */
static const char *const cleanup_sender_headers[] = {
    "from",        "sender",      "reply-to",      "errors-to",
    "return-path", "resent-from", "resent-sender", NULL,
};
static const char *const cleanup_recipient_headers[] = {
    "to", "cc", "bcc", "resent-to", "resent-cc", NULL,
};

/* cleanup_rewrite_active - does this table list have tables */
static bool cleanup_rewrite_active(MAPS *maps)
{
    return maps != NULL && maps_count(maps) > 0;
}

/* cleanup_rewrite_ext - where the extension of addr starts (its
   delimiter), or NULL: the first delimiter in the local part, not first */
static const char *cleanup_rewrite_ext(const char *addr, const char *delim)
{
    size_t local_len;

    (void) smtp_addr_split(addr, &local_len);
    if (delim == NULL || *delim == 0 || local_len < 2)
        return NULL;
    for (size_t i = 1; i < local_len; i++)
        if (strchr(delim, addr[i]) != NULL)
            return addr + i;
    return NULL;
}

/* cleanup_rewrite_flags - MAPS_ADDR_LOCAL when the domain of addr is ours
   (mydestination or myorigin); -1 when mydestination's table failed */
static int cleanup_rewrite_flags(CLEANUP_MSG *msg, const char *addr)
{
    const char *domain = smtp_addr_split(addr, NULL);
    int match;

    if (domain == NULL || strcasecmp(domain, msg->conf->myorigin) == 0)
        return MAPS_ADDR_LOCAL;
    if (msg->conf->mydestination == NULL)
        return 0;
    if ((match = match_list_match(msg->conf->mydestination, domain)) < 0)
        return -1;
    return match ? MAPS_ADDR_LOCAL : 0;
}

/* cleanup_rewrite_lookup - one table list on addr (qualified): the value
   as found (valid until the next lookup), or NULL when no table has it or
   its value is empty, or when one failed (*error MAP_FAIL); *propagate
   tells that the hit was on the address without its extension. what names
   the mapping for the log. */
static const char *cleanup_rewrite_lookup(CLEANUP_MSG *msg, MAPS *maps,
                                          const char *addr, const char *what,
                                          int *error, bool *propagate)
{
    const char *delim = msg->conf->recipient_delimiter;
    const char *ext = cleanup_rewrite_ext(addr, delim);
    const char *value = NULL;
    int flags;

    *error = MAP_NOTFOUND;
    *propagate = false;
    if ((flags = cleanup_rewrite_flags(msg, addr)) < 0) {
        msg_warn("%s: mydestination lookup of %s failed", msg->qid, addr);
        *error = MAP_FAIL;
        return NULL;
    }
    if (ext != NULL) {
        /* First the forms with the extension, so we know which one hit. */
        value = maps_find_addr(maps, addr, "", flags | MAPS_ADDR_NO_AT_DOMAIN,
                               error);
        if (value == NULL && *error != MAP_FAIL) {
            value = maps_find_addr(maps, addr, delim, flags, error);
            *propagate = value != NULL;
        }
    } else {
        value = maps_find_addr(maps, addr, delim ? delim : "", flags, error);
    }
    if (value == NULL)
        return NULL;
    while (*value == ' ' || *value == '\t')
        value++;
    if (*value == 0) {
        msg_warn("%s: empty %s mapping for %s ignored", msg->qid, what, addr);
        *error = MAP_NOTFOUND;
        return NULL;
    }
    return value;
}

/* cleanup_rewrite_build - the address that one result names for addr: a
   result "@domain" keeps addr's local part (its extension included); any
   other is qualified and, when propagate is set and it has no extension of
   its own, gets addr's extension (user+ext@a -> new+ext@b) */
static char *cleanup_rewrite_build(CLEANUP_MSG *msg, const char *addr,
                                   const char *found, bool propagate)
{
    const char *delim = msg->conf->recipient_delimiter;
    const char *ext = cleanup_rewrite_ext(addr, delim);
    size_t addr_local_len;
    const char *at =
        smtp_addr_split(addr, &addr_local_len) ? addr + addr_local_len : NULL;
    VSTR *result = vstr_alloc(64);

    if (found[0] == '@') {
        vstr_ncpy(result, addr, addr_local_len);
        vstr_cat(result, found);
    } else {
        char *qualified = cleanup_qualify(msg->conf, found);

        if (propagate && ext != NULL &&
            cleanup_rewrite_ext(qualified, delim) == NULL) {
            size_t ext_len = at ? (size_t) (at - ext) : strlen(ext);
            size_t local_len;

            (void) smtp_addr_split(qualified, &local_len);

            vstr_ncpy(result, qualified, local_len);
            vstr_ncat(result, ext, ext_len);
            vstr_cat(result, qualified + local_len);
        } else {
            vstr_cpy(result, qualified);
        }
        myfree(qualified);
    }
    vstr_trim(result);
    return vstr_export(result);
}

/* cleanup_rewrite_map - one table list on addr (qualified): the new address
   (the caller frees it), or NULL when no table has it or when one failed
   (*error MAP_FAIL). A canonical value is one address, taken whole. */
static char *cleanup_rewrite_map(CLEANUP_MSG *msg, MAPS *maps, const char *addr,
                                 int *error)
{
    bool propagate;
    const char *value =
        cleanup_rewrite_lookup(msg, maps, addr, "canonical", error, &propagate);
    char *found;
    char *result;

    if (value == NULL)
        return NULL;
    found = mystrdup(value); /* valid until the next lookup only */
    result = cleanup_rewrite_build(msg, addr, found, propagate);
    myfree(found);
    return result;
}

/* cleanup_rewrite_two - specific tables, then canonical_maps: a new string
   (addr itself when nothing matched), or NULL when a table failed */
static char *cleanup_rewrite_two(CLEANUP_MSG *msg, MAPS *specific,
                                 const char *addr)
{
    MAPS *lists[2] = {specific, msg->conf->canonical_maps};
    char *current = mystrdup(addr);

    if (*addr == 0)
        return current; /* the null sender stays null */
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(lists); i++) {
        char *next;
        int error;

        if (!cleanup_rewrite_active(lists[i]))
            continue;
        next = cleanup_rewrite_map(msg, lists[i], current, &error);
        if (next == NULL && error == MAP_FAIL) {
            msg_warn("%s: %s: lookup of %s failed", msg->qid,
                     i == 0 ? "sender/recipient canonical_maps"
                            : "canonical_maps",
                     current);
            myfree(current);
            return NULL;
        }
        if (next != NULL) {
            if (msg_verbose_get())
                msg_info("%s: canonical %s -> %s", msg->qid, current, next);
            myfree(current);
            current = next;
        }
    }
    return current;
}

/* cleanup_rewrite_sender - the envelope sender: sender_canonical_maps,
   then canonical_maps */
char *cleanup_rewrite_sender(CLEANUP_MSG *msg, const char *sender)
{
    return cleanup_rewrite_two(msg, msg->conf->sender_canonical_maps, sender);
}

/* cleanup_rewrite_recipient - a recipient: recipient_canonical_maps, then
   canonical_maps */
char *cleanup_rewrite_recipient(CLEANUP_MSG *msg, const char *rcpt)
{
    return cleanup_rewrite_two(msg, msg->conf->recipient_canonical_maps, rcpt);
}

/* cleanup_rewrite_result_split - the addresses of one table value; see
   cleanup.h */
ARGV *cleanup_rewrite_result_split(const char *value)
{
    ARGV *out = argv_alloc(4);
    VSTR *word = vstr_alloc(64);
    bool in_quote = false;

    for (const char *cp = value;; cp++) {
        if (*cp == 0 || (!in_quote && strchr(", \t\r\n", *cp) != NULL)) {
            const char *text = vstr_str(word);
            size_t len = vstr_len(word);

            if (len >= 2 && text[0] == '<' && text[len - 1] == '>') {
                text++;
                len -= 2;
            }
            if (len > 0)
                argv_addn(out, text, len);
            vstr_reset(word);
            if (*cp == 0)
                break;
            continue;
        }
        if (*cp == '"')
            in_quote = !in_quote;
        else if (*cp == '\\' && in_quote && cp[1] != 0)
            vstr_addch(word, *cp++);
        vstr_addch(word, *cp);
    }
    vstr_free(word);
    return out;
}

/* cleanup_rewrite_has - is addr in list (without case)? */
static bool cleanup_rewrite_has(const ARGV *list, const char *addr)
{
    for (size_t i = 0; i < list->argc; i++)
        if (strcasecmp(list->argv[i], addr) == 0)
            return true;
    return false;
}

/* cleanup_rewrite_expand_one - expand list->argv[slot] in place, as deep
   as it goes: its first result replaces it, the others are appended (and
   expanded later by the caller). An address whose value names itself is
   kept (and never expanded again: self). false when the message failed. */
static bool cleanup_rewrite_expand_one(CLEANUP_MSG *msg, ARGV *list,
                                       size_t slot, ARGV *self)
{
    const CLEANUP_CONF *conf = msg->conf;

    for (int depth = 0; !cleanup_rewrite_has(self, list->argv[slot]); depth++) {
        bool propagate;
        int error;
        const char *value = cleanup_rewrite_lookup(
            msg, conf->virtual_alias_maps, list->argv[slot], "virtual alias",
            &error, &propagate);
        ARGV *results;
        char *lhs;

        if (value == NULL) {
            if (error != MAP_FAIL)
                return true;
            msg_warn("%s: virtual_alias_maps: lookup of %s failed", msg->qid,
                     list->argv[slot]);
            cleanup_msg_fail(msg, 451, CLEANUP_REWRITE_FAILED);
            return false;
        }
        if (depth >= conf->virtual_recursion_limit) {
            msg_warn("%s: unreasonable virtual_alias_maps map nesting for %s"
                     " (virtual_alias_recursion_limit %d) -- message not"
                     " accepted",
                     msg->qid, list->argv[slot], conf->virtual_recursion_limit);
            cleanup_msg_fail(msg, 451,
                             "4.3.0 virtual alias expansion nested too deep");
            return false;
        }
        results = cleanup_rewrite_result_split(value);
        if (results->argc == 0) {
            argv_free(results);
            return true;
        }
        lhs = mystrdup(list->argv[slot]);
        for (size_t i = 0; i < results->argc; i++) {
            char *addr =
                cleanup_rewrite_build(msg, lhs, results->argv[i], propagate);

            if (msg_verbose_get())
                msg_info("%s: virtual alias %s -> %s", msg->qid, lhs, addr);
            if (strcasecmp(addr, lhs) == 0 && !cleanup_rewrite_has(self, lhs))
                argv_add(self, lhs);
            if (i == 0) {
                myfree(list->argv[slot]);
                list->argv[slot] = addr;
            } else {
                argv_add(list, addr);
                myfree(addr);
            }
        }
        myfree(lhs);
        argv_free(results);
        if (list->argc > (size_t) conf->virtual_expansion_limit) {
            msg_warn("%s: unreasonable virtual_alias_maps map expansion size"
                     " for %s (virtual_alias_expansion_limit %d) -- message"
                     " not accepted",
                     msg->qid, list->argv[0], conf->virtual_expansion_limit);
            cleanup_msg_fail(msg, 451,
                             "4.3.0 virtual alias expansion gives too many"
                             " addresses");
            return false;
        }
    }
    return true;
}

/* cleanup_rewrite_virtual - virtual_alias_maps on one recipient, as
 * Postfix's virtual(5): each address is looked up (user+ext@domain,
 * user@domain, user+ext and user for our own domains, @domain) and
 * replaced by the addresses of its value, recursively. An address whose
 * value includes itself is kept and not expanded again. More than
 * virtual_alias_recursion_limit nested expansions, or more than
 * virtual_alias_expansion_limit addresses, fail the message (451 4.3.0),
 * as does a table that cannot be read. Duplicates are dropped. */
ARGV *cleanup_rewrite_virtual(CLEANUP_MSG *msg, const char *rcpt)
{
    ARGV *list = argv_alloc(4);
    ARGV *self;
    ARGV *out;

    argv_add(list, rcpt);
    if (msg->status || !cleanup_rewrite_active(msg->conf->virtual_alias_maps))
        return list;
    self = argv_alloc(2);
    for (size_t slot = 0; slot < list->argc; slot++) {
        if (!cleanup_rewrite_expand_one(msg, list, slot, self)) {
            argv_free(self);
            argv_free(list);
            return NULL;
        }
    }
    argv_free(self);
    out = argv_alloc(list->argc);
    for (size_t i = 0; i < list->argc; i++)
        if (!cleanup_rewrite_has(out, list->argv[i]))
            argv_add(out, list->argv[i]);
    argv_free(list);
    return out;
}

/* cleanup_rewrite_is_addr - may text[0..len) stand as an addr-spec that we
   rewrite: no white space, quotes, brackets, comments or specials but '@'
   and '.', no source route, a local part and (with '@') a domain */
static bool cleanup_rewrite_is_addr(const char *text, size_t len)
{
    size_t at_count = 0, at_pos = 0;

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) text[i];

        if (ch <= ' ' || ch == 127 || strchr("\"()<>,;:\\[]", ch) != NULL)
            return false;
        if (ch == '@') {
            at_count++;
            at_pos = i;
        }
    }
    if (at_count > 1)
        return false;
    return at_count == 0 || (at_pos > 0 && at_pos + 1 < len);
}

/* cleanup_rewrite_skip_text - inside a quoted string or a comment, step
   over value[*i] (and the character a backslash quotes); false when *i is
   in neither, so the caller looks at it */
static bool cleanup_rewrite_skip_text(const char *value, size_t *i, size_t end,
                                      bool *in_quote, size_t *depth)
{
    char ch = value[*i];

    if (!*in_quote && *depth == 0)
        return false;
    if (ch == '\\' && *i + 1 < end)
        (*i)++;
    else if (*in_quote && ch == '"')
        *in_quote = false;
    else if (!*in_quote && ch == '(')
        (*depth)++;
    else if (!*in_quote && ch == ')')
        (*depth)--;
    return true;
}

/* cleanup_rewrite_element - the address span of one list element
   value[start..end), or false when there is none we can rewrite */
static bool cleanup_rewrite_element(const char *value, size_t start, size_t end,
                                    size_t *span)
{
    size_t angle_open = 0, angle_count = 0, word_start = 0, word_count = 0;
    size_t word_end = 0, depth = 0;
    bool in_quote = false, in_word = false, quoted_word = false;

    for (size_t i = start; i < end; i++) {
        char ch = value[i];

        if (cleanup_rewrite_skip_text(value, &i, end, &in_quote, &depth))
            continue;
        if (ch == '<') {
            angle_open = i;
            angle_count++;
            continue;
        }
        if (ch == '"' || ch == '(') {
            if (ch == '"')
                quoted_word = in_quote = true;
            else
                depth = 1;
            if (in_word) {
                in_word = false;
                word_end = i;
            }
            continue;
        }
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (in_word) {
                in_word = false;
                word_end = i;
            }
            continue;
        }
        if (!in_word) {
            in_word = true;
            word_start = i;
            word_count++;
        }
    }
    if (in_word)
        word_end = end;
    if (angle_count == 1) {
        const char *close = memchr(value + angle_open, '>', end - angle_open);
        size_t a, b;

        if (close == NULL)
            return false;
        a = angle_open + 1;
        b = (size_t) (close - value);
        while (a < b && strchr(" \t\r\n", value[a]) != NULL)
            a++;
        while (b > a && strchr(" \t\r\n", value[b - 1]) != NULL)
            b--;
        if (!cleanup_rewrite_is_addr(value + a, b - a))
            return false;
        span[0] = a;
        span[1] = b;
        return true;
    }
    if (angle_count > 1 || word_count != 1 || quoted_word)
        return false;
    if (!cleanup_rewrite_is_addr(value + word_start, word_end - word_start))
        return false;
    span[0] = word_start;
    span[1] = word_end;
    return true;
}

/* cleanup_rewrite_addr_spans - the addresses of an address header value
 * that we can rewrite, as start/end offset pairs; -1 when the value cannot
 * be parsed. An element is what lies between top-level commas. */
ssize_t cleanup_rewrite_addr_spans(const char *value, size_t *spans,
                                   size_t max_pairs)
{
    size_t len = strlen(value), start = 0, depth = 0, pairs = 0;
    bool in_quote = false, in_angle = false;

    for (size_t i = 0; i <= len; i++) {
        char ch = i < len ? value[i] : ',';

        /* at i == len (the closing ','), an open quote or comment stays
           open, and the check after the loop refuses it */
        if (cleanup_rewrite_skip_text(value, &i, len, &in_quote, &depth))
            continue;
        if (in_angle) {
            if (ch == '>')
                in_angle = false;
            else if (ch == '<' || ch == '"' || ch == '(')
                return -1;
            continue;
        }
        switch (ch) {
        case '"':
            in_quote = true;
            break;
        case '(':
            depth = 1;
            break;
        case '<':
            in_angle = true;
            break;
        case ')':
        case '>':
        case ':':
        case ';':
            return -1; /* stray bracket, or group syntax */
        case ',':
            if (pairs < max_pairs &&
                cleanup_rewrite_element(value, start, i, spans + 2 * pairs))
                pairs++;
            start = i + 1;
            break;
        default:
            break;
        }
    }
    if (in_quote || depth > 0 || in_angle)
        return -1;
    return (ssize_t) pairs;
}

/* cleanup_rewrite_hit - s[0..len) is one of the names (any case) */
static bool cleanup_rewrite_hit(const char *const *names, const char *s,
                                size_t len)
{
    for (size_t i = 0; names[i]; i++)
        if (strlen(names[i]) == len && strncasecmp(s, names[i], len) == 0)
            return true;
    return false;
}

/* cleanup_rewrite_header_class - the tables for this header, or false when
   it is no address header */
static bool cleanup_rewrite_header_class(CLEANUP_MSG *msg, const VSTR *header,
                                         MAPS **specific)
{
    const char *colon = strchr(vstr_str(header), ':');
    size_t name_len;

    if (colon == NULL)
        return false;
    name_len = (size_t) (colon - vstr_str(header));
    if (cleanup_rewrite_hit(cleanup_sender_headers, vstr_str(header),
                            name_len)) {
        *specific = msg->conf->sender_canonical_maps;
        return true;
    }
    if (cleanup_rewrite_hit(cleanup_recipient_headers, vstr_str(header),
                            name_len)) {
        *specific = msg->conf->recipient_canonical_maps;
        return true;
    }
    return false;
}

/* cleanup_rewrite_header - rewrite the addresses of an address header in
   place; false when a table failed (and the message has failed) */
bool cleanup_rewrite_header(CLEANUP_MSG *msg, VSTR *header)
{
    MAPS *specific = NULL;
    size_t *spans;
    ssize_t pairs;
    size_t value_off, done = 0;
    VSTR *out;
    bool changed = false;
    bool qualify = (msg->flags & CLEANUP_FLAG_LOCAL) != 0;

    if (msg->status || !cleanup_rewrite_header_class(msg, header, &specific))
        return msg->status == 0;
    if (!qualify && !cleanup_rewrite_active(specific) &&
        !cleanup_rewrite_active(msg->conf->canonical_maps))
        return true;
    value_off = (size_t) (strchr(vstr_str(header), ':') - vstr_str(header)) + 1;
    spans = mycalloc(2 * CLEANUP_REWRITE_MAX_ADDRS, sizeof(*spans));
    pairs = cleanup_rewrite_addr_spans(vstr_str(header) + value_off, spans,
                                       CLEANUP_REWRITE_MAX_ADDRS);
    if (pairs <= 0) {
        if (pairs < 0 && msg_verbose_get())
            msg_info("%s: header not rewritten: cannot parse it", msg->qid);
        myfree(spans);
        return true;
    }
    out = vstr_alloc(vstr_len(header) + 64);
    for (ssize_t i = 0; i < pairs; i++) {
        size_t a = value_off + spans[2 * i], b = value_off + spans[2 * i + 1];
        char *addr = mystrndup(vstr_str(header) + a, b - a);
        char *qualified = cleanup_qualify(msg->conf, addr);
        char *result = cleanup_rewrite_two(msg, specific, qualified);

        if (result == NULL) {
            cleanup_msg_fail(msg, 451, CLEANUP_REWRITE_FAILED);
            myfree(qualified);
            myfree(addr);
            vstr_free(out);
            myfree(spans);
            return false;
        }
        vstr_ncat(out, vstr_str(header) + done, a - done);
        if (strcmp(result, qualified) != 0 ||
            (qualify && strcmp(qualified, addr) != 0)) {
            /* Mapped, or a bare local address of local mail qualified. */
            vstr_cat(out, result);
            changed = true;
        } else {
            vstr_cat(out, addr); /* unmatched: as written */
        }
        done = b;
        myfree(result);
        myfree(qualified);
        myfree(addr);
    }
    vstr_ncat(out, vstr_str(header) + done, vstr_len(header) - done);
    if (changed)
        vstr_ncpy(header, vstr_str(out), vstr_len(out));
    vstr_free(out);
    myfree(spans);
    return true;
}
