/*
 * pickup_milter - non_smtpd_milters: a blocking milter client for pickup
 *
 * Postfix's MILTER_README (non-SMTP Milter applications): mail from the
 * sendmail(1) command line is shown to the milters as if it arrived with
 * ESMTP from "localhost" with address 127.0.0.1. So each milter gets, on
 * its own connection made for this message:
 *
 *   OPTNEG                  what we offer (global/milter.h)
 *   CONNECT localhost       family '4', 127.0.0.1, port 0; macros j,
 *                           {daemon_name} ($myhostname), v ($mail_name),
 *                           _, {client_addr}, {client_name}
 *   HELO localhost
 *   MAIL <sender>           macro {mail_addr}
 *   RCPT <rcpt>             each recipient, macro {rcpt_addr}
 *   DATA, headers, EOH, body pieces, EOM     macro i (the queue ID)
 *   QUIT
 *
 * The first milter that does not let the message through decides:
 * discard, reject, tempfail or its own 4xx/5xx reply. A milter must not
 * refuse a simulated RCPT (Postfix calls that a configuration error and
 * keeps the mail queued): a refused recipient is logged as such and the
 * message counts as tempfailed. A milter that says accept hears no more
 * of the message. At the end of the message a milter may add, insert,
 * change or delete headers, replace the body (at most message_size_limit
 * bytes of new headers and body), add recipients and quarantine the
 * message; its changes (global/milter_edit.h) are applied before the
 * next milter sees the message.
 *
 * A milter that cannot be reached, breaks the protocol, or is silent past
 * milter_connect_timeout (connecting, negotiating), milter_command_timeout
 * (CONNECT .. DATA) or milter_content_timeout (headers .. EOM) gets
 * milter_default_action: tempfail, reject, or accept (go on without it).
 *
 * The milters see the message whole, in memory: at most message_size_limit
 * bytes (more is refused as cleanup would refuse it), or, when that is 0,
 * non_smtpd_milter_max_size (64m): a larger message then gets
 * milter_default_action as if a milter had failed (accept: it goes on
 * unseen by the milters).
 */
#include "sys_defs.h"

#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "argv.h"
#include "mail_conf.h"
#include "milter.h"
#include "milter_edit.h"
#include "msg.h"
#include "mymalloc.h"
#include "pickup_milter.h"
#include "vstr.h"

#define PICKUP_MILTER_CLIENT_NAME "localhost"
#define PICKUP_MILTER_CLIENT_ADDR "127.0.0.1"

/* One milter as main.cf names it, resolved once. */
typedef struct PICKUP_MILTER_ADDR {
    char *spec; /* as written, for logs */
    struct sockaddr_storage sa;
    socklen_t salen; /* 0: unusable (logged at start) */
} PICKUP_MILTER_ADDR;

struct PICKUP_MILTER_CONF {
    PICKUP_MILTER_ADDR *addrs;
    size_t count;
    MILTER_DEFAULT default_action;
    int connect_timeout; /* seconds */
    int command_timeout;
    int content_timeout;
    char *myhostname;
    char *mail_name;
    size_t limit; /* bytes a milter may see or add */
    bool capped; /* limit is non_smtpd_milter_max_size, not cleanup's */
};

/* One conversation with one milter. */
typedef struct PICKUP_MILTER {
    const PICKUP_MILTER_CONF *conf;
    const PICKUP_MILTER_ADDR *addr;
    int fd;
    uint32_t actions; /* negotiated */
    uint32_t steps;
    VSTR *out; /* the packet being sent */
    VSTR *in; /* the reply packet */
    VSTR *why;
} PICKUP_MILTER;

/* What one milter made of the message. */
typedef enum PICKUP_MILTER_OUTCOME {
    PM_CONTINUE, /* the next event */
    PM_SKIP, /* no more body pieces */
    PM_ACCEPT, /* no more events: the message goes on */
    PM_DISCARD,
    PM_REJECT,
    PM_TEMPFAIL,
    PM_RCPT_REFUSED, /* a configuration error: try again later */
    PM_FAILED, /* the milter failed: milter_default_action */
} PICKUP_MILTER_OUTCOME;

