/*
 * smtpd_proto - the SMTP command parser, session state and DATA decoder
 *
 * Nothing here reads or writes a socket, so every reply can be unit
 * tested. The session state is small: a sender once MAIL succeeded, the
 * count of recipients cleanup accepted, and the error count that slows a
 * session past smtpd_soft_error_limit (the I/O layer delays each reply by
 * smtpd_error_sleep_time) and ends it at smtpd_hard_error_limit; past
 * smtpd_junk_command_limit each NOOP, VRFY and RSET counts as an error.
 * Both counts restart when a message is accepted, as in Postfix.
 *
 * RCPT TO asks smtpd_check.c (the access restrictions) before the
 * recipient goes to cleanup; a refusal is logged as Postfix logs it
 * ("NOQUEUE: reject: RCPT from ..."), and a local submission (sendmail
 * -bs) is not subject to the restrictions, as in Postfix's stand-alone
 * mode. Every reply carries an enhanced
 * status code (RFC 2034) except the greeting and 354, as Postfix does.
 *
 * The DATA decoder is a byte-level state machine so that no line, however
 * long, is ever buffered, and so that the end of the content is recognized
 * only as CR LF . CR LF: a bare LF ends a content line (it is normalized to
 * LF and remembered, so the message can be refused) but never starts an
 * end marker, which is what defeats the SMTP smuggling sequences
 * <LF>.<LF>, <LF>.<CR><LF> and <CR>.<CR>.
 */
#include "sys_defs.h"

#include <ctype.h>
#include <limits.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <time.h>

#include "msg.h"
#include "mymalloc.h"
#include "smtp_addr.h"
#include "smtpd.h"
#include "vstr.h"
#include "xtext.h"

#define SMTPD_PARAM_MAX 32 /* ESMTP parameters on one command */

/* Command names, in the order of SMTPD_CMD, for the disconnect log. */
static const char *const smtpd_cmd_names[SMTPD_CMD_COUNT] = {
    "helo", "ehlo", "mail", "rcpt",     "data", "rset",    "noop",
    "vrfy", "help", "quit", "starttls", "auth", "unknown",
};

/* smtpd_proto_reply - append one reply line; 4xx/5xx count as errors */
static void smtpd_proto_reply(SMTPD_PROTO *proto, const char *fmt, ...)
    SLUICE_PRINTF(2, 3);

static void smtpd_proto_reply(SMTPD_PROTO *proto, const char *fmt, ...)
{
    va_list ap;
    size_t start = vstr_len(proto->reply);

    va_start(ap, fmt);
    vstr_vsprintf_append(proto->reply, fmt, ap);
    va_end(ap);
    /* A reply line never carries a control byte from the client. */
    for (size_t i = start; i < vstr_len(proto->reply); i++) {
        unsigned char ch = (unsigned char) vstr_str(proto->reply)[i];

        if (ch < 32 || ch == 127)
            vstr_str(proto->reply)[i] = '?';
    }
    vstr_cat(proto->reply, "\r\n");
    switch (vstr_str(proto->reply)[start]) {
    case '4':
    case '5':
        proto->error_count++;
        break;
    case '2':
    case '3':
        if (proto->reply->data[start + 3] == ' ' &&
            proto->reply->data[start] == '2')
            proto->cmd_ok[proto->last_cmd]++;
        break;
    }
}

/* smtpd_proto_finish - the action, or 421 and close at the error limit */
static SMTPD_ACT smtpd_proto_finish(SMTPD_PROTO *proto, SMTPD_ACT act)
{
    char name[16];

    if (proto->error_count >= proto->conf->hard_error_limit &&
        act != SMTPD_ACT_CLOSE) {
        snprintf(name, sizeof(name), "%s", smtpd_cmd_names[proto->last_cmd]);
        for (char *cp = name; *cp; cp++)
            *cp = (char) toupper((unsigned char) *cp);
        msg_info("too many errors after %s from %s[%s]", name,
                 proto->client_name, proto->client_addr);
        smtpd_proto_reply(proto, "421 4.7.0 %s Error: too many errors",
                          proto->conf->myhostname);
        return SMTPD_ACT_CLOSE;
    }
    return act;
}

/* smtpd_proto_slow - past the soft error limit: delay the next reply */
bool smtpd_proto_slow(const SMTPD_PROTO *proto)
{
    const SMTPD_CONF *conf = proto->conf;

    return conf->error_sleep_ms > 0 &&
           (proto->error_count > conf->soft_error_limit || proto->auth_failed);
}

/* smtpd_proto_junk - NOOP, VRFY, RSET past smtpd_junk_command_limit count
   as errors */
static void smtpd_proto_junk(SMTPD_PROTO *proto)
{
    if (proto->conf->junk_command_limit > 0 &&
        ++proto->junk_count > proto->conf->junk_command_limit)
        proto->error_count++;
}

/* smtpd_proto_alloc - a new session */
SMTPD_PROTO *smtpd_proto_alloc(const SMTPD_CONF *conf, const char *client_name,
                               const char *client_addr)
{
    SMTPD_PROTO *proto = mycalloc(1, sizeof(*proto));

    proto->conf = conf;
    proto->client_name = mystrdup(client_name);
    proto->client_addr = mystrdup(client_addr);
    /* smtpd_peer_named says better once a lookup is made. */
    proto->name_status = proto->reverse_status = SMTPD_PEER_PERM;
    proto->client_trusted =
        conf->mynetworks != NULL &&
        match_list_match(conf->mynetworks, client_addr) == 1;
    proto->sender = vstr_alloc(64);
    proto->rcpt = vstr_alloc(64);
    proto->orcpt = vstr_alloc(64);
    proto->notify = vstr_alloc(32);
    proto->reply = vstr_alloc(256);
    proto->why = vstr_alloc(64);
    proto->size = -1;
    return proto;
}

/* smtpd_proto_set_local - a sendmail -bs session */
void smtpd_proto_set_local(SMTPD_PROTO *proto, long uid)
{
    proto->local = true;
    proto->client_trusted = true;
    proto->name_status = proto->reverse_status = SMTPD_PEER_OK;
    proto->local_uid = uid;
}

