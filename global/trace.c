/*
 * trace - W3C trace context (see trace.h)
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stdint.h>
#include <sys/random.h>

#include "msg.h"
#include "trace.h"

/* trace_hex - len lower-case hex digits at cp (upper case refused, as
   the W3C text says) into out: 1, 0 when all are zeros, -1 when they are
   no such digits (out is then empty) */
static int trace_hex(const char *cp, size_t len, char *out)
{
    int nonzero = 0;

    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char) cp[i]) && (cp[i] < 'a' || cp[i] > 'f')) {
            out[0] = 0;
            return -1;
        }
        if (cp[i] != '0')
            nonzero = 1;
        out[i] = cp[i];
    }
    out[len] = 0;
    return nonzero;
}

/* trace_parse_any - a traceparent into ctx; root: a parent id of all
   zeros is allowed (the queue file's own "no parent") */
static bool trace_parse_any(const char *text, TRACE_CTX *ctx, bool root)
{
    const char *cp = text;
    char version[3];
    char flags[3];
    size_t len;

    while (*cp == ' ' || *cp == '\t')
        cp++;
    len = strcspn(cp, " \t\r\n");
    if (cp[len] != 0 && cp[len + strspn(cp + len, " \t\r\n")] != 0)
        return false;
    if (len < TRACE_TEXT_LEN || cp[2] != '-' || cp[35] != '-' || cp[52] != '-')
        return false;
    /* version: two hex digits, ff invalid; 00 is exactly 55 long, a later
       version may add "-..." fields. */
    if (!isxdigit((unsigned char) cp[0]) || !isxdigit((unsigned char) cp[1]) ||
        isupper((unsigned char) cp[0]) || isupper((unsigned char) cp[1]))
        return false;
    memcpy(version, cp, 2);
    version[2] = 0;
    if (strcmp(version, "ff") == 0)
        return false;
    if (strcmp(version, "00") == 0 ? len != TRACE_TEXT_LEN
                                   : (len > TRACE_TEXT_LEN && cp[55] != '-'))
        return false;
    if (trace_hex(cp + 3, TRACE_ID_HEX, ctx->trace_id) != 1)
        return false;
    switch (trace_hex(cp + 36, TRACE_SPAN_HEX, ctx->parent_id)) {
    case 1:
        break;
    case 0:
        if (root)
            break;
        /* FALLTHROUGH */
    default:
        return false;
    }
    if (!isxdigit((unsigned char) cp[53]) ||
        !isxdigit((unsigned char) cp[54]) || isupper((unsigned char) cp[53]) ||
        isupper((unsigned char) cp[54]))
        return false;
    memcpy(flags, cp + 53, 2);
    flags[2] = 0;
    ctx->sampled = (strtol(flags, NULL, 16) & 1) != 0;
    return true;
}

/* trace_parse - a submitted traceparent into ctx */
bool trace_parse(const char *text, TRACE_CTX *ctx)
{
    return trace_parse_any(text, ctx, false);
}

/* trace_parse_attr - the queue file's traceparent into ctx */
bool trace_parse_attr(const char *text, TRACE_CTX *ctx)
{
    return trace_parse_any(text, ctx, true);
}

/* trace_random - len random bytes (getrandom; a short read is fatal:
   the kernel always has them after boot) */
static void trace_random(unsigned char *buf, size_t len)
{
    if (getrandom(buf, len, 0) != (ssize_t) len)
        msg_fatal("getrandom: %m");
}

/* trace_new - a fresh trace */
void trace_new(TRACE_CTX *ctx, double ratio)
{
    unsigned char bytes[TRACE_ID_HEX / 2];
    uint64_t draw;

    do {
        trace_random(bytes, sizeof(bytes));
        for (size_t i = 0; i < sizeof(bytes); i++)
            (void) snprintf(ctx->trace_id + 2 * i, 3, "%02x", bytes[i]);
    } while (strspn(ctx->trace_id, "0") == TRACE_ID_HEX);
    memset(ctx->parent_id, '0', TRACE_SPAN_HEX);
    ctx->parent_id[TRACE_SPAN_HEX] = 0;
    trace_random((unsigned char *) &draw, sizeof(draw));
    ctx->sampled = ratio >= 1.0 ||
                   (ratio > 0 && (double) (draw >> 11) / 9007199254740992.0 <
                                     ratio); /* 53 bits */
}

/* trace_format - ctx as traceparent text */
void trace_format(const TRACE_CTX *ctx, char *buf, size_t len)
{
    if (snprintf(buf, len, "00-%s-%s-%s", ctx->trace_id, ctx->parent_id,
                 ctx->sampled ? "01" : "00") != TRACE_TEXT_LEN)
        msg_panic("%s: bad trace context or buffer", __func__);
}

/* trace_has_parent - does ctx name a parent span? */
bool trace_has_parent(const TRACE_CTX *ctx)
{
    return strspn(ctx->parent_id, "0") != TRACE_SPAN_HEX;
}

/* trace_span_id - a span id from trace_id and key: FNV-1a 64 (stable
   across processes and versions; not a secret) */
void trace_span_id(const char *trace_id, const char *key, char *buf, size_t len)
{
    uint64_t hash = 14695981039346656037ULL;

    for (const char *cp = trace_id; *cp; cp++)
        hash = (hash ^ (unsigned char) *cp) * 1099511628211ULL;
    hash = (hash ^ '/') * 1099511628211ULL;
    for (const char *cp = key; *cp; cp++)
        hash = (hash ^ (unsigned char) *cp) * 1099511628211ULL;
    if (hash == 0)
        hash = 1;
    if (snprintf(buf, len, "%016llx", (unsigned long long) hash) !=
        TRACE_SPAN_HEX)
        msg_panic("%s: buffer too short", __func__);
}
