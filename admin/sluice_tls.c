/*
 * sluice_tls - `sluice tls`: what smtp's TLS did lately, per destination,
 * and `sluice tls mta-sts DOMAIN`: the MTA-STS policy smtp would apply to
 * mail for DOMAIN now
 *
 * The summary (no argument, or -f FILE) reads the log smtp writes
 * (maillog_file, or FILE: a syslog file such as /var/log/mail.log; the
 * last SLUICE_TLS_LOG_MAX bytes of it), Postfix's lines as smtp logs them
 * (so a Postfix maillog reads the same):
 *   "Verified|Trusted|Untrusted|Anonymous TLS connection established to
 *    host[ip]:port: PROTOCOL with cipher CIPHER ..."   a session
 *   "...; trying again without TLS ..."               a failed handshake
 *   "status=deferred" with dsn=4.7.x, the reason smtp's own (no "said:")
 *   and about TLS or a certificate                   a TLS failure
 * A failure counts for the first "host[ip]:port" (or "host[ip]") its text
 * names. Per destination, in the order first seen: the sessions by first
 * word, each protocol and cipher with its count, the time of the last
 * session, the failures and the last one. Exit 0, 1 when the log cannot
 * be read.
 *
 * The MTA-STS lookup is smtp's own (global/mta_sts.h): the TXT record
 * through dns_servers, the cache in data_directory/mta-sts (read, never
 * written here: it belongs to mail_owner), the HTTPS fetch with
 * smtp_tls_CAfile. Prints the policy and where it came from; exit 0 (also
 * when no policy applies), 1 on bad usage or configuration.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "argv.h"
#include "dns.h"
#include "htable.h"
#include "mail_conf.h"
#include "msg.h"
#include "mta_sts.h"
#include "mymalloc.h"
#include "sluice.h"
#include "vstr.h"

typedef struct SLUICE_TLS_STATE {
    struct event_base *base;
    const char *domain;
    bool done;
} SLUICE_TLS_STATE;

/* sluice_tls_print - the callback: show what applies */
static void sluice_tls_print(const MTA_STS_RESULT *result, void *arg)
{
    SLUICE_TLS_STATE *state = arg;
    const MTA_STS_POLICY *policy = result->policy;

    printf("domain: %s\n", state->domain);
    printf("source: %s\n", result->source);
    if (policy == NULL) {
        printf("policy: none\n");
    } else {
        printf("id: %s\n", result->id);
        printf("mode: %s\n", mta_sts_mode_name(policy->mode));
        for (size_t i = 0; i < policy->mx->argc; i++)
            printf("mx: %s\n", policy->mx->argv[i]);
        printf("max_age: %ld\n", policy->max_age);
    }
    state->done = true;
    event_base_loopbreak(state->base);
}

/* Only the end of a long log is read: "recent" sessions. */
#define SLUICE_TLS_LOG_MAX (64LL * 1024 * 1024)

/* The summary line's first words, in the order printed. */
static const char *const sluice_tls_words[] = {"Verified", "Trusted",
                                               "Untrusted", "Anonymous"};

#define SLUICE_TLS_WORDS SLUICE_ARRAY_LEN(sluice_tls_words)

/* One destination's sessions. */
typedef struct SLUICE_TLS_DEST {
    long sessions[SLUICE_TLS_WORDS];
    ARGV *ciphers; /* "TLSv1.3 with TLS_AES_256_GCM_SHA384", ... */
    long *cipher_counts; /* ... and how often, same index */
    size_t cipher_cap;
    char last_time[16];
    long failures;
    char fail_time[16];
    VSTR *last_failure;
} SLUICE_TLS_DEST;

typedef struct SLUICE_TLS_SUMMARY {
    HTABLE *by_name;
    ARGV *order; /* destination names, first seen first */
} SLUICE_TLS_SUMMARY;

/* sluice_tls_dest - the entry for name, made when new */
static SLUICE_TLS_DEST *sluice_tls_dest(SLUICE_TLS_SUMMARY *sum,
                                        const char *name)
{
    SLUICE_TLS_DEST *dest = htable_find(sum->by_name, name);

    if (dest == NULL) {
        dest = mycalloc(1, sizeof(*dest));
        dest->ciphers = argv_alloc(2);
        dest->last_failure = vstr_alloc(64);
        htable_enter(sum->by_name, name, dest);
        argv_add(sum->order, name);
    }
    return dest;
}