/* smtpd_proto_reset - forget the transaction */
void smtpd_proto_reset(SMTPD_PROTO *proto)
{
    proto->have_sender = false;
    vstr_reset(proto->sender);
    proto->size = -1;
    proto->body_8bit = false;
    proto->ret = myfree(proto->ret);
    proto->envid = myfree(proto->envid);
    proto->rcpt_count = 0;
    proto->first_rcpt = myfree(proto->first_rcpt);
    smtpd_spf_reset(proto);
}

/* smtpd_proto_auth_forget - drop the SASL session and what it said */
static void smtpd_proto_auth_forget(SMTPD_PROTO *proto)
{
    proto->sasl = smtpd_sasl_free(proto->sasl);
    proto->auth_step = false;
    proto->auth_mech = myfree(proto->auth_mech);
    proto->sasl_method = myfree(proto->sasl_method);
    proto->sasl_username = myfree(proto->sasl_username);
}

/* smtpd_proto_tls - the handshake is done: start over, EHLO first */
void smtpd_proto_tls(SMTPD_PROTO *proto, const char *info)
{
    smtpd_proto_reset(proto);
    proto->helo_name = myfree(proto->helo_name);
    proto->esmtp = false;
    proto->tls = true;
    myfree(proto->tls_info);
    proto->tls_info = mystrdup(info);
    smtpd_proto_auth_forget(proto); /* RFC 3207 4.2: forget AUTH too */
}

/* smtpd_proto_protocol - "SMTP", "ESMTP", "ESMTPS", "ESMTPSA" */
const char *smtpd_proto_protocol(const SMTPD_PROTO *proto)
{
    if (!proto->esmtp)
        return "SMTP";
    if (proto->tls)
        return proto->sasl_username ? "ESMTPSA" : "ESMTPS";
    return proto->sasl_username ? "ESMTPA" : "ESMTP";
}

/* smtpd_proto_auth_offered - may AUTH be used in this session now? */
static bool smtpd_proto_auth_offered(const SMTPD_PROTO *proto)
{
    const SMTPD_CONF *conf = proto->conf;

    return conf->sasl_enable && !proto->local &&
           (proto->tls ||
            (!conf->tls_auth_only && conf->tls_level != SMTPD_TLS_ENCRYPT));
}

/* smtpd_proto_free - release a session; returns NULL */
SMTPD_PROTO *smtpd_proto_free(SMTPD_PROTO *proto)
{
    if (proto == NULL)
        return NULL;
    smtpd_proto_reset(proto);
    myfree(proto->client_name);
    myfree(proto->client_addr);
    myfree(proto->helo_name);
    smtpd_spf_free(proto->spf);
    myfree(proto->tls_info);
    smtpd_proto_auth_forget(proto);
    vstr_free(proto->sender);
    vstr_free(proto->rcpt);
    vstr_free(proto->orcpt);
    vstr_free(proto->notify);
    vstr_free(proto->reply);
    vstr_free(proto->why);
    myfree(proto);
    return NULL;
}

/* smtpd_proto_word - next space-separated word of *cp, NUL-terminated in
   place; NULL at the end */
static char *smtpd_proto_word(char **cp)
{
    char *p = *cp;
    char *start;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == 0) {
        *cp = p;
        return NULL;
    }
    start = p;
    while (*p && *p != ' ' && *p != '\t')
        p++;
    if (*p)
        *p++ = 0;
    *cp = p;
    return start;
}

/* smtpd_proto_trim - strip leading and trailing white space in place */
static char *smtpd_proto_trim(char *arg)
{
    size_t len;

    while (*arg == ' ' || *arg == '\t')
        arg++;
    len = strlen(arg);
    while (len > 0 && (arg[len - 1] == ' ' || arg[len - 1] == '\t'))
        arg[--len] = 0;
    return arg;
}

/* smtpd_proto_helo - HELO and EHLO */
static SMTPD_ACT smtpd_proto_helo(SMTPD_PROTO *proto, char *arg, bool esmtp)
{
    const SMTPD_CONF *conf = proto->conf;

    arg = smtpd_proto_trim(arg);
    if (*arg == 0 || strlen(arg) > 255) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: %s hostname",
                          esmtp ? "EHLO" : "HELO");
        return SMTPD_ACT_REPLY;
    }
    for (const char *p = arg; *p; p++) {
        unsigned char ch = (unsigned char) *p;

        if (ch < 33 || ch > 126) {
            smtpd_proto_reply(proto, "501 5.5.2 Invalid %s hostname",
                              esmtp ? "EHLO" : "HELO");
            return SMTPD_ACT_REPLY;
        }
    }
    /* RFC 5321 4.1.4: HELO/EHLO in a transaction resets it. */
    smtpd_proto_reset(proto);
    myfree(proto->helo_name);
    proto->helo_name = mystrdup(arg);
    proto->esmtp = esmtp;
    if (!esmtp) {
        smtpd_proto_reply(proto, "250 %s", conf->myhostname);
        return SMTPD_ACT_REPLY;
    }
    vstr_sprintf_append(proto->reply, "250-%s\r\n", conf->myhostname);
    vstr_cat(proto->reply, "250-PIPELINING\r\n");
    if (conf->message_size_limit > 0)
        vstr_sprintf_append(proto->reply, "250-SIZE %lld\r\n",
                            conf->message_size_limit);
    else
        vstr_cat(proto->reply, "250-SIZE\r\n");
    if (!conf->disable_vrfy)
        vstr_cat(proto->reply, "250-VRFY\r\n");
    if (conf->tls_offer && !proto->tls && !proto->local)
        vstr_cat(proto->reply, "250-STARTTLS\r\n");
    if (smtpd_proto_auth_offered(proto)) {
        if (proto->sasl == NULL && (proto->sasl = smtpd_sasl_new(
                                        conf, proto->tls, proto->why)) == NULL)
            msg_warn("SASL: %s: AUTH not offered to %s[%s]",
                     vstr_str(proto->why), proto->client_name,
                     proto->client_addr);
        vstr_reset(proto->why);
        if (proto->sasl != NULL &&
            smtpd_sasl_mechs(proto->sasl, proto->why) == 0 &&
            vstr_len(proto->why) > 0)
            vstr_sprintf_append(proto->reply, "250-AUTH %s\r\n",
                                vstr_str(proto->why));
    }
    vstr_cat(proto->reply, "250-ENHANCEDSTATUSCODES\r\n");
    vstr_cat(proto->reply, "250-8BITMIME\r\n");
    smtpd_proto_reply(proto, "250 DSN");
    return SMTPD_ACT_REPLY;
}

