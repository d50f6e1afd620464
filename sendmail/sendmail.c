/*
 * sendmail - the sendmail(1) command: local submission into maildrop/
 *
 *   sendmail [-C DIR] [-tiGv] [-oi] [-f SENDER] [-F NAME] [-N DSN] [-R RET]
 *            [-V ENVID] [-bm|-bp|-bi|-I|-bs|-bv|-bd|-q] [--] RCPT...
 *   mailq      = sendmail -bp: `sluice queue` for whoever may read the
 *                queue, the showq service's listing for anyone else
 *   newaliases = sendmail -bi
 *
 * Options are read getopt style, as Postfix's sendmail reads them: flags
 * bundle (-ti), a value is attached or the next word (-fme, -f me), --
 * ends them. -N is queued as every recipient's NOTIFY= list; -R (as
 * HDRS or FULL) and -V go into the maildrop file as the "ret" and "envid"
 * attributes, which pickup hands to cleanup as smtpd hands on MAIL FROM's
 * RET= and ENVID=;
 * -G -Am -Ac -L -X -o* -O -B -h -m -n -U -v are accepted and ignored.
 * -bv checks each command line recipient as a submission would and says
 * "deliverable" (syntax only: no table is consulted); -bd runs `sluice
 * start`.
 *
 * The message comes on standard input (LF or CRLF line ends, stored as LF;
 * a line with a lone "." ends it unless -i or -oi). It is written as a
 * queue file (global/qfile.h: T F [A] R... M C... E) under the temporary
 * name maildrop/.tmp.QID, fsynced, renamed to maildrop/QID and the
 * directory fsynced by qfile_commit (or, for a user of the setgid sendmail,
 * who may not read maildrop/, the file system synced: QFILE_CREATE_SYNCFS);
 * only then does sendmail wake pickup (a lost trigger is fine: pickup also
 * scans) and exit 0. pickup hands the file to cleanup, which adds the missing
 * headers and writes the real queue file.
 *
 * The envelope is checked before anything is read or written, with the
 * rules pickup applies again (global/submit_check.h): a control character
 * in -f, -F or a recipient, a value over its length limit, or a recipient
 * argument without an address is refused (EX_USAGE). Each recipient
 * argument is an address list, as a To: value is for -t.
 *
 * With -bs, sendmail speaks SMTP on standard input and output: it runs
 * $daemon_directory/smtpd -S (stand-alone: one local, trusted session,
 * talking to cleanup as usual) on one end of a socket pair and copies
 * standard input to it and its replies to standard output until smtpd
 * closes the socket. smtpd needs one socket for both directions, which
 * pipes from the caller are not; hence the copy.
 *
 * newaliases (-bi) builds every hash: and btree: table of alias_database
 * from its text file in alias syntax ("name: value"), as `sluice map -a`
 * does; other table types need no building and are skipped.
 *
 * Exit codes are those of sysexits.h: 0, EX_USAGE for bad usage, a bad
 * envelope or no recipients, EX_DATAERR for a message over
 * message_size_limit or a bad -t recipient header, EX_CONFIG
 * for a bad main.cf or alias file, EX_TEMPFAIL when the message (or an
 * alias table) could not be stored (nothing is left behind: the temporary
 * file is removed).
 */
#include "sys_defs.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sysexits.h>

#include "argv.h"
#include "mail_conf.h"
#include "mail_queue.h"
#include "maps.h"
#include "msg.h"
#include "mymalloc.h"
#include "qfile.h"
#include "qid.h"
#include "showq_proto.h"
#include "submit_check.h"
#include "trigger.h"
#include "vstr.h"

#define SENDMAIL_READ_SIZE 65536

static const char sendmail_usage[] =
    "usage: sendmail [-C DIR] [-tiGv] [-f SENDER] [-F NAME] [-N DSN]"
    " [-R RET] [-V ENVID] [-bm|-bp|-bi|-bs|-bv|-bd|-I|-q] [--] recipient...";

typedef enum SENDMAIL_MODE {
    SENDMAIL_MODE_DELIVER, /* -bm: read a message */
    SENDMAIL_MODE_MAILQ, /* -bp */
    SENDMAIL_MODE_NEWALIASES, /* -bi */
    SENDMAIL_MODE_SMTP, /* -bs */
    SENDMAIL_MODE_FLUSH, /* -q */
    SENDMAIL_MODE_VERIFY, /* -bv */
    SENDMAIL_MODE_DAEMON, /* -bd */
} SENDMAIL_MODE;

typedef struct SENDMAIL_OPTS {
    SENDMAIL_MODE mode;
    const char *config_dir;
    const char *sender; /* -f, NULL: the login name */
    const char *full_name; /* -F */
    bool extract; /* -t */
    bool ignore_dots; /* -i, -oi */
    char *notify; /* -N as a NOTIFY= list, or NULL */
    const char *ret; /* -R as "HDRS" or "FULL", or NULL */
    const char *envid; /* -V, or NULL */
    ARGV *rcpts; /* command line recipients */
} SENDMAIL_OPTS;

/* __asan_default_options - AddressSanitizer's hook (SANITIZE=1 builds):
   run setgid, sendmail is not dumpable, so LeakSanitizer can neither stop
   it at exit nor read ASAN_OPTIONS from /proc/self/environ; leak checking
   is off then, and only then */
const char *__asan_default_options(void);

/* __asan_default_options - AddressSanitizer's hook */
const char *__asan_default_options(void)
{
    return getegid() != getgid() ? "detect_leaks=0" : "";
}

/* The temporary file, removed by the signal handler when set. */
static char sendmail_tmp_path[PATH_MAX];

