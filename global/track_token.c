/*
 * track_token - the payloads of tracking and unsubscribe tokens
 *
 * See track_token.h for the layout. Parsing is strict: the exact count of
 * fields for the purpose, no control character anywhere, so a payload made
 * for one link cannot be read as another's.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <strings.h>

#include "sign_token.h"
#include "track_token.h"
#include "vstr.h"

/* track_token_fields - how many fields a purpose's payload has; 0: none */
static int track_token_fields(const char *purpose)
{
    if (strcmp(purpose, TRACK_PURPOSE_OPEN) == 0)
        return 3;
    if (strcmp(purpose, TRACK_PURPOSE_CLICK) == 0 ||
        strcmp(purpose, TRACK_PURPOSE_UNSUB) == 0)
        return 4;
    return 0;
}

/* track_field_ok - a field may be signed: no control byte, bounded */
static bool track_field_ok(const char *field)
{
    size_t len = 0;

    for (const unsigned char *cp = (const unsigned char *) field; *cp; cp++) {
        if (*cp < 32 || *cp == 127)
            return false;
        len++;
    }
    return len <= TRACK_FIELD_MAX;
}

/* track_url_ok - an absolute http(s) URL we may sign and redirect to */
bool track_url_ok(const char *url)
{
    const char *rest;

    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else
        return false;
    if (*rest == 0 || *rest == '/')
        return false; /* no host */
    for (const unsigned char *cp = (const unsigned char *) url; *cp; cp++)
        if (*cp <= 32 || *cp >= 127 || *cp == '"' || *cp == '<' || *cp == '>' ||
            *cp == '\\')
            return false;
    return strlen(url) <= TRACK_FIELD_MAX;
}

/* track_token_make - append the token of purpose for these fields */
int track_token_make(VSTR *out, const VSTR *key, const char *purpose,
                     const char *qid, const char *recipient, const char *tenant,
                     const char *extra)
{
    const char *fields[4] = {qid, recipient, tenant, extra};
    int count = track_token_fields(purpose);
    VSTR *payload;

    if (count == 0)
        return -1;
    payload = vstr_alloc(128);
    for (int i = 0; i < count; i++) {
        const char *field = fields[i] ? fields[i] : "";

        if (!track_field_ok(field)) {
            vstr_free(payload);
            return -1;
        }
        if (i > 0)
            vstr_addch(payload, 0);
        vstr_cat(payload, field);
    }
    sign_token_make(out, key, purpose, vstr_str(payload), vstr_len(payload));
    vstr_free(payload);
    return 0;
}

/* track_token_parse - check and split a token */
int track_token_parse(const VSTR *key, const char *purpose, const char *token,
                      TRACK_TOKEN *tok)
{
    int count = track_token_fields(purpose);
    const char *fields[4] = {"", "", "", ""};
    const char *cp;
    const char *end;
    int n = 0;

    memset(tok, 0, sizeof(*tok));
    if (count == 0)
        return -1;
    tok->buf = vstr_alloc(128);
    if (sign_token_check(key, purpose, token, tok->buf) < 0)
        goto bad;
    cp = vstr_str(tok->buf);
    end = cp + vstr_len(tok->buf);
    fields[n++] = cp;
    for (; cp < end; cp++) {
        if (*cp == 0) {
            if (n == count)
                goto bad;
            fields[n++] = cp + 1;
        } else if ((unsigned char) *cp < 32 || *cp == 127) {
            goto bad;
        }
    }
    if (n != count || *fields[0] == 0)
        goto bad;
    tok->qid = fields[0];
    tok->recipient = fields[1];
    tok->tenant = fields[2];
    tok->extra = count > 3 ? fields[3] : "";
    if (strcmp(purpose, TRACK_PURPOSE_CLICK) == 0 && !track_url_ok(tok->extra))
        goto bad;
    return 0;
bad:
    track_token_free(tok);
    return -1;
}

/* track_token_free - release what track_token_parse filled */
void track_token_free(TRACK_TOKEN *tok)
{
    tok->buf = vstr_free(tok->buf);
    tok->qid = tok->recipient = tok->tenant = tok->extra = NULL;
}

/* unsub_token_parse - the token of an unsubscribe+TOKEN local part */
int unsub_token_parse(const VSTR *key, const char *local_part, TRACK_TOKEN *tok)
{
    size_t plen = sizeof(TRACK_UNSUB_PREFIX) - 1;
    const char *at;
    VSTR *token;
    int ret;

    memset(tok, 0, sizeof(*tok));
    if (strncasecmp(local_part, TRACK_UNSUB_PREFIX, plen) != 0)
        return -1;
    local_part += plen;
    at = strchr(local_part, '@');
    token = vstr_ncpy(vstr_alloc(128), local_part,
                      at ? (size_t) (at - local_part) : strlen(local_part));
    ret = track_token_parse(key, TRACK_PURPOSE_UNSUB, vstr_str(token), tok);
    vstr_free(token);
    return ret;
}