/* smtpd_proto_number - a decimal SIZE= value without overflow; -1 if bad */
static long long smtpd_proto_number(const char *text)
{
    long long value = 0;

    if (*text == 0 || strlen(text) > 19)
        return -1;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (__builtin_mul_overflow(value, 10, &value) ||
            __builtin_add_overflow(value, *p - '0', &value))
            return -1;
    }
    return value;
}

/* smtpd_proto_space_ok - queue_minfree: is there room on the queue fs? */
static int smtpd_proto_space_ok(SMTPD_PROTO *proto)
{
    const SMTPD_CONF *conf = proto->conf;
    struct statvfs fs;
    unsigned long long avail;

    struct timespec ts;
    long long now = -1;

    if (conf->queue_minfree <= 0)
        return 1;
    if (conf->space && clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
        now = (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (now >= 0 && conf->space->when_usec >= 0 &&
        now >= conf->space->when_usec &&
        now - conf->space->when_usec < SMTPD_SPACE_CACHE_USEC) {
        avail = conf->space->avail; /* looked at within the second */
    } else {
        if (statvfs(conf->queue_dir, &fs) < 0) {
            msg_warn("statvfs %s: %m", conf->queue_dir);
            return -1;
        }
        if (__builtin_mul_overflow((unsigned long long) fs.f_bavail,
                                   (unsigned long long) fs.f_frsize, &avail))
            avail = ULLONG_MAX;
        if (now >= 0) {
            conf->space->avail = avail;
            conf->space->when_usec = now;
        }
    }
    if (avail == ULLONG_MAX)
        return 1;
    if (avail < (unsigned long long) conf->queue_minfree) {
        msg_warn("not enough free space in %s: %llu bytes, queue_minfree"
                 " is %lld",
                 conf->queue_dir, avail, conf->queue_minfree);
        return 0;
    }
    /* A message announced with SIZE= must fit above the minimum. */
    if (proto->size > 0 && avail - (unsigned long long) conf->queue_minfree <
                               (unsigned long long) proto->size) {
        msg_warn("not enough free space in %s for a message of %lld bytes:"
                 " %llu bytes, queue_minfree is %lld",
                 conf->queue_dir, proto->size, avail, conf->queue_minfree);
        return 0;
    }
    return 1;
}

/* smtpd_proto_printable - decoded xtext without NUL or other control
   bytes (RFC 3461: ENVID and ORCPT values are printable US-ASCII; a CR LF
   must not reach a queue file, a DSN or `sluice queue`) */
static bool smtpd_proto_printable(const VSTR *text)
{
    for (size_t i = 0; i < vstr_len(text); i++) {
        unsigned char ch = (unsigned char) vstr_str(text)[i];

        if (ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

/* smtpd_proto_mail_params - SIZE= BODY= RET= ENVID=; false after a reply */
static bool smtpd_proto_mail_params(SMTPD_PROTO *proto, char *rest)
{
    const SMTPD_CONF *conf = proto->conf;
    bool seen_size = false, seen_body = false;
    char *word;
    int count = 0;

    while ((word = smtpd_proto_word(&rest)) != NULL) {
        char *value = strchr(word, '=');

        if (value)
            *value++ = 0;
        if (++count > SMTPD_PARAM_MAX) {
            smtpd_proto_reply(proto, "501 5.5.4 Error: too many parameters");
            return false;
        }
        if (strcasecmp(word, "SIZE") == 0 && value && !seen_size) {
            seen_size = true;
            if ((proto->size = smtpd_proto_number(value)) < 0) {
                smtpd_proto_reply(proto, "501 5.5.4 Bad SIZE parameter syntax");
                return false;
            }
        } else if (strcasecmp(word, "BODY") == 0 && value && !seen_body) {
            seen_body = true;
            if (strcasecmp(value, "8BITMIME") == 0) {
                proto->body_8bit = true;
            } else if (strcasecmp(value, "7BIT") != 0) {
                smtpd_proto_reply(proto, "501 5.5.4 Unsupported BODY"
                                         " parameter value");
                return false;
            }
        } else if (strcasecmp(word, "RET") == 0 && value &&
                   proto->ret == NULL) {
            if (strcasecmp(value, "FULL") != 0 &&
                strcasecmp(value, "HDRS") != 0) {
                smtpd_proto_reply(proto, "501 5.5.4 Bad RET parameter syntax");
                return false;
            }
            proto->ret = mystrdup(strcasecmp(value, "FULL") ? "HDRS" : "FULL");
        } else if (strcasecmp(word, "ENVID") == 0 && value &&
                   proto->envid == NULL) {
            if (*value == 0 || strlen(value) > 100 ||
                xtext_decode(proto->why, value) < 0 ||
                !smtpd_proto_printable(proto->why)) {
                smtpd_proto_reply(proto,
                                  "501 5.5.4 Bad ENVID parameter syntax");
                return false;
            }
            proto->envid = mystrdup(vstr_str(proto->why));
        } else {
            smtpd_proto_reply(proto, "555 5.5.4 Unsupported option: %s", word);
            return false;
        }
    }
    if (conf->message_size_limit > 0 &&
        proto->size > conf->message_size_limit) {
        smtpd_proto_reply(proto, "552 5.3.4 Message size exceeds fixed limit");
        return false;
    }
    return true;
}

/* smtpd_proto_mail - MAIL FROM:<sender> [params] */
static SMTPD_ACT smtpd_proto_mail(SMTPD_PROTO *proto, char *arg)
{
    const char *rest;
    int space;

    if (proto->conf->tls_level == SMTPD_TLS_ENCRYPT && !proto->tls &&
        !proto->local) {
        smtpd_proto_reply(proto,
                          "530 5.7.0 Must issue a STARTTLS command first");
        return SMTPD_ACT_REPLY;
    }
    if (proto->have_sender) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: nested MAIL command");
        return SMTPD_ACT_REPLY;
    }
    arg = smtpd_proto_trim(arg);
    if (strncasecmp(arg, "FROM:", 5) != 0) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return SMTPD_ACT_REPLY;
    }
    if (smtp_addr_parse_path(arg + 5, SMTP_ADDR_FLAG_NULL_OK, proto->sender,
                             &rest, proto->why) < 0) {
        smtpd_proto_reply(proto, "501 5.1.7 Bad sender address syntax");
        smtpd_proto_reset(proto);
        return SMTPD_ACT_REPLY;
    }
    if (!smtpd_proto_mail_params(proto, (char *) rest)) {
        smtpd_proto_reset(proto);
        return SMTPD_ACT_REPLY;
    }
    if ((space = smtpd_proto_space_ok(proto)) <= 0) {
        if (space == 0)
            smtpd_proto_reply(proto, "452 4.3.1 Insufficient system storage");
        else
            smtpd_proto_reply(proto, "451 4.3.0 Error: queue file write error");
        smtpd_proto_reset(proto);
        return SMTPD_ACT_REPLY;
    }
    proto->have_sender = true;
    smtpd_proto_reply(proto, "250 2.1.0 Ok");
    return SMTPD_ACT_REPLY;
}

/* smtpd_proto_relay_ok - may this session send to address? */
int smtpd_proto_relay_ok(const SMTPD_PROTO *proto, const char *address)
{
    if (proto->client_trusted)
        return 1;
    return smtpd_check_auth_destination(proto->conf, address);
}

/* smtpd_proto_notify_ok - NEVER, or a list of SUCCESS FAILURE DELAY */
static bool smtpd_proto_notify_ok(const char *value)
{
    static const char *const words[] = {"SUCCESS", "FAILURE", "DELAY"};
    const char *p = value;

    if (strcasecmp(value, "NEVER") == 0)
        return true;
    while (*p) {
        size_t len = strcspn(p, ",");
        bool known = false;

        for (size_t i = 0; i < SLUICE_ARRAY_LEN(words); i++)
            if (len == strlen(words[i]) && strncasecmp(p, words[i], len) == 0)
                known = true;
        if (!known)
            return false;
        p += len;
        if (*p == ',' && *++p == 0)
            return false;
    }
    return p != value;
}

/* smtpd_proto_orcpt_ok - "addr-type;xtext" (RFC 3461 4.2) */
static bool smtpd_proto_orcpt_ok(SMTPD_PROTO *proto, const char *value)
{
    const char *semi = strchr(value, ';');

    if (semi == NULL || semi == value || strlen(value) > 500)
        return false;
    for (const char *p = value; p < semi; p++) {
        unsigned char ch = (unsigned char) *p;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-'))
            return false;
    }
    return semi[1] != 0 && xtext_decode(proto->why, semi + 1) == 0 &&
           smtpd_proto_printable(proto->why);
}

/* smtpd_proto_rcpt_check - the access restrictions; see below */
static SMTPD_ACT smtpd_proto_rcpt_check(SMTPD_PROTO *proto);

/* smtpd_proto_rcpt - RCPT TO:<recipient> [params] */
static SMTPD_ACT smtpd_proto_rcpt(SMTPD_PROTO *proto, char *arg)
{
    const SMTPD_CONF *conf = proto->conf;
    const char *rest;
    char *params;
    char *word;
    int count = 0;

    if (!proto->have_sender) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: need MAIL command");
        return SMTPD_ACT_REPLY;
    }
    arg = smtpd_proto_trim(arg);
    if (strncasecmp(arg, "TO:", 3) != 0) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: RCPT TO:<address>");
        return SMTPD_ACT_REPLY;
    }
    vstr_reset(proto->orcpt);
    vstr_reset(proto->notify);
    if (smtp_addr_parse_path(arg + 3, 0, proto->rcpt, &rest, proto->why) < 0) {
        smtpd_proto_reply(proto, "501 5.1.3 Bad recipient address syntax");
        return SMTPD_ACT_REPLY;
    }
    params = (char *) rest; /* inside our copy of the line */
    while ((word = smtpd_proto_word(&params)) != NULL) {
        char *value = strchr(word, '=');

        if (value)
            *value++ = 0;
        if (++count > SMTPD_PARAM_MAX) {
            smtpd_proto_reply(proto, "501 5.5.4 Error: too many parameters");
            return SMTPD_ACT_REPLY;
        }
        if (strcasecmp(word, "NOTIFY") == 0 && value &&
            vstr_len(proto->notify) == 0) {
            if (!smtpd_proto_notify_ok(value)) {
                smtpd_proto_reply(proto, "501 5.5.4 Error: Bad NOTIFY parameter"
                                         " syntax");
                return SMTPD_ACT_REPLY;
            }
            vstr_cpy(proto->notify, value);
            for (char *p = vstr_str(proto->notify); *p; p++)
                *p = (char) toupper((unsigned char) *p);
        } else if (strcasecmp(word, "ORCPT") == 0 && value &&
                   vstr_len(proto->orcpt) == 0) {
            if (!smtpd_proto_orcpt_ok(proto, value)) {
                smtpd_proto_reply(proto, "501 5.5.4 Error: Bad ORCPT parameter"
                                         " syntax");
                return SMTPD_ACT_REPLY;
            }
            vstr_cpy(proto->orcpt, value);
        } else {
            smtpd_proto_reply(proto, "555 5.5.4 Unsupported option: %s", word);
            return SMTPD_ACT_REPLY;
        }
    }
    if (conf->recipient_limit > 0 &&
        proto->rcpt_count >= conf->recipient_limit) {
        smtpd_proto_reply(proto, "452 4.5.3 Error: too many recipients");
        return SMTPD_ACT_REPLY;
    }
    return smtpd_proto_rcpt_check(proto);
}

/* smtpd_proto_spf_done - the SPF answer is in: evaluate the recipient */
SMTPD_ACT smtpd_proto_spf_done(SMTPD_PROTO *proto)
{
    SMTPD_ACT act;

    proto->last_cmd = SMTPD_CMD_RCPT;
    if ((act = smtpd_proto_rcpt_check(proto)) == SMTPD_ACT_SPF)
        msg_panic("%s: SPF asked for again after its answer", __func__);
    return smtpd_proto_finish(proto, act);
}

/* smtpd_proto_rcpt_check - the access restrictions for proto->rcpt */
static SMTPD_ACT smtpd_proto_rcpt_check(SMTPD_PROTO *proto)
{
    int code;

    /* A local submission (sendmail -bs) is not subject to them, as in
       Postfix's stand-alone mode. */
    if (proto->local)
        return SMTPD_ACT_RCPT;
    code = smtpd_check_rcpt(proto, vstr_str(proto->rcpt), proto->why);
    if (code == SMTPD_CHECK_NEED_SPF)
        return SMTPD_ACT_SPF;
    if (code != 0) {
        smtpd_proto_reply(proto, "%s", vstr_str(proto->why));
        msg_info("NOQUEUE: reject: RCPT from %s[%s]: %s; from=<%s> to=<%s>"
                 " proto=%s helo=<%s>",
                 proto->client_name, proto->client_addr, vstr_str(proto->why),
                 vstr_str(proto->sender), vstr_str(proto->rcpt),
                 smtpd_proto_protocol(proto),
                 proto->helo_name ? proto->helo_name : "");
        return SMTPD_ACT_REPLY;
    }
    return SMTPD_ACT_RCPT;
}

/* smtpd_proto_rcpt_done - cleanup took the recipient (ok) or failed */
SMTPD_ACT smtpd_proto_rcpt_done(SMTPD_PROTO *proto, bool ok)
{
    proto->last_cmd = SMTPD_CMD_RCPT;
    if (!ok) {
        smtpd_proto_reply(proto, "451 4.3.0 Error: queue file write error");
        return smtpd_proto_finish(proto, SMTPD_ACT_REPLY);
    }
    if (proto->rcpt_count++ == 0)
        proto->first_rcpt = mystrdup(vstr_str(proto->rcpt));
    smtpd_proto_reply(proto, "250 2.1.5 Ok");
    return SMTPD_ACT_REPLY;
}

/* smtpd_proto_milter_reply - a milter's verdict replaces the reply */
SMTPD_ACT smtpd_proto_milter_reply(SMTPD_PROTO *proto, SMTPD_CMD cmd,
                                   const char *text)
{
    const char *line = text;

    /* The reply in hand (250 for MAIL, 354 for DATA) is not sent. */
    if (vstr_len(proto->reply) > 0 && vstr_str(proto->reply)[0] == '2' &&
        proto->cmd_ok[cmd] > 0)
        proto->cmd_ok[cmd]--;
    vstr_reset(proto->reply);
    proto->last_cmd = cmd;
    for (;;) {
        const char *eol = strstr(line, "\r\n");
        int len = eol ? (int) (eol - line) : (int) strlen(line);

        smtpd_proto_reply(proto, "%.*s", len, line);
        if (eol == NULL)
            break;
        line = eol + 2;
    }
    if (cmd == SMTPD_CMD_MAIL || cmd == SMTPD_CMD_DATA)
        smtpd_proto_reset(proto);
    return smtpd_proto_finish(proto, SMTPD_ACT_REPLY);
}

/* smtpd_proto_data - DATA: 354, or why not */
static SMTPD_ACT smtpd_proto_data(SMTPD_PROTO *proto, char *arg)
{
    if (*smtpd_proto_trim(arg) != 0) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: DATA");
        return SMTPD_ACT_REPLY;
    }
    if (!proto->have_sender) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: need MAIL command");
        return SMTPD_ACT_REPLY;
    }
    if (proto->rcpt_count == 0) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: need RCPT command");
        return SMTPD_ACT_REPLY;
    }
    smtpd_proto_reply(proto, "354 End data with <CR><LF>.<CR><LF>");
    return SMTPD_ACT_DATA;
}

