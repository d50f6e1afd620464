/*
 * cleanup_trace - the message's trace (global/trace.h), chosen at commit
 *
 * Every queued message gets the envelope attribute traceparent=... :
 *
 *   1. the first traceparent: header of the message, honoured only from
 *      a trusted submitter, as X-Sluice-Pool is (cleanup_pool.c): a
 *      client in mynetworks, a SASL-authenticated client, local
 *      submission and the HTTP API (which passes its request's
 *      traceparent header as this header). Its trace id becomes the
 *      message's, its span id the parent of the receive span, and its
 *      sampled flag decides the export (a parent-based sampler);
 *   2. otherwise a fresh trace: a random trace id, no parent, sampled
 *      with the probability otel_traces_sampler_ratio.
 *
 * An untrusted client's traceparent is ignored (logged): anyone on the
 * Internet could otherwise graft spans into an operator's traces, or force
 * sampling of every message. The header itself stays in the message,
 * honoured or not: it is the sender's content (and may be DKIM-signed).
 * A header that is not a valid traceparent is logged and ignored.
 *
 * The fresh trace is written at BEGIN with the other attributes; a
 * trusted header, seen only in the content, replaces it then
 * (qfile_out_set_attr: a copy of the file, only for those messages).
 */
#include "sys_defs.h"

#include <errno.h>
#include <math.h>

#include "cleanup.h"
#include "cleanup_proto.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "trace.h"
#include "vstr.h"

typedef struct CLEANUP_TRACE_STATE {
    char *header; /* the first traceparent: value, NULL: none */
} CLEANUP_TRACE_STATE;

/* cleanup_trace_ratio - otel_traces_sampler_ratio as a number in [0,1];
   NAN (why says) when it is not */
double cleanup_trace_ratio(const char *text, VSTR *why)
{
    char *end;
    double ratio;

    errno = 0;
    ratio = strtod(text, &end);
    if (*text == 0 || *end != 0 || errno != 0 || !(ratio >= 0 && ratio <= 1)) {
        vstr_sprintf(why,
                     "otel_traces_sampler_ratio = %s: not a number from 0 to 1",
                     text);
        return NAN;
    }
    return ratio;
}

/* cleanup_trace_conf - otel_traces_sampler_ratio and mynetworks (fatal
   when bad) */
void cleanup_trace_conf(CLEANUP_CONF *cconf, const MAIL_CONF *conf)
{
    VSTR *why = vstr_alloc(100);

    cconf->trace_ratio = cleanup_trace_ratio(
        mail_conf_str(conf, "otel_traces_sampler_ratio"), why);
    if (isnan(cconf->trace_ratio))
        msg_fatal("%s", vstr_str(why));
    if ((cconf->trace_mynetworks =
             match_list_create("mynetworks", mail_conf_str(conf, "mynetworks"),
                               MATCH_LIST_ADDR, why)) == NULL)
        msg_fatal("%s", vstr_str(why));
    vstr_free(why);
}

/* cleanup_trace_conf_free - release what cleanup_trace_conf read */
void cleanup_trace_conf_free(CLEANUP_CONF *cconf)
{
    if (cconf->trace_mynetworks)
        cconf->trace_mynetworks = match_list_free(cconf->trace_mynetworks);
}

/* cleanup_trace_begin - BEGIN: who may give the trace by header, and a
   fresh trace, written as the traceparent attribute */
void cleanup_trace_begin(CLEANUP_MSG *msg, const CLEANUP_BEGIN *req)
{
    const CLEANUP_CONF *conf = msg->conf;
    const char *origin = req->origin ? req->origin : "";
    TRACE_CTX trace;
    char text[TRACE_TEXT_LEN + 1];

    msg->trace_trusted =
        (req->sasl_username != NULL && *req->sasl_username != 0) ||
        strcmp(origin, CLEANUP_ORIGIN_LOCAL) == 0 ||
        strcmp(origin, "api") == 0 ||
        (strcmp(origin, CLEANUP_ORIGIN_SMTP) == 0 && req->client_addr != NULL &&
         *req->client_addr != 0 && conf->trace_mynetworks != NULL &&
         match_list_match(conf->trace_mynetworks, req->client_addr) > 0);
    trace_new(&trace, conf->trace_ratio);
    trace_format(&trace, text, sizeof(text));
    msg->traceparent = mystrdup(text);
    if (msg->writer != NULL)
        qfile_put_attr(msg->writer, TRACE_ATTR, msg->traceparent);
}

/* cleanup_trace_filter_begin - a message begins */
static void *cleanup_trace_filter_begin(CLEANUP_MSG *msg)
{
    return mycalloc(1, sizeof(CLEANUP_TRACE_STATE));
}

/* cleanup_trace_header - traceparent: remember the first, keep them all */
static CLEANUP_FILTER_ACT cleanup_trace_header(void *arg, CLEANUP_MSG *msg,
                                               VSTR *header)
{
    CLEANUP_TRACE_STATE *state = arg;
    size_t len = strlen(TRACE_HEADER);
    const char *cp = vstr_str(header);
    VSTR *value;

    if (state->header != NULL || vstr_len(header) <= len || cp[len] != ':' ||
        strncasecmp(cp, TRACE_HEADER, len) != 0)
        return CLEANUP_FILTER_KEEP;
    value = vstr_alloc(64);
    for (cp += len + 1; *cp && vstr_len(value) < 200; cp++)
        if (*cp != ' ' && *cp != '\t' && *cp != '\r' && *cp != '\n')
            vstr_addch(value, *cp);
    state->header = vstr_export(value);
    return CLEANUP_FILTER_KEEP;
}

/* cleanup_trace_end - the content is in: apply a trusted header */
static void cleanup_trace_end(void *arg, CLEANUP_MSG *msg)
{
    CLEANUP_TRACE_STATE *state = arg;
    TRACE_CTX trace;
    char text[TRACE_TEXT_LEN + 1];

    if (state->header == NULL || msg->traceparent == NULL || msg->status)
        return;
    if (!msg->trace_trusted) {
        msg_info("%s: %s header ignored (client %s is neither in mynetworks "
                 "nor authenticated)",
                 msg->qid, TRACE_HEADER, msg->client_info);
        return;
    }
    if (!trace_parse(state->header, &trace)) {
        msg_info("%s: %s header ignored: not a W3C traceparent: %.60s",
                 msg->qid, TRACE_HEADER, state->header);
        return;
    }
    trace_format(&trace, text, sizeof(text));
    if (qfile_out_set_attr(msg->out, TRACE_ATTR, text) < 0) {
        msg_warn("%s: write traceparent attribute to %s: %m", msg->qid,
                 msg->tmp_path);
        cleanup_msg_fail(msg, 451, "4.3.0 queue file write error");
        return;
    }
    myfree(msg->traceparent);
    msg->traceparent = mystrdup(text);
}

/* cleanup_trace_free - the filter's state */
static void cleanup_trace_free(void *arg)
{
    CLEANUP_TRACE_STATE *state = arg;

    if (state == NULL)
        return;
    myfree(state->header);
    myfree(state);
}

const CLEANUP_FILTER cleanup_trace_filter = {
    .name = "trace",
    .begin = cleanup_trace_filter_begin,
    .header = cleanup_trace_header,
    .end = cleanup_trace_end,
    .free = cleanup_trace_free,
};
