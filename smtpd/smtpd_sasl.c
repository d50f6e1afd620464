/*
 * smtpd_sasl - SMTP AUTH through Cyrus SASL (libsasl2)
 *
 * As Postfix's xsasl_cyrus_server: once a process, sasl_set_path() to
 * cyrus_sasl_config_path (the folder of <smtpd_sasl_path>.conf) and
 * sasl_server_init(smtpd_sasl_path); each session sasl_server_new() with
 * smtpd_sasl_service, myhostname and smtpd_sasl_local_domain as the
 * realm, no security layer, and the mechanism limits of
 * smtpd_sasl_security_options (smtpd_sasl_tls_security_options over
 * TLS). The exchange is synchronous: with pwcheck_method auxprop and the
 * sasldb plugin it is a local database read. A user that does not exist
 * fails as a wrong password does (no user enumeration).
 */
#include "sys_defs.h"

#include <sasl/sasl.h>
#include <sasl/saslutil.h>
#include <strings.h>

#include "argv.h"
#include "mail_conf.h"
#include "msg.h"
#include "mymalloc.h"
#include "smtpd.h"
#include "vstr.h"

#define SMTPD_SASL_LINE_MAX 12288 /* decoded bytes of one client line */

struct SMTPD_SASL {
    sasl_conn_t *conn;
};

/* smtpd_sasl_log - the library's complaints go to the mail log */
static int smtpd_sasl_log(void *context, int level, const char *message)
{
    switch (level) {
    case SASL_LOG_ERR:
    case SASL_LOG_FAIL:
        msg_warn("SASL: %s", message);
        break;
    case SASL_LOG_WARN:
        msg_warn("SASL: %s", message);
        break;
    default:
        break;
    }
    return SASL_OK;
}