/* sluice_tls_dest_free - htable's value destructor */
static void sluice_tls_dest_free(void *value)
{
    SLUICE_TLS_DEST *dest = value;

    argv_free(dest->ciphers);
    myfree(dest->cipher_counts);
    vstr_free(dest->last_failure);
    myfree(dest);
}

/* sluice_tls_relay - the first "host[addr]" of text, with ":port" when it
   follows, into out; false when there is none */
static bool sluice_tls_relay(const char *text, VSTR *out)
{
    for (const char *open = strchr(text, '['); open;
         open = strchr(open + 1, '[')) {
        const char *start = open;
        const char *close = strchr(open, ']');
        const char *end;

        while (start > text && !strchr(" (,=<", start[-1]))
            start--;
        if (close == NULL || start == open || strchr(open + 1, ' ') < close)
            continue;
        end = close + 1;
        if (*end == ':' && isdigit((unsigned char) end[1]))
            for (end++; isdigit((unsigned char) *end); end++)
                /* void */;
        vstr_ncpy(out, start, (size_t) (end - start));
        return true;
    }
    return false;
}

/* sluice_tls_failure_dest - a failure's destination: "host[ip]" without
   a port goes to a destination "host[ip]:port" already seen */
static SLUICE_TLS_DEST *sluice_tls_failure_dest(SLUICE_TLS_SUMMARY *sum,
                                                const char *relay)
{
    size_t len = strlen(relay);

    if (relay[len - 1] == ']')
        for (size_t i = 0; i < sum->order->argc; i++)
            if (strncmp(sum->order->argv[i], relay, len) == 0 &&
                sum->order->argv[i][len] == ':')
                return sluice_tls_dest(sum, sum->order->argv[i]);
    return sluice_tls_dest(sum, relay);
}

/* sluice_tls_session - "WORD TLS connection established to RELAY: PROTO
   with cipher CIPHER ..." */
static void sluice_tls_session(SLUICE_TLS_SUMMARY *sum, const char *when,
                               const char *msg)
{
    static const char est[] = " TLS connection established to ";
    const char *cp = strstr(msg, est);
    const char *relay;
    const char *colon;
    size_t word;
    SLUICE_TLS_DEST *dest;
    VSTR *name;
    char proto[32], cipher[64];

    if (cp == NULL)
        return;
    for (word = 0; word < SLUICE_TLS_WORDS; word++)
        if ((size_t) (cp - msg) == strlen(sluice_tls_words[word]) &&
            strncmp(msg, sluice_tls_words[word], (size_t) (cp - msg)) == 0)
            break;
    relay = cp + sizeof(est) - 1;
    if (word == SLUICE_TLS_WORDS || (colon = strstr(relay, ": ")) == NULL)
        return;
    name = vstr_alloc(64);
    vstr_ncpy(name, relay, (size_t) (colon - relay));
    dest = sluice_tls_dest(sum, vstr_str(name));
    dest->sessions[word]++;
    snprintf(dest->last_time, sizeof(dest->last_time), "%s", when);
    if (sscanf(colon + 2, "%31s with cipher %63s", proto, cipher) == 2) {
        size_t i;

        vstr_sprintf(name, "%s with %s", proto, cipher);
        for (i = 0; i < dest->ciphers->argc; i++)
            if (strcmp(dest->ciphers->argv[i], vstr_str(name)) == 0)
                break;
        if (i == dest->ciphers->argc) {
            if (i == dest->cipher_cap) {
                dest->cipher_cap = dest->cipher_cap ? 2 * dest->cipher_cap : 4;
                dest->cipher_counts = myrealloc_array(
                    dest->cipher_counts, dest->cipher_cap, sizeof(long));
            }
            argv_add(dest->ciphers, vstr_str(name));
            dest->cipher_counts[i] = 0;
        }
        dest->cipher_counts[i]++;
    }
    vstr_free(name);
}

/* sluice_tls_failure - a deferral for TLS (4.7.x), or a handshake that
   failed at may */