/* sendmail_fail - one line on stderr, then exit with status */
static void SLUICE_NORETURN SLUICE_PRINTF(2, 3)
    sendmail_fail(int status, const char *fmt, ...)
{
    va_list ap;

    fputs("sendmail: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (sendmail_tmp_path[0] != 0)
        (void) unlink(sendmail_tmp_path);
    exit(status);
}

/* sendmail_signal - interrupted while writing: leave nothing behind */
static void sendmail_signal(int sig)
{
    if (sendmail_tmp_path[0] != 0)
        (void) unlink(sendmail_tmp_path);
    _exit(EX_TEMPFAIL);
}

static void sendmail_no_control(int, const char *, const char *, bool);

/* sendmail_option_value - the value of the option letter at arg[pos]:
   the rest of the word (-fsender) or, when nothing follows, the next word
   (-f sender), which *i then skips */
static const char *sendmail_option_value(int argc, char **argv, int *i,
                                         size_t pos)
{
    const char *arg = argv[*i];

    if (arg[pos + 1] != 0)
        return arg + pos + 1;
    if (*i + 1 >= argc)
        sendmail_fail(EX_USAGE, "option -%c needs a value\n%s", arg[pos],
                      sendmail_usage);
    return argv[++*i];
}

/* sendmail_parse_notify - -N: "never" or a comma list of success, delay
   and failure (any case), as the DSN NOTIFY= list ("SUCCESS,FAILURE") */
static char *sendmail_parse_notify(const char *value)
{
    static const char *const words[] = {"success", "delay", "failure"};
    VSTR *out = vstr_alloc(32);
    const char *cp = value;
    bool never = false;

    for (;;) {
        size_t len = strcspn(cp, ", ");
        size_t w;

        if (len == 5 && strncasecmp(cp, "never", 5) == 0) {
            never = true;
            if (vstr_len(out) > 0)
                vstr_addch(out, ',');
            vstr_cat(out, "NEVER");
        } else {
            for (w = 0; w < 3; w++)
                if (len == strlen(words[w]) &&
                    strncasecmp(cp, words[w], len) == 0)
                    break;
            if (w == 3 || never) {
                vstr_free(out);
                sendmail_fail(EX_USAGE,
                              "bad -N value \"%.100s\": use never,"
                              " or a list of success, delay and failure",
                              value);
            }
            if (vstr_len(out) > 0)
                vstr_addch(out, ',');
            for (const char *wp = words[w]; *wp; wp++)
                vstr_addch(out, (char) (*wp - 'a' + 'A'));
        }
        cp += len;
        if (*cp == 0)
            break;
        cp++;
    }
    if (never && strchr(vstr_str(out), ',') != NULL) {
        vstr_free(out);
        sendmail_fail(EX_USAGE, "bad -N value \"%.100s\": never goes alone",
                      value);
    }
    return vstr_export(out);
}

/* sendmail_check_envid - -V: an ENVID as RFC 3461 allows */
static void sendmail_check_envid(const char *value)
{
    VSTR *why = vstr_alloc(60);

    if (submit_check_envid(value, why) < 0)
        sendmail_fail(EX_USAGE, "bad -V value: the envelope ID %s",
                      vstr_str(why));
    vstr_free(why);
}

/* sendmail_parse_mode - -bX */
static void sendmail_parse_mode(const char *value, SENDMAIL_OPTS *opts)
{
    if (strcmp(value, "m") == 0)
        opts->mode = SENDMAIL_MODE_DELIVER;
    else if (strcmp(value, "p") == 0)
        opts->mode = SENDMAIL_MODE_MAILQ;
    else if (strcmp(value, "i") == 0)
        opts->mode = SENDMAIL_MODE_NEWALIASES;
    else if (strcmp(value, "s") == 0)
        opts->mode = SENDMAIL_MODE_SMTP;
    else if (strcmp(value, "v") == 0)
        opts->mode = SENDMAIL_MODE_VERIFY;
    else if (strcmp(value, "d") == 0)
        opts->mode = SENDMAIL_MODE_DAEMON;
    else
        sendmail_fail(EX_USAGE, "unsupported mode -b%.20s\n%s", value,
                      sendmail_usage);
}

/* sendmail_parse_value - one option that takes a value */
static void sendmail_parse_value(int ch, const char *value, SENDMAIL_OPTS *opts)
{
    switch (ch) {
    case 'C':
        opts->config_dir = value;
        break;
    case 'f':
    case 'r':
        opts->sender = value;
        break;
    case 'F':
        opts->full_name = value;
        break;
    case 'b':
        sendmail_parse_mode(value, opts);
        break;
    case 'o':
        /* -oi and -oi* (Postfix reads the first letter only) matter;
           every other old-style option (-om, -oem, -odb...) is ignored. */
        if (value[0] == 'i')
            opts->ignore_dots = true;
        break;
    case 'A':
        /* -Am, -Ac: which submit.cf; there is only one configuration. */
        if (strcmp(value, "m") != 0 && strcmp(value, "c") != 0)
            sendmail_fail(EX_USAGE, "bad -A value \"%.20s\": -Am or -Ac\n%s",
                          value, sendmail_usage);
        break;
    case 'L':
        /* The syslog label: sendmail itself reports on standard error. */
        sendmail_no_control(EX_USAGE, "label (-L)", value, false);
        break;
    case 'X':
        fprintf(stderr, "sendmail: warning: -X option ignored\n");
        break;
    case 'N':
        myfree(opts->notify);
        opts->notify = sendmail_parse_notify(value);
        break;
    case 'R':
        if (strcasecmp(value, "hdrs") != 0 && strcasecmp(value, "full") != 0)
            sendmail_fail(EX_USAGE, "bad -R value \"%.20s\": hdrs or full",
                          value);
        opts->ret = strcasecmp(value, "hdrs") == 0 ? "HDRS" : "FULL";
        break;
    case 'V':
        sendmail_check_envid(value);
        opts->envid = value;
        break;
    default:
        /* -O option=value, -B type, -h count: accepted, unused. */
        break;
    }
}

/* sendmail_parse_args - the command line into opts, getopt style: flags
   bundle (-ti, -it), a value is attached or the next word (-fme, -f me),
   -- ends the options */
static void sendmail_parse_args(int argc, char **argv, SENDMAIL_OPTS *opts)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        size_t pos;

        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (arg[0] != '-' || arg[1] == 0)
            break;
        for (pos = 1; arg[pos] != 0; pos++) {
            int ch = (unsigned char) arg[pos];

            if (strchr("tiGvmnUI", ch) != NULL) {
                if (ch == 't')
                    opts->extract = true;
                else if (ch == 'i')
                    opts->ignore_dots = true;
                else if (ch == 'I')
                    opts->mode = SENDMAIL_MODE_NEWALIASES;
                continue;
            }
            if (ch == 'q') {
                /* -q and -qINTERVAL: both just flush once. */
                opts->mode = SENDMAIL_MODE_FLUSH;
                break;
            }
            if (strchr("CfrFboOABhLXNRV", ch) == NULL)
                sendmail_fail(EX_USAGE, "unknown option -%c%s\n%s",
                              ch > ' ' && ch < 0x7f ? ch : '?',
                              pos > 1 ? " (in a bundle)" : "", sendmail_usage);
            sendmail_parse_value(ch, sendmail_option_value(argc, argv, &i, pos),
                                 opts);
            break;
        }
    }
    for (; i < argc; i++)
        argv_add(opts->rcpts, argv[i]);
}

