/*
 * mail_server - the skeleton every daemon that master starts runs on
 *
 * The contract with master (master/master.c is the other side):
 *   environment  SLUICE_CONFIG=dir       the instance's config directory
 *                SLUICE_SERVICE=name     the master.cf service name
 *                SLUICE_SERVICE_TYPE=inet|unix
 *                SLUICE_LISTEN_FDS=N     listeners are fds 4 .. 4+N-1
 *   fd 3         a socketpair to master. The child writes one byte:
 *                'A' (available: can take more connections) once it is ready
 *                and whenever it drops below capacity; 'B' (busy: at
 *                capacity). Master starts another process (up to maxproc)
 *                while every process of a service is busy. The first byte
 *                also says the process is set up and serving: master
 *                replaces such a process at once when it is killed, and
 *                throttles the service only for one that dies before it
 *                (or that ends by itself soon after its start). When
 *                master dies the child reads EOF here and exits.
 *   SIGHUP       retire: stop accepting, finish the work in hand, exit 0.
 *                Master has already started a successor that reads the new
 *                configuration.
 *   SIGTERM      exit soon (work in hand is abandoned the safe way: nothing
 *                acknowledged depends on a process finishing).
 *
 * The skeleton reads main.cf, opens the log (maillog_file, or syslog when it
 * is empty), sets up a libevent base, accepts connections on the listeners
 * and hands each to the program, or for a trigger service reads the one-byte
 * triggers and hands those over.
 */
#ifndef MAIL_SERVER_H
#define MAIL_SERVER_H

#include "sys_defs.h"
#include "mail_conf.h"

struct event_base;

typedef struct MAIL_SERVER MAIL_SERVER;

typedef struct MAIL_SERVER_OPS {
    /* After configuration and the event base are ready, before the loop. */
    void (*pre_loop)(MAIL_SERVER *server, void *ctx);
    /* A connection was accepted; fd is non-blocking and close-on-exec, and
       now belongs to the program. NULL for trigger-only services. */
    void (*on_accept)(MAIL_SERVER *server, int fd, void *ctx);
    /* At the descriptor limit a waiting client is accepted only to be
       turned away: the program may write it a short reply on fd (which
       mail_server then closes). NULL: closed without a word. */
    void (*on_shed)(MAIL_SERVER *server, int fd, void *ctx);
    /* A trigger byte arrived (when set, connections are read as triggers). */
    void (*on_trigger)(MAIL_SERVER *server, int byte, void *ctx);
    /* Periodic tick every tick_seconds (0: none). */
    void (*on_tick)(MAIL_SERVER *server, void *ctx);
    int tick_seconds;
    /* Retire asked (SIGHUP) or master gone: the program finishes its work
       and calls mail_server_exit(). NULL: exit at once. */
    void (*on_retire)(MAIL_SERVER *server, void *ctx);
    /* The loop has ended; the event base still exists: free what the
       program built on it (events, bufferevents, DNS) so leak checkers see
       a clean exit. */
    void (*post_loop)(MAIL_SERVER *server, void *ctx);
} MAIL_SERVER_OPS;

/* mail_server_hold_stop - block SIGHUP and SIGTERM until the daemon's
   signal events exist (mail_server_main() does this first itself) */
extern void mail_server_hold_stop(void);

/* mail_server_main - run the daemon; returns the process exit status */
extern int mail_server_main(int argc, char **argv, const char *progname,
                            const MAIL_SERVER_OPS *ops, void *ctx);

extern struct event_base *mail_server_base(MAIL_SERVER *server);
extern const MAIL_CONF *mail_server_conf(MAIL_SERVER *server);
extern const char *mail_server_config_dir(MAIL_SERVER *server);
extern const char *mail_server_service(MAIL_SERVER *server);
/* mail_server_busy - tell master whether this process is at capacity */
extern void mail_server_busy(MAIL_SERVER *server, bool busy);
/* mail_server_exit - leave the event loop; main returns status */
extern void mail_server_exit(MAIL_SERVER *server, int status);
extern bool mail_server_retiring(MAIL_SERVER *server);

#endif
