/*
 * trace - W3C trace context (see trace.h)
 */
#include "sys_defs.h"

#include <ctype.h>
#include <stdint.h>
#include <sys/random.h>

#include "msg.h"
#include "proc_pid.h"
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

/*
 * Random bytes for trace and span IDs come from one getrandom() per
 * TRACE_POOL_SIZE bytes, not two per message. They only have to be unique
 * (W3C Trace Context asks for random IDs, not secret ones), and each byte
 * is handed out once: used bytes are wiped, and a fork()ed child (whose
 * copy of the pool its parent will hand out too) refills before its first
 * use, known by the pid the pool was filled under.
 */
#define TRACE_POOL_SIZE 256 /* getrandom() never returns short up to 256 */

static unsigned char trace_pool[TRACE_POOL_SIZE];
static size_t trace_pool_left; /* unused bytes, at the pool's end */
static pid_t trace_pool_pid; /* the process that filled it */

/* trace_random - len random bytes (getrandom; a short read is fatal:
   the kernel always has them after boot) */
static void trace_random(unsigned char *buf, size_t len)
{
    unsigned char *from;

    if (len > TRACE_POOL_SIZE)
        msg_panic("%s: %zu bytes asked", __func__, len);
    if (trace_pool_pid != proc_pid())
        trace_pool_left = 0;
    if (trace_pool_left < len) {
        if (getrandom(trace_pool, sizeof(trace_pool), 0) !=
            (ssize_t) sizeof(trace_pool))
            msg_fatal("getrandom: %m");
        trace_pool_left = sizeof(trace_pool);
        trace_pool_pid = proc_pid();
    }
    from = trace_pool + sizeof(trace_pool) - trace_pool_left;
    memcpy(buf, from, len);
    memset(from, 0, len);
    trace_pool_left -= len;
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