/* smtpd_proto_data_done - the reply to the end of DATA */
SMTPD_ACT smtpd_proto_data_done(SMTPD_PROTO *proto, SMTPD_DATA_STATUS status,
                                const char *queue_id, int status_code,
                                const char *reason)
{
    proto->last_cmd = SMTPD_CMD_DATA;
    switch (status) {
    case SMTPD_DATA_OK:
        smtpd_proto_reply(proto, "250 2.0.0 Ok: queued as %s", queue_id);
        proto->error_count = 0; /* the limits count errors without mail */
        proto->junk_count = 0;
        break;
    case SMTPD_DATA_TOO_BIG:
        smtpd_proto_reply(proto, "552 5.3.4 Error: message file too big");
        break;
    case SMTPD_DATA_BARE_LF:
        smtpd_proto_reply(proto, "550 5.5.2 Error: bare <LF> received");
        break;
    case SMTPD_DATA_REJECT:
        /* cleanup's reason is "d.d.d text"; anything else is ours. */
        if (status_code >= 400 && status_code <= 599 && reason != NULL &&
            reason[0] == '0' + status_code / 100 && reason[1] == '.') {
            smtpd_proto_reply(proto, "%d %s", status_code, reason);
            break;
        }
        /* FALLTHROUGH */
    case SMTPD_DATA_CLEANUP:
    default:
        smtpd_proto_reply(proto, "451 4.3.0 Error: queue file write error");
        break;
    }
    smtpd_proto_reset(proto);
    return smtpd_proto_finish(proto, SMTPD_ACT_REPLY);
}

