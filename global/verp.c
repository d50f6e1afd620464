/*
 * verp - the VERP return path bounce+TOKEN@bounce_verp_domain
 *
 * See verp.h. Making and checking are here so that smtp (which makes the
 * address) and feedback (which checks it) agree on the payload.
 */
#include "sys_defs.h"

#include <strings.h>

#include "msg.h"
#include "sign_token.h"
#include "smtp_addr.h"
#include "verp.h"

#define VERP_PAYLOAD_LEN (QID_LEN + 8)

/* verp_make - append bounce+TOKEN@domain for (qid, offset) to out */
void verp_make(VSTR *out, const VSTR *key, const char *domain, const char *qid,
               long long offset)
{
    unsigned char payload[VERP_PAYLOAD_LEN];
    unsigned long long off = (unsigned long long) offset;

    if (strlen(qid) != QID_LEN)
        msg_panic("%s: bad queue ID \"%s\"", __func__, qid);
    memcpy(payload, qid, QID_LEN);
    for (int i = 0; i < 8; i++)
        payload[QID_LEN + i] = (unsigned char) (off >> (56 - 8 * i));
    vstr_cat(out, VERP_PREFIX);
    sign_token_make(out, key, VERP_PURPOSE, payload, sizeof(payload));
    vstr_sprintf_append(out, "@%s", domain);
}

/* verp_check - the queue ID and offset in a bounce+TOKEN@... address */
int verp_check(const VSTR *key, const char *address, char *qid,
               long long *offset, VSTR *why)
{
    size_t prefix = strlen(VERP_PREFIX);
    size_t local_len;
    VSTR *token;
    VSTR *payload;
    const unsigned char *p;
    unsigned long long off = 0;
    int ret = -1;

    if (smtp_addr_split(address, &local_len) == NULL || local_len <= prefix ||
        strncasecmp(address, VERP_PREFIX, prefix) != 0) {
        vstr_sprintf(why, "not a VERP address: %.100s", address);
        return -1;
    }
    token = vstr_ncpy(vstr_alloc(64), address + prefix, local_len - prefix);
    payload = vstr_alloc(32);
    if (sign_token_check(key, VERP_PURPOSE, vstr_str(token), payload) < 0) {
        vstr_sprintf(why, "bad or forged VERP token: %.100s", address);
    } else if (vstr_len(payload) != VERP_PAYLOAD_LEN) {
        vstr_sprintf(why, "VERP token of %zu bytes (not %d): %.100s",
                     vstr_len(payload), VERP_PAYLOAD_LEN, address);
    } else {
        p = (const unsigned char *) vstr_str(payload);
        memcpy(qid, p, QID_LEN);
        qid[QID_LEN] = 0;
        for (int i = 0; i < 8; i++)
            off = (off << 8) | p[QID_LEN + i];
        *offset = (long long) off;
        if (!qid_valid(qid))
            vstr_sprintf(why, "VERP token with a bad queue ID: %.100s",
                         address);
        else
            ret = 0;
    }
    vstr_free(token);
    vstr_free(payload);
    return ret;
}
