/*
 * fuzz_mail_conf - the main.cf parser (reading, typed checks, $name
 * expansion)
 *
 * The input becomes DIR/main.cf and is read; every parameter of a config
 * that reads is fetched through the getter of its type, which must not
 * fail, and every name set in the file is fetched as text.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "argv.h"
#include "fuzz_common.h"
#include "mail_conf.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one main.cf */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *why = vstr_alloc(64);
    MAIL_CONF *conf;
    const MAIL_PARAM *table;
    size_t count;

    fuzz_init("fuzz_mail_conf");
    fuzz_write_file("main.cf", data, size);
    if ((conf = mail_conf_read(fuzz_dir(), why)) != NULL) {
        const ARGV *names = mail_conf_names(conf);

        table = mail_param_table(&count);
        for (size_t i = 0; i < count; i++) {
            const char *name = table[i].name;
            ARGV *list;
            size_t n_times;

            switch (table[i].type) {
            case MAIL_PARAM_STR:
                (void) mail_conf_str(conf, name);
                break;
            case MAIL_PARAM_INT:
                (void) mail_conf_int(conf, name);
                break;
            case MAIL_PARAM_BOOL:
                (void) mail_conf_bool(conf, name);
                break;
            case MAIL_PARAM_TIME:
                (void) mail_conf_time(conf, name);
                break;
            case MAIL_PARAM_SIZE:
                (void) mail_conf_size(conf, name);
                break;
            case MAIL_PARAM_LIST:
                list = mail_conf_list(conf, name);
                argv_free(list);
                break;
            case MAIL_PARAM_TIME_LIST:
                myfree(mail_conf_time_list(conf, name, &n_times));
                break;
            }
        }
        for (size_t i = 0; names && i < names->argc; i++) {
            (void) mail_conf_str(conf, names->argv[i]);
            (void) mail_conf_raw(conf, names->argv[i]);
        }
        mail_conf_free(conf);
    } else if (vstr_len(why) == 0) {
        abort(); /* refused without a reason */
    }
    vstr_free(why);
    return 0;
}
