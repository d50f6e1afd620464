/*
 * fuzz_master_cf - the master.cf parser
 *
 * The input is master.cf text (a NUL inside ends it, as for a C string);
 * the parser returns a table or a reason, never crashes.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "fuzz_common.h"
#include "master_cf.h"
#include "mymalloc.h"
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one master.cf */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *why = vstr_alloc(64);
    char *text = mystrndup((const char *) data, size);
    MASTER_CF *cf;

    fuzz_init("fuzz_master_cf");
    if ((cf = master_cf_parse(text, "master.cf", 100, why)) != NULL) {
        for (size_t i = 0; i < cf->count; i++)
            (void) master_serv_type_name(cf->ents[i].type);
        master_cf_free(cf);
    } else if (vstr_len(why) == 0) {
        abort();
    }
    /* and from a file, as master reads it */
    fuzz_write_file("master.cf", data, size);
    vstr_sprintf(why, "%s/master.cf", fuzz_dir());
    text = myfree(text);
    text = mystrdup(vstr_str(why));
    if ((cf = master_cf_read(text, 100, why)) != NULL)
        master_cf_free(cf);
    myfree(text);
    vstr_free(why);
    return 0;
}
