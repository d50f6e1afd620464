/*
 * bounce_class - classify a delivery failure: a stable category and hard/soft
 *
 * Input: the enhanced status code (X.Y.Z, may be "" or NULL), the SMTP
 * reply code (0 or -1 when there was none: a local failure) and the reply
 * or diagnostic text. Output: one of the BOUNCE_CLASS_* category names
 * below (stable: logs, events, DSNs and users match on them) and hard =
 * the address itself is bad and the failure is permanent (suppress it).
 *
 * The rules are a data file (bounce_classes_file; conf/bounce-classes
 * documents the syntax in its header and is the ONE source of the rules:
 * the build turns it into the built-in text used when the parameter is
 * empty). First matching rule wins; no rule matching gives "other", hard
 * when the failure is permanent.
 */
#ifndef BOUNCE_CLASS_H
#define BOUNCE_CLASS_H

#include "sys_defs.h"

#include <stdbool.h>

#include "mail_conf.h"
#include "vstr.h"

/* The categories (the set is closed: a rule naming another is an error). */
#define BOUNCE_CLASS_USER_UNKNOWN "user_unknown"
#define BOUNCE_CLASS_MAILBOX_FULL "mailbox_full"
#define BOUNCE_CLASS_MAILBOX_DISABLED "mailbox_disabled"
#define BOUNCE_CLASS_DOMAIN_NOT_FOUND "domain_not_found"
#define BOUNCE_CLASS_POLICY_BLOCKED "policy_blocked"
#define BOUNCE_CLASS_SPAM_CONTENT "spam_content"
#define BOUNCE_CLASS_RATE_LIMITED "rate_limited"
#define BOUNCE_CLASS_AUTH_FAILURE "auth_failure"
#define BOUNCE_CLASS_MESSAGE_TOO_LARGE "message_too_large"
#define BOUNCE_CLASS_RELAY_DENIED "relay_denied"
#define BOUNCE_CLASS_TRANSIENT_NETWORK "transient_network"
#define BOUNCE_CLASS_OTHER "other"

#define BOUNCE_CLASS_TEXT_MAX 4096 /* bytes of text the regexes look at */

typedef struct BOUNCE_CLASS {
    const char *category; /* BOUNCE_CLASS_* (static storage) */
    bool hard; /* permanent and about the address: suppress it */
} BOUNCE_CLASS;

typedef struct BOUNCE_CLASS_RULES BOUNCE_CLASS_RULES;

/* bounce_class_rules_load - the rules of path, or the built-in ones when
   path is NULL or ""; NULL with "file:line: reason" in why */
extern BOUNCE_CLASS_RULES *bounce_class_rules_load(const char *path, VSTR *why);
/* bounce_class_rules_parse - rules from text (name for the errors) */
extern BOUNCE_CLASS_RULES *bounce_class_rules_parse(const char *name,
                                                    const char *text,
                                                    VSTR *why);
/* bounce_class_rules_count - how many rules */
extern size_t bounce_class_rules_count(const BOUNCE_CLASS_RULES *rules);
/* bounce_class_rules_free - release; returns NULL */
extern BOUNCE_CLASS_RULES *bounce_class_rules_free(BOUNCE_CLASS_RULES *rules);

/* bounce_class_classify - fill out; returns the index of the rule that
   matched, -1 when none did (out is then "other") */
extern int bounce_class_classify(const BOUNCE_CLASS_RULES *rules,
                                 const char *dsn, int reply_code,
                                 const char *text, BOUNCE_CLASS *out);

/* bounce_class_reply_code - the SMTP reply code in text such as "host
   mx.test[192.0.2.1] said: 550 5.1.1 ..." or "smtp; 550 ...", else 0 */
extern int bounce_class_reply_code(const char *text);

/* bounce_class_rules_conf - a daemon's rules: bounce_classes_file, or,
   when that is malformed or unreadable (it changed after master checked
   it), a warning naming file:line and the built-in rules. Never NULL. */
extern BOUNCE_CLASS_RULES *bounce_class_rules_conf(const MAIL_CONF *conf);

/* bounce_class_result - classify a delivery result: its status code, its
   Diagnostic-Code ("smtp; 550 ...", NULL or "" when no server replied)
   and its reason text */
extern void bounce_class_result(const BOUNCE_CLASS_RULES *rules,
                                const char *dsn, const char *diagnostic,
                                const char *reason, BOUNCE_CLASS *out);

/* bounce_class_builtin - the built-in rules text (conf/bounce-classes) */
extern const char *bounce_class_builtin(void);

#endif