/* smtpd_proto_vrfy - VRFY: never tells which users exist */
static SMTPD_ACT smtpd_proto_vrfy(SMTPD_PROTO *proto, char *arg)
{
    const char *rest;

    arg = smtpd_proto_trim(arg);
    if (*arg == 0) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: VRFY address");
        return SMTPD_ACT_REPLY;
    }
    if (proto->conf->disable_vrfy) {
        smtpd_proto_reply(proto, "252 2.0.0 Cannot VRFY user; try RCPT to"
                                 " attempt delivery");
        return SMTPD_ACT_REPLY;
    }
    if (smtp_addr_parse_path(arg, 0, proto->rcpt, &rest, proto->why) < 0 ||
        *rest != 0) {
        smtpd_proto_reply(proto, "501 5.1.3 Bad recipient address syntax");
        return SMTPD_ACT_REPLY;
    }
    smtpd_proto_reply(proto, "252 2.0.0 <%s>", vstr_str(proto->rcpt));
    return SMTPD_ACT_REPLY;
}

/* smtpd_proto_starttls - STARTTLS: 220 and the handshake, or why not */
static SMTPD_ACT smtpd_proto_starttls(SMTPD_PROTO *proto, char *arg)
{
    if (*smtpd_proto_trim(arg) != 0) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: STARTTLS");
        return SMTPD_ACT_REPLY;
    }
    if (proto->tls) {
        smtpd_proto_reply(proto, "554 5.5.1 Error: TLS already active");
        return SMTPD_ACT_REPLY;
    }
    if (!proto->conf->tls_offer || proto->local) {
        smtpd_proto_reply(proto, "502 5.5.1 Error: command not implemented");
        return SMTPD_ACT_REPLY;
    }
    smtpd_proto_reply(proto, "220 2.0.0 Ready to start TLS");
    return SMTPD_ACT_STARTTLS;
}

