/*
 * master_unserved - a warning for every daemon main.cf asks for that no
 * master.cf service runs
 */
#ifndef MASTER_UNSERVED_H
#define MASTER_UNSERVED_H

#include "sys_defs.h"

#include "argv.h"
#include "mail_conf.h"
#include "master_cf.h"

/* master_unserved - a warning into warnings (one line each) for every
   daemon main.cf asks for that no master.cf service runs: metrics_listen
   without metrics (nothing serves /metrics, and the journal's segments
   wait for the metrics daemon's position: none is removed), api_listen
   without api, an exporter (the index, the suppression feed, webhooks
   ...) without events (nothing exported). Said by
   `sluice check` and by master at start and reload. */
extern void master_unserved(const MASTER_CF *cf, const MAIL_CONF *conf,
                            ARGV *warnings);

#endif
