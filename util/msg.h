/*
 * msg - logging at four levels, in Postfix's line format
 *
 * Every line reads "Mmm dd hh:mm:ss host sluice/PROGRAM[pid]: text", with
 * "warning: ", "fatal: " or "panic: " before the text for those levels. Lines
 * go to a log file (opened in append mode, one write(2) per line, so lines of
 * concurrent processes never interleave), to syslog, and optionally to stderr.
 *
 * msg_fatal() exits with status 1: the process cannot go on.
 * msg_panic() aborts (core): a bug of ours.
 * %m in a format is strerror(errno), as syslog(3) has it.
 */
#ifndef MSG_H
#define MSG_H

#include "sys_defs.h"

typedef void (*MSG_EXIT_HOOK)(int status);

/* Setup: program name ("smtpd"), syslog tag prefix ("sluice"). */
extern void msg_init(const char *syslog_name, const char *progname);
extern int msg_log_file(const char *path); /* "" or NULL: syslog */
extern void msg_log_stderr(bool on);
/* msg_log_stderr_from - copy only lines of level (MSG_INFO ...) and worse
   to stderr */
extern void msg_log_stderr_from(int level);
extern void msg_verbose_set(int level);
extern int msg_verbose_get(void);
extern void msg_exit_hook(MSG_EXIT_HOOK hook); /* tests: replaces exit(1) */
extern const char *msg_progname(void);
/* msg_copy_fd - also write "warning: text\n" / "fatal: text\n" (levels
   warn and above, without time stamp) to fd; -1 stops. master uses it to
   tell `sluice start` why it could not start. */
extern void msg_copy_fd(int fd);
/* msg_close_fds - in a child forked without exec: close every descriptor
   from 3 up but keep (-1: none) and the log's own (a syslog connection is
   opened anew), so that the child holds no socket of its parent's */
extern void msg_close_fds(int keep);

extern void msg_info(const char *fmt, ...) SLUICE_PRINTF(1, 2);
extern void msg_warn(const char *fmt, ...) SLUICE_PRINTF(1, 2);
extern void msg_fatal(const char *fmt, ...) SLUICE_PRINTF(1, 2) SLUICE_NORETURN;
extern void msg_panic(const char *fmt, ...) SLUICE_PRINTF(1, 2) SLUICE_NORETURN;
extern void msg_vlog(int level, const char *fmt, va_list ap)
    SLUICE_PRINTF(2, 0);

#define MSG_INFO 0
#define MSG_WARN 1
#define MSG_FATAL 2
#define MSG_PANIC 3

/* msg_format_line - build one log line (exposed for tests) */
extern size_t msg_format_line(char *buf, size_t buflen, time_t when,
                              const char *host, const char *tag, long pid,
                              int level, const char *text);

#endif
