/*
 * fuzz_reputation - the reputation state file's reader and the reply
 * classifier (reputation.h)
 *
 * Any input is read line by line, bad lines skipped; what was kept is
 * written back (reputation_format), and that text reads again without a
 * bad line to the very same text. The classifier takes any diagnostic.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "fuzz_common.h"
#include "reputation.h"
#include "vstr.h"

#define FUZZ_NOW 1800000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_rep - a breaker with the default parameters */
static REPUTATION *fuzz_rep(void)
{
    REPUTATION_CONF conf;
    VSTR *why = vstr_alloc(100);

    if (reputation_conf_parse(&conf, "1h", 100, "10%", "5%", "1h", "1/m", 20,
                              why) < 0)
        abort();
    vstr_free(why);
    return reputation_alloc(&conf);
}

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    REPUTATION *rep = fuzz_rep();
    REPUTATION *again = fuzz_rep();
    VSTR *text = vstr_alloc(100);
    VSTR *text2 = vstr_alloc(100);
    VSTR *diag = vstr_alloc(100);
    REPUTATION_OUTCOME outcome;

    fuzz_init("fuzz_reputation");
    (void) reputation_parse(rep, (const char *) data, size, "fuzz", FUZZ_NOW);
    reputation_format(rep, text);
    if (reputation_parse(again, vstr_str(text), vstr_len(text), "fuzz",
                         FUZZ_NOW) != 0)
        abort();
    reputation_format(again, text2);
    if (strcmp(vstr_str(text), vstr_str(text2)) != 0)
        abort();
    /* Whatever was loaded can be used and ticked. */
    (void) reputation_tick(again, FUZZ_NOW + 86400, NULL, NULL);

    vstr_ncpy(diag, (const char *) data, size);
    outcome = reputation_classify_diagnostic(vstr_str(diag));
    if (outcome != REPUTATION_NONE && outcome != REPUTATION_OK &&
        outcome != REPUTATION_HARD && outcome != REPUTATION_BLOCK)
        abort();
    reputation_free(rep);
    reputation_free(again);
    vstr_free(text);
    vstr_free(text2);
    vstr_free(diag);
    return 0;
}