/* smtpd_proto_auth_result - the reply to an AUTH step */
static SMTPD_ACT smtpd_proto_auth_result(SMTPD_PROTO *proto,
                                         SMTPD_SASL_STATUS status, VSTR *out)
{
    const SMTPD_CONF *conf = proto->conf;
    const char *mech = proto->auth_mech ? proto->auth_mech : "";

    proto->last_cmd = SMTPD_CMD_AUTH;
    proto->auth_step = status == SMTPD_SASL_CONTINUE;
    switch (status) {
    case SMTPD_SASL_CONTINUE:
        smtpd_proto_reply(proto, "334 %s", vstr_str(out));
        return SMTPD_ACT_REPLY;
    case SMTPD_SASL_DONE:
        proto->sasl_method = mystrdup(mech);
        proto->sasl_username = mystrdup(smtpd_sasl_username(proto->sasl));
        smtpd_proto_reply(proto, "235 2.7.0 Authentication successful");
        return SMTPD_ACT_REPLY;
    case SMTPD_SASL_TEMP:
        msg_warn("%s[%s]: SASL %s authentication failed: %s",
                 proto->client_name, proto->client_addr, mech,
                 vstr_str(proto->why));
        smtpd_proto_reply(proto,
                          "454 4.7.0 Temporary authentication failure: %s",
                          vstr_str(proto->why));
        return SMTPD_ACT_REPLY;
    case SMTPD_SASL_BADMECH:
        smtpd_proto_reply(proto,
                          "504 5.5.4 Unsupported authentication mechanism");
        return SMTPD_ACT_REPLY;
    case SMTPD_SASL_SYNTAX:
    case SMTPD_SASL_FAIL:
    default:
        msg_warn("%s[%s]: SASL %s authentication failed: %s",
                 proto->client_name, proto->client_addr, mech,
                 status == SMTPD_SASL_SYNTAX ? "cannot decode response"
                                             : vstr_str(proto->why));
        if (status == SMTPD_SASL_SYNTAX)
            smtpd_proto_reply(proto, "501 5.5.2 Cannot decode response");
        else
            smtpd_proto_reply(proto,
                              "535 5.7.8 Error: authentication failed: %s",
                              vstr_str(proto->why));
        proto->auth_failed = true; /* the next reply waits */
        if (++proto->auth_failures >= conf->auth_failure_limit) {
            msg_info("too many AUTH failures (%d) from %s[%s]",
                     proto->auth_failures, proto->client_name,
                     proto->client_addr);
            smtpd_proto_reply(proto,
                              "421 4.7.0 %s Error: too many authentication"
                              " failures",
                              conf->myhostname);
            return SMTPD_ACT_CLOSE;
        }
        return SMTPD_ACT_REPLY;
    }
}

/* smtpd_proto_auth - AUTH mechanism [initial-response] */
static SMTPD_ACT smtpd_proto_auth(SMTPD_PROTO *proto, char *arg)
{
    VSTR *out;
    char *mech = smtpd_proto_word(&arg);
    char *initial = smtpd_proto_word(&arg);
    SMTPD_SASL_STATUS status;
    SMTPD_ACT act;

    if (!smtpd_proto_auth_offered(proto)) {
        if (proto->conf->sasl_enable && !proto->local && !proto->tls)
            smtpd_proto_reply(proto,
                              "530 5.7.0 Must issue a STARTTLS command first");
        else
            smtpd_proto_reply(proto,
                              "503 5.5.1 Error: authentication not enabled");
        return SMTPD_ACT_REPLY;
    }
    if (proto->helo_name == NULL || proto->sasl == NULL) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: send HELO/EHLO first");
        return SMTPD_ACT_REPLY;
    }
    if (proto->sasl_username != NULL) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: already authenticated");
        return SMTPD_ACT_REPLY;
    }
    if (proto->have_sender) {
        smtpd_proto_reply(proto, "503 5.5.1 Error: MAIL transaction in"
                                 " progress");
        return SMTPD_ACT_REPLY;
    }
    if (mech == NULL || smtpd_proto_word(&arg) != NULL) {
        smtpd_proto_reply(proto, "501 5.5.4 Syntax: AUTH mechanism");
        return SMTPD_ACT_REPLY;
    }
    for (char *cp = mech; *cp; cp++)
        *cp = (char) toupper((unsigned char) *cp);
    myfree(proto->auth_mech);
    proto->auth_mech = mystrdup(mech);
    out = vstr_alloc(64);
    vstr_reset(proto->why);
    status = smtpd_sasl_start(proto->sasl, mech, initial, out, proto->why);
    act = smtpd_proto_auth_result(proto, status, out);
    vstr_free(out);
    return act;
}

/* smtpd_proto_auth_line - the client's answer to a 334 challenge */
static SMTPD_ACT smtpd_proto_auth_line(SMTPD_PROTO *proto, char *line)
{
    VSTR *out;
    SMTPD_SASL_STATUS status;
    SMTPD_ACT act;

    proto->last_cmd = SMTPD_CMD_AUTH;
    if (strcmp(smtpd_proto_trim(line), "*") == 0) {
        proto->auth_step = false;
        smtpd_proto_reply(proto, "501 5.7.0 Authentication aborted");
        return SMTPD_ACT_REPLY;
    }
    out = vstr_alloc(64);
    vstr_reset(proto->why);
    status =
        smtpd_sasl_step(proto->sasl, smtpd_proto_trim(line), out, proto->why);
    act = smtpd_proto_auth_result(proto, status, out);
    vstr_free(out);
    return act;
}