/* pickup_milter_conf - non_smtpd_milters, resolved */
PICKUP_MILTER_CONF *pickup_milter_conf(const MAIL_CONF *conf)
{
    ARGV *list = mail_conf_list(conf, "non_smtpd_milters");
    PICKUP_MILTER_CONF *pmc;
    VSTR *why;
    long long limit;

    if (list->argc == 0) {
        argv_free(list);
        return NULL;
    }
    why = vstr_alloc(100);
    pmc = mycalloc(1, sizeof(*pmc));
    pmc->addrs = mycalloc(list->argc, sizeof(*pmc->addrs));
    if (milter_default_parse(mail_conf_str(conf, "milter_default_action"),
                             &pmc->default_action) < 0)
        msg_fatal("milter_default_action: unknown action \"%s\" (tempfail,"
                  " accept or reject)",
                  mail_conf_str(conf, "milter_default_action"));
    pmc->connect_timeout = (int) mail_conf_time(conf, "milter_connect_timeout");
    pmc->command_timeout = (int) mail_conf_time(conf, "milter_command_timeout");
    pmc->content_timeout = (int) mail_conf_time(conf, "milter_content_timeout");
    pmc->myhostname = mystrdup(mail_conf_str(conf, "myhostname"));
    pmc->mail_name = mystrdup(mail_conf_str(conf, "mail_name"));
    /* The whole message is held in memory for the milters: with no
       message_size_limit, a cap of our own rather than whatever a local
       user writes. */
    limit = mail_conf_size(conf, "message_size_limit");
    if (limit <= 0) {
        limit = mail_conf_size(conf, "non_smtpd_milter_max_size");
        pmc->capped = true;
    }
    pmc->limit = limit > 0 && (unsigned long long) limit < SIZE_MAX
                     ? (size_t) limit
                     : SIZE_MAX / 2;
    for (size_t i = 0; i < list->argc; i++) {
        PICKUP_MILTER_ADDR *ma = pmc->addrs + pmc->count++;
        MILTER_ADDR addr;

        /* A bad address is logged; that milter then fails each message
           (milter_default_action), never the daemon. */
        ma->spec = mystrdup(list->argv[i]);
        if (milter_addr_parse(list->argv[i], &addr, why) < 0) {
            msg_warn("non_smtpd_milters: %s", vstr_str(why));
        } else if (addr.is_unix) {
            struct sockaddr_un *sun = (struct sockaddr_un *) &ma->sa;

            if (strlen(addr.path) >= sizeof(sun->sun_path)) {
                msg_warn("non_smtpd_milters: %s: path too long", ma->spec);
            } else {
                sun->sun_family = AF_UNIX;
                memcpy(sun->sun_path, addr.path, strlen(addr.path) + 1);
                ma->salen = sizeof(*sun);
            }
        } else {
            struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
            struct addrinfo *res;
            int err;

            /* Once, at start (/etc/hosts first, as the resolver does). */
            if ((err = getaddrinfo(addr.host, addr.port, &hints, &res)) != 0) {
                msg_warn("non_smtpd_milters: %s: %s", ma->spec,
                         gai_strerror(err));
            } else {
                memcpy(&ma->sa, res->ai_addr, res->ai_addrlen);
                ma->salen = res->ai_addrlen;
                freeaddrinfo(res);
            }
        }
        milter_addr_free(&addr);
    }
    argv_free(list);
    vstr_free(why);
    return pmc;
}

/* pickup_milter_conf_free - the configuration; NULL */
PICKUP_MILTER_CONF *pickup_milter_conf_free(PICKUP_MILTER_CONF *pmc)
{
    if (pmc == NULL)
        return NULL;
    for (size_t i = 0; i < pmc->count; i++)
        myfree(pmc->addrs[i].spec);
    myfree(pmc->addrs);
    myfree(pmc->myhostname);
    myfree(pmc->mail_name);
    myfree(pmc);
    return NULL;
}

/* pickup_milter_limit - the most content the milters are shown
   (message_size_limit; cleanup would refuse more) */
size_t pickup_milter_limit(const PICKUP_MILTER_CONF *pmc)
{
    return pmc->limit;
}

/* pickup_milter_time_limit - the timeouts of every milter, added up */
long long pickup_milter_time_limit(const PICKUP_MILTER_CONF *pmc)
{
    return (long long) pmc->count *
           ((long long) pmc->connect_timeout + pmc->command_timeout +
            pmc->content_timeout);
}

/* pickup_milter_too_big - a message larger than the limit when that is
   non_smtpd_milter_max_size (message_size_limit = 0, so cleanup would
   take it): milter_default_action, as for a milter that failed, into
   res; false when the limit is message_size_limit (cleanup refuses) */
bool pickup_milter_too_big(const PICKUP_MILTER_CONF *pmc, const char *queue_id,
                           PICKUP_MILTER_RESULT *res)
{
    if (!pmc->capped)
        return false;
    msg_warn("%s: message larger than non_smtpd_milter_max_size (%zu bytes):"
             " not shown to the milters; milter_default_action applies",
             queue_id, pmc->limit);
    res->stage = "END-OF-MESSAGE";
    if (pmc->default_action == MILTER_DEFAULT_ACCEPT) {
        res->status = PICKUP_MILTER_ACCEPT;
    } else if (pmc->default_action == MILTER_DEFAULT_REJECT) {
        vstr_cpy(res->reply, "5.3.4 Message too big for the milters");
        res->status = PICKUP_MILTER_REJECT;
    } else {
        vstr_cpy(res->reply, "4.3.4 Message too big for the milters - try"
                             " again later");
        res->status = PICKUP_MILTER_TEMPFAIL;
    }
    return true;
}