static void sluice_tls_failure(SLUICE_TLS_SUMMARY *sum, const char *when,
                               const char *msg)
{
    const char *text;
    bool deferral = false;
    VSTR *relay;
    SLUICE_TLS_DEST *dest;

    if (strstr(msg, "; trying again without TLS") != NULL) {
        text = msg;
        if (strncmp(text, "Cannot", 6) != 0 && strstr(text, ": Cannot"))
            text = strstr(text, ": Cannot") + 2; /* after the queue ID */
    } else if (strstr(msg, " dsn=4.7.") != NULL &&
               (text = strstr(msg, " status=deferred (")) != NULL) {
        text += strlen(" status=deferred (");
        deferral = true;
        /* 4.7.x is security at large: "421 4.7.0 too busy" is not TLS.
           smtp's own TLS reasons say TLS or certificate. */
        if (strstr(text, " said: ") != NULL ||
            (strstr(text, "TLS") == NULL &&
             strstr(text, "certificate") == NULL))
            return;
    } else {
        return;
    }
    relay = vstr_alloc(64);
    if (sluice_tls_relay(text, relay)) {
        dest = sluice_tls_failure_dest(sum, vstr_str(relay));
        dest->failures++;
        snprintf(dest->fail_time, sizeof(dest->fail_time), "%s", when);
        vstr_cpy(dest->last_failure, text);
        /* The deferral's reason without the failure's class after it
           (global/deliver_log.h) and the parenthesis around it. */
        if (deferral) {
            const char *cls =
                strstr(vstr_str(dest->last_failure), "), category=");

            if (cls != NULL && strchr(cls + 12, ' ') == NULL)
                vstr_truncate(dest->last_failure,
                              cls + 1 - vstr_str(dest->last_failure));
        }
        if (deferral && vstr_len(dest->last_failure) > 0 &&
            vstr_str(dest->last_failure)[vstr_len(dest->last_failure) - 1] ==
                ')')
            vstr_truncate(dest->last_failure, vstr_len(dest->last_failure) - 1);
    }
    vstr_free(relay);
}

/* sluice_tls_line - one log line: smtp's, with a syslog time stamp */
static void sluice_tls_line(SLUICE_TLS_SUMMARY *sum, char *line)
{
    char when[16];
    const char *prog = strstr(line, "/smtp[");
    const char *msg;

    if (prog == NULL || strlen(line) < 16 ||
        (msg = strstr(prog, "]: ")) == NULL)
        return;
    snprintf(when, sizeof(when), "%.15s", line);
    msg += 3;
    if (strstr(msg, " TLS connection established to ") != NULL)
        sluice_tls_session(sum, when, msg);
    else
        sluice_tls_failure(sum, when, msg);
}

/* sluice_tls_print_summary - what was found, per destination */
static void sluice_tls_print_summary(const SLUICE_TLS_SUMMARY *sum)
{
    if (sum->order->argc == 0) {
        printf("no TLS sessions of smtp in the log\n");
        return;
    }
    for (size_t i = 0; i < sum->order->argc; i++) {
        const SLUICE_TLS_DEST *dest =
            htable_find(sum->by_name, sum->order->argv[i]);
        long total = 0;

        for (size_t w = 0; w < SLUICE_TLS_WORDS; w++)
            total += dest->sessions[w];
        printf("%s\n", sum->order->argv[i]);
        printf("  sessions: %ld (", total);
        for (size_t w = 0; w < SLUICE_TLS_WORDS; w++)
            printf("%s%s %ld", w ? ", " : "", sluice_tls_words[w],
                   dest->sessions[w]);
        printf(")\n");
        for (size_t c = 0; c < dest->ciphers->argc; c++)
            printf("  %s: %ld\n", dest->ciphers->argv[c],
                   dest->cipher_counts[c]);
        if (total > 0)
            printf("  last session: %s\n", dest->last_time);
        printf("  failures: %ld\n", dest->failures);
        if (dest->failures > 0)
            printf("  last failure: %s %s\n", dest->fail_time,
                   vstr_str(dest->last_failure));
    }
}

