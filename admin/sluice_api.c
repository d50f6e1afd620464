/*
 * sluice_api - `sluice api key create|list|revoke`: the HTTP API's keys
 *
 *   sluice api key create TENANT [--scope send,read,templates,admin]
 *       prints the new key on its own line (the only time it is shown:
 *       api_keys_file keeps its SHA-256); the default scope is send
 *   sluice api key list [--json]       ID TENANT SCOPES per key
 *   sluice api key revoke ID|TENANT    removes the key(s); exit 1 when none
 *
 * The file belongs to mail_owner (mode 0600) so the api daemon can read it
 * and nobody else can.
 */
#include "sys_defs.h"

#include <jansson.h>
#include <pwd.h>

#include "api_keys.h"
#include "argv.h"
#include "mail_conf.h"
#include "sluice.h"
#include "vstr.h"

/* sluice_api_owner - give the keys file to mail_owner when root made it */
static int sluice_api_owner(const MAIL_CONF *conf, const char *path)
{
    const struct passwd *pw;
    VSTR *why;

    if (geteuid() != 0)
        return 0;
    why = vstr_alloc(64);
    if ((pw = mail_conf_owner(conf, why)) == NULL) {
        sluice_fail("api: %s", vstr_str(why));
        vstr_free(why);
        return -1;
    }
    vstr_free(why);
    if (chown(path, pw->pw_uid, pw->pw_gid) < 0) {
        sluice_fail("api: chown %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* sluice_api - `sluice api key ...` */
int sluice_api(const char *config_dir, int argc, char **argv)
{
    VSTR *why = vstr_alloc(100);
    VSTR *out = vstr_alloc(256);
    MAIL_CONF *conf;
    const char *path;
    int status = 1;

    argc--, argv++; /* past "api" */
    if (argc < 2 || strcmp(argv[0], "key") != 0) {
        vstr_free(why);
        vstr_free(out);
        return sluice_fail("usage: sluice api key create TENANT [--scope "
                           "LIST] | list [--json] | revoke ID|TENANT");
    }
    if ((conf = mail_conf_read(config_dir, why)) == NULL) {
        sluice_fail("%s", vstr_str(why));
        goto out;
    }
    path = mail_conf_str(conf, "api_keys_file");
    if (strcmp(argv[1], "create") == 0 && (argc == 3 || argc == 5)) {
        int scopes = API_SCOPE_SEND;

        if (argc == 5) {
            if (strcmp(argv[3], "--scope") != 0 ||
                (scopes = api_keys_scopes(argv[4])) < 0) {
                sluice_fail("api: bad scope list \"%s\" (send, read, "
                            "templates, admin)",
                            argv[4]);
                goto out;
            }
        }
        if (api_keys_create(path, argv[2], scopes, out, why) < 0)
            sluice_fail("api: %s", vstr_str(why));
        else if (sluice_api_owner(conf, path) == 0) {
            printf("%s\n", vstr_str(out));
            status = 0;
        }
    } else if (strcmp(argv[1], "list") == 0 && argc <= 3) {
        bool json = argc == 3 && strcmp(argv[2], "--json") == 0;

        if (argc == 3 && !json) {
            sluice_fail("usage: sluice api key list [--json]");
        } else if (api_keys_list(path, out, why) < 0) {
            sluice_fail("api: %s", vstr_str(why));
        } else if (json) {
            ARGV *lines = argv_split(vstr_str(out), "\n");
            json_t *arr = json_array();
            char *text;

            for (size_t i = 0; i < lines->argc; i++) {
                ARGV *w = argv_split(lines->argv[i], " ");

                if (w->argc == 3)
                    json_array_append_new(arr, json_pack("{s:s, s:s, s:s}",
                                                         "id", w->argv[0],
                                                         "tenant", w->argv[1],
                                                         "scopes", w->argv[2]));
                argv_free(w);
            }
            text = json_dumps(arr, JSON_COMPACT);
            printf("%s\n", text ? text : "[]");
            free(text);
            json_decref(arr);
            argv_free(lines);
            status = 0;
        } else {
            fputs(vstr_str(out), stdout);
            status = 0;
        }
    } else if (strcmp(argv[1], "revoke") == 0 && argc == 3) {
        int removed = api_keys_revoke(path, argv[2], why);

        if (removed < 0)
            sluice_fail("api: %s", vstr_str(why));
        else if (removed == 0)
            sluice_fail("api: no key with ID or tenant \"%s\"", argv[2]);
        else if (sluice_api_owner(conf, path) == 0) {
            printf("sluice: revoked %d key%s\n", removed,
                   removed > 1 ? "s" : "");
            status = 0;
        }
    } else {
        sluice_fail("usage: sluice api key create TENANT [--scope LIST] | "
                    "list [--json] | revoke ID|TENANT");
    }
out:
    if (conf != NULL)
        mail_conf_free(conf);
    vstr_free(why);
    vstr_free(out);
    return status;
}