/* pickup_milter_result_init - an empty result */
void pickup_milter_result_init(PICKUP_MILTER_RESULT *res)
{
    res->status = PICKUP_MILTER_ACCEPT;
    res->reply = vstr_alloc(100);
    res->stage = "";
    res->rcpts = argv_alloc(2);
    res->hold = vstr_alloc(64);
}

/* pickup_milter_result_free - what pickup_milter_result_init made */
void pickup_milter_result_free(PICKUP_MILTER_RESULT *res)
{
    res->reply = vstr_free(res->reply);
    res->rcpts = argv_free(res->rcpts);
    res->hold = vstr_free(res->hold);
}

/* pickup_milter_now - a monotonic clock, in milliseconds */
static long long pickup_milter_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* pickup_milter_wait - poll fd for events until deadline: 0, or -1 with
   why (timeout or error) */
static int pickup_milter_wait(PICKUP_MILTER *m, short events,
                              long long deadline)
{
    struct pollfd pfd = {.fd = m->fd, .events = events};

    for (;;) {
        long long left = deadline - pickup_milter_now();
        int n;

        if (left <= 0) {
            vstr_cpy(m->why, "timeout");
            return -1;
        }
        if ((n = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int) left)) > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            vstr_sprintf(m->why, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

/* pickup_milter_send - all of m->out, within timeout seconds */
static int pickup_milter_send(PICKUP_MILTER *m, int timeout)
{
    long long deadline = pickup_milter_now() + (long long) timeout * 1000;
    size_t off = 0;

    while (off < vstr_len(m->out)) {
        ssize_t n;

        if (pickup_milter_wait(m, POLLOUT, deadline) < 0)
            return -1;
        n = send(m->fd, vstr_str(m->out) + off, vstr_len(m->out) - off,
                 MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
            vstr_sprintf(m->why, "write: %s", strerror(errno));
            return -1;
        }
        if (n > 0)
            off += (size_t) n;
    }
    return 0;
}

/* pickup_milter_recv - exactly len bytes, appended to m->in */
static int pickup_milter_recv(PICKUP_MILTER *m, size_t len, long long deadline)
{
    char buf[8192];

    while (len > 0) {
        ssize_t n;

        if (pickup_milter_wait(m, POLLIN, deadline) < 0)
            return -1;
        n = read(m->fd, buf, len < sizeof(buf) ? len : sizeof(buf));
        if (n == 0) {
            vstr_cpy(m->why, "connection closed by the milter");
            return -1;
        }
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
            vstr_sprintf(m->why, "read: %s", strerror(errno));
            return -1;
        }
        if (n > 0) {
            vstr_ncat(m->in, buf, (size_t) n);
            len -= (size_t) n;
        }
    }
    return 0;
}

/* pickup_milter_reply - the next reply other than progress, within
   timeout seconds (each progress starts the time over): 0, or -1 */
static int pickup_milter_reply(PICKUP_MILTER *m, int timeout, MILTER_REPLY *rep)
{
    for (;;) {
        long long deadline = pickup_milter_now() + (long long) timeout * 1000;
        long len;

        vstr_reset(m->in);
        if (pickup_milter_recv(m, 4, deadline) < 0)
            return -1;
        if ((len = milter_packet_length((unsigned char *) vstr_str(m->in))) <
            0) {
            vstr_cpy(m->why, "bad packet length");
            return -1;
        }
        vstr_reset(m->in);
        if (pickup_milter_recv(m, (size_t) len, deadline) < 0 ||
            milter_reply_parse(vstr_str(m->in), vstr_len(m->in), rep, m->why) <
                0)
            return -1;
        if (rep->cmd != MILTER_REP_PROGRESS)
            return 0;
    }
}

/* pickup_milter_open - connect and negotiate: 0, or -1 with why */
static int pickup_milter_open(PICKUP_MILTER *m)
{
    const PICKUP_MILTER_ADDR *ma = m->addr;
    long long deadline =
        pickup_milter_now() + (long long) m->conf->connect_timeout * 1000;
    MILTER_REPLY rep;
    int err = 0;
    socklen_t errlen = sizeof(err);

    if (ma->salen == 0) {
        vstr_cpy(m->why, "unusable address (see the log at pickup start)");
        return -1;
    }
    if ((m->fd = socket(ma->sa.ss_family,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
        vstr_sprintf(m->why, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(m->fd, (const struct sockaddr *) &ma->sa, ma->salen) < 0) {
        if (errno != EINPROGRESS) {
            vstr_sprintf(m->why, "cannot connect: %s", strerror(errno));
            return -1;
        }
        if (pickup_milter_wait(m, POLLOUT, deadline) < 0) {
            vstr_cpy(m->why, "timeout while connecting");
            return -1;
        }
        if (getsockopt(m->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0 ||
            err != 0) {
            vstr_sprintf(m->why, "cannot connect: %s",
                         strerror(err ? err : errno));
            return -1;
        }
    }
    vstr_reset(m->out);
    milter_optneg(m->out);
    if (pickup_milter_send(m, m->conf->connect_timeout) < 0 ||
        pickup_milter_reply(m, m->conf->connect_timeout, &rep) < 0)
        return -1;
    if (rep.cmd != MILTER_REP_OPTNEG) {
        vstr_cpy(m->why, "no OPTNEG reply");
        return -1;
    }
    if (rep.version < 2 || rep.version > MILTER_PROTO_VERSION) {
        vstr_sprintf(m->why, "protocol version %lu",
                     (unsigned long) rep.version);
        return -1;
    }
    if ((rep.steps & ~(uint32_t) MILTER_STEPS_OFFERED) != 0 &&
        (rep.steps & ~(uint32_t) MILTER_STEPS_OFFERED) != MILTER_P_RCPT_REJ) {
        vstr_sprintf(m->why, "asks for protocol steps 0x%lx we do not offer",
                     (unsigned long) rep.steps);
        return -1;
    }
    m->actions = rep.actions & MILTER_ACTIONS_OFFERED;
    m->steps = rep.steps & MILTER_STEPS_OFFERED;
    return 0;
}

/* pickup_milter_skips - the milter asked not to get cmd */
static bool pickup_milter_skips(const PICKUP_MILTER *m, int cmd)
{
    switch (cmd) {
    case MILTER_CMD_CONNECT:
        return m->steps & MILTER_P_NOCONNECT;
    case MILTER_CMD_HELO:
        return m->steps & MILTER_P_NOHELO;
    case MILTER_CMD_MAIL:
        return m->steps & MILTER_P_NOMAIL;
    case MILTER_CMD_RCPT:
        return m->steps & MILTER_P_NORCPT;
    case MILTER_CMD_DATA:
        return m->steps & MILTER_P_NODATA;
    case MILTER_CMD_HEADER:
        return m->steps & MILTER_P_NOHDRS;
    case MILTER_CMD_EOH:
        return m->steps & MILTER_P_NOEOH;
    case MILTER_CMD_BODY:
        return m->steps & MILTER_P_NOBODY;
    default:
        return false;
    }
}

/* pickup_milter_no_reply - the milter sends no reply to cmd */
static bool pickup_milter_no_reply(const PICKUP_MILTER *m, int cmd)
{
    switch (cmd) {
    case MILTER_CMD_CONNECT:
        return m->steps & MILTER_P_NR_CONN;
    case MILTER_CMD_HELO:
        return m->steps & MILTER_P_NR_HELO;
    case MILTER_CMD_MAIL:
        return m->steps & MILTER_P_NR_MAIL;
    case MILTER_CMD_RCPT:
        return m->steps & MILTER_P_NR_RCPT;
    case MILTER_CMD_DATA:
        return m->steps & MILTER_P_NR_DATA;
    case MILTER_CMD_HEADER:
        return m->steps & MILTER_P_NR_HDR;
    case MILTER_CMD_EOH:
        return m->steps & MILTER_P_NR_EOH;
    case MILTER_CMD_BODY:
        return m->steps & MILTER_P_NR_BODY;
    default:
        return false;
    }
}

/* pickup_milter_macros - a MACRO packet for cmd (no reply): name, value
   pairs ending with NULL */
static int pickup_milter_macros(PICKUP_MILTER *m, int cmd, ...)
{
    VSTR *data = vstr_alloc(100);
    const char *name;
    va_list ap;

    if (pickup_milter_skips(m, cmd)) {
        vstr_free(data);
        return 0;
    }
    vstr_addch(data, cmd);
    va_start(ap, cmd);
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);

        vstr_cat(data, name);
        vstr_addch(data, 0);
        vstr_cat(data, value);
        vstr_addch(data, 0);
    }
    va_end(ap);
    vstr_reset(m->out);
    milter_packet(m->out, MILTER_CMD_MACRO, vstr_str(data), vstr_len(data));
    vstr_free(data);
    return pickup_milter_send(m, m->conf->command_timeout);
}

/* pickup_milter_verdict - what a reply to an event before the end of
   the message means; reply gets a refusal's text */
static PICKUP_MILTER_OUTCOME pickup_milter_verdict(PICKUP_MILTER *m, int cmd,
                                                   const MILTER_REPLY *rep,
                                                   VSTR *reply)
{
    PICKUP_MILTER_OUTCOME outcome;

    switch (rep->cmd) {
    case MILTER_REP_CONTINUE:
        return PM_CONTINUE;
    case MILTER_REP_SKIP:
        if (cmd == MILTER_CMD_BODY)
            return PM_SKIP;
        vstr_cpy(m->why, "reply 's' out of place");
        return PM_FAILED;
    case MILTER_REP_ACCEPT:
        return PM_ACCEPT;
    case MILTER_REP_DISCARD:
        return PM_DISCARD;
    case MILTER_REP_REJECT:
        vstr_cpy(reply, "5.7.1 Command rejected");
        outcome = PM_REJECT;
        break;
    case MILTER_REP_TEMPFAIL:
        vstr_cpy(reply, "4.7.1 Service unavailable - try again later");
        outcome = PM_TEMPFAIL;
        break;
    case MILTER_REP_REPLYCODE:
        /* "550 5.7.1 text": the code is the reply's first digit; the
           rest (multi-line: the first line) is the reason. */
        vstr_cpy(reply, rep->text[3] != 0 ? rep->text + 4 : rep->text + 3);
        if (strstr(vstr_str(reply), "\r\n") != NULL)
            vstr_truncate(reply, (size_t) (strstr(vstr_str(reply), "\r\n") -
                                           vstr_str(reply)));
        if (vstr_len(reply) == 0)
            vstr_cpy(reply, rep->text[0] == '5' ? "5.7.1 Command rejected"
                                                : "4.7.1 Service unavailable");
        outcome = rep->text[0] == '5' ? PM_REJECT : PM_TEMPFAIL;
        break;
    default:
        vstr_sprintf(m->why, "reply '%c' out of place", rep->cmd);
        return PM_FAILED;
    }
    if (cmd == MILTER_CMD_RCPT) {
        vstr_sprintf(m->why,
                     "refused a recipient of non-SMTP mail (%s): a"
                     " configuration error (non_smtpd_milters must not"
                     " refuse recipients); the message stays queued",
                     vstr_str(reply));
        return PM_RCPT_REFUSED;
    }
    return outcome;
}

/* pickup_milter_event - send the packet in m->out for cmd and read the
   milter's verdict */
static PICKUP_MILTER_OUTCOME pickup_milter_event(PICKUP_MILTER *m, int cmd,
                                                 VSTR *reply)
{
    bool content = cmd == MILTER_CMD_HEADER || cmd == MILTER_CMD_EOH ||
                   cmd == MILTER_CMD_BODY;
    int timeout = content ? m->conf->content_timeout : m->conf->command_timeout;
    MILTER_REPLY rep;

    if (pickup_milter_skips(m, cmd))
        return PM_CONTINUE;
    if (pickup_milter_send(m, timeout) < 0)
        return PM_FAILED;
    if (pickup_milter_no_reply(m, cmd))
        return PM_CONTINUE;
    if (pickup_milter_reply(m, timeout, &rep) < 0)
        return PM_FAILED;
    return pickup_milter_verdict(m, cmd, &rep, reply);
}

/* One milter's changes at the end of the message, kept until it lets
   the message through. */
typedef struct PICKUP_MILTER_MODS {
    MILTER_EDIT *edit;
    ARGV *rcpts;
    VSTR *hold;
} PICKUP_MILTER_MODS;

/* pickup_milter_mod - one change at the end of the message: 0, or -1
   with why (past the limit: the milter failed) */
static int pickup_milter_mod(PICKUP_MILTER *m, const MILTER_REPLY *rep,
                             PICKUP_MILTER_MODS *mods)
{
    switch (rep->cmd) {
    case MILTER_REP_ADDHEADER:
    case MILTER_REP_INSHEADER:
    case MILTER_REP_CHGHEADER:
        if (!(m->actions &
              (rep->cmd == MILTER_REP_CHGHEADER ? MILTER_ACT_CHGHDRS
                                                : MILTER_ACT_ADDHDRS)))
            break;
        if (milter_edit_header(mods->edit, rep->cmd, rep->index, rep->name,
                               rep->value) < 0) {
            vstr_sprintf(m->why,
                         "adds more than %zu bytes to the message"
                         " (message_size_limit)",
                         m->conf->limit);
            return -1;
        }
        return 0;
    case MILTER_REP_REPLBODY:
        if (!(m->actions & MILTER_ACT_CHGBODY))
            break;
        if (milter_edit_body(mods->edit, rep->data, rep->len) < 0) {
            vstr_sprintf(m->why,
                         "adds more than %zu bytes to the message"
                         " (message_size_limit)",
                         m->conf->limit);
            return -1;
        }
        return 0;
    case MILTER_REP_ADDRCPT:
        if (!(m->actions & MILTER_ACT_ADDRCPT))
            break;
        if (mods->rcpts->argc >= 1000) {
            vstr_cpy(m->why, "adds more than 1000 recipients");
            return -1;
        }
        argv_add(mods->rcpts, rep->text);
        return 0;
    case MILTER_REP_QUARANTINE:
        if (!(m->actions & MILTER_ACT_QUARANTINE))
            break;
        /* cleanup logs it: printable, bounded */
        vstr_reset(mods->hold);
        for (const char *cp = rep->text; *cp && vstr_len(mods->hold) < 200;
             cp++)
            vstr_addch(mods->hold,
                       (unsigned char) *cp < 0x20 || (unsigned char) *cp >= 0x7f
                           ? '?'
                           : *cp);
        if (vstr_len(mods->hold) == 0)
            vstr_cpy(mods->hold, "quarantined");
        return 0;
    default:
        break;
    }
    msg_warn("milter %s: ignoring a '%c' request (not negotiated or not"
             " supported)",
             m->addr->spec, rep->cmd);
    return 0;
}

/* pickup_milter_eom - EOM, the changes, the final verdict */
static PICKUP_MILTER_OUTCOME pickup_milter_eom(PICKUP_MILTER *m,
                                               PICKUP_MILTER_MODS *mods,
                                               VSTR *reply)
{
    MILTER_REPLY rep;

    vstr_reset(m->out);
    milter_packet(m->out, MILTER_CMD_EOM, NULL, 0);
    if (pickup_milter_send(m, m->conf->content_timeout) < 0)
        return PM_FAILED;
    for (;;) {
        if (pickup_milter_reply(m, m->conf->content_timeout, &rep) < 0)
            return PM_FAILED;
        switch (rep.cmd) {
        case MILTER_REP_ADDHEADER:
        case MILTER_REP_INSHEADER:
        case MILTER_REP_CHGHEADER:
        case MILTER_REP_REPLBODY:
        case MILTER_REP_ADDRCPT:
        case MILTER_REP_DELRCPT:
        case MILTER_REP_ADDRCPT_PAR:
        case MILTER_REP_CHGFROM:
        case MILTER_REP_QUARANTINE:
        case MILTER_REP_SETSYMLIST:
            if (pickup_milter_mod(m, &rep, mods) < 0)
                return PM_FAILED;
            continue;
        case MILTER_REP_CONTINUE:
            return PM_ACCEPT;
        default:
            return pickup_milter_verdict(m, MILTER_CMD_EOM, &rep, reply);
        }
    }
}

/* pickup_milter_headers - a HEADER packet for each header of content;
   the start of the body (after the empty line) in *body */
static PICKUP_MILTER_OUTCOME pickup_milter_headers(PICKUP_MILTER *m,
                                                   const VSTR *content,
                                                   const char **body,
                                                   VSTR *reply)
{
    const char *cp = vstr_str(content);
    const char *end = cp + vstr_len(content);
    PICKUP_MILTER_OUTCOME outcome = PM_CONTINUE;
    VSTR *hdr = vstr_alloc(256);

    while (outcome == PM_CONTINUE && cp < end && *cp != '\n') {
        const char *start = cp;
        const char *colon;
        const char *value;

        /* One header: its line and the continuation lines. */
        do {
            const char *nl = memchr(cp, '\n', (size_t) (end - cp));

            cp = nl ? nl + 1 : end;
        } while (cp < end && (*cp == ' ' || *cp == '\t'));
        if ((colon = memchr(start, ':', (size_t) (cp - start))) == NULL)
            continue; /* not a header: cleanup's business */
        vstr_reset(hdr);
        vstr_ncat(hdr, start, (size_t) (colon - start));
        vstr_trim(hdr);
        vstr_addch(hdr, 0);
        value = colon + 1;
        while (value < cp && (*value == ' ' || *value == '\t'))
            value++;
        /* Folded lines go as CR LF, as they came over SMTP. */
        for (const char *vp = value; vp < cp; vp++) {
            if (*vp == '\n' && vp + 1 < cp)
                vstr_cat(hdr, "\r\n");
            else if (*vp != '\n')
                vstr_addch(hdr, *vp);
        }
        vstr_addch(hdr, 0);
        vstr_reset(m->out);
        milter_packet(m->out, MILTER_CMD_HEADER, vstr_str(hdr), vstr_len(hdr));
        outcome = pickup_milter_event(m, MILTER_CMD_HEADER, reply);
    }
    vstr_free(hdr);
    *body = cp < end ? cp + 1 : end;
    return outcome;
}

/* pickup_milter_body - the body in pieces with CR LF line endings */
static PICKUP_MILTER_OUTCOME pickup_milter_body(PICKUP_MILTER *m,
                                                const char *cp, const char *end,
                                                VSTR *reply)
{
    PICKUP_MILTER_OUTCOME outcome = PM_CONTINUE;
    VSTR *piece = vstr_alloc(MILTER_CHUNK_MAX + 2);

    while (outcome == PM_CONTINUE && cp < end) {
        vstr_reset(piece);
        while (cp < end && vstr_len(piece) < MILTER_CHUNK_MAX - 1) {
            if (*cp == '\n')
                vstr_cat(piece, "\r\n");
            else
                vstr_addch(piece, *cp);
            cp++;
        }
        vstr_reset(m->out);
        milter_packet(m->out, MILTER_CMD_BODY, vstr_str(piece),
                      vstr_len(piece));
        outcome = pickup_milter_event(m, MILTER_CMD_BODY, reply);
    }
    vstr_free(piece);
    return outcome == PM_SKIP ? PM_CONTINUE : outcome;
}

/* pickup_milter_talk - the whole simulated session with one milter */
static PICKUP_MILTER_OUTCOME pickup_milter_talk(
    PICKUP_MILTER *m, const char *queue_id, const char *sender,
    const ARGV *rcpts, const VSTR *content, PICKUP_MILTER_MODS *mods,
    VSTR *reply, const char **stage)
{
    const PICKUP_MILTER_CONF *pmc = m->conf;
    PICKUP_MILTER_OUTCOME outcome;
    VSTR *arg = vstr_alloc(100);
    const char *body;

#define PICKUP_MILTER_STEP(expr)                                               \
    do {                                                                       \
        if ((outcome = (expr)) != PM_CONTINUE)                                 \
            goto out;                                                          \
    } while (0)
#define PICKUP_MILTER_MACROS(...)                                              \
    PICKUP_MILTER_STEP(pickup_milter_macros(m, __VA_ARGS__, (char *) NULL) < 0 \
                           ? PM_FAILED                                         \
                           : PM_CONTINUE)

    *stage = "CONNECT";
    PICKUP_MILTER_STEP(pickup_milter_open(m) < 0 ? PM_FAILED : PM_CONTINUE);
    PICKUP_MILTER_MACROS(
        MILTER_CMD_CONNECT, "j", pmc->myhostname, "{daemon_name}",
        pmc->myhostname, "v", pmc->mail_name, "_",
        PICKUP_MILTER_CLIENT_NAME " [" PICKUP_MILTER_CLIENT_ADDR "]",
        "{client_addr}", PICKUP_MILTER_CLIENT_ADDR, "{client_name}",
        PICKUP_MILTER_CLIENT_NAME);
    vstr_reset(m->out);
    milter_connect(m->out, PICKUP_MILTER_CLIENT_NAME, '4', 0,
                   PICKUP_MILTER_CLIENT_ADDR);
    PICKUP_MILTER_STEP(pickup_milter_event(m, MILTER_CMD_CONNECT, reply));
    *stage = "HELO";
    vstr_reset(m->out);
    milter_packet_strs(m->out, MILTER_CMD_HELO, PICKUP_MILTER_CLIENT_NAME,
                       (char *) NULL);
    PICKUP_MILTER_STEP(pickup_milter_event(m, MILTER_CMD_HELO, reply));
    *stage = "MAIL";
    PICKUP_MILTER_MACROS(MILTER_CMD_MAIL, "{mail_addr}", sender);
    vstr_sprintf(arg, "<%s>", sender);
    vstr_reset(m->out);
    milter_packet_strs(m->out, MILTER_CMD_MAIL, vstr_str(arg), (char *) NULL);
    PICKUP_MILTER_STEP(pickup_milter_event(m, MILTER_CMD_MAIL, reply));
    *stage = "RCPT";
    for (size_t i = 0; i < rcpts->argc; i++) {
        PICKUP_MILTER_MACROS(MILTER_CMD_RCPT, "{rcpt_addr}", rcpts->argv[i]);
        vstr_sprintf(arg, "<%s>", rcpts->argv[i]);
        vstr_reset(m->out);
        milter_packet_strs(m->out, MILTER_CMD_RCPT, vstr_str(arg),
                           (char *) NULL);
        PICKUP_MILTER_STEP(pickup_milter_event(m, MILTER_CMD_RCPT, reply));
    }
    *stage = "DATA";
    PICKUP_MILTER_MACROS(MILTER_CMD_DATA, "i", queue_id);
    vstr_reset(m->out);
    milter_packet(m->out, MILTER_CMD_DATA, NULL, 0);
    PICKUP_MILTER_STEP(pickup_milter_event(m, MILTER_CMD_DATA, reply));
    *stage = "END-OF-MESSAGE";
    PICKUP_MILTER_STEP(pickup_milter_headers(m, content, &body, reply));
    PICKUP_MILTER_MACROS(MILTER_CMD_EOH, "i", queue_id);
    vstr_reset(m->out);
    milter_packet(m->out, MILTER_CMD_EOH, NULL, 0);
    PICKUP_MILTER_STEP(pickup_milter_event(m, MILTER_CMD_EOH, reply));
    PICKUP_MILTER_STEP(pickup_milter_body(
        m, body, vstr_str(content) + vstr_len(content), reply));
    PICKUP_MILTER_MACROS(MILTER_CMD_EOM, "i", queue_id);
    outcome = pickup_milter_eom(m, mods, reply);

#undef PICKUP_MILTER_MACROS
#undef PICKUP_MILTER_STEP
out:
    vstr_free(arg);
    return outcome;
}

/* pickup_milter_close - QUIT (best effort) and close */
static void pickup_milter_close(PICKUP_MILTER *m, bool quit)
{
    if (m->fd >= 0 && quit) {
        vstr_reset(m->out);
        milter_packet(m->out, MILTER_CMD_QUIT, NULL, 0);
        (void) send(m->fd, vstr_str(m->out), vstr_len(m->out),
                    MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (m->fd >= 0)
        (void) close(m->fd);
    m->fd = -1;
}

/* pickup_milter_run - the message through each milter */
void pickup_milter_run(const PICKUP_MILTER_CONF *pmc, const char *queue_id,
                       const char *sender, const ARGV *rcpts, VSTR *content,
                       PICKUP_MILTER_RESULT *res)
{
    PICKUP_MILTER m = {.conf = pmc, .fd = -1};

    res->status = PICKUP_MILTER_ACCEPT;
    m.out = vstr_alloc(1024);
    m.in = vstr_alloc(1024);
    m.why = vstr_alloc(100);
    for (size_t i = 0; i < pmc->count && res->status == PICKUP_MILTER_ACCEPT;
         i++) {
        PICKUP_MILTER_MODS mods;
        PICKUP_MILTER_OUTCOME outcome;

        m.addr = pmc->addrs + i;
        m.actions = 0;
        m.steps = 0;
        vstr_reset(m.why);
        mods.edit = milter_edit_alloc(pmc->limit);
        mods.rcpts = argv_alloc(2);
        mods.hold = vstr_alloc(64);
        outcome = pickup_milter_talk(&m, queue_id, sender, rcpts, content,
                                     &mods, res->reply, &res->stage);
        pickup_milter_close(&m, outcome != PM_FAILED);
        switch (outcome) {
        case PM_FAILED:
            msg_warn("milter %s: %s", m.addr->spec, vstr_str(m.why));
            if (pmc->default_action == MILTER_DEFAULT_ACCEPT)
                break;
            if (pmc->default_action == MILTER_DEFAULT_REJECT) {
                vstr_cpy(res->reply, "5.7.1 Command rejected");
                res->status = PICKUP_MILTER_REJECT;
            } else {
                vstr_cpy(res->reply,
                         "4.7.1 Service unavailable - try again later");
                res->status = PICKUP_MILTER_TEMPFAIL;
            }
            break;
        case PM_RCPT_REFUSED:
            msg_warn("milter %s: %s", m.addr->spec, vstr_str(m.why));
            res->status = PICKUP_MILTER_TEMPFAIL;
            break;
        case PM_DISCARD:
            res->status = PICKUP_MILTER_DISCARD;
            break;
        case PM_REJECT:
            res->status = PICKUP_MILTER_REJECT;
            break;
        case PM_TEMPFAIL:
            res->status = PICKUP_MILTER_TEMPFAIL;
            break;
        default:
            /* Through: its changes before the next milter sees it. */
            milter_edit_apply(mods.edit, content);
            for (size_t r = 0; r < mods.rcpts->argc; r++)
                argv_add(res->rcpts, mods.rcpts->argv[r]);
            if (vstr_len(mods.hold) > 0)
                vstr_cpy(res->hold, vstr_str(mods.hold));
            break;
        }
        milter_edit_free(mods.edit);
        argv_free(mods.rcpts);
        vstr_free(mods.hold);
    }
    vstr_free(m.out);
    vstr_free(m.in);
    vstr_free(m.why);
}