/* sendmail_strip_address - an address without white space, comments and
   angle brackets; NULL when nothing is left */
static char *sendmail_strip_address(const char *text, size_t len)
{
    const char *lt = NULL;
    const char *gt = NULL;
    const char *cp;
    const char *end = text + len;
    VSTR *buf;
    int depth = 0;
    bool quoted = false;

    for (cp = text; cp < end; cp++) {
        if (*cp == '"')
            quoted = !quoted;
        else if (!quoted && *cp == '<')
            lt = cp;
        else if (!quoted && *cp == '>' && lt != NULL && gt == NULL)
            gt = cp;
    }
    if (lt != NULL && gt != NULL && gt > lt) {
        text = lt + 1;
        end = gt;
    }
    buf = vstr_alloc(len + 1);
    quoted = false;
    for (cp = text; cp < end; cp++) {
        if (*cp == '"')
            quoted = !quoted;
        if (!quoted && *cp == '(')
            depth++;
        else if (!quoted && *cp == ')' && depth > 0)
            depth--;
        else if (depth == 0 && (quoted || (*cp != ' ' && *cp != '\t' &&
                                           *cp != '\r' && *cp != '\n')))
            vstr_addch(buf, *cp);
    }
    if (vstr_len(buf) == 0) {
        vstr_free(buf);
        return NULL;
    }
    return vstr_export(buf);
}

/* sendmail_split_addresses - the addresses of a To:/Cc:/Bcc: value: split
   at commas outside quotes, angle brackets and comments; a group name
   ("team: a, b;") is dropped */
static void sendmail_split_addresses(const char *value, ARGV *out)
{
    const char *start = value;
    const char *cp;
    bool quoted = false;
    bool angle = false;
    int depth = 0;

    for (cp = value;; cp++) {
        char ch = *cp;

        if (ch == '"' && depth == 0)
            quoted = !quoted;
        else if (!quoted && ch == '(')
            depth++;
        else if (!quoted && ch == ')' && depth > 0)
            depth--;
        else if (!quoted && depth == 0 && ch == '<')
            angle = true;
        else if (!quoted && depth == 0 && ch == '>')
            angle = false;
        else if (!quoted && depth == 0 && !angle && ch == ':')
            start = cp + 1; /* a group name */
        if (ch == 0 ||
            (!quoted && depth == 0 && !angle && (ch == ',' || ch == ';'))) {
            char *addr = sendmail_strip_address(start, (size_t) (cp - start));

            if (addr != NULL) {
                argv_add(out, addr);
                myfree(addr);
            }
            if (ch == 0)
                break;
            start = cp + 1;
        }
    }
}

/* sendmail_refuse - fail with EX_USAGE or EX_DATAERR: what (the quoted
   value) why; nothing has been written yet */
static void SLUICE_NORETURN sendmail_refuse(int status, const char *what,
                                            const char *value, const char *why)
{
    VSTR *quoted = vstr_alloc(100);
    char text[512];

    /* Nothing left on the heap at exit (a sanitizer build checks). */
    submit_check_quote(quoted, value, SUBMIT_CHECK_QUOTE_MAX);
    (void) snprintf(text, sizeof(text), "%s %s %s", what, vstr_str(quoted),
                    why);
    vstr_free(quoted);
    sendmail_fail(status, "%s; not sent", text);
}

/* sendmail_no_control - refuse a value with a control byte other than the
   tabs allowed (folded header values) */
static void sendmail_no_control(int status, const char *what, const char *value,
                                bool tabs_ok)
{
    for (const char *cp = value; *cp; cp++) {
        int ch = (unsigned char) *cp;
        char why[64];

        if ((ch < 0x20 && !(ch == '\t' && tabs_ok)) || ch == 0x7f) {
            (void) snprintf(why, sizeof(why),
                            "contains a control character (\\x%02x)", ch);
            sendmail_refuse(status, what, value, why);
        }
    }
}

/* sendmail_extract - -t: the recipients of one To:/Cc:/Bcc: field (the
   unfolded "Name: value" line); a control byte in it refuses the message,
   before splitting could drop it (a CR LF is white space there) */
static void sendmail_extract(const char *field, const char *value, ARGV *rcpts)
{
    sendmail_no_control(EX_DATAERR, "header", field, true);
    sendmail_split_addresses(value, rcpts);
}

/* sendmail_header_name - is name (case-insensitive) the header at line? */
static bool sendmail_header_is(const char *line, size_t len, const char *name)
{
    size_t name_len = strlen(name);

    if (len <= name_len || strncasecmp(line, name, name_len) != 0)
        return false;
    for (line += name_len, len -= name_len;
         len > 0 && (*line == ' ' || *line == '\t'); line++, len--)
        ;
    return len > 0 && *line == ':';
}

