/*
 * fuzz_cleanup_addr - cleanup's address header parsing and canonical
 * rewriting (cleanup/cleanup_rewrite.c), and the header_checks actions
 * (cleanup/cleanup_checks.c)
 *
 * No queue file is needed: the message is built by hand (no file, fd -1)
 * with inline: canonical tables that map something, a recipient
 * delimiter and a mydestination with a table. The first input byte picks
 * the header name, the rest is its value: its address spans must lie in
 * order inside the value and each be a plain addr-spec; the header is
 * rewritten (tables never fail, so it must succeed and keep its name);
 * the value is also rewritten as an envelope sender and recipient,
 * applied as a header_checks / body_checks action, and the header and
 * the value (as a body line) go through a pcre: header_checks and
 * body_checks table with every action.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "cleanup.h"
#include "fuzz_common.h"
#include "maps.h"
#include "match_list.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CLEANUP_MAX_PAIRS 64

static const char *const fuzz_cleanup_headers[] = {
    "From",     "To",        "Cc",          "Bcc",           "Sender",
    "Reply-To", "Resent-To", "Return-Path", "Errors-To",     "X-Other",
    "Subject",  "resent-cc", "resent-from", "RESENT-SENDER",
};

static CLEANUP_CONF fuzz_cleanup_conf;

/* fuzz_cleanup_maps - one inline table list, which must open */
static MAPS *fuzz_cleanup_maps(const char *value)
{
    VSTR *why = vstr_alloc(100);
    MAPS *maps;

    if ((maps = maps_create("fuzz", value, MAP_FLAG_NONE, why)) == NULL)
        abort();
    vstr_free(why);
    return maps;
}

/* header_checks and body_checks: every action, $n from the item */
static const char fuzz_cleanup_checks[] =
    "/^Subject:.*reject-me/ REJECT 5.7.1 go away\n"
    "/^Subject:.*defer-me/ REJECT 4.7.1 later\n"
    "/^Subject: (.*)replace(.*)/ REPLACE Subject: $1[replaced]$2\n"
    "/^X-Bad-Replace: (.*)/ REPLACE $1\n"
    "/^X-Prepend: (.*)/ PREPEND X-Added: $1\n"
    "/^(X-Ignore|Received):/ IGNORE\n"
    "/^X-Warn: (.*)/ WARN $1\n"
    "/^X-Info: (.*)/ INFO ${1}\n"
    "/^X-Hold:/ HOLD held\n"
    "/^X-Discard:/ DISCARD\n"
    "/^X-Dunno:/ DUNNO\n"
    "/^(.*)body-line(.*)$/ REPLACE $1[body]$2\n"
    "/^(From|To|Cc): (.*)/ $2\n";

/* fuzz_cleanup_setup - the configuration, once per process */
static void fuzz_cleanup_setup(void)
{
    CLEANUP_CONF *conf = &fuzz_cleanup_conf;
    VSTR *why;
    VSTR *spec;

    if (conf->myorigin)
        return;
    fuzz_write_file("checks", (const uint8_t *) fuzz_cleanup_checks,
                    strlen(fuzz_cleanup_checks));
    spec = vstr_alloc(100);
    vstr_sprintf(spec, "pcre:%s/checks", fuzz_dir());
    conf->header_checks = fuzz_cleanup_maps(vstr_str(spec));
    conf->body_checks = fuzz_cleanup_maps(vstr_str(spec));
    vstr_free(spec);
    conf->queue_dir = "/nonexistent";
    conf->myhostname = "mx.example.org";
    conf->myorigin = "example.org";
    conf->recipient_delimiter = "+";
    conf->canonical_maps = fuzz_cleanup_maps(
        "inline:{ user@example.org=new@example.net, @old.test=@new.test, "
        "joe=joseph, x@example.org=@, y@example.org=, "
        "{ z@example.org = a b c }, ext+keep@example.org=k+other@x.test }");
    conf->sender_canonical_maps = fuzz_cleanup_maps(
        "inline:{ sender@example.org=s@example.net, @local.test=@l.test }");
    conf->recipient_canonical_maps =
        fuzz_cleanup_maps("inline:{ bob=robert, rcpt@example.org=r }, "
                          "static:{ }");
    why = vstr_alloc(100);
    if ((conf->mydestination = match_list_create(
             "mydestination",
             "example.org, .sub.example.org, inline:{ local.test=ok }",
             MATCH_LIST_DOMAIN, why)) == NULL)
        abort();
    vstr_free(why);
}

/* fuzz_cleanup_msg - a message without a file */
static CLEANUP_MSG *fuzz_cleanup_msg(void)
{
    CLEANUP_MSG *msg = mycalloc(1, sizeof(*msg));

    msg->conf = &fuzz_cleanup_conf;
    snprintf(msg->qid, sizeof(msg->qid), "FUZZQID");
    msg->reason = vstr_alloc(64);
    msg->sender = mystrdup("sender@example.org");
    msg->client_info = mystrdup("local");
    msg->last_byte = -1;
    return msg;
}

/* fuzz_cleanup_msg_free - release the hand-made message */
static void fuzz_cleanup_msg_free(CLEANUP_MSG *msg)
{
    vstr_free(msg->reason);
    myfree(msg->sender);
    myfree(msg->client_info);
    myfree(msg);
}

/* fuzz_cleanup_spans - spans in order, inside the value, plain addresses;
   a shorter limit gives a prefix of the same spans */
