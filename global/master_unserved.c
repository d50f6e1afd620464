/*
 * master_unserved - the daemons main.cf asks for that master.cf does not
 * run (master_unserved.h)
 */
#include "sys_defs.h"

#include "argv.h"
#include "events_export.h"
#include "mail_conf.h"
#include "master_cf.h"
#include "master_unserved.h"
#include "vstr.h"

/* master_unserved - what main.cf asks of a daemon master.cf lacks */
void master_unserved(const MASTER_CF *cf, const MAIL_CONF *conf, ARGV *warnings)
{
    VSTR *line = vstr_alloc(100);
    const char *listen;
    EVENTS_EXPORT_LIST *exports;

    listen = mail_conf_str(conf, "metrics_listen");
    if (*listen && !master_cf_runs(cf, "metrics")) {
        vstr_sprintf(line,
                     "metrics_listen = %s, but master.cf runs no metrics "
                     "service: nothing serves GET /metrics, and the events "
                     "daemon removes no journal segment (they wait for the "
                     "metrics daemon's position, which never moves); add "
                     "\"metrics unix n - n - 1 metrics\" to master.cf or "
                     "empty metrics_listen",
                     listen);
        argv_add(warnings, vstr_str(line));
    }
    listen = mail_conf_str(conf, "api_listen");
    if (*listen && !master_cf_runs(cf, "api")) {
        vstr_sprintf(line,
                     "api_listen = %s, but master.cf runs no api service: "
                     "nothing answers there; add \"api unix n - n - 1 api\" "
                     "to master.cf or empty api_listen",
                     listen);
        argv_add(warnings, vstr_str(line));
    }
    if (!master_cf_runs(cf, "events")) {
        exports = events_export_list(conf);
        for (size_t i = 0; i < exports->count; i++) {
            if (events_export_passive(&exports->exports[i]))
                continue;
            vstr_sprintf(line,
                         "master.cf runs no events service: no event reaches "
                         "the exporters main.cf configures (%s %s, and any "
                         "other); add \"events unix - - n - 1 events\" to "
                         "master.cf",
                         exports->exports[i].kind, exports->exports[i].display);
            argv_add(warnings, vstr_str(line));
            break;
        }
        events_export_list_free(exports);
    }
    vstr_free(line);
}