/* sendmail_header_start - does this line start a header field ("Name:")? */
static bool sendmail_header_start(const char *line, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) line[i];

        if (ch == ':')
            return i > 0;
        if (ch <= ' ' || ch > '~')
            return false;
    }
    return false;
}

typedef struct SENDMAIL_INPUT {
    VSTR *buf; /* stdin bytes not yet used */
    size_t pos;
    bool eof;
    bool done; /* the end of the message was seen */
    bool ignore_dots;
} SENDMAIL_INPUT;

/* sendmail_get_line - the next message line into line, ending in LF (CRLF
   and a missing final LF become LF); false at the end of the message */
static bool sendmail_get_line(SENDMAIL_INPUT *in, VSTR *line)
{
    char chunk[SENDMAIL_READ_SIZE];
    char *nl;

    vstr_reset(line);
    if (in->done)
        return false;
    for (;;) {
        size_t avail = vstr_len(in->buf) - in->pos;
        const char *start = vstr_str(in->buf) + in->pos;
        size_t got;

        if ((nl = memchr(start, '\n', avail)) != NULL) {
            vstr_ncat(line, start, (size_t) (nl - start) + 1);
            in->pos += (size_t) (nl - start) + 1;
            break;
        }
        if (in->eof) {
            if (avail == 0) {
                in->done = true;
                return false;
            }
            vstr_ncat(line, start, avail);
            vstr_addch(line, '\n');
            in->pos += avail;
            break;
        }
        /* Keep the partial line, read more. */
        if (in->pos > 0) {
            memmove(vstr_str(in->buf), start, avail);
            vstr_truncate(in->buf, avail);
            in->pos = 0;
        }
        got = fread(chunk, 1, sizeof(chunk), stdin);
        if (got > 0)
            vstr_ncat(in->buf, chunk, got);
        if (got < sizeof(chunk)) {
            if (ferror(stdin))
                sendmail_fail(EX_TEMPFAIL, "read standard input: %s",
                              strerror(errno));
            in->eof = true;
        }
    }
    /* CRLF -> LF */
    if (vstr_len(line) >= 2 && vstr_str(line)[vstr_len(line) - 2] == '\r') {
        vstr_truncate(line, vstr_len(line) - 2);
        vstr_addch(line, '\n');
    }
    if (!in->ignore_dots && vstr_len(line) == 2 && vstr_str(line)[0] == '.') {
        in->done = true;
        vstr_reset(line);
        return false;
    }
    return true;
}

/* sendmail_read_headers - the header block (and the first body line, when
   there is one) into headers; with -t the recipients of To:, Cc: and Bcc:
   go into rcpts and Bcc: is dropped. Returns where the body starts. */
static size_t sendmail_read_headers(SENDMAIL_INPUT *in, VSTR *headers,
                                    bool extract, ARGV *rcpts)
{
    VSTR *line = vstr_alloc(200);
    VSTR *field = vstr_alloc(200); /* the current header, unfolded */
    bool in_header = false;
    bool drop = false; /* the current header is Bcc: */
    size_t body_start;

    for (;;) {
        bool more = sendmail_get_line(in, line);
        const char *text = vstr_str(line);
        size_t len = vstr_len(line);
        bool continuation =
            more && in_header && len > 1 && (text[0] == ' ' || text[0] == '\t');

        /* A header is complete when the next line does not continue it. */
        if (!continuation && vstr_len(field) > 0) {
            const char *value = strchr(vstr_str(field), ':') + 1;

            if (extract &&
                (sendmail_header_is(vstr_str(field), vstr_len(field), "To") ||
                 sendmail_header_is(vstr_str(field), vstr_len(field), "Cc") ||
                 sendmail_header_is(vstr_str(field), vstr_len(field), "Bcc")))
                sendmail_extract(vstr_str(field), value, rcpts);
            vstr_reset(field);
        }
        if (!more) {
            body_start = vstr_len(headers);
            break;
        }
        if (continuation) {
            vstr_ncat(field, text, len - 1);
        } else if (sendmail_header_start(text, len - 1)) {
            in_header = true;
            drop = extract && sendmail_header_is(text, len, "Bcc");
            vstr_ncat(field, text, len - 1);
        } else {
            /* The empty line, or a body without headers. */
            body_start = vstr_len(headers);
            vstr_ncat(headers, text, len);
            break;
        }
        if (!drop)
            vstr_ncat(headers, text, len);
    }
    vstr_free(line);
    vstr_free(field);
    return body_start;
}

/* sendmail_default_sender - the invoking user's login name */
static char *sendmail_default_sender(void)
{
    struct passwd *pw;

    errno = 0;
    if ((pw = getpwuid(getuid())) == NULL)
        sendmail_fail(EX_TEMPFAIL, "cannot find the login name of uid %ld",
                      (long) getuid());
    return mystrdup(pw->pw_name);
}

/* sendmail_check_address - refuse an address that cleanup or pickup
   would refuse (global/submit_check.h) */
static void sendmail_check_address(int status, const char *what,
                                   const char *addr, bool sender)
{
    VSTR *why = vstr_alloc(64);
    char text[100];
    int ret = submit_check_address(addr, sender, why);

    (void) snprintf(text, sizeof(text), "%s", vstr_str(why));
    vstr_free(why);
    if (ret < 0)
        sendmail_refuse(status, what, addr, text);
}

/* sendmail_check_full_name - refuse a -F full name the same way */
static void sendmail_check_full_name(const char *name)
{
    VSTR *why = vstr_alloc(64);
    char text[100];
    int ret = submit_check_full_name(name, why);

    (void) snprintf(text, sizeof(text), "%s", vstr_str(why));
    vstr_free(why);
    if (ret < 0)
        sendmail_refuse(EX_USAGE, "full name (-F)", name, text);
}

/* sendmail_sender - the envelope sender: -f as an address ("Name <a@b>"
   -> "a@b", "<>" -> "" the null sender), else the login name; refused
   (EX_USAGE) when it holds what no sender may */