/* sluice_tls_summary - `sluice tls [-f FILE]` */
static int sluice_tls_summary(const char *config_dir, const char *file)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf = NULL;
    SLUICE_TLS_SUMMARY sum = {0};
    FILE *fp = NULL;
    char *line = NULL;
    size_t cap = 0;
    struct stat st;
    int status = 1;

    if (file == NULL) {
        if ((conf = mail_conf_read(config_dir, why)) == NULL) {
            sluice_fail("tls: %s", vstr_str(why));
            goto out;
        }
        file = mail_conf_str(conf, "maillog_file");
        if (*file == 0) {
            sluice_fail("tls: maillog_file is empty (smtp logs to syslog): "
                        "name the log with -f FILE");
            goto out;
        }
    }
    if ((fp = fopen(file, "r")) == NULL || fstat(fileno(fp), &st) < 0) {
        sluice_fail("tls: open %s: %s", file, strerror(errno));
        goto out;
    }
    sum.by_name = htable_alloc(16);
    sum.order = argv_alloc(8);
    if (st.st_size > SLUICE_TLS_LOG_MAX) {
        /* The rest of the line cut in two is skipped. */
        if (fseeko(fp, st.st_size - SLUICE_TLS_LOG_MAX, SEEK_SET) < 0 ||
            getline(&line, &cap, fp) < 0) {
            sluice_fail("tls: read %s: %s", file, strerror(errno));
            goto out;
        }
    }
    while (getline(&line, &cap, fp) >= 0) {
        line[strcspn(line, "\r\n")] = 0;
        sluice_tls_line(&sum, line);
    }
    if (ferror(fp)) {
        sluice_fail("tls: read %s: %s", file, strerror(errno));
        goto out;
    }
    sluice_tls_print_summary(&sum);
    status = 0;
out:
    free(line);
    if (fp)
        (void) fclose(fp);
    if (sum.by_name)
        htable_free(sum.by_name, sluice_tls_dest_free);
    if (sum.order)
        argv_free(sum.order);
    if (conf)
        mail_conf_free(conf);
    vstr_free(why);
    return status;
}

/* sluice_tls - the command */
int sluice_tls(const char *config_dir, int argc, char **argv)
{
    VSTR *why = vstr_alloc(100);
    VSTR *dir = vstr_alloc(100);
    MAIL_CONF *conf = NULL;
    DNS_CTX *dns = NULL;
    MTA_STS_CTX *sts = NULL;
    SLUICE_TLS_STATE state = {0};
    MTA_STS_CONF sts_conf;
    int status = 1;

    if (argc == 1 || (argc == 3 && strcmp(argv[1], "-f") == 0)) {
        vstr_free(dir);
        vstr_free(why);
        return sluice_tls_summary(config_dir, argc == 3 ? argv[2] : NULL);
    }
    if (argc != 3 || strcmp(argv[1], "mta-sts") != 0) {
        sluice_fail("usage: sluice tls mta-sts DOMAIN | sluice tls "
                    "[-f LOGFILE]");
        goto out;
    }
    state.domain = argv[2];
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        sluice_fail("tls: %s", vstr_str(why));
        goto out;
    }
    if (mail_conf_bool(conf, "disable_dns_lookups")) {
        sluice_fail("tls: disable_dns_lookups = yes: no MTA-STS lookup");
        goto out;
    }
    if ((state.base = event_base_new()) == NULL) {
        sluice_fail("tls: cannot make an event base");
        goto out;
    }
    if ((dns = dns_ctx_create(state.base, conf, why)) == NULL) {
        sluice_fail("tls: DNS: %s", vstr_str(why));
        goto out;
    }
    if (*mail_conf_str(conf, "data_directory"))
        vstr_sprintf(dir, "%s/mta-sts", mail_conf_str(conf, "data_directory"));
    sts_conf = (MTA_STS_CONF){
        .cafile = mail_conf_str(conf, "smtp_tls_CAfile"),
        .cache_dir = vstr_len(dir) > 0 ? vstr_str(dir) : NULL,
        .cache_read_only = true,
        .dns_timeout = (int) mail_conf_time(conf, "smtp_dns_timeout"),
        .fetch_timeout =
            (int) mail_conf_time(conf, "smtp_mta_sts_fetch_timeout"),
        .https_port = 443,
    };
    if ((sts = mta_sts_ctx_create(state.base, dns, &sts_conf, why)) == NULL) {
        sluice_fail("tls: MTA-STS: %s", vstr_str(why));
        goto out;
    }
    (void) mta_sts_lookup(sts, state.domain, sluice_tls_print, &state);
    (void) event_base_dispatch(state.base);
    status = state.done ? 0 : sluice_fail("tls: the lookup did not finish");

out:
    if (sts)
        mta_sts_ctx_free(sts);
    if (dns)
        dns_ctx_free(dns);
    if (state.base)
        event_base_free(state.base);
    if (conf)
        mail_conf_free(conf);
    vstr_free(dir);
    vstr_free(why);
    return status;
}
