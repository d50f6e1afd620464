/*
 * fuzz_warmup - the warm-up schedule parser and the warm-up state file's
 * reader (warmup.h)
 *
 * The first byte chooses. Even: the rest is "KEY VALUE" of a
 * smtp_source_warmup_maps line; it is refused with a reason, or parses to
 * a rule with a start date, 1..366 caps per list each in 1..10^9. Odd:
 * the rest is a state file; what was kept is written back and reads again
 * without a bad line to the very same text, and caps can be asked of it.
 */
#include "sys_defs.h"

#include <stdint.h>

#include "fuzz_common.h"
#include "vstr.h"
#include "warmup.h"

#define FUZZ_NOW (20789LL * 86400 + 3600)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_list_ok - the invariants of one list */
static bool fuzz_list_ok(const WARMUP_LIST *list)
{
    if (list->count < 1 || list->count > WARMUP_MAX_STEPS)
        return false;
    for (size_t i = 0; i < list->count; i++)
        if (list->caps[i] < 1 || list->caps[i] > WARMUP_MAX_CAP)
            return false;
    return true;
}

/* fuzz_rule - one key and value */
static void fuzz_rule(const char *line)
{
    const char *space = strchr(line, ' ');
    VSTR *key = vstr_alloc(50);
    VSTR *why = vstr_alloc(100);
    WARMUP_RULE rule;

    if (space)
        vstr_ncpy(key, line, (size_t) (space - line));
    else
        vstr_cpy(key, line);
    if (warmup_rule_parse(vstr_str(key), space ? space + 1 : "", &rule, why) <
        0) {
        if (vstr_len(why) == 0 || rule.source != NULL)
            abort();
    } else {
        if (rule.source == NULL || !fuzz_list_ok(&rule.all) ||
            rule.provider_count > WARMUP_MAX_PROVIDERS)
            abort();
        for (size_t i = 0; i < rule.provider_count; i++)
            if (!fuzz_list_ok(&rule.providers[i]))
                abort();
        warmup_rule_done(&rule);
    }
    vstr_free(key);
    vstr_free(why);
}

/* fuzz_rules - a schedule for 127.0.0.3, so that held days are judged */
static WARMUP_RULES *fuzz_rules(void)
{
    static const char table[] =
        "127.0.0.3 start=2026-11-20 caps=5,10,20,40,80,160,320,640,1280,"
        "2560,5120,10240,20480,40960 gmail=1,2,3\n";
    VSTR *spec = vstr_alloc(100);
    VSTR *why = vstr_alloc(100);
    WARMUP_RULES *rules;

    fuzz_write_file("warmup", (const uint8_t *) table, sizeof(table) - 1);
    vstr_sprintf(spec, "texthash:%s/warmup", fuzz_dir());
    if ((rules = warmup_rules_load("smtp_source_warmup_maps", vstr_str(spec),
                                   why)) == NULL)
        abort();
    vstr_free(spec);
    vstr_free(why);
    return rules;
}

/* fuzz_state - a state file */
static void fuzz_state(const char *text, size_t len)
{
    WARMUP_CONF conf = {0.1, 0.05};
    WARMUP *w = warmup_alloc(&conf, fuzz_rules());
    WARMUP *again = warmup_alloc(&conf, fuzz_rules());
    VSTR *out = vstr_alloc(100);
    VSTR *out2 = vstr_alloc(100);

    (void) warmup_parse(w, text, len, "fuzz");
    warmup_format(w, out);
    if (warmup_parse(again, vstr_str(out), vstr_len(out), "fuzz") != 0)
        abort();
    warmup_format(again, out2);
    if (strcmp(vstr_str(out), vstr_str(out2)) != 0)
        abort();
    /* Caps of today, then a new day judges the last one. */
    (void) warmup_over_cap(again, "127.0.0.3", "gmail", FUZZ_NOW);
    if (warmup_day(again, "127.0.0.3", FUZZ_NOW + 86400) < 0 ||
        warmup_held(again, "127.0.0.3", FUZZ_NOW + 86400) < 0)
        abort();
    warmup_free(w);
    warmup_free(again);
    vstr_free(out);
    vstr_free(out2);
}

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VSTR *line;

    fuzz_init("fuzz_warmup");
    if (size == 0)
        return 0;
    if (data[0] & 1) {
        fuzz_state((const char *) data + 1, size - 1);
        return 0;
    }
    line = vstr_alloc(100);
    vstr_ncpy(line, (const char *) data + 1, size - 1);
    fuzz_rule(vstr_str(line));
    vstr_free(line);
    return 0;
}
