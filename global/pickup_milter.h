/*
 * pickup_milter - pickup's milter client (non_smtpd_milters)
 *
 * A blocking client: pickup has one message in hand and nothing else to
 * do. pickup_milter_run() takes the message through each milter of
 * non_smtpd_milters in turn, as Postfix does for mail from sendmail(1):
 * a simulated ESMTP session from "localhost" [127.0.0.1] (CONNECT, EHLO
 * localhost, MAIL, each RCPT, DATA, the headers, the body, the end of
 * the message). The changes each milter asks for are applied before the
 * next one sees the message.
 *
 * The api and render daemons use it too, in a child process of their own
 * (global/api_milter.h), for the API's mail.
 */
#ifndef PICKUP_MILTER_H
#define PICKUP_MILTER_H

#include "argv.h"
#include "mail_conf.h"
#include "vstr.h"

typedef struct PICKUP_MILTER_CONF PICKUP_MILTER_CONF;

/* pickup_milter_conf - non_smtpd_milters and the milter_* parameters;
   NULL when the list is empty */
extern PICKUP_MILTER_CONF *pickup_milter_conf(const MAIL_CONF *conf);
extern PICKUP_MILTER_CONF *pickup_milter_conf_free(PICKUP_MILTER_CONF *pmc);
/* pickup_milter_limit - the most content the milters are shown
   (message_size_limit) */
extern size_t pickup_milter_limit(const PICKUP_MILTER_CONF *pmc);
/* pickup_milter_time_limit - seconds a whole run may fairly take: each
   milter's connect, command and content timeouts, added up (each wait is
   bounded alone, and a milter's progress starts it over) */
extern long long pickup_milter_time_limit(const PICKUP_MILTER_CONF *pmc);

typedef enum PICKUP_MILTER_STATUS {
    PICKUP_MILTER_ACCEPT, /* go on: the changes are applied */
    PICKUP_MILTER_DISCARD, /* drop the message */
    PICKUP_MILTER_REJECT, /* refused for good (reply has the text) */
    PICKUP_MILTER_TEMPFAIL, /* try again later (reply has the text) */
} PICKUP_MILTER_STATUS;

/* What the milters decided. */
typedef struct PICKUP_MILTER_RESULT {
    PICKUP_MILTER_STATUS status;
    VSTR *reply; /* REJECT, TEMPFAIL: "5.7.1 text" */
    const char *stage; /* where it was decided: "CONNECT" .. "END-OF-MESSAGE" */
    ARGV *rcpts; /* recipients the milters added, as they wrote them */
    VSTR *hold; /* a quarantine: its reason; empty: none */
} PICKUP_MILTER_RESULT;

extern void pickup_milter_result_init(PICKUP_MILTER_RESULT *res);
/* pickup_milter_too_big - the verdict on a message past the limit when
   message_size_limit is 0 (milter_default_action) into res; false when
   the limit is message_size_limit (cleanup would refuse the message) */
extern bool pickup_milter_too_big(const PICKUP_MILTER_CONF *pmc,
                                  const char *queue_id,
                                  PICKUP_MILTER_RESULT *res);
extern void pickup_milter_result_free(PICKUP_MILTER_RESULT *res);

/* pickup_milter_run - the message (sender "" for <>, the recipients,
   content with LF line endings: headers, empty line, body) through the
   milters; content is changed in place as they ask */
extern void pickup_milter_run(const PICKUP_MILTER_CONF *pmc,
                              const char *queue_id, const char *sender,
                              const ARGV *rcpts, VSTR *content,
                              PICKUP_MILTER_RESULT *res);

#endif