/* smtpd_sasl_init - the library, once a process */
int smtpd_sasl_init(const MAIL_CONF *conf, VSTR *why)
{
    static sasl_callback_t callbacks[] = {
        {SASL_CB_LOG, (int (*)(void))(void (*)(void)) smtpd_sasl_log, NULL},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    const char *path = mail_conf_str(conf, "cyrus_sasl_config_path");
    const char *app = mail_conf_str(conf, "smtpd_sasl_path");
    int status;

    if (*path != 0 && (status = sasl_set_path(SASL_PATH_TYPE_CONFIG,
                                              (char *) path)) != SASL_OK) {
        vstr_sprintf(why, "cyrus_sasl_config_path %s: %s", path,
                     sasl_errstring(status, NULL, NULL));
        return -1;
    }
    if ((status = sasl_server_init(callbacks, app)) != SASL_OK) {
        vstr_sprintf(why, "sasl_server_init(%s): %s", app,
                     sasl_errstring(status, NULL, NULL));
        return -1;
    }
    return 0;
}

/* smtpd_sasl_done - release the library (process exit) */
void smtpd_sasl_done(void)
{
    sasl_server_done();
}

/* smtpd_sasl_flags - smtpd_sasl_security_options as SASL_SEC_* */
static unsigned smtpd_sasl_flags(const char *options)
{
    static const struct {
        const char *name;
        unsigned flag;
    } words[] = {
        {"noplaintext", SASL_SEC_NOPLAINTEXT},
        {"noactive", SASL_SEC_NOACTIVE},
        {"nodictionary", SASL_SEC_NODICTIONARY},
        {"noanonymous", SASL_SEC_NOANONYMOUS},
        {"forward_secrecy", SASL_SEC_FORWARD_SECRECY},
        {"mutual_auth", SASL_SEC_MUTUAL_AUTH},
    };
    ARGV *list = argv_split(options, ", \t\r\n");
    unsigned flags = 0;

    for (size_t i = 0; i < list->argc; i++) {
        size_t w;

        for (w = 0; w < SLUICE_ARRAY_LEN(words); w++)
            if (strcasecmp(list->argv[i], words[w].name) == 0)
                break;
        if (w < SLUICE_ARRAY_LEN(words))
            flags |= words[w].flag;
        else
            msg_warn("smtpd_sasl_security_options: unknown option \"%s\""
                     " ignored",
                     list->argv[i]);
    }
    argv_free(list);
    return flags;
}

/* smtpd_sasl_new - a session */
SMTPD_SASL *smtpd_sasl_new(const SMTPD_CONF *conf, bool tls, VSTR *why)
{
    sasl_security_properties_t props;
    sasl_conn_t *conn = NULL;
    const char *realm =
        *conf->sasl_local_domain ? conf->sasl_local_domain : NULL;
    SMTPD_SASL *sasl;
    int status;

    status = sasl_server_new(conf->sasl_service, conf->myhostname, realm, NULL,
                             NULL, NULL, 0, &conn);
    if (status != SASL_OK) {
        vstr_sprintf(why, "sasl_server_new: %s",
                     sasl_errstring(status, NULL, NULL));
        if (conn != NULL)
            sasl_dispose(&conn);
        return NULL;
    }
    memset(&props, 0, sizeof(props));
    props.min_ssf = 0;
    props.max_ssf = 0; /* no security layer: TLS does that */
    props.maxbufsize = 0;
    props.security_flags = smtpd_sasl_flags(
        tls ? conf->sasl_tls_security_options : conf->sasl_security_options);
    if ((status = sasl_setprop(conn, SASL_SEC_PROPS, &props)) != SASL_OK) {
        vstr_sprintf(why, "sasl_setprop: %s",
                     sasl_errstring(status, NULL, NULL));
        sasl_dispose(&conn);
        return NULL;
    }
    sasl = mymalloc(sizeof(*sasl));
    sasl->conn = conn;
    return sasl;
}

/* smtpd_sasl_free - end a session; returns NULL */
SMTPD_SASL *smtpd_sasl_free(SMTPD_SASL *sasl)
{
    if (sasl == NULL)
        return NULL;
    sasl_dispose(&sasl->conn);
    myfree(sasl);
    return NULL;
}

/* smtpd_sasl_mechs - the mechanisms to offer */
int smtpd_sasl_mechs(SMTPD_SASL *sasl, VSTR *out)
{
    const char *list = NULL;
    unsigned len = 0;
    int count = 0;

    vstr_reset(out);
    if (sasl_listmech(sasl->conn, NULL, "", " ", "", &list, &len, &count) !=
            SASL_OK ||
        list == NULL)
        return -1;
    vstr_ncpy(out, list, len);
    return 0;
}

/* smtpd_sasl_result - a library status as ours; out gets the challenge */
static SMTPD_SASL_STATUS smtpd_sasl_result(SMTPD_SASL *sasl, int status,
                                           const char *data, unsigned len,
                                           VSTR *out, VSTR *why)
{
    unsigned enc_len = 0;
    unsigned cap;

    vstr_reset(out);
    switch (status) {
    case SASL_OK:
        return SMTPD_SASL_DONE;
    case SASL_CONTINUE:
        cap = (len + 2) / 3 * 4 + 1;
        vstr_reserve(out, cap);
        if (sasl_encode64(data, len, vstr_str(out), cap, &enc_len) != SASL_OK) {
            vstr_sprintf(why, "cannot encode the challenge");
            return SMTPD_SASL_TEMP;
        }
        vstr_truncate(out, 0);
        out->len = enc_len; /* written in place by sasl_encode64 */
        vstr_str(out)[enc_len] = 0;
        return SMTPD_SASL_CONTINUE;
    case SASL_NOMECH:
    case SASL_TOOWEAK:
    case SASL_ENCRYPT:
        vstr_sprintf(why, "%s", sasl_errstring(status, NULL, NULL));
        return SMTPD_SASL_BADMECH;
    case SASL_FAIL:
    case SASL_NOMEM:
    case SASL_TRYAGAIN:
    case SASL_UNAVAIL:
        vstr_sprintf(why, "%s", sasl_errdetail(sasl->conn));
        return SMTPD_SASL_TEMP;
    case SASL_NOUSER:
        status = SASL_BADAUTH; /* a missing user looks like a bad password */
        /* FALLTHROUGH */
    default:
        vstr_sprintf(why, "%s", sasl_errstring(status, NULL, NULL));
        return SMTPD_SASL_FAIL;
    }
}

/* smtpd_sasl_decode - one base64 line; -1 when it is not */
static int smtpd_sasl_decode(const char *line, VSTR *buf, unsigned *len)
{
    size_t in_len = strlen(line);

    if (in_len / 4 * 3 + 3 > SMTPD_SASL_LINE_MAX)
        return -1;
    vstr_reserve(buf, in_len / 4 * 3 + 4);
    if (sasl_decode64(line, (unsigned) in_len, vstr_str(buf),
                      (unsigned) (in_len / 4 * 3 + 4), len) != SASL_OK)
        return -1;
    return 0;
}

/* smtpd_sasl_start - AUTH mech [initial] */
SMTPD_SASL_STATUS smtpd_sasl_start(SMTPD_SASL *sasl, const char *mech,
                                   const char *initial, VSTR *out, VSTR *why)
{
    VSTR *buf = vstr_alloc(64);
    const char *data = NULL;
    unsigned data_len = 0;
    const char *server_out = NULL;
    unsigned server_len = 0;
    SMTPD_SASL_STATUS result;
    int status;

    if (initial != NULL) {
        if (strcmp(initial, "=") == 0) {
            data = ""; /* RFC 4954: an empty initial response */
        } else if (smtpd_sasl_decode(initial, buf, &data_len) < 0) {
            vstr_free(buf);
            return SMTPD_SASL_SYNTAX;
        } else {
            data = vstr_str(buf);
        }
    }
    status = sasl_server_start(sasl->conn, mech, data, data_len, &server_out,
                               &server_len);
    result = smtpd_sasl_result(sasl, status, server_out, server_len, out, why);
    vstr_free(buf);
    return result;
}

/* smtpd_sasl_step - the client's next base64 line */
SMTPD_SASL_STATUS smtpd_sasl_step(SMTPD_SASL *sasl, const char *line, VSTR *out,
                                  VSTR *why)
{
    VSTR *buf = vstr_alloc(64);
    unsigned data_len = 0;
    const char *server_out = NULL;
    unsigned server_len = 0;
    SMTPD_SASL_STATUS result;
    int status;

    if (smtpd_sasl_decode(line, buf, &data_len) < 0) {
        vstr_free(buf);
        return SMTPD_SASL_SYNTAX;
    }
    status = sasl_server_step(sasl->conn, vstr_str(buf), data_len, &server_out,
                              &server_len);
    result = smtpd_sasl_result(sasl, status, server_out, server_len, out, why);
    vstr_free(buf);
    return result;
}

/* smtpd_sasl_username - the authenticated user */
const char *smtpd_sasl_username(SMTPD_SASL *sasl)
{
    const void *user = NULL;

    if (sasl_getprop(sasl->conn, SASL_USERNAME, &user) != SASL_OK ||
        user == NULL)
        return "";
    return user;
}
