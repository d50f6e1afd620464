/*
 * submit_check - what the envelope of a local submission may hold
 *
 * The rules are byte rules on purpose: sendmail and pickup must agree on
 * them exactly, and neither parses addresses further (cleanup qualifies and
 * rewrites them; smtp quotes them on the way out).
 */
#include "sys_defs.h"

#include "submit_check.h"
#include "vstr.h"

/* submit_check_control - the first control byte of text, or -1 */
static int submit_check_control(const char *text)
{
    for (const char *cp = text; *cp; cp++) {
        int ch = (unsigned char) *cp;

        if (ch < 0x20 || ch == 0x7f)
            return ch;
    }
    return -1;
}

/* submit_check_text - the rules common to addresses and names */
static int submit_check_text(const char *text, size_t max, VSTR *why)
{
    size_t len = strlen(text);
    int ch;

    if ((ch = submit_check_control(text)) >= 0) {
        vstr_sprintf(why, "contains a control character (\\x%02x)", ch);
        return -1;
    }
    if (len > max) {
        vstr_sprintf(why, "is %zu bytes long; the limit is %zu", len, max);
        return -1;
    }
    return 0;
}

/* submit_check_address - a recipient, or with sender the envelope sender */
int submit_check_address(const char *addr, bool sender, VSTR *why)
{
    if (!sender && *addr == 0) {
        vstr_cpy(why, "is empty");
        return -1;
    }
    return submit_check_text(addr, SUBMIT_CHECK_ADDR_MAX, why);
}

/* submit_check_full_name - a -F full name */
int submit_check_full_name(const char *name, VSTR *why)
{
    return submit_check_text(name, SUBMIT_CHECK_FULL_NAME_MAX, why);
}

/* submit_check_envid - a -V envelope ID */
int submit_check_envid(const char *envid, VSTR *why)
{
    size_t len = strlen(envid);

    if (len == 0 || len > SUBMIT_CHECK_ENVID_MAX) {
        vstr_sprintf(why, "does not have 1 to %d characters",
                     SUBMIT_CHECK_ENVID_MAX);
        return -1;
    }
    for (const char *cp = envid; *cp; cp++) {
        if (*cp <= ' ' || *cp > '~') {
            vstr_cpy(why, "is not printable ASCII without spaces");
            return -1;
        }
    }
    return 0;
}

/* submit_check_quote - text in quotes, escaped and cut after max bytes */
void submit_check_quote(VSTR *out, const char *text, size_t max)
{
    size_t i;

    vstr_addch(out, '"');
    for (i = 0; text[i] != 0 && i < max; i++) {
        int ch = (unsigned char) text[i];

        if (ch < 0x20 || ch == 0x7f)
            vstr_sprintf_append(out, "\\x%02x", (unsigned) ch);
        else if (ch == '"' || ch == '\\')
            vstr_sprintf_append(out, "\\%c", ch);
        else
            vstr_addch(out, ch);
    }
    vstr_addch(out, '"');
    if (text[i] != 0)
        vstr_cat(out, "...");
}
