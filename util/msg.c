/*
 * msg - logging at four levels, in Postfix's line format
 *
 * State here is process-wide by nature (there is one log per process); it
 * is set once at start by msg_init() and msg_log_file().
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <syslog.h>
#include <time.h>

#include "msg.h"
#include "proc_pid.h"

#define MSG_LINE_MAX 4096

static struct {
    char tag[128]; /* "sluice/smtpd" */
    const char *progname;
    int log_fd; /* -1: syslog */
    int stderr_from; /* lines of this level and worse go to stderr too */
    bool syslog_open;
    int verbose;
    MSG_EXIT_HOOK exit_hook;
    char host[256];
    int copy_fd;
} msg_state = {"sluice", "sluice", -1, MSG_INFO, false, 0, NULL, "", -1};

/* msg_init - name the program for every line that follows */
void msg_init(const char *syslog_name, const char *progname)
{
    const char *slash = strrchr(progname, '/');

    if (slash)
        progname = slash + 1;
    msg_state.progname = progname;
    if ((size_t) snprintf(msg_state.tag, sizeof(msg_state.tag), "%s/%s",
                          syslog_name, progname) >= sizeof(msg_state.tag))
        msg_state.tag[sizeof(msg_state.tag) - 1] = 0;
    if (gethostname(msg_state.host, sizeof(msg_state.host)) < 0)
        snprintf(msg_state.host, sizeof(msg_state.host), "localhost");
    msg_state.host[sizeof(msg_state.host) - 1] = 0;
    *strchrnul(msg_state.host, '.') = 0;
}

/* msg_progname - the name given to msg_init() */
const char *msg_progname(void)
{
    return msg_state.progname;
}

/* msg_log_file - log to a file, or to syslog when path is empty */
int msg_log_file(const char *path)
{
    int fd;

    if (path == NULL || *path == 0) {
        if (msg_state.log_fd >= 0)
            close(msg_state.log_fd);
        msg_state.log_fd = -1;
        if (!msg_state.syslog_open) {
            openlog(msg_state.tag, LOG_PID | LOG_NDELAY, LOG_MAIL);
            msg_state.syslog_open = true;
        }
        return 0;
    }
    /* It names clients, senders and recipients: not for every user. */
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (msg_state.log_fd >= 0)
        close(msg_state.log_fd);
    msg_state.log_fd = fd;
    return 0;
}

/* msg_log_stderr - also (or no longer) copy lines to stderr */
void msg_log_stderr(bool on)
{
    msg_state.stderr_from = on ? MSG_INFO : MSG_PANIC + 1;
}

/* msg_log_stderr_from - copy lines of level and worse to stderr */
void msg_log_stderr_from(int level)
{
    msg_state.stderr_from = level;
}

void msg_verbose_set(int level)
{
    msg_state.verbose = level;
}

int msg_verbose_get(void)
{
    return msg_state.verbose;
}

/* msg_copy_fd - copy warnings and worse, without stamp, to fd */
void msg_copy_fd(int fd)
{
    msg_state.copy_fd = fd;
}

/* msg_close_range - close first..last; close_range(2), else one by one */
static void msg_close_range(int first, int last)
{
    if (first > last)
        return;
    if (close_range((unsigned) first, (unsigned) last, 0) == 0)
        return;
    for (int fd = first; fd <= last; fd++)
        (void) close(fd);
}

