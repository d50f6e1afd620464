/*
 * master - the supervisor's shared internals
 *
 * master.c owns the process (arguments, pid file, daemonizing, signals);
 * master_service.c owns the services: their listeners, their processes,
 * restarts with back-off, and reloads.
 */
#ifndef MASTER_H
#define MASTER_H

#include "sys_defs.h"

#include <time.h>

#include "argv.h"
#include "mail_conf.h"
#include "master_cf.h"

struct event_base;
struct event;

/* A process that lived this long did not die "too quickly". */
#define MASTER_STABLE_SECONDS 10
#define MASTER_STOP_GRACE 10 /* seconds before SIGKILL at stop */

typedef struct MASTER_SERV MASTER_SERV;

/* One child process. */
typedef struct MASTER_PROC {
    pid_t pid;
    MASTER_SERV *serv;
    int status_fd; /* our end of the socketpair */
    struct event *status_ev;
    bool busy; /* said 'B' last */
    bool ready; /* said anything: it started serving */
    bool retired; /* sent SIGHUP: not counted */
    struct timespec started; /* CLOCK_MONOTONIC */
    struct MASTER_PROC *next;
} MASTER_PROC;

/* One master.cf service. */
struct MASTER_SERV {
    struct MASTER_CTX *ctx;
    char *name;
    MASTER_SERV_TYPE type;
    bool private_service;
    int wakeup;
    int maxproc; /* 0: no limit */
    ARGV *argv; /* as in master.cf */
    char *path; /* the program to exec */
    char *sock_path; /* unix: the socket file */
    int *listen_fds; /* inet: one per address */
    int listen_count; /* 0: closed */
    char *own_addr; /* the daemon's own listener (api_listen), or NULL */
    int own_fd; /* bound to own_addr; -1: none */
    MASTER_PROC *procs;
    int live; /* processes not retired */
    int busy; /* live processes at capacity */
    int backoff; /* seconds of the next throttle */
    bool throttled; /* waiting out a back-off */
    long long deaths; /* processes that died unasked (each restarted) */
    struct event *restart_ev;
    struct event *wakeup_ev;
    bool seen; /* reload: still in master.cf */
    MASTER_SERV *next;
};

typedef struct MASTER_CTX {
    char *config_dir;
    MAIL_CONF *conf;
    char *queue_dir;
    char *daemon_dir;
    long long backoff_initial;
    long long backoff_max;
    int default_maxproc;
    bool foreground;
    bool stopping;
    struct event_base *base;
    struct event *kill_ev; /* SIGKILL stragglers at stop */
    MASTER_SERV *servs;
} MASTER_CTX;

/* The file master rewrites (queue_directory/pid/master.status) whenever a
   service's count of processes that died unasked changes: the metrics
   daemon reads it. Lines: the magic, then "service NAME TYPE DEATHS". */
#define MASTER_STATUS_FILE "master.status"
#define MASTER_STATUS_MAGIC "sluice-master-status 1"

/* master_service.c */
extern int master_services_open(MASTER_CTX *ctx, const MASTER_CF *cf,
                                VSTR *why);
extern void master_services_start(MASTER_CTX *ctx);
extern void master_services_reload(MASTER_CTX *ctx, const MASTER_CF *cf);
extern void master_services_stop(MASTER_CTX *ctx);
extern void master_services_reap(MASTER_CTX *ctx);
extern void master_services_kill(MASTER_CTX *ctx);
extern bool master_services_idle(const MASTER_CTX *ctx);
extern void master_services_free(MASTER_CTX *ctx);

#endif