static char *sendmail_sender(const SENDMAIL_OPTS *opts)
{
    char *sender;

    if (opts->sender == NULL) {
        sender = sendmail_default_sender();
        sendmail_check_address(EX_USAGE, "sender (login name)", sender, true);
        return sender;
    }
    sendmail_no_control(EX_USAGE, "sender (-f)", opts->sender, false);
    if ((sender = sendmail_strip_address(opts->sender, strlen(opts->sender))) ==
        NULL)
        sender = mystrdup("");
    sendmail_check_address(EX_USAGE, "sender (-f)", sender, true);
    return sender;
}

/* sendmail_rcpt_args - the command line recipients: each argument is an
   address list as in a To: header ("a@b, Name <c@d>"); an argument with a
   control byte or without any address refuses the message (EX_USAGE) */
static ARGV *sendmail_rcpt_args(const ARGV *args)
{
    ARGV *rcpts = argv_alloc(args->argc + 1);

    for (size_t i = 0; i < args->argc; i++) {
        size_t before = rcpts->argc;

        sendmail_no_control(EX_USAGE, "recipient", args->argv[i], false);
        sendmail_split_addresses(args->argv[i], rcpts);
        if (rcpts->argc == before)
            sendmail_refuse(EX_USAGE, "recipient", args->argv[i],
                            "has no address");
    }
    return rcpts;
}

/* sendmail_write_content - append data, refusing more than limit bytes */
static void sendmail_write_content(QFILE_WRITER *writer, const char *data,
                                   size_t len, long long limit)
{
    qfile_put_content(writer, data, len);
    if (limit > 0 && qfile_writer_content_size(writer) > limit)
        sendmail_fail(EX_DATAERR,
                      "message is larger than message_size_limit"
                      " (%lld bytes); not sent",
                      limit);
}

/* sendmail_deliver - read the message and store it in maildrop/ */
static int sendmail_deliver(SENDMAIL_OPTS *opts, const MAIL_CONF *conf)
{
    const char *queue_dir = mail_conf_str(conf, "queue_directory");
    long long limit = mail_conf_size(conf, "message_size_limit");
    SENDMAIL_INPUT in = {.buf = vstr_alloc(SENDMAIL_READ_SIZE),
                         .ignore_dots = opts->ignore_dots};
    VSTR *headers = vstr_alloc(1024);
    VSTR *line = vstr_alloc(200);
    VSTR *path = vstr_alloc(100);
    VSTR *dir = vstr_alloc(100);
    QFILE_OUT *out;
    QFILE_WRITER *writer;
    QFILE_STEP step;
    sigset_t block;
    struct timeval now;
    char qid[QID_SIZE];
    char *sender;
    ARGV *rcpts;
    size_t cmdline_rcpts;
    size_t i;

    /* What the command line says is checked before stdin is read. */
    sender = sendmail_sender(opts);
    if (opts->full_name != NULL)
        sendmail_check_full_name(opts->full_name);
    rcpts = sendmail_rcpt_args(opts->rcpts);
    cmdline_rcpts = rcpts->argc;
    if (cmdline_rcpts == 0 && !opts->extract)
        sendmail_fail(EX_USAGE, "no recipients specified");
    (void) sendmail_read_headers(&in, headers, opts->extract, rcpts);
    if (rcpts->argc == 0)
        sendmail_fail(EX_USAGE, "no recipients specified");
    for (i = 0; i < rcpts->argc; i++)
        sendmail_check_address(i < cmdline_rcpts ? EX_USAGE : EX_DATAERR,
                               "recipient", rcpts->argv[i], false);

    /* The temporary file: maildrop/.tmp.QID. */
    qid_new(qid);
    vstr_sprintf(dir, "%s/%s", queue_dir, MAIL_QUEUE_MAILDROP);
    vstr_sprintf(path, "%s/.tmp.%s", vstr_str(dir), qid);
    if (vstr_len(path) >= sizeof(sendmail_tmp_path))
        sendmail_fail(EX_TEMPFAIL, "queue path too long: %s", vstr_str(path));
    /* The directory's mode guards the content; the file is readable so
       pickup can take it whoever submitted it. A user running the setgid
       sendmail has -wx on maildrop/ (mode 1730) but no read, so cannot
       open the directory to fsync it: then syncfs(2) on the file's own
       descriptor commits the file system the directory lives on, rename
       included (QFILE_CREATE_SYNCFS). */
    if ((out = qfile_create(vstr_str(path), 0644, QFILE_CREATE_SYNCFS)) == NULL)
        sendmail_fail(EX_TEMPFAIL, "create %s: %s", vstr_str(path),
                      strerror(errno));
    memcpy(sendmail_tmp_path, vstr_str(path), vstr_len(path) + 1);

    writer = qfile_out_writer(out);
    gettimeofday(&now, NULL);
    qfile_put_time(writer, &now);
    qfile_put_sender(writer, sender);
    if (opts->full_name != NULL)
        qfile_put_attr(writer, "full_name", opts->full_name);
    if (opts->ret != NULL)
        qfile_put_attr(writer, "ret", opts->ret);
    if (opts->envid != NULL)
        qfile_put_attr(writer, "envid", opts->envid);
    for (i = 0; i < rcpts->argc; i++)
        qfile_put_rcpt(writer, rcpts->argv[i], NULL, opts->notify);
    qfile_put_content_begin(writer);
    sendmail_write_content(writer, vstr_str(headers), vstr_len(headers), limit);
    while (sendmail_get_line(&in, line))
        sendmail_write_content(writer, vstr_str(line), vstr_len(line), limit);

    /*
     * Publish it: write, fsync, rename, fsync the directory. A signal in
     * the middle must not remove a file that is about to be, or already
     * is, committed, so the signals that remove the temporary file wait;
     * once the commit succeeded the message is accepted and they wait
     * until the exit (0). A failed commit leaves nothing behind.
     */
    vstr_sprintf(path, "%s/%s", vstr_str(dir), qid);
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGQUIT);
    sigprocmask(SIG_BLOCK, &block, NULL);
    if (qfile_commit(out, vstr_str(path), &step) < 0) {
        int err = errno;

        sendmail_tmp_path[0] = 0;
        sendmail_fail(EX_TEMPFAIL, "commit %s: %s: %s", vstr_str(path),
                      qfile_step_name(step), strerror(err));
    }
    sendmail_tmp_path[0] = 0;

    /* Wake pickup; it also scans, so a failure here is harmless. */
    vstr_sprintf(path, "%s/%s/pickup", queue_dir, MAIL_QUEUE_PUBLIC);
    (void) trigger_send(vstr_str(path), TRIGGER_WAKEUP);

    myfree(sender);
    argv_free(rcpts);
    vstr_free(in.buf);
    vstr_free(headers);
    vstr_free(line);
    vstr_free(path);
    vstr_free(dir);
    return 0;
}