/* unsub_mailto_payload - QID NUL lower(recipient) NUL tenant into out; -1
   when a field may not be signed */
static int unsub_mailto_payload(VSTR *out, const char *qid,
                                const char *recipient, const char *tenant)
{
    VSTR *lower;

    if (!track_field_ok(recipient) || !track_field_ok(tenant))
        return -1;
    lower = vstr_lower(vstr_cpy(vstr_alloc(64), recipient));
    vstr_cpy(out, qid);
    vstr_addch(out, 0);
    vstr_cat(out, vstr_str(lower));
    vstr_addch(out, 0);
    vstr_cat(out, tenant);
    vstr_free(lower);
    return 0;
}

/* unsub_mailto_make - the short form's local part */
int unsub_mailto_make(VSTR *out, const VSTR *key, const char *qid,
                      const char *recipient, const char *tenant)
{
    VSTR *payload = vstr_alloc(128);
    VSTR *qid_text;

    if (!qid_valid(qid) ||
        unsub_mailto_payload(payload, qid, recipient ? recipient : "",
                             tenant ? tenant : "") < 0) {
        vstr_free(payload);
        return -1;
    }
    qid_text = vstr_lower(vstr_cpy(vstr_alloc(QID_SIZE), qid));
    vstr_sprintf_append(out, "%s%s%c", TRACK_UNSUB_PREFIX, vstr_str(qid_text),
                        TRACK_MAILTO_SEP);
    sign_token_mac(out, key, TRACK_PURPOSE_UNSUB_MAILTO, vstr_str(payload),
                   vstr_len(payload), TRACK_MAILTO_TAG_LEN);
    vstr_free(qid_text);
    vstr_free(payload);
    return 0;
}

/* unsub_mailto_split - the queue ID and MAC of the short form */
int unsub_mailto_split(const char *address, char qid[QID_SIZE], VSTR *mac)
{
    size_t plen = sizeof(TRACK_UNSUB_PREFIX) - 1;
    const char *cp;
    size_t len;

    if (strncasecmp(address, TRACK_UNSUB_PREFIX, plen) != 0)
        return -1;
    cp = address + plen;
    len = strcspn(cp, "@");
    if (len != QID_LEN + 1 + TRACK_MAILTO_TAG_CHARS ||
        cp[QID_LEN] != TRACK_MAILTO_SEP)
        return -1;
    for (size_t i = 0; i < QID_LEN; i++)
        qid[i] = (char) toupper((unsigned char) cp[i]);
    qid[QID_LEN] = 0;
    if (!qid_valid(qid))
        return -1;
    cp += QID_LEN + 1;
    for (size_t i = 0; i < TRACK_MAILTO_TAG_CHARS; i++)
        if (!((cp[i] >= 'a' && cp[i] <= 'z') ||
              (cp[i] >= 'A' && cp[i] <= 'Z') || (cp[i] >= '2' && cp[i] <= '7')))
            return -1;
    vstr_lower(vstr_ncpy(mac, cp, TRACK_MAILTO_TAG_CHARS));
    return 0;
}

/* unsub_mailto_check - is mac the MAC of these? */
bool unsub_mailto_check(const VSTR *key, const char *qid, const char *mac,
                        const char *recipient, const char *tenant)
{
    VSTR *payload = vstr_alloc(128);
    bool ok;

    ok =
        unsub_mailto_payload(payload, qid, recipient, tenant) == 0 &&
        sign_token_mac_check(key, TRACK_PURPOSE_UNSUB_MAILTO, vstr_str(payload),
                             vstr_len(payload), TRACK_MAILTO_TAG_LEN, mac);
    vstr_free(payload);
    return ok;
}

/* track_token_event - the event a followed link or unsubscribe records */
void track_token_event(EVENT *event, const char *kind, const TRACK_TOKEN *tok,
                       const char *seq)
{
    events_event_init(event, kind, tok->qid, seq);
    event->recipient = *tok->recipient ? tok->recipient : NULL;
    event->tenant = *tok->tenant ? tok->tenant : NULL;
    if (strcmp(kind, EVENTS_CLICKED) == 0)
        event->url = tok->extra;
    else if (strcmp(kind, EVENTS_UNSUBSCRIBED) == 0)
        event->list = tok->extra;
}
