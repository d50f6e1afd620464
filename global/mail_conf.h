/*
 * mail_conf - main.cf: the parameter table, reading, expansion, editing
 *
 * Every parameter sluice knows has a row in the table (mail_params.c): name,
 * type, the bounds of a number (min, max), default (which may use $name),
 * one-line description. A value outside the bounds is refused like a value
 * of the wrong type, so programs do not range-check by hand. main.cf may set
 * parameters that are not in the table (they expand like any other, and
 * `sluice conf` warns about them). Reading validates every typed value once,
 * so a bad value is reported with its file line before any program starts
 * work, and the typed getters below never fail.
 *
 * Programs read the configuration once at start into a const struct of their
 * own, through the getters.
 */
#ifndef MAIL_CONF_H
#define MAIL_CONF_H

#include "sys_defs.h"

#include <limits.h>

#include "argv.h"
#include "vstr.h"

typedef enum MAIL_PARAM_TYPE {
    MAIL_PARAM_STR, /* any text */
    MAIL_PARAM_INT, /* decimal integer */
    MAIL_PARAM_BOOL, /* yes|no */
    MAIL_PARAM_TIME, /* number + s m h d w (default unit given) */
    MAIL_PARAM_SIZE, /* number + k m g (bytes) */
    MAIL_PARAM_LIST, /* comma/space separated words */
    MAIL_PARAM_TIME_LIST, /* comma/space separated times */
} MAIL_PARAM_TYPE;

/* mail_owner's default when root runs a program: the dedicated user of a
   system instance, which INSTALL says how to create. */
#define MAIL_OWNER_SYSTEM "sluice"
#define MAIL_OWNER_USERADD                                                     \
    "useradd --system --user-group --home-dir /var/spool/sluice "              \
    "--no-create-home --shell /usr/sbin/nologin"

/* Bounds of an INT, TIME (seconds) or SIZE (bytes) value, both included,
   and of each time of a TIME_LIST; reading main.cf and `sluice conf
   name=value` refuse a value outside them. STR, BOOL and LIST parameters
   have none (0, 0). */
#define MAIL_PARAM_NOMAX LLONG_MAX

typedef struct MAIL_PARAM {
    const char *name;
    MAIL_PARAM_TYPE type;
    long long min; /* smallest value allowed */
    long long max; /* largest; MAIL_PARAM_NOMAX: none */
    const char *def; /* default, may contain $name */
    const char *desc; /* one line, for `sluice conf -d` */
} MAIL_PARAM;

extern const MAIL_PARAM *mail_param_find(const char *name);
extern const MAIL_PARAM *mail_param_table(size_t *count);

typedef struct MAIL_CONF MAIL_CONF;

/* mail_conf_read - read config_dir/main.cf; NULL with the reason in why
   ("/etc/sluice/main.cf line 12: message_size_limit: bad size \"x\"") */
extern MAIL_CONF *mail_conf_read(const char *config_dir, VSTR *why);
/* mail_conf_read_overrides - the same, then overrides ("name=value", a
   daemon's -o options from master.cf; NULL: none) win over main.cf */
extern MAIL_CONF *mail_conf_read_overrides(const char *config_dir,
                                           const ARGV *overrides, VSTR *why);
extern MAIL_CONF *mail_conf_free(MAIL_CONF *conf);

/* mail_conf_warnings - "PATH line N: unknown parameter NAME" for each name
   set in main.cf that nothing uses (not in the table, not used as $NAME,
   not SERVICE_PARAM of a master.cf service), in file order */
extern const ARGV *mail_conf_warnings(const MAIL_CONF *conf);

/* The value as written in main.cf, unexpanded; NULL when not set there. */
extern const char *mail_conf_raw(const MAIL_CONF *conf, const char *name);
/* "PATH line N: name" (main.cf sets it) or "PATH: name", into out. */
extern void mail_conf_origin(const MAIL_CONF *conf, const char *name,
                             VSTR *out);
/* mail_conf_owner - mail_owner's passwd entry (a name, or a uid without
   one); NULL with the reason in why when there is no such user (the reason
   names the useradd command) or it is root: no daemon runs as root. The
   entry is getpwnam's static one. */
struct passwd;
extern const struct passwd *mail_conf_owner(const MAIL_CONF *conf, VSTR *why);
/* The default as written, also one computed at run time; NULL: unknown. */
extern const char *mail_conf_default(const MAIL_CONF *conf, const char *name);
/* Names set in main.cf, in file order. */
extern const ARGV *mail_conf_names(const MAIL_CONF *conf);
/* Expanded value (main.cf, else the default); "" for an unknown name. */
extern const char *mail_conf_str(const MAIL_CONF *conf, const char *name);
extern long long mail_conf_int(const MAIL_CONF *conf, const char *name);
extern bool mail_conf_bool(const MAIL_CONF *conf, const char *name);
extern long long mail_conf_time(const MAIL_CONF *conf,
                                const char *name); /* s */
extern long long mail_conf_size(const MAIL_CONF *conf,
                                const char *name); /* bytes */
extern ARGV *mail_conf_list(const MAIL_CONF *conf,
                            const char *name); /* caller frees */
/* A TIME_LIST in seconds, *count of them (0 for an empty list); the array
   (never NULL) is the caller's to myfree. */
extern long long *mail_conf_time_list(const MAIL_CONF *conf, const char *name,
                                      size_t *count);

/* mail_conf_check_value - check a value for a typed parameter before it is
   written to main.cf; 0, or -1 with "name: bad size \"x\"" or "name: 0 is
   below the minimum 1" in why. Unknown
   names, STR and LIST parameters, and values that use $name (checked when
   main.cf is read) are accepted. */
extern int mail_conf_check_value(const char *name, const char *value,
                                 VSTR *why);
/* mail_conf_parse_time - "90", "90s", "5m", "1h", "2d", "1w" in seconds;
   *ok false (and 0 returned) for anything else or on overflow */
extern long long mail_conf_parse_time(const char *value, bool *ok);
/* mail_conf_parse_size - "1000", "64k", "10m", "1g" in bytes (k = 1024) */
extern long long mail_conf_parse_size(const char *value, bool *ok);

/* mail_conf_edit - set name = value in config_dir/main.cf in place, keeping
   comments and other lines; written through a temporary file and rename.
   0, or -1 with the reason in why. */
extern int mail_conf_edit(const char *config_dir, const char *name,
                          const char *value, VSTR *why);
/* mail_conf_remove - remove every setting of name from config_dir/main.cf
   (with its continuation lines; comments and other lines stay), as
   postconf -X; written the same way. A name that is not set is no error
   and leaves the file untouched. 0, or -1 with the reason in why. */
extern int mail_conf_remove(const char *config_dir, const char *name,
                            VSTR *why);

#endif