static void fuzz_cleanup_spans(const char *value)
{
    size_t spans[2 * FUZZ_CLEANUP_MAX_PAIRS];
    size_t few[2 * 2];
    size_t len = strlen(value), last = 0;
    ssize_t pairs, few_pairs;

    pairs = cleanup_rewrite_addr_spans(value, spans, FUZZ_CLEANUP_MAX_PAIRS);
    few_pairs = cleanup_rewrite_addr_spans(value, few, 2);
    if (pairs < -1 || pairs > FUZZ_CLEANUP_MAX_PAIRS)
        abort();
    if ((pairs < 0) != (few_pairs < 0) || few_pairs > (pairs < 2 ? pairs : 2))
        abort();
    for (ssize_t i = 0; i < pairs; i++) {
        size_t a = spans[2 * i], b = spans[2 * i + 1];

        if (a < last || b <= a || b > len)
            abort();
        for (size_t j = a; j < b; j++)
            if ((unsigned char) value[j] <= ' ' ||
                strchr("\"()<>,;:\\[]", value[j]) != NULL)
                abort();
        if (i < few_pairs && (few[2 * i] != a || few[2 * i + 1] != b))
            abort();
        last = b;
    }
}

/* fuzz_cleanup_header - rewrite one header: it succeeds and keeps its name */
static void fuzz_cleanup_header(const char *name, const char *value)
{
    CLEANUP_MSG *msg = fuzz_cleanup_msg();
    VSTR *header = vstr_alloc(100);
    VSTR *before;
    size_t spans[2];

    vstr_sprintf(header, "%s:%s\n", name, value);
    before = vstr_cpy(vstr_alloc(100), vstr_str(header));
    if (!cleanup_rewrite_header(msg, header) || msg->status != 0)
        abort();
    if (strncmp(vstr_str(header), vstr_str(before), strlen(name) + 1) != 0)
        abort();
    if (cleanup_rewrite_addr_spans(value, spans, 1) < 0 &&
        strcmp(vstr_str(header), vstr_str(before)) != 0)
        abort(); /* what cannot be parsed stays untouched */
    vstr_free(before);
    vstr_free(header);
    fuzz_cleanup_msg_free(msg);
}

/* fuzz_cleanup_envelope - the value as envelope sender and recipient */
static void fuzz_cleanup_envelope(const char *value)
{
    CLEANUP_MSG *msg = fuzz_cleanup_msg();
    char *qualified = cleanup_qualify(msg->conf, value);
    char *result;

    if ((result = cleanup_rewrite_sender(msg, qualified)) == NULL)
        abort();
    myfree(result);
    if ((result = cleanup_rewrite_recipient(msg, qualified)) == NULL)
        abort();
    myfree(result);
    myfree(qualified);
    fuzz_cleanup_msg_free(msg);
}

/* fuzz_cleanup_action - the value as a header_checks / body_checks result */
static void fuzz_cleanup_action(const char *name, const char *value)
{
    static const char *const classes[] = {"header", "body"};

    for (size_t i = 0; i < SLUICE_ARRAY_LEN(classes); i++) {
        CLEANUP_MSG *msg = fuzz_cleanup_msg();
        VSTR *item = vstr_alloc(100);
        VSTR *prepend = vstr_alloc(100);
        bool keep;

        vstr_sprintf(item, "%s: x\n", name);
        keep = cleanup_check_action(msg, classes[i], vstr_str(item), value,
                                    item, prepend);
        if (msg->status != 0 &&
            (keep || (msg->status != 550 && msg->status != 451)))
            abort(); /* REJECT drops the item, with 550 or 451 */
        if (keep && i == 0 && vstr_len(item) > 0 &&
            vstr_str(item)[vstr_len(item) - 1] != '\n')
            abort(); /* a header keeps its newline */
        vstr_free(item);
        vstr_free(prepend);
        fuzz_cleanup_msg_free(msg);
    }
}

/* fuzz_cleanup_checks_one - header_checks on the header, body_checks on
   the value as a body line: a kept header is still one header that ends
   in a newline, and so is each prepended line */
static void fuzz_cleanup_checks_one(const char *name, const char *value)
{
    CLEANUP_MSG *msg = fuzz_cleanup_msg();
    VSTR *item = vstr_alloc(100);
    VSTR *prepend = vstr_alloc(100);
    bool keep;

    vstr_sprintf(item, "%s: %s\n", name, value);
    keep = cleanup_check_header(msg, item, prepend);
    if (keep && (msg->status != 0 || msg->discard))
        abort();
    if (keep && vstr_str(item)[vstr_len(item) - 1] != '\n')
        abort();
    for (const char *cp = vstr_str(prepend); *cp; cp = strchr(cp, '\n') + 1)
        if (strchr(cp, ':') == NULL || strchr(cp, '\n') == NULL ||
            strchr(cp, ':') > strchr(cp, '\n'))
            abort(); /* "Name: text\n" lines */
    fuzz_cleanup_msg_free(msg);

    msg = fuzz_cleanup_msg();
    vstr_reset(prepend);
    vstr_cpy(item, value);
    keep = cleanup_check_body(msg, item, prepend);
    if (keep && (msg->status != 0 || msg->discard))
        abort();
    vstr_free(item);
    vstr_free(prepend);
    fuzz_cleanup_msg_free(msg);
}

/* LLVMFuzzerTestOneInput - one header */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *name;
    char *value;

    fuzz_init("fuzz_cleanup_addr");
    fuzz_cleanup_setup();
    if (size == 0)
        return 0;
    name =
        fuzz_cleanup_headers[data[0] % SLUICE_ARRAY_LEN(fuzz_cleanup_headers)];
    value = mystrndup((const char *) data + 1, size - 1);
    fuzz_cleanup_spans(value);
    fuzz_cleanup_header(name, value);
    fuzz_cleanup_envelope(value);
    fuzz_cleanup_action(name, value);
    fuzz_cleanup_checks_one(name, value);
    myfree(value);
    return 0;
}