/* smtpd_proto_dispatch - one NUL-free command line, NUL-terminated */
static SMTPD_ACT smtpd_proto_dispatch(SMTPD_PROTO *proto, char *line)
{
    char *arg = line;
    char *verb = smtpd_proto_word(&arg);
    static const struct {
        const char *name;
        SMTPD_CMD cmd;
    } verbs[] = {
        {"HELO", SMTPD_CMD_HELO},         {"EHLO", SMTPD_CMD_EHLO},
        {"MAIL", SMTPD_CMD_MAIL},         {"RCPT", SMTPD_CMD_RCPT},
        {"DATA", SMTPD_CMD_DATA},         {"RSET", SMTPD_CMD_RSET},
        {"NOOP", SMTPD_CMD_NOOP},         {"VRFY", SMTPD_CMD_VRFY},
        {"HELP", SMTPD_CMD_HELP},         {"QUIT", SMTPD_CMD_QUIT},
        {"STARTTLS", SMTPD_CMD_STARTTLS}, {"AUTH", SMTPD_CMD_AUTH},
    };
    SMTPD_CMD cmd = SMTPD_CMD_UNKNOWN;

    if (proto->auth_step)
        return smtpd_proto_auth_line(proto, line);
    for (size_t i = 0; verb != NULL && i < SLUICE_ARRAY_LEN(verbs); i++)
        if (strcasecmp(verb, verbs[i].name) == 0)
            cmd = verbs[i].cmd;
    proto->last_cmd = cmd;
    proto->cmd_total[cmd]++;
    switch (cmd) {
    case SMTPD_CMD_HELO:
        return smtpd_proto_helo(proto, arg, false);
    case SMTPD_CMD_EHLO:
        return smtpd_proto_helo(proto, arg, true);
    case SMTPD_CMD_MAIL:
        return smtpd_proto_mail(proto, arg);
    case SMTPD_CMD_RCPT:
        return smtpd_proto_rcpt(proto, arg);
    case SMTPD_CMD_DATA:
        return smtpd_proto_data(proto, arg);
    case SMTPD_CMD_RSET:
        smtpd_proto_junk(proto);
        if (*smtpd_proto_trim(arg) != 0) {
            smtpd_proto_reply(proto, "501 5.5.4 Syntax: RSET");
            return SMTPD_ACT_REPLY;
        }
        smtpd_proto_reset(proto);
        smtpd_proto_reply(proto, "250 2.0.0 Ok");
        return SMTPD_ACT_REPLY;
    case SMTPD_CMD_NOOP:
        smtpd_proto_junk(proto);
        smtpd_proto_reply(proto, "250 2.0.0 Ok");
        return SMTPD_ACT_REPLY;
    case SMTPD_CMD_VRFY:
        smtpd_proto_junk(proto);
        return smtpd_proto_vrfy(proto, arg);
    case SMTPD_CMD_HELP:
        smtpd_proto_reply(proto, "214 2.0.0 Commands: HELO EHLO MAIL RCPT"
                                 " DATA RSET NOOP VRFY HELP QUIT");
        return SMTPD_ACT_REPLY;
    case SMTPD_CMD_QUIT:
        smtpd_proto_reply(proto, "221 2.0.0 Bye");
        return SMTPD_ACT_CLOSE;
    case SMTPD_CMD_STARTTLS:
        return smtpd_proto_starttls(proto, arg);
    case SMTPD_CMD_AUTH:
        return smtpd_proto_auth(proto, arg);
    default:
        smtpd_proto_reply(proto, "500 5.5.2 Error: command not recognized");
        return SMTPD_ACT_REPLY;
    }
}

/* smtpd_proto_command - one command line (no CR LF; may hold NUL bytes) */
SMTPD_ACT smtpd_proto_command(SMTPD_PROTO *proto, const char *line, size_t len)
{
    SMTPD_ACT act;
    char *copy;

    proto->auth_failed = false; /* its delay is over: this is answered */
    if (memchr(line, 0, len) != NULL) {
        proto->auth_step = false;
        proto->last_cmd = SMTPD_CMD_UNKNOWN;
        proto->cmd_total[SMTPD_CMD_UNKNOWN]++;
        smtpd_proto_reply(proto, "500 5.5.2 Error: NUL character in command");
        return smtpd_proto_finish(proto, SMTPD_ACT_REPLY);
    }
    copy = mystrndup(line, len);
    act = smtpd_proto_dispatch(proto, copy);
    myfree(copy);
    return smtpd_proto_finish(proto, act);
}

/* smtpd_proto_line_too_long - the reply to an overlong command line */
SMTPD_ACT smtpd_proto_line_too_long(SMTPD_PROTO *proto)
{
    proto->last_cmd = SMTPD_CMD_UNKNOWN;
    proto->cmd_total[SMTPD_CMD_UNKNOWN]++;
    smtpd_proto_reply(proto, "500 5.5.0 Error: line too long");
    return smtpd_proto_finish(proto, SMTPD_ACT_REPLY);
}

