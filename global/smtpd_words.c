/*
 * smtpd_words - the restriction words smtpd's *_restrictions lists know
 * (see smtpd_words.h)
 */
#include "sys_defs.h"

#include <strings.h>

#include "smtpd_words.h"

static const SMTPD_WORD_INFO smtpd_words[] = {
    {"permit", SMTPD_WORD_PERMIT, false},
    {"reject", SMTPD_WORD_REJECT, false},
    {"defer", SMTPD_WORD_DEFER, false},
    {"permit_mynetworks", SMTPD_WORD_PERMIT_MYNETWORKS, false},
    {"permit_sasl_authenticated", SMTPD_WORD_PERMIT_SASL_AUTHENTICATED, false},
    {"reject_unauth_destination", SMTPD_WORD_REJECT_UNAUTH_DESTINATION, false},
    {"defer_unauth_destination", SMTPD_WORD_DEFER_UNAUTH_DESTINATION, false},
    {"permit_auth_destination", SMTPD_WORD_PERMIT_AUTH_DESTINATION, false},
    {"reject_unlisted_recipient", SMTPD_WORD_REJECT_UNLISTED_RECIPIENT, false},
    {"reject_unknown_client_hostname", SMTPD_WORD_REJECT_UNKNOWN_CLIENT, false},
    {"reject_unknown_client", SMTPD_WORD_REJECT_UNKNOWN_CLIENT,
     false}, /* Postfix < 2.3 */
    {"reject_unknown_reverse_client_hostname",
     SMTPD_WORD_REJECT_UNKNOWN_REVERSE_CLIENT, false},
    {"check_client_access", SMTPD_WORD_CHECK_CLIENT_ACCESS, true},
    {"check_helo_access", SMTPD_WORD_CHECK_HELO_ACCESS, true},
    {"check_sender_access", SMTPD_WORD_CHECK_SENDER_ACCESS, true},
    {"check_recipient_access", SMTPD_WORD_CHECK_RECIPIENT_ACCESS, true},
    {"reject_spf_fail", SMTPD_WORD_REJECT_SPF_FAIL, false},
};

const SMTPD_WORD_INFO *smtpd_word_find(const char *name)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(smtpd_words); i++)
        if (strcasecmp(name, smtpd_words[i].name) == 0)
            return &smtpd_words[i];
    return NULL;
}
