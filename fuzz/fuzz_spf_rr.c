/*
 * fuzz_spf_rr - DNS answers into libspf2's records (spf/spf_rr.c), and
 * what libspf2 then makes of a TXT record
 *
 * The first byte picks the record type (A, AAAA, MX, PTR, TXT), the rest
 * is its rdata as a DNS server could send it. A record spf_rr_fill
 * accepts is NUL-terminated text within its buffer (or an address); a TXT
 * record that is an SPF record within SPF_RECORD_MAX then goes through
 * libspf2's compiler and interpreter, as the spf daemon would run them,
 * with a DNS layer that answers NXDOMAIN: the daemon's way of finding out
 * that libspf2 (not instrumented here, but its crashes still show) chokes
 * on some record.
 */
#include "sys_defs.h"

#include <stdint.h>
#include <strings.h>

#include "fuzz_common.h"
#include "spf.h" /* netinet/in.h, then libspf2 */

#include <spf2/spf_dns.h>
#include "vstr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ns_type fuzz_types[] = {ns_t_a, ns_t_aaaa, ns_t_mx, ns_t_ptr,
                                     ns_t_txt};

/* fuzz_nxdomain - the DNS layer: every name is unknown */
static SPF_dns_rr_t *fuzz_nxdomain(SPF_dns_server_t *layer, const char *domain,
                                   ns_type type, int should_cache)
{
    return SPF_dns_rr_new_init(layer, domain, type, 0, HOST_NOT_FOUND);
}

/* fuzz_quiet - libspf2's messages */
static void fuzz_quiet(const char *file, int line, const char *text) {}

/* fuzz_spf - compile and interpret record as the daemon would */
static void fuzz_spf(const char *record)
{
    static SPF_dns_server_t layer = {.lookup = fuzz_nxdomain, .name = "fuzz"};
    static SPF_server_t *server;
    SPF_request_t *req;
    SPF_response_t *resp;
    SPF_record_t *compiled = NULL;

    if (server == NULL) {
        SPF_warning_handler = fuzz_quiet;
        SPF_info_handler = fuzz_quiet;
        SPF_debug_handler = NULL;
        server = SPF_server_new_dns(&layer, 0);
        SPF_server_set_rec_dom(server, "mx.fuzz.test");
    }
    req = SPF_request_new(server);
    SPF_request_set_ipv4_str(req, "192.0.2.1");
    SPF_request_set_helo_dom(req, "helo.fuzz.test");
    SPF_request_set_env_from(req, "user@fuzz.test");
    req->cur_dom = req->env_from_dp;
    resp = SPF_response_new(req);
    if (SPF_record_compile(server, resp, &compiled, record) == SPF_E_SUCCESS) {
        resp->spf_record_exp = compiled;
        (void) SPF_record_interpret(compiled, req, resp, 0);
        resp->spf_record_exp = NULL;
        (void) SPF_response_get_received_spf_value(resp);
    }
    if (compiled != NULL)
        SPF_record_free(compiled);
    SPF_response_free(resp);
    SPF_request_free(req);
}

/* LLVMFuzzerTestOneInput - a type byte, then rdata */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    SPF_dns_rr_t *rr;
    VSTR *text;
    VSTR *oversize;
    ns_type type;

    if (size < 1)
        return 0;
    fuzz_init("fuzz_spf_rr");
    type = fuzz_types[data[0] % SLUICE_ARRAY_LEN(fuzz_types)];
    text = vstr_alloc(64);
    oversize = vstr_alloc(16);
    rr = SPF_dns_rr_new_init(NULL, "fuzz.test", type, 0, NETDB_SUCCESS);
    if (spf_rr_fill(rr, 0, type, data + 1, size - 1, text, oversize)) {
        if (type != ns_t_a && type != ns_t_aaaa) {
            size_t len = strlen(rr->rr[0]->txt);

            if (len >= rr->rr_buf_len[0])
                abort();
            if (type == ns_t_txt && len > SPF_RECORD_MAX &&
                strncasecmp(rr->rr[0]->txt, "v=spf1", 6) == 0)
                abort();
            if (type == ns_t_txt && vstr_len(oversize) == 0 &&
                strncasecmp(rr->rr[0]->txt, "v=spf1", 6) == 0)
                fuzz_spf(rr->rr[0]->txt);
        }
    }
    SPF_dns_rr_free(rr);
    vstr_free(text);
    vstr_free(oversize);
    return 0;
}