/* smtpd_proto_received - the Received: header, LF line endings */
void smtpd_proto_received(const SMTPD_PROTO *proto, const char *queue_id,
                          time_t when, VSTR *out)
{
    char date[80];
    struct tm tm;
    bool v6 = strchr(proto->client_addr, ':') != NULL;

    if (localtime_r(&when, &tm) == NULL ||
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm) == 0)
        date[0] = 0;
    if (proto->local) {
        /* sendmail -bs: no client host, the user ID instead */
        vstr_sprintf_append(out, "Received: by %s (%s, from userid %ld)\n",
                            proto->conf->myhostname, proto->conf->mail_name,
                            proto->local_uid);
        vstr_sprintf_append(out, "\twith %s id %s",
                            proto->esmtp ? "ESMTP" : "SMTP", queue_id);
        if (proto->rcpt_count == 1 && proto->first_rcpt != NULL)
            vstr_sprintf_append(out, "\n\tfor <%s>", proto->first_rcpt);
        vstr_sprintf_append(out, "; %s\n", date);
        return;
    }
    vstr_sprintf_append(
        out, "Received: from %s (%s [%s%s])\n",
        proto->helo_name ? proto->helo_name : proto->client_name,
        proto->client_name, v6 ? "IPv6:" : "", proto->client_addr);
    if (proto->tls && proto->tls_info != NULL &&
        proto->conf->tls_received_header)
        vstr_sprintf_append(out,
                            "\t(using %s)\n"
                            "\t(No client certificate requested)\n",
                            proto->tls_info);
    vstr_sprintf_append(out, "\tby %s (%s) with %s id %s",
                        proto->conf->myhostname, proto->conf->mail_name,
                        smtpd_proto_protocol(proto), queue_id);
    if (proto->rcpt_count == 1 && proto->first_rcpt != NULL)
        vstr_sprintf_append(out, "\n\tfor <%s>", proto->first_rcpt);
    vstr_sprintf_append(out, "; %s\n", date);
}

/* smtpd_proto_counts - " ehlo=1 mail=1 ... commands=5" for the log */
void smtpd_proto_counts(const SMTPD_PROTO *proto, VSTR *out)
{
    int total = 0, ok = 0;

    for (int i = 0; i < SMTPD_CMD_COUNT; i++) {
        if (proto->cmd_total[i] == 0)
            continue;
        total += proto->cmd_total[i];
        ok += proto->cmd_ok[i];
        if (proto->cmd_ok[i] == proto->cmd_total[i])
            vstr_sprintf_append(out, " %s=%d", smtpd_cmd_names[i],
                                proto->cmd_total[i]);
        else
            vstr_sprintf_append(out, " %s=%d/%d", smtpd_cmd_names[i],
                                proto->cmd_ok[i], proto->cmd_total[i]);
    }
    if (ok == total)
        vstr_sprintf_append(out, " commands=%d", total);
    else
        vstr_sprintf_append(out, " commands=%d/%d", ok, total);
}

/* smtpd_data_init - ready for a message of at most limit bytes (0: any) */
void smtpd_data_init(SMTPD_DATA *data, long long limit)
{
    memset(data, 0, sizeof(*data));
    data->bol = true;
    data->last_crlf = true; /* the CR LF of the DATA command */
    data->limit = limit;
}

/* smtpd_data_emit_run - len decoded bytes; those past the size limit
   are dropped (and the message is too big) */
static void smtpd_data_emit_run(SMTPD_DATA *data, VSTR *out, const char *run,
                                size_t len)
{
    if (data->too_big)
        return;
    if (data->limit > 0) {
        size_t room =
            data->size >= data->limit ? 0 : (size_t) (data->limit - data->size);

        if (len > room) {
            len = room;
            data->too_big = true;
        }
    }
    data->size += (long long) len;
    vstr_ncat(out, run, len);
}

/* smtpd_data_emit - one decoded byte, unless the message is too big */
static inline void smtpd_data_emit(SMTPD_DATA *data, VSTR *out, int ch)
{
    char byte = (char) ch;

    smtpd_data_emit_run(data, out, &byte, 1);
}

/* smtpd_data_plain - the length of buf[0..len)'s first run of bytes that
   are neither CR nor LF */
static size_t smtpd_data_plain(const char *buf, size_t len)
{
    const char *lf = memchr(buf, '\n', len);
    const char *cr;

    if (lf != NULL)
        len = (size_t) (lf - buf);
    cr = memchr(buf, '\r', len);
    return cr != NULL ? (size_t) (cr - buf) : len;
}

/* smtpd_data_newline - a line ended (crlf: with CR LF) */
static inline void smtpd_data_newline(SMTPD_DATA *data, VSTR *out, bool crlf)
{
    smtpd_data_emit(data, out, '\n');
    if (!crlf)
        data->bare_lf = true;
    data->bol = true;
    data->last_crlf = crlf;
}

/* smtpd_data_feed - decode buf[0..len) into out */
size_t smtpd_data_feed(SMTPD_DATA *data, const char *buf, size_t len, VSTR *out,
                       size_t max)
{
    size_t i;

    for (i = 0; i < len && !data->done && vstr_len(out) < max; i++) {
        int ch = (unsigned char) buf[i];

        /* Inside a line, the bytes up to its CR or LF are content as
           they are: append them at once (most of a message). */
        if (!data->pending_cr && !data->dot_cr && !data->after_dot &&
            ch != '\r' && ch != '\n' && !(data->bol && ch == '.')) {
            size_t room = max - vstr_len(out);
            size_t run =
                smtpd_data_plain(buf + i, len - i < room ? len - i : room);

            data->bol = false;
            smtpd_data_emit_run(data, out, buf + i, run);
            i += run - 1;
            continue;
        }
        if (data->pending_cr) {
            data->pending_cr = false;
            if (ch == '\n') {
                smtpd_data_newline(data, out, true);
                continue;
            }
            smtpd_data_emit(data, out, '\r'); /* a bare CR is content */
        } else if (data->dot_cr) {
            data->dot_cr = false;
            data->after_dot = false;
            if (ch == '\n') {
                if (data->last_crlf) {
                    data->done = true; /* CR LF . CR LF */
                    continue;
                }
                smtpd_data_newline(data, out, true); /* after a bare LF */
                continue;
            }
            smtpd_data_emit(data, out, '\r'); /* ".\rX": a stuffed line */
        } else if (data->after_dot) {
            if (ch == '\r') {
                data->dot_cr = true;
                continue;
            }
            data->after_dot = false;
            if (ch == '\n') {
                smtpd_data_newline(data, out, false); /* ".\n" never ends */
                continue;
            }
            /* The first dot was stuffing: drop it, keep this byte. */
        } else if (data->bol && ch == '.') {
            data->bol = false;
            data->after_dot = true;
            continue;
        }
        data->bol = false;
        if (ch == '\r') {
            data->pending_cr = true;
        } else if (ch == '\n') {
            smtpd_data_newline(data, out, false);
        } else {
            smtpd_data_emit(data, out, ch);
        }
    }
    return i;
}