/* A one-way copy from one descriptor to another (sendmail -bs). */
typedef struct SENDMAIL_PIPE {
    int from;
    int to;
    char buf[SENDMAIL_READ_SIZE];
    size_t len; /* bytes in buf not yet written */
    size_t off; /* where they start */
    bool eof; /* from is at its end */
} SENDMAIL_PIPE;

/* sendmail_pipe_read - read from p->from when its buffer is empty; false
   on EOF or error */
static bool sendmail_pipe_read(SENDMAIL_PIPE *p)
{
    ssize_t got = read(p->from, p->buf, sizeof(p->buf));

    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (got <= 0) {
        p->eof = true;
        return false;
    }
    p->len = (size_t) got;
    p->off = 0;
    return true;
}

/* sendmail_pipe_write - write what is buffered; false on error */
static bool sendmail_pipe_write(SENDMAIL_PIPE *p)
{
    ssize_t put = write(p->to, p->buf + p->off, p->len);

    if (put < 0)
        return errno == EINTR || errno == EAGAIN;
    p->off += (size_t) put;
    p->len -= (size_t) put;
    return true;
}

/* sendmail_smtp - -bs: run smtpd -S and copy stdin/stdout to and from it */
static int sendmail_smtp(const char *config_dir, const MAIL_CONF *conf)
{
    static SENDMAIL_PIPE in; /* stdin -> smtpd */
    static SENDMAIL_PIPE out; /* smtpd -> stdout */
    VSTR *path = vstr_alloc(100);
    int sv[2];
    pid_t pid;
    int status;

    vstr_sprintf(path, "%s/smtpd", mail_conf_str(conf, "daemon_directory"));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        sendmail_fail(EX_OSERR, "socketpair: %s", strerror(errno));
    fflush(stdout);
    if ((pid = fork()) < 0)
        sendmail_fail(EX_OSERR, "fork: %s", strerror(errno));
    if (pid == 0) {
        char *argv[5];

        argv[0] = "smtpd";
        argv[1] = "-S";
        argv[2] = "-c";
        argv[3] = (char *) config_dir;
        argv[4] = NULL;
        /* smtpd -S: the socket is fds 0 and 1; nothing at fd 3 (master's
           status socket) and above. */
        if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0)
            _exit(EX_OSERR);
        for (int fd = 3; fd < 1024; fd++)
            (void) close(fd);
        (void) unsetenv("SLUICE_LISTEN_FDS");
        signal(SIGPIPE, SIG_DFL);
        execv(vstr_str(path), argv);
        fprintf(stderr, "sendmail: cannot run %s: %s\n", vstr_str(path),
                strerror(errno));
        _exit(EX_UNAVAILABLE);
    }
    (void) close(sv[1]);
    (void) fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    in.from = 0;
    in.to = sv[0];
    out.from = sv[0];
    out.to = 1;

    /* Until smtpd closes its end and its last reply is out. */
    while (!(out.eof && out.len == 0)) {
        struct pollfd fds[3];
        int count = 0;
        int stdin_at = -1;
        int sock_at = -1;
        int stdout_at = -1;
        short sock_events = 0;

        if (!in.eof && in.len == 0) {
            fds[count] = (struct pollfd){.fd = 0, .events = POLLIN};
            stdin_at = count++;
        }
        if (in.len > 0)
            sock_events |= POLLOUT;
        if (!out.eof && out.len == 0)
            sock_events |= POLLIN;
        /* Not polled when idle: a hang-up would be reported at once. */
        if (sock_events != 0) {
            fds[count] = (struct pollfd){.fd = sv[0], .events = sock_events};
            sock_at = count++;
        }
        if (out.len > 0) {
            fds[count] = (struct pollfd){.fd = 1, .events = POLLOUT};
            stdout_at = count++;
        }
        if (poll(fds, (nfds_t) count, -1) < 0) {
            if (errno == EINTR)
                continue;
            sendmail_fail(EX_OSERR, "poll: %s", strerror(errno));
        }
        if (stdin_at >= 0 && fds[stdin_at].revents && !sendmail_pipe_read(&in))
            (void) shutdown(sv[0], SHUT_WR); /* client EOF: smtpd sees it */
        if (sock_at >= 0 && (fds[sock_at].revents & (POLLOUT | POLLERR)) &&
            in.len > 0 && !sendmail_pipe_write(&in)) {
            in.len = 0;
            in.eof = true; /* smtpd is gone; read what it said */
        }
        if (sock_at >= 0 &&
            (fds[sock_at].revents & (POLLIN | POLLHUP | POLLERR)) && !out.eof &&
            out.len == 0)
            (void) sendmail_pipe_read(&out);
        if (stdout_at >= 0 && fds[stdout_at].revents &&
            !sendmail_pipe_write(&out))
            break; /* the client went away */
    }
    (void) close(sv[0]);
    vstr_free(path);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            sendmail_fail(EX_OSERR, "waitpid: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == EX_UNAVAILABLE)
        return EX_UNAVAILABLE;
    fprintf(stderr, "sendmail: smtpd -S ended with %s %d\n",
            WIFEXITED(status) ? "status" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return EX_TEMPFAIL;
}

/* sendmail_sluice - run `sluice -c DIR command` (bin/sluice beside us):
   queue for -bp, start for -bd */
static int sendmail_sluice(const char *config_dir, const char *command)
{
    char self[PATH_MAX];
    char *argv[5];
    VSTR *path = vstr_alloc(100);
    ssize_t len;
    char *slash;

    argv[0] = "sluice";
    argv[1] = "-c";
    argv[2] = (char *) config_dir;
    argv[3] = (char *) command;
    argv[4] = NULL;
    fflush(stdout);
    if ((len = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0) {
        self[len] = 0;
        if ((slash = strrchr(self, '/')) != NULL) {
            *slash = 0;
            /* bin/sluice beside us in the build tree. */
            vstr_sprintf(path, "%s/sluice", self);
            if (access(vstr_str(path), X_OK) == 0)
                execv(vstr_str(path), argv);
        }
    }
    /* Installed: sendmail in BINDIR, sluice in the command directory. */
    vstr_sprintf(path, "%s/sluice", DEF_COMMAND_DIR);
    if (access(vstr_str(path), X_OK) == 0)
        execv(vstr_str(path), argv);
    execvp("sluice", argv);
    sendmail_fail(EX_UNAVAILABLE, "cannot run sluice %s: %s", command,
                  strerror(errno));
    return EX_UNAVAILABLE;
}

/* sendmail_verify - -bv: the command line recipients after the checks a
   submission gets, one "address: deliverable" line each; that is all it
   proves (no alias, transport or relay lookup is made, nothing is sent) */
static int sendmail_verify(const SENDMAIL_OPTS *opts)
{
    ARGV *rcpts = sendmail_rcpt_args(opts->rcpts);

    if (rcpts->argc == 0)
        sendmail_fail(EX_USAGE, "no recipients specified");
    for (size_t i = 0; i < rcpts->argc; i++)
        sendmail_check_address(EX_USAGE, "recipient", rcpts->argv[i], false);
    for (size_t i = 0; i < rcpts->argc; i++)
        printf("%s: deliverable (address syntax only; routing not"
               " checked)\n",
               rcpts->argv[i]);
    argv_free(rcpts);
    return fflush(stdout) == 0 ? 0 : EX_IOERR;
}

/* sendmail_newaliases - -bi: build the alias_database tables */
static int sendmail_newaliases(const char *config_dir)
{
    VSTR *why = vstr_alloc(100);
    MAIL_CONF *conf;
    ARGV *tables;
    int status = 0;

    msg_init("sluice", "newaliases");
    msg_log_stderr(true);
    if ((conf = mail_conf_read(config_dir, why)) == NULL)
        sendmail_fail(EX_CONFIG, "newaliases: %s", vstr_str(why));
    tables = mail_conf_list(conf, "alias_database");
    for (size_t i = 0; status == 0 && i < tables->argc; i++) {
        const char *spec = tables->argv[i];
        const char *text = strchr(spec, ':');

        if (strncasecmp(spec, "hash:", 5) != 0 &&
            strncasecmp(spec, "btree:", 6) != 0)
            continue;
        if (map_build(spec, MAP_FLAG_ALIAS, why) == 0)
            continue;
        /* The text (missing, bad line) is configuration; the rest is the
           disk and may pass. */
        status = strstr(vstr_str(why), " line ") != NULL ||
                         access(text + 1, R_OK) < 0
                     ? EX_CONFIG
                     : EX_TEMPFAIL;
        fprintf(stderr, "newaliases: %s\n", vstr_str(why));
    }
    argv_free(tables);
    mail_conf_free(conf);
    vstr_free(why);
    return status;
}

/* sendmail_flush - -q: ask qmgr to try everything now */
static int sendmail_flush(const MAIL_CONF *conf)
{
    VSTR *path = vstr_alloc(100);

    vstr_sprintf(path, "%s/%s/qmgr", mail_conf_str(conf, "queue_directory"),
                 MAIL_QUEUE_PUBLIC);
    if (trigger_send(vstr_str(path), TRIGGER_SCAN_ALL) < 0)
        sendmail_fail(EX_UNAVAILABLE, "cannot reach qmgr at %s: %s",
                      vstr_str(path), strerror(errno));
    vstr_free(path);
    return 0;
}

/* sendmail_drop_setgid - give up a setgid group for good */
static void sendmail_drop_setgid(void)
{
    gid_t gid = getgid();

    if (getegid() != gid && setresgid(gid, gid, gid) < 0)
        sendmail_fail(EX_OSERR, "cannot drop the setgid group: %s",
                      strerror(errno));
}

/* sendmail_root_only - root owns it and no one else may write it */
static bool sendmail_root_only(const struct stat *st)
{
    return st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

/* sendmail_trusted_config - an open descriptor of config_dir when root
   owns it and its main.cf and no one else may write either (an
   administrator's configuration, as the default one is), else -1. The
   configuration is then read through /proc/self/fd/N, this very
   directory, so a caller who controls a folder above it cannot swap it
   between the check and the read. */
static int sendmail_trusted_config(const char *config_dir)
{
    struct stat st;
    int dir_fd;
    int fd;
    bool trusted;

    if ((dir_fd = open(config_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -1;
    if (fstat(dir_fd, &st) < 0 || !sendmail_root_only(&st) ||
        (fd = openat(dir_fd, "main.cf", O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) <
            0) {
        (void) close(dir_fd);
        return -1;
    }
    trusted =
        fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && sendmail_root_only(&st);
    (void) close(fd);
    if (!trusted) {
        (void) close(dir_fd);
        return -1;
    }
    return dir_fd;
}

/* sendmail_mailq - -bp: `sluice queue` for a caller who may read the
   queue (root, mail_owner), else the listing of the showq service, reached
   with the setgid group (public/ is the group's), which is dropped before
   a byte is read; fails loudly when showq cannot be reached */
static int sendmail_mailq(const char *config_dir, const char *read_dir)
{
    static const SHOWQ_REQUEST req = {0};
    static const char *const queues[] = {
        MAIL_QUEUE_MAILDROP, MAIL_QUEUE_INCOMING, MAIL_QUEUE_ACTIVE,
        MAIL_QUEUE_DEFERRED, MAIL_QUEUE_HOLD,
    };
    VSTR *why = vstr_alloc(100);
    VSTR *path = vstr_alloc(100);
    MAIL_CONF *conf;
    const char *queue_dir;
    bool readable = true;
    int status = 0;
    int err;
    int fd;

    if ((conf = mail_conf_read(read_dir, why)) == NULL) {
        sendmail_drop_setgid();
        sendmail_fail(EX_CONFIG, "%s", vstr_str(why));
    }
    queue_dir = mail_conf_str(conf, "queue_directory");
    /* access() asks for the real ids: the group does not count. */
    for (size_t q = 0; q < SLUICE_ARRAY_LEN(queues) && readable; q++) {
        vstr_sprintf(path, "%s/%s", queue_dir, queues[q]);
        if (access(vstr_str(path), R_OK | X_OK) < 0 && errno != ENOENT)
            readable = false;
    }
    if (readable) {
        sendmail_drop_setgid();
        mail_conf_free(conf);
        vstr_free(why);
        vstr_free(path);
        return sendmail_sluice(config_dir, "queue");
    }
    fd = showq_connect(queue_dir, why);
    err = errno;
    sendmail_drop_setgid();
    if (fd < 0) {
        fprintf(stderr, "mailq: %s (%s)\n", vstr_str(why),
                err == EACCES ? "is mailq installed setgid to setgid_group?"
                              : "is sluice running?");
        status = EX_UNAVAILABLE;
    } else if (showq_list(fd, &req, stdout, why) < 0) {
        fprintf(stderr, "mailq: %s\n", vstr_str(why));
        status = EX_UNAVAILABLE;
    }
    mail_conf_free(conf);
    vstr_free(why);
    vstr_free(path);
    return status;
}

/* main - sendmail, mailq or newaliases, by name and options */
int main(int argc, char **argv)
{
    SENDMAIL_OPTS opts = {.mode = SENDMAIL_MODE_DELIVER};
    const char *name;
    const char *read_dir; /* where main.cf is read from */
    VSTR *trusted_path = NULL; /* "/proc/self/fd/N" */
    MAIL_CONF *conf;
    VSTR *why;
    int trusted_fd;
    int status;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, sendmail_signal);
    signal(SIGINT, sendmail_signal);
    signal(SIGTERM, sendmail_signal);
    signal(SIGQUIT, sendmail_signal);
    umask(022);

    name = argc > 0 && argv[0] != NULL ? argv[0] : "sendmail";
    if (strrchr(name, '/') != NULL)
        name = strrchr(name, '/') + 1;
    if (strcmp(name, "mailq") == 0)
        opts.mode = SENDMAIL_MODE_MAILQ;
    else if (strcmp(name, "newaliases") == 0)
        opts.mode = SENDMAIL_MODE_NEWALIASES;
    opts.rcpts = argv_alloc(4);
    opts.config_dir = getenv("SLUICE_CONFIG");
    sendmail_parse_args(argc, argv, &opts);
    if (opts.config_dir == NULL || *opts.config_dir == 0)
        opts.config_dir = DEF_CONFIG_DIR;
    /* Installed setgid to the maildrop group (INSTALL), the group is only
       for writing an administrator's instance's maildrop/: every mode but
       delivery (-bs runs smtpd) and -bp (which connects to public/showq
       with it, sendmail_mailq) and a configuration the caller names that
       is not root's alone (its queue_directory could point anywhere) run
       without it. */
    read_dir = opts.config_dir;
    if (opts.mode != SENDMAIL_MODE_DELIVER &&
        opts.mode != SENDMAIL_MODE_MAILQ) {
        sendmail_drop_setgid();
    } else if (getegid() != getgid() &&
               strcmp(opts.config_dir, DEF_CONFIG_DIR) != 0) {
        if ((trusted_fd = sendmail_trusted_config(opts.config_dir)) < 0) {
            sendmail_drop_setgid();
        } else {
            trusted_path = vstr_alloc(32);
            vstr_sprintf(trusted_path, "/proc/self/fd/%d", trusted_fd);
            read_dir = vstr_str(trusted_path);
        }
    }

    if (opts.mode == SENDMAIL_MODE_NEWALIASES ||
        opts.mode == SENDMAIL_MODE_MAILQ || opts.mode == SENDMAIL_MODE_DAEMON ||
        opts.mode == SENDMAIL_MODE_VERIFY) {
        if (opts.mode == SENDMAIL_MODE_MAILQ)
            status = sendmail_mailq(opts.config_dir, read_dir);
        else if (opts.mode == SENDMAIL_MODE_DAEMON)
            status = sendmail_sluice(opts.config_dir, "start");
        else if (opts.mode == SENDMAIL_MODE_VERIFY)
            status = sendmail_verify(&opts);
        else
            status = sendmail_newaliases(opts.config_dir);
        myfree(opts.notify);
        argv_free(opts.rcpts);
        return status;
    }

    why = vstr_alloc(100);
    if ((conf = mail_conf_read(read_dir, why)) == NULL)
        sendmail_fail(EX_TEMPFAIL, "%s", vstr_str(why));
    if (opts.mode == SENDMAIL_MODE_FLUSH)
        status = sendmail_flush(conf);
    else if (opts.mode == SENDMAIL_MODE_SMTP)
        status = sendmail_smtp(opts.config_dir, conf);
    else
        status = sendmail_deliver(&opts, conf);
    mail_conf_free(conf);
    vstr_free(why);
    if (trusted_path != NULL)
        vstr_free(trusted_path);
    myfree(opts.notify);
    argv_free(opts.rcpts);
    return status;
}