/* msg_close_fds - close all but 0-2, keep and the log's descriptors */
void msg_close_fds(int keep)
{
    int fds[3] = {keep, msg_state.log_fd, msg_state.copy_fd};
    long open_max = sysconf(_SC_OPEN_MAX);
    int max = open_max > 3 && open_max < INT32_MAX ? (int) open_max - 1 : 1023;
    int from = 3;

    /* syslog's socket is libc's: closed by its owner, opened again. */
    if (msg_state.syslog_open)
        closelog();
    for (int i = 0; i < 3; i++) /* ascending */
        for (int j = i + 1; j < 3; j++)
            if (fds[j] < fds[i]) {
                int t = fds[i];

                fds[i] = fds[j];
                fds[j] = t;
            }
    for (int i = 0; i < 3; i++) {
        if (fds[i] < from)
            continue;
        msg_close_range(from, fds[i] - 1);
        from = fds[i] + 1;
    }
    if (close_range((unsigned) from, ~0U, 0) < 0)
        msg_close_range(from, max);
    if (msg_state.syslog_open)
        openlog(msg_state.tag, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* msg_exit_hook - tests replace exit(1) of msg_fatal() */
void msg_exit_hook(MSG_EXIT_HOOK hook)
{
    msg_state.exit_hook = hook;
}

static const char *const msg_level_prefix[] = {
    "",
    "warning: ",
    "fatal: ",
    "panic: ",
};

/* msg_format_line - one complete line with its newline; returns its length */
size_t msg_format_line(char *buf, size_t buflen, time_t when, const char *host,
                       const char *tag, long pid, int level, const char *text)
{
    struct tm tm;
    char stamp[32];
    int len;

    if (level < MSG_INFO || level > MSG_PANIC)
        level = MSG_PANIC;
    localtime_r(&when, &tm);
    if (strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm) == 0)
        stamp[0] = 0;
    len = snprintf(buf, buflen, "%s %s %s[%ld]: %s%s\n", stamp, host, tag, pid,
                   msg_level_prefix[level], text);
    if (len < 0)
        len = 0;
    if ((size_t) len >= buflen) {
        /* Truncated: still end the line. */
        len = (int) buflen - 1;
        buf[len - 1] = '\n';
    }
    return (size_t) len;
}

/* msg_expand_m - replace %m with strerror(errno) */
static void msg_expand_m(char *out, size_t outlen, const char *fmt, int err)
{
    const char *errtext = strerror(err);
    size_t used = 0;

    for (const char *cp = fmt; *cp && used + 1 < outlen; cp++) {
        if (cp[0] == '%' && cp[1] == '%') {
            if (used + 2 >= outlen)
                break;
            out[used++] = *cp++;
            out[used++] = *cp;
        } else if (cp[0] == '%' && cp[1] == 'm') {
            for (const char *ep = errtext; *ep && used + 1 < outlen; ep++) {
                if (*ep == '%') {
                    if (used + 2 >= outlen)
                        break;
                    out[used++] = '%';
                }
                out[used++] = *ep;
            }
            cp++;
        } else {
            out[used++] = *cp;
        }
    }
    out[used] = 0;
}

/* msg_vlog - format and emit one line at the given level */
void msg_vlog(int level, const char *fmt, va_list ap)
{
    int saved_errno = errno;
    char expanded_fmt[MSG_LINE_MAX];
    char text[MSG_LINE_MAX];
    char line[MSG_LINE_MAX + 400];
    size_t len;
    static const int syslog_level[] = {
        LOG_INFO,
        LOG_WARNING,
        LOG_CRIT,
        LOG_CRIT,
    };

    /* Without a %m, and short enough not to be cut, the format would be
       copied as it is: strerror (a message catalog lookup) is then not
       worth calling, five or more times a message. */
    if (strstr(fmt, "%m") != NULL || strlen(fmt) >= sizeof(expanded_fmt) - 1) {
        msg_expand_m(expanded_fmt, sizeof(expanded_fmt), fmt, saved_errno);
        fmt = expanded_fmt;
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    vsnprintf(text, sizeof(text), fmt, ap);
#pragma GCC diagnostic pop
    /* A line never carries a newline of its own into the log. */
    for (char *cp = text; *cp; cp++)
        if (*cp == '\n' || *cp == '\r')
            *cp = ' ';
    len = msg_format_line(line, sizeof(line), time(NULL), msg_state.host,
                          msg_state.tag, (long) proc_pid(), level, text);
    if (msg_state.log_fd >= 0) {
        if (write(msg_state.log_fd, line, len) < 0) {
            /* Nowhere better to say so. */
        }
    } else if (msg_state.syslog_open) {
        syslog(syslog_level[level], "%s%s", msg_level_prefix[level], text);
    }
    if (level >= msg_state.stderr_from) {
        /* stderr gets "sluice/prog: text", as Postfix's commands print. */
        char short_line[MSG_LINE_MAX + 200];
        int slen = snprintf(short_line, sizeof(short_line), "%s: %s%s\n",
                            msg_state.tag, msg_level_prefix[level], text);

        if (slen > 0 && write(STDERR_FILENO, short_line,
                              (size_t) slen < sizeof(short_line)
                                  ? (size_t) slen
                                  : sizeof(short_line) - 1) < 0) {
            /* Nothing to do. */
        }
    }
    if (msg_state.copy_fd >= 0 && level >= MSG_WARN) {
        char copy_line[MSG_LINE_MAX + 20];
        int clen = snprintf(copy_line, sizeof(copy_line), "%s%s\n",
                            msg_level_prefix[level], text);

        if (clen > 0 && write(msg_state.copy_fd, copy_line,
                              (size_t) clen < sizeof(copy_line)
                                  ? (size_t) clen
                                  : sizeof(copy_line) - 1) < 0) {
            /* Nothing to do. */
        }
    }
    errno = saved_errno;
}

#define MSG_WRAPPER(name, level)                                               \
    void name(const char *fmt, ...)                                            \
    {                                                                          \
        va_list ap;                                                            \
        va_start(ap, fmt);                                                     \
        msg_vlog(level, fmt, ap);                                              \
        va_end(ap);                                                            \
    }

MSG_WRAPPER(msg_info, MSG_INFO)
MSG_WRAPPER(msg_warn, MSG_WARN)

/* msg_fatal - log and end the process with status 1 */
void msg_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    msg_vlog(MSG_FATAL, fmt, ap);
    va_end(ap);
    if (msg_state.exit_hook)
        msg_state.exit_hook(1);
    _exit(1);
}

/* msg_panic - log and abort: this is our bug */
void msg_panic(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    msg_vlog(MSG_PANIC, fmt, ap);
    va_end(ap);
    if (msg_state.exit_hook)
        msg_state.exit_hook(2);
    abort();
}
