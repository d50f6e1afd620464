/*
 * smtpd_words - the restriction words smtpd's *_restrictions lists know
 *
 * One table, read by smtpd (smtpd/smtpd_check.c, which acts on each word)
 * and by `sluice check` (which refuses a list with a word smtpd does not
 * know, since smtpd would answer 451 where it meets one).
 */
#ifndef SMTPD_WORDS_H
#define SMTPD_WORDS_H

#include "sys_defs.h"

typedef enum SMTPD_WORD {
    SMTPD_WORD_PERMIT,
    SMTPD_WORD_REJECT,
    SMTPD_WORD_DEFER,
    SMTPD_WORD_PERMIT_MYNETWORKS,
    SMTPD_WORD_PERMIT_SASL_AUTHENTICATED,
    SMTPD_WORD_REJECT_UNAUTH_DESTINATION,
    SMTPD_WORD_DEFER_UNAUTH_DESTINATION,
    SMTPD_WORD_PERMIT_AUTH_DESTINATION,
    SMTPD_WORD_REJECT_UNLISTED_RECIPIENT,
    SMTPD_WORD_REJECT_UNKNOWN_CLIENT,
    SMTPD_WORD_REJECT_UNKNOWN_REVERSE_CLIENT,
    SMTPD_WORD_CHECK_CLIENT_ACCESS,
    SMTPD_WORD_CHECK_HELO_ACCESS,
    SMTPD_WORD_CHECK_SENDER_ACCESS,
    SMTPD_WORD_CHECK_RECIPIENT_ACCESS,
    SMTPD_WORD_REJECT_SPF_FAIL,
    SMTPD_WORD_CONFIG_ERROR, /* a bad word: 451 4.3.5 when reached */
} SMTPD_WORD;

typedef struct SMTPD_WORD_INFO {
    const char *name;
    SMTPD_WORD word;
    bool table; /* the next word is a type:table */
} SMTPD_WORD_INFO;

/* smtpd_word_find - the word called name (any case), or NULL */
extern const SMTPD_WORD_INFO *smtpd_word_find(const char *name);

#endif
