/*
 * mail_params - the table of every main.cf parameter sluice knows
 *
 * One row per parameter: name, type (with the bounds of a number),
 * default, one-line description. A
 * default may refer to other parameters as $name. A NULL default is
 * computed at run time by mail_conf (myhostname, mydomain, mail_owner).
 * Names follow Postfix wherever the meaning is the same.
 */
#include "sys_defs.h"

#include "mail_conf.h"

/* The installation directories come from ./configure (config.mk). */
#ifndef DEF_CONFIG_DIR
#define DEF_CONFIG_DIR "/etc/sluice"
#endif
#ifndef DEF_QUEUE_DIR
#define DEF_QUEUE_DIR "/var/spool/sluice"
#endif
#ifndef DEF_DATA_DIR
#define DEF_DATA_DIR "/var/lib/sluice"
#endif
#ifndef DEF_DAEMON_DIR
#define DEF_DAEMON_DIR "/usr/local/libexec/sluice"
#endif
#ifndef DEF_COMMAND_DIR
#define DEF_COMMAND_DIR "/usr/local/sbin"
#endif

/*
 * A row's type expands to the type and its bounds (MAIL_PARAM's min, max):
 * a bare INT, TIME or SIZE takes any value its syntax allows (0 and up);
 * INT_RANGE(1, NOMAX) and the like bound it (TIME_LIST_RANGE: each time
 * of a list). Bound a number wherever a
 * value outside would be a mistake: counts that must be at least 1,
 * timeouts that must be positive, values a program keeps in an int (INTMAX,
 * so no program clamps by hand). Keep the default inside the bounds.
 */
#define NOMAX MAIL_PARAM_NOMAX
#define INTMAX ((long long) INT32_MAX)
#define STR MAIL_PARAM_STR, 0, 0
#define INT MAIL_PARAM_INT, 0, NOMAX
#define BOOL MAIL_PARAM_BOOL, 0, 0
#define TIME MAIL_PARAM_TIME, 0, NOMAX
#define SIZE MAIL_PARAM_SIZE, 0, NOMAX
#define LIST MAIL_PARAM_LIST, 0, 0
#define TIME_LIST_RANGE(lo, hi) MAIL_PARAM_TIME_LIST, (lo), (hi)
#define INT_RANGE(lo, hi) MAIL_PARAM_INT, (lo), (hi)
#define TIME_RANGE(lo, hi) MAIL_PARAM_TIME, (lo), (hi)
#define SIZE_RANGE(lo, hi) MAIL_PARAM_SIZE, (lo), (hi)

static const MAIL_PARAM mail_param_tab[] = {
    /* Where things live. */
    {"config_directory", STR, DEF_CONFIG_DIR,
     "directory of main.cf and master.cf (always the one read)"},
    {"queue_directory", STR, DEF_QUEUE_DIR, "top of the mail queue"},
    {"data_directory", STR, DEF_DATA_DIR,
     "directory for caches and other data that is not mail"},
    {"feedback_key_file", STR, "",
     "HMAC key of VERP return paths, tracking and unsubscribe links (empty:"
     " data_directory/feedback.key, made with 32 random bytes on first use;"
     " copy it to every node that should accept the others' tokens)"},
    {"bounce_verp_domain", STR, "",
     "when set, mail with a sender goes out with MAIL FROM"
     " bounce+TOKEN@this domain (one recipient per transaction), and mail"
     " to such an address is parsed as a DSN by the feedback service"},
    {"complaint_addresses", STR, "",
     "addresses whose incoming mail is parsed as ARF (RFC 5965) complaint"
     " reports by the feedback service instead of being delivered"},
    {"complaint_feedback_types", LIST, "abuse, fraud, virus",
     "ARF Feedback-Types that are complaints (a complained event: suppressed,"
     " counted against the source); others become feedback_report events"},
    {"feedback_size_limit", SIZE_RANGE(1024, NOMAX), "10485760",
     "bytes of a DSN or ARF report the feedback service reads at most"
     " (the rest is not looked at)"},
    {"daemon_directory", STR, DEF_DAEMON_DIR,
     "directory of the programs that master runs"},
    {"command_directory", STR, DEF_COMMAND_DIR,
     "directory of the sluice and sendmail commands"},

    /* Who we are. */
    {"mail_owner", STR, NULL,
     "unprivileged user the daemons run as (default: the invoking user; for"
     " root, " MAIL_OWNER_SYSTEM ", which must exist: INSTALL); never root"},
    {"setgid_group", STR, "sluicedrop",
     "group of maildrop/ and public/ through which a setgid sendmail submits"
     " (INSTALL); when it does not exist, both are mode 0700"},
    {"myhostname", STR, NULL,
     "fully qualified name of this host (default: the system host name)"},
    {"mydomain", STR, NULL,
     "domain of this host (default: myhostname minus its first label)"},
    {"myorigin", STR, "$myhostname",
     "domain appended to unqualified addresses; /path: that file's first"
     " line (Debian's /etc/mailname), $myhostname when missing or empty"},
    {"mydestination", LIST, "$myhostname, localhost.$mydomain, localhost",
     "domains delivered locally on this host"},
    {"mynetworks", LIST, "127.0.0.0/8 [::1]/128",
     "client networks that may relay through this host"},
    {"relay_domains", LIST, "",
     "remote domains this host accepts mail for and relays"},
    {"virtual_alias_domains", LIST, "$virtual_alias_maps",
     "domains whose every address is a virtual alias: accepted, never relayed;"
     " a table here matches a domain listed as a key"},
    {"virtual_mailbox_domains", LIST, "$virtual_mailbox_maps",
     "domains whose recipients are mailboxes in virtual_mailbox_maps, not"
     " users of this system (a table here matches a domain listed as a key)"},
    {"relayhost", STR, "",
     "host that receives all outbound mail (empty: deliver directly)"},
    {"sender_dependent_relayhost_maps", LIST, "",
     "tables that choose the relayhost by envelope sender, then @domain"
     " (null sender: <>)"},
    {"inet_interfaces", LIST, "all",
     "addresses an inet service without one in master.cf listens on: all, "
     "loopback-only, or numeric addresses"},
    {"inet_protocols", LIST, "all",
     "address families of inet_interfaces: all, ipv4, ipv6"},
    {"mail_name", STR, "sluice",
     "name of the mail system in banners and bounces"},
    {"mail_version", STR, "0.1", "version of the mail system"},
    {"compatibility_level", STR, "3.6",
     "accepted for Postfix main.cf files; sluice has no compatibility"
     " safety net, so the value changes nothing"},

    /* Logging. */
    {"maillog_file", STR, "", "file to log to (empty: syslog)"},
    {"syslog_name", STR, "sluice",
     "prefix of the syslog tag, as in sluice/smtpd"},
    {"syslog_facility", STR, "mail", "syslog facility"},

    /* master and daemons. */
    {"default_process_limit", INT_RANGE(1, INTMAX), "100",
     "maxproc of a master.cf service that says '-'"},
    {"daemon_timeout", TIME_RANGE(1, INTMAX), "18000s",
     "time after which a daemon stuck in one request gives up"},
    {"ipc_timeout", TIME_RANGE(1, INTMAX), "3600s",
     "time limit for one exchange between two daemons"},
    {"master_backoff_initial", TIME_RANGE(1, 3600), "1s",
     "first delay before master restarts a service that died"},
    {"master_backoff_max", TIME_RANGE(1, 86400), "60s",
     "longest delay before master restarts a service that keeps dying"},

    /* Message limits. */
    {"message_size_limit", SIZE, "10240000",
     "largest message accepted, in bytes"},
    {"header_size_limit", SIZE_RANGE(1, NOMAX), "102400",
     "largest message header kept, in bytes"},
    {"queue_minfree", SIZE, "0",
     "free space the queue file system must keep for mail to be accepted"
     " (at least 1.5 x message_size_limit is kept whatever this says)"},
    {"line_length_limit", INT_RANGE(512, NOMAX), "2048",
     "longest line kept whole; longer lines are split"},

    /* metrics: the Prometheus endpoint (metrics/metrics.c, issue #20). */
    {"metrics_listen", STR, "",
     "address:port serving GET /metrics (empty: the metrics service is off)"},
    {"metrics_timeout", TIME_RANGE(1, 3600), "10s",
     "how long a metrics connection may idle before its request is whole"},
    {"metrics_max_connections", INT_RANGE(1, 10000), "32",
     "metrics connections at once; the oldest is closed to admit another"},
    {"metrics_queue_scan_interval", TIME_RANGE(1, 86400), "5s",
     "least time between two counts of the queue directories"},
    /* api: the HTTP sending API (api/api.c, issue #21). */
    {"api_listen", STR, "",
     "address:port the HTTP API listens on (empty: the api service is off)"},
    {"api_keys_file", STR, "$config_directory/api_keys",
     "the API's keys, stored hashed (sluice api key create TENANT)"},
    {"api_max_request_size", SIZE_RANGE(1024, NOMAX), "16m",
     "largest HTTP request body the API reads, in bytes"},
    {"api_max_recipients", INT_RANGE(1, INTMAX), "10000",
     "most recipients of one API request"},
    {"api_timeout", TIME_RANGE(1, INTMAX), "30s",
     "time an API client has to send its whole request"},
    {"api_cleanup_timeout", TIME_RANGE(1, INTMAX), "60s",
     "time the API waits for cleanup before it answers 503"},
    {"api_idempotency_ttl", TIME_RANGE(1, NOMAX), "24h",
     "time an Idempotency-Key's first answer is replayed to retries"},
    {"api_idempotency_directory", STR, "$queue_directory/api",
     "where the API keeps its Idempotency-Key records"},
    {"api_tenant_daily_limit", INT_RANGE(0, INTMAX), "0",
     "messages one API tenant may send per UTC day (0: no limit)"},
    {"api_tenant_rate_limit", INT_RANGE(0, INTMAX), "0",
     "messages one API tenant may send per second (0: no limit)"},
    {"api_tls", BOOL, "no",
     "the API listener speaks HTTPS, with smtpd_tls_chain_files (or "
     "smtpd_tls_cert_file and smtpd_tls_key_file) as its certificate"},
    {"api_template_directory", STR, "$queue_directory/api/templates",
     "where the API keeps its templates, one folder per tenant"},
    /* Tracking and unsubscribe links (cleanup_track.c, api_track.c, #22). */
    {"tracking_base_url", STR, "",
     "public base URL of the api service for open and click tracking links"
     " (https://t.example.com; empty: no tracking)"},
    {"track_opens", BOOL, "no",
     "add an open pixel to the HTML of every message (per message:"
     " X-Sluice-Track, per tenant: track_tenant_maps)"},
    {"track_clicks", BOOL, "no",
     "rewrite http(s) links of every message's HTML to tracking links"},
    {"track_tenant_maps", LIST, "",
     "tables: API tenant to \"opens clicks list=NAME\" or \"none\""
     " (overrides track_opens, track_clicks)"},
    {"track_size_limit", SIZE_RANGE(0, NOMAX), "10m",
     "largest body whose HTML is rewritten for tracking (0: no limit)"},
    {"unsubscribe_base_url", STR, "$tracking_base_url",
     "public base URL of the One-Click unsubscribe link in List-Unsubscribe"
     " (empty: no List-Unsubscribe)"},
    {"unsubscribe_mailto_domain", STR, "$bounce_verp_domain",
     "domain of the unsubscribe+TOKEN mailto in List-Unsubscribe, whose"
     " incoming mail the feedback service turns into unsubscribed events"
     " (empty: no mailto)"},
    {"tracking_rate_limit", INT_RANGE(0, INTMAX), "200",
     "tracking and unsubscribe requests with a bad token one client"
     " address may send per second, beyond that 429; good tokens are never"
     " limited (0: no limit)"},
    {"api_spool_min_recipients", INT_RANGE(1, INTMAX), "100",
     "batches of at least this many recipients are spooled for the render "
     "service and answered 202 at once (smaller ones are queued in the "
     "request)"},
    {"render_cleanup_timeout", TIME_RANGE(1, INTMAX), "60s",
     "time the render service waits for cleanup before it retries later"},

    /* smtpd. */
    {"smtpd_banner", STR, "$myhostname ESMTP $mail_name",
     "text after 220 in the SMTP greeting"},
    {"smtpd_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time smtpd waits for a client to send a command or data"},
    {"smtpd_recipient_limit", INT_RANGE(1, INTMAX), "1000",
     "most recipients accepted in one message"},
    {"smtpd_hard_error_limit", INT_RANGE(1, INTMAX), "20",
     "errors after which smtpd disconnects a client"},
    {"smtpd_soft_error_limit", INT_RANGE(0, INTMAX), "10",
     "errors after which smtpd slows down its replies to a client"},
    {"smtpd_error_sleep_time", STR, "1s",
     "delay of each reply past smtpd_soft_error_limit (\"0.2s\", \"1s\")"},
    {"smtpd_junk_command_limit", INT_RANGE(0, INTMAX), "100",
     "NOOP, VRFY and RSET a client may send before each counts as an error"},
    {"smtpd_session_deadline", TIME_RANGE(0, INTMAX), "3600s",
     "time limit of an SMTP session, restarted by each message accepted"
     " (0: none)"},
    {"smtpd_client_connection_count_limit", INT_RANGE(0, INTMAX), "50",
     "connections one client may hold at once (0: no limit)"},
    {"smtpd_client_connection_rate_limit", INT_RANGE(0, INTMAX), "0",
     "connections one client may open per time unit (0: no limit)"},
    {"smtpd_client_connection_rate_time_unit", TIME_RANGE(1, INTMAX), "60s",
     "time unit of smtpd_client_connection_rate_limit"},
    {"smtpd_client_event_limit_exceptions", LIST, "$mynetworks",
     "clients exempt from the smtpd_client_* connection limits"},
    {"smtpd_process_connection_limit", INT_RANGE(1, INTMAX), "1000",
     "connections one smtpd process serves at once"},
    {"smtpd_forbid_bare_newline", BOOL, "yes",
     "reject a message line that ends in LF without CR"},
    {"smtpd_peername_lookup", BOOL, "yes",
     "look up the client's host name (PTR, forward-confirmed)"},
    {"smtpd_peername_lookup_timeout", TIME_RANGE(1, 300), "10s",
     "bound on the client name lookup that precedes the greeting"},
    {"unknown_client_reject_code", INT_RANGE(400, 599), "450",
     "reply code of reject_unknown_client_hostname and"
     " reject_unknown_reverse_client_hostname (a temporary DNS failure: 450)"},
    {"disable_vrfy_command", BOOL, "yes", "refuse the VRFY command"},
    {"smtpd_authentication_checks", LIST, "",
     "sender authentication smtpd records in each message: spf, dkim,"
     " dmarc (which checks spf and dkim too); empty: none"},
    {"authserv_id", STR, "$myhostname",
     "authserv-id of the Authentication-Results: headers (RFC 8601)"},
    {"spf_lookup_timeout", TIME_RANGE(1, 300), "20s",
     "bound on the DNS lookups of one SPF check (past it: temperror)"},
    {"smtpd_spf_helo_check", BOOL, "yes",
     "check the HELO name's SPF policy too (RFC 7208 2.3): its result goes"
     " in Authentication-Results: when not none, and reject_spf_fail"
     " rejects its fail when MAIL FROM's result is none"},
    {"dkim_lookup_timeout", TIME_RANGE(1, 300), "20s",
     "bound on the key lookups of one message's DKIM verification (past it:"
     " temperror)"},
    {"spf_process_connections", INT_RANGE(0, INTMAX), "100",
     "smtpd connections one spf process serves at once before master starts"
     " another (0: no limit but the descriptors)"},
    {"dmarc_enforce", BOOL, "no",
     "reject (550 5.7.1) a message that fails DMARC for a domain whose"
     " policy is p=reject (or sp=reject); no: only record dmarc=fail"},
    {"dmarc_public_suffix_list", STR,
     "/usr/share/publicsuffix/public_suffix_list.dat",
     "Public Suffix List that names DMARC's organizational domains (empty or"
     " unreadable: the last two labels, said in the log)"},
    /* Milters (smtpd/smtpd_milter.c, global/milter.c). */
    {"smtpd_milters", LIST, "",
     "milters smtpd consults for each SMTP session: inet:host:port or"
     " unix:/path, in order"},
    {"non_smtpd_milters", LIST, "",
     "milters pickup, api and render consult for mail from sendmail(1)"
     " and the HTTP API, as from localhost [127.0.0.1]: inet:host:port or"
     " unix:/path, in order"},
    {"non_smtpd_milter_max_size", SIZE, "64m",
     "with message_size_limit = 0: the largest local message pickup reads"
     " into memory for non_smtpd_milters; a larger one gets"
     " milter_default_action"},
    {"api_milter_process_limit", INT_RANGE(1, 10000), "20",
     "the most non_smtpd_milters child processes one api or render process"
     " runs at once; more messages wait up to 10s for one, then get 503"},
    {"milter_default_action", STR, "tempfail",
     "when a milter cannot be reached, fails or times out: tempfail (451),"
     " reject (550) or accept (go on without it)"},
    {"milter_protocol", INT_RANGE(6, 6), "6",
     "Sendmail milter protocol version (6, libmilter's)"},
    {"milter_connect_timeout", TIME_RANGE(1, 3600), "30s",
     "bound on connecting to a milter and its option negotiation"},
    {"milter_command_timeout", TIME_RANGE(1, 3600), "30s",
     "bound on a milter's reply to a connect, HELO, MAIL, RCPT or DATA"
     " event"},
    {"milter_content_timeout", TIME_RANGE(1, 3600), "300s",
     "bound on a milter's reply to a header, body piece or end of message"},
    /* smtpd TLS (global/tls_server.c). */
    {"smtpd_tls_security_level", STR, "",
     "smtpd TLS: none (or empty), may (offer STARTTLS) or encrypt (require"
     " it before MAIL)"},
    {"smtpd_tls_chain_files", LIST, "",
     "PEM files each holding a private key and its certificate chain"},
    {"smtpd_tls_cert_file", STR, "",
     "PEM certificate chain (with smtpd_tls_key_file) when"
     " smtpd_tls_chain_files is empty"},
    {"smtpd_tls_key_file", STR, "$smtpd_tls_cert_file",
     "PEM private key of smtpd_tls_cert_file"},
    {"smtpd_tls_protocols", STR, ">=TLSv1.2",
     "TLS protocols smtpd accepts at level may (\">=TLSv1.2\", \"!TLSv1\")"},
    {"smtpd_tls_mandatory_protocols", STR, ">=TLSv1.2",
     "TLS protocols smtpd accepts at level encrypt"},
    {"smtpd_tls_ciphers", STR, "medium",
     "TLS cipher grade at level may: medium or high"},
    {"smtpd_tls_mandatory_ciphers", STR, "medium",
     "TLS cipher grade at level encrypt: medium or high"},
    {"smtpd_tls_wrappermode", BOOL, "no",
     "TLS from the first byte (smtps, port 465) instead of STARTTLS"},
    {"smtpd_starttls_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time limit of the TLS handshake"},
    {"smtpd_tls_received_header", BOOL, "yes",
     "the Received: header names the TLS protocol and cipher"},
    {"smtpd_tls_auth_only", BOOL, "no",
     "offer and accept AUTH only over TLS (implied by level encrypt)"},
    /* smtpd SASL (Cyrus). */
    {"smtpd_sasl_auth_enable", BOOL, "no", "offer SMTP AUTH (Cyrus SASL)"},
    {"smtpd_sasl_path", STR, "smtpd",
     "Cyrus SASL application name: its configuration is <name>.conf"},
    {"cyrus_sasl_config_path", STR, "",
     "folder of the Cyrus SASL configuration file (empty: the library's)"},
    {"smtpd_sasl_service", STR, "smtp", "service name given to Cyrus SASL"},
    {"smtpd_sasl_local_domain", STR, "",
     "realm of SASL users (saslpasswd2 -u)"},
    {"smtpd_sasl_security_options", LIST, "noanonymous",
     "SASL mechanism limits without TLS: noanonymous, noplaintext,"
     " noactive, nodictionary, mutual_auth"},
    {"smtpd_sasl_tls_security_options", LIST, "$smtpd_sasl_security_options",
     "SASL mechanism limits over TLS"},
    {"smtpd_auth_failure_limit", INT_RANGE(1, INTMAX), "5",
     "failed AUTH commands after which smtpd disconnects a client (421);"
     " each failure also waits smtpd_error_sleep_time"},
    {"dns_servers", LIST, "",
     "resolvers to ask, ip or ip:port (empty: the system's, resolv.conf)"},
    {"disable_dns_lookups", BOOL, "no",
     "make no DNS query at all (next hops must be [ip] literals); smtp"
     " follows smtp_dns_support_level instead when that is set"},
    {"dns_trust_anchor_file", STR, "",
     "DNSSEC trust anchors (DS or DNSKEY records, zone file form) that"
     " libunbound validates answers with (empty: none, nothing is secure;"
     " smtp at smtp_dns_support_level = dnssec: /usr/share/dns/root.key)"},

    /* Queue manager and delivery. */
    {"queue_run_delay", TIME_RANGE(1, NOMAX), "300s",
     "time between scans of the deferred queue"},
    {"retry_schedule", TIME_LIST_RANGE(1, NOMAX), "1m 5m 15m 1h",
     "delays between delivery attempts; the last one repeats"},
    {"maximal_queue_lifetime", TIME, "24h",
     "time after which an undeliverable message is bounced"},
    {"bounce_queue_lifetime", TIME, "24h",
     "time after which an undeliverable bounce is discarded"},
    {"delay_warning_time", TIME, "0",
     "time after which the sender is told of a delay (0: never)"},
    {"events_enable", BOOL, "yes",
     "append every message event to the journal (global/events.h)"},
    {"events_directory", STR, "$queue_directory/events",
     "directory of the event journal's segments"},
    {"events_segment_size", SIZE_RANGE(4096, NOMAX), "64m",
     "size at which an event journal segment is left for a new one"},
    {"events_segment_age", TIME_RANGE(1, NOMAX), "1h",
     "age at which an event journal segment is left for a new one"},
    {"events_minfree", SIZE, "1m",
     "free space events_directory's file system must keep for mail to be"
     " accepted (0: no check; a journal that failed refuses mail anyway)"},
    {"events_webhook_urls", LIST, "",
     "URLs the events daemon POSTs batches of journal events to"},
    {"events_webhook_routes", LIST, "",
     "SELECTOR=URL entries: URL gets only the events SELECTOR picks"
     " (kind:KIND, tenant:TENANT, joined by + to ask for both)"},
    {"events_webhook_secret", STR, "",
     "key of the HMAC-SHA256 signature of each webhook POST (empty: none)"},
    {"events_webhook_secret_file", STR, "",
     "file whose first line is the webhook HMAC key, read by the events"
     " daemon (keep it mode 0600, mail_owner's); instead of"
     " events_webhook_secret, which main.cf shows to every local user"},
    {"events_webhook_max_age", TIME_RANGE(1, NOMAX), "1d",
     "time a webhook batch is retried before it goes to the dead letters"},
    {"events_webhook_timeout", TIME_RANGE(1, NOMAX), "30s",
     "time limit of one webhook POST"},
    {"events_webhook_max_backoff", TIME_RANGE(1, NOMAX), "5m",
     "longest wait between two tries of a failed webhook batch"},
    {"events_webhook_batch_size", INT_RANGE(1, 100000), "500",
     "most events in one webhook POST"},
    {"events_kafka_brokers", STR, "",
     "Kafka bootstrap brokers the events daemon produces to (empty: none)"},
    {"events_kafka_topic", STR, "sluice-events",
     "Kafka topic of the events; %k in it stands for the event's kind"},
    {"events_kafka_timeout", TIME_RANGE(1, NOMAX), "60s",
     "time a Kafka message may wait for its delivery before its batch fails"},
    {"events_kafka_max_age", TIME_RANGE(1, NOMAX), "1d",
     "time a Kafka batch is retried before it goes to the dead letters"},
    {"events_stats_enable", BOOL, "no",
     "feed the SQLite store behind sluice stats from the event journal"},
    {"events_stats_database", STR, "$events_directory/stats.sqlite",
     "the SQLite database behind sluice stats"},
    {"events_index_enable", BOOL, "yes",
     "feed the SQLite status index behind sluice why from the event journal"
     " (it holds journal segments while behind, never removes them)"},
    {"events_index_database", STR, "$events_directory/index.sqlite",
     "the SQLite status index behind sluice why"},
    {"events_index_max_age", TIME_RANGE(1, NOMAX), "30d",
     "time sluice why remembers a message after its last event"},
    {"suppression_enable", BOOL, "yes",
     "check recipients against the suppression list in cleanup"},
    {"suppression_feedback_enable", BOOL, "yes",
     "add hard bounces, complaints and unsubscribes from the event journal"
     " to the suppression list (an events exporter that holds journal"
     " segments while behind, never removes them)"},
    {"suppression_database", STR, "$data_directory/suppression/list.sqlite",
     "the SQLite suppression list (sluice suppress, /v1/suppressions)"},
    {"suppression_bounce_categories", LIST,
     "user_unknown, domain_not_found, mailbox_disabled",
     "bounce categories whose hard bounces suppress the recipient"},
    {"suppression_bounce_expiry", TIME, "90d",
     "how long a hard bounce's suppression lasts; 0: for ever"},
    {"otel_exporter_otlp_endpoint", STR, "",
     "OTLP/HTTP base URL the events daemon POSTs trace spans to"
     " ({URL}/v1/traces, JSON; empty: no tracing export)"},
    {"otel_traces_sampler_ratio", STR, "0",
     "share (0 to 1) of messages without a submitted traceparent whose"
     " trace is sampled"},
    {"otel_exporter_otlp_max_age", TIME_RANGE(1, NOMAX), "1h",
     "time a batch of spans the collector refuses is retried before it is"
     " dropped"},
    {"default_destination_concurrency_limit", INT_RANGE(1, NOMAX), "20",
     "parallel deliveries to one destination"},
    {"default_destination_recipient_limit", INT_RANGE(1, NOMAX), "50",
     "recipients per delivery to one destination"},
    {"qmgr_message_active_limit", INT_RANGE(1, NOMAX), "20000",
     "messages the queue manager holds in memory at once"},
    {"queue_file_reuse_limit", INT_RANGE(0, 100000), "1000",
     "finished queue files kept in reuse/ to be written again with new "
     "messages instead of creating a file per message; 0: none kept "
     "(global/qfile_reuse.h)"},
    {"initial_destination_concurrency", INT_RANGE(1, NOMAX), "5",
     "parallel deliveries to a destination before slow start raises it"},
    {"smtp_shaping_maps", LIST, "",
     "traffic shaping rules per recipient domain, provider and default "
     "(texthash:/path; global/shaping.h)"},
    {"smtp_shaping_automation_maps", LIST, "",
     "response automation: remote replies that suspend or slow a shaping "
     "bucket (texthash:/path; global/shaping_auto.h)"},
    {"shaping_redis_server", STR, "",
     "Redis server (host:port, [v6addr]:port or /unix/path) that keeps the "
     "shaping limits of all nodes; empty: node-local (global/shaping_redis.h)"},
    {"shaping_cluster_nodes", INT_RANGE(1, 10000), "1",
     "sluice nodes sharing shaping_redis_server: while it is unavailable "
     "each node keeps 1/N of every limit locally"},
    {"shaping_redis_timeout_ms", INT_RANGE(1, 60000), "500",
     "milliseconds one Redis call (or connect) may take before the node "
     "falls back to its local share"},
    {"shaping_redis_lease_time", TIME_RANGE(3, 86400), "60s",
     "how long a connection lease in Redis outlives a node that stops "
     "renewing it"},
    /* The reputation circuit breaker and warm-up of sources (#18):
       global/reputation.h, global/warmup.h. */
    {"reputation_window", TIME_RANGE(1, 604800), "1h",
     "sliding window of attempts, hard bounces and blocks per source and "
     "per source x provider"},
    {"reputation_min_attempts", INT_RANGE(1, INTMAX), "100",
     "attempts the window must hold before its ratios can pause a source"},
    {"reputation_hard_bounce_ratio", STR, "10%",
     "hard bounces per attempt (10% or 0.1) that pause a source"},
    {"reputation_block_ratio", STR, "5%",
     "policy or reputation refusals per attempt that pause a source"},
    {"reputation_pause_time", TIME_RANGE(1, 604800), "1h",
     "first pause of a source; doubled after each failed probe, up to 24h"},
    {"reputation_probe_rate", STR, "1/m",
     "messages a paused source sends when its pause ends (N/s, N/m, N/h)"},
    {"reputation_probe_attempts", INT_RANGE(1, 100000), "20",
     "probe answers, below half of both ratios, that resume a source"},
    {"smtp_source_warmup_maps", LIST, "",
     "daily caps of new sources: ADDRESS start=YYYY-MM-DD caps=N,N,... "
     "[PROVIDER=N,N,...] (texthash:/path; global/warmup.h)"},
    {"destination_dead_time", TIME, "60s",
     "how long a destination that failed a whole cohort is left alone"},
    {"default_transport", STR, "smtp",
     "delivery agent for mail not for this machine"},
    {"local_transport", STR, "local",
     "delivery agent for domains in mydestination"},
    {"virtual_transport", STR, "virtual",
     "delivery agent for domains in virtual_mailbox_domains"},
    {"recipient_delimiter", STR, "",
     "characters that separate a user name from an address extension"},
    {"alias_maps", LIST, "hash:/etc/aliases", "tables of local aliases"},
    {"alias_database", LIST, "hash:/etc/aliases",
     "alias tables that newaliases (sendmail -bi) rebuilds"},
    {"transport_maps", LIST, "",
     "tables that route a domain or address to transport:nexthop"},

    /* Local delivery (local). */
    {"local_recipient_maps", LIST, "unix:passwd.byname $alias_maps",
     "tables of the local users smtpd accepts (empty: accept every user)"},
    {"mail_spool_directory", STR, "/var/mail",
     "directory of mbox files, or of Maildirs when it ends in /"},
    {"home_mailbox", STR, "",
     "mailbox relative to the user's home (mbox, Maildir when it ends in /);"
     " empty: mail_spool_directory"},
    {"mailbox_command", STR, "",
     "command that local users' mail is piped to instead of their mailbox,"
     " as the user (not $name-expanded)"},
    {"forward_path", LIST, "$home/.forward",
     ".forward files looked for, in order ($home, $user, $local, $extension)"},
    {"allow_mail_to_commands", LIST, "alias, forward",
     "where |command destinations are allowed: alias, forward, include"},
    {"allow_mail_to_files", LIST, "alias, forward",
     "where /file destinations are allowed: alias, forward, include"},
    {"local_command_shell", STR, "/bin/sh",
     "shell that runs |command destinations (as shell -c command)"},
    {"command_time_limit", TIME_RANGE(1, INTMAX), "1000s",
     "longest a |command delivery may run before it is killed"},
    {"default_privs", STR, "nobody",
     "user that alias commands and files run as when root owns the alias table"
     " (and root's own commands)"},
    {"local_system_users", BOOL, "yes",
     "local parts are this system's users, delivered as each user when root"
     " runs sluice; no: every local part is a user of the instance, delivered"
     " as mail_owner (sluice init writes no)"},
    {"mailbox_size_limit", SIZE, "51200000",
     "largest mbox file or message local writes (0: no limit)"},
    {"local_destination_recipient_limit", INT_RANGE(1, NOMAX), "1",
     "recipients per local delivery request"},
    {"prepend_delivered_header", LIST, "command, file, forward",
     "deliveries that get a Delivered-To: header (mailbox ones always do)"},

    /* Virtual mailbox delivery (virtual). */
    {"virtual_mailbox_maps", LIST, "",
     "tables of virtual recipients (user@domain, @domain catch-all) and their"
     " mailbox under virtual_mailbox_base: Maildir when it ends in /, else"
     " mbox"},
    {"virtual_mailbox_base", STR, "",
     "folder every virtual mailbox lies in (an absolute path)"},
    {"virtual_uid_maps", LIST, "",
     "tables of the uid a virtual recipient's mail is written as"
     " (static:N for all)"},
    {"virtual_gid_maps", LIST, "",
     "tables of the gid a virtual recipient's mail is written as"
     " (static:N for all)"},
    {"virtual_minimum_uid", INT_RANGE(1, INTMAX), "100",
     "lowest uid virtual_uid_maps may name"},
    {"virtual_mailbox_limit", SIZE, "51200000",
     "largest mbox file or message virtual writes (0: no limit)"},
    /* The cleanup daemon. */
    {"cleanup_process_connections", INT_RANGE(0, INTMAX), "3",
     "client connections one cleanup process serves before it tells master"
     " it is busy, so that master starts another (up to cleanup's maxproc)"
     " and their fsyncs overlap; 0: one process serves them all"},

    /* Address rewriting and content checks (cleanup). */
    {"canonical_maps", LIST, "",
     "tables that rewrite sender and recipient addresses, envelope and header"},
    {"sender_canonical_maps", LIST, "",
     "tables that rewrite sender addresses (before canonical_maps)"},
    {"recipient_canonical_maps", LIST, "",
     "tables that rewrite recipient addresses (before canonical_maps)"},
    {"virtual_alias_maps", LIST, "",
     "tables that redirect envelope recipients to one or more addresses,"
     " recursively (after canonical mapping)"},
    {"virtual_alias_recursion_limit", INT_RANGE(1, INTMAX), "1000",
     "deepest nesting of virtual alias expansion"},
    {"virtual_alias_expansion_limit", INT_RANGE(1, INTMAX), "1000",
     "most addresses one recipient's virtual alias expansion may give"},
    {"header_checks", LIST, "",
     "tables matched against each header: REJECT, DISCARD, HOLD, WARN, "
     "REPLACE, PREPEND, IGNORE"},
    {"body_checks", LIST, "",
     "tables matched against each body line, with the same actions"},
    {"body_checks_size_limit", SIZE, "51200",
     "how much of a message body body_checks inspect"},

    /* DKIM signing (cleanup). */
    {"dkim_signing_maps", LIST, "",
     "tables: sender domain (From:, else envelope) to selector:/key.pem list"},
    {"dkim_canonicalization", STR, "relaxed/relaxed",
     "DKIM header/body canonicalization: simple or relaxed each"},
    {"dkim_signed_headers", LIST,
     "+from, +subject, +to, +date, cc, reply-to, sender, message-id, "
     "in-reply-to, references, mime-version, content-type, "
     "content-transfer-encoding, content-disposition, list-id, list-post, "
     "list-unsubscribe, list-unsubscribe-post, feedback-id",
     "headers DKIM signs; +name is oversigned (no copy can be added)"},
    {"dkim_expiration", TIME, "0", "DKIM signature lifetime (x= tag); 0: none"},

    /* Access control (smtpd). */
    {"smtpd_client_restrictions", LIST, "",
     "checks made on the client when it connects (evaluated at RCPT)"},
    {"smtpd_helo_restrictions", LIST, "",
     "checks made on the HELO/EHLO name (evaluated at RCPT)"},
    {"smtpd_sender_restrictions", LIST, "",
     "checks made on MAIL FROM (evaluated at RCPT)"},
    {"smtpd_relay_restrictions", LIST,
     "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
     "relay control checks made at RCPT TO"},
    {"smtpd_recipient_restrictions", LIST, "",
     "further checks made at RCPT TO"},
    {"parent_domain_matches_subdomains", LIST, "relay_domains, mynetworks",
     "lists in which example.test also matches sub.example.test"},

    /* smtp client. */
    {"smtp_connect_timeout", TIME_RANGE(1, INTMAX), "30s",
     "time limit for connecting to a remote SMTP server"},
    {"smtp_helo_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time limit for the remote greeting and the EHLO reply"},
    {"smtp_data_done_timeout", TIME_RANGE(1, INTMAX), "600s",
     "time limit for the reply to the end of the message"},
    {"smtp_bind_address", STR, "",
     "local address for outgoing connections (empty: any); the one "
     "source when smtp_source_pools is empty"},
    {"smtp_source_pools", LIST, "",
     "source IP pools: pool name -> ADDRESS[*WEIGHT][/EHLO-NAME] ... "
     "(texthash:/path; global/source_pool.h)"},
    {"default_source_pool", STR, "",
     "the pool of a message no header or rule chose (empty: the first "
     "pool of smtp_source_pools)"},
    {"smtp_source_pool_maps", LIST, "",
     "pool rules: sasl:USER, tenant:T, sender address or sender domain -> "
     "pool name"},
    {"smtp_source_pool_allow_maps", LIST, "",
     "who may name a pool (X-Sluice-Pool, the API's pool): sasl:USER, "
     "tenant:T, mynetworks or local -> pool names or *; none found: "
     "mynetworks and local any, others none"},
    {"smtp_source_retry_time", TIME_RANGE(1, INTMAX), "60s",
     "how long a source whose bind failed is left out of its pools"},
    {"smtp_tcp_port", INT_RANGE(1, 65535), "25",
     "port of the SMTP servers MX records name"},
    {"smtp_helo_name", STR, "$myhostname",
     "name the smtp client sends in EHLO/HELO"},
    {"smtp_mail_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time limit for the reply to MAIL"},
    {"smtp_rcpt_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time limit for the reply to RCPT"},
    {"smtp_data_init_timeout", TIME_RANGE(1, INTMAX), "120s",
     "time limit for the reply to DATA"},
    {"smtp_data_xfer_timeout", TIME_RANGE(1, INTMAX), "180s",
     "time limit for sending each piece of the message"},
    {"smtp_quit_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time limit for the reply to QUIT"},
    {"smtp_rset_timeout", TIME_RANGE(1, INTMAX), "20s",
     "time limit for the reply to RSET"},
    {"smtp_mx_host_limit", INT_RANGE(1, NOMAX), "10",
     "MX hosts resolved per delivery"},
    {"smtp_dns_timeout", TIME_RANGE(1, INTMAX), "30s",
     "time limit for the DNS lookups of a delivery"},
    {"smtp_dns_support_level", STR, "",
     "smtp's DNS: disabled, enabled or dnssec (validated under"
     " dns_trust_anchor_file, else /usr/share/dns/root.key; needed by"
     " dane); empty: disabled with disable_dns_lookups, dnssec with"
     " dns_trust_anchor_file, else enabled"},
    {"smtp_connection_cache_time_limit", TIME_RANGE(0, INTMAX), "2s",
     "how long an idle connection is kept for the next message (0: never)"},
    {"smtp_connection_reuse_count_limit", INT_RANGE(0, INTMAX), "100",
     "deliveries over one connection before it is closed (0: no limit)"},
    {"smtp_tls_security_level", STR, "may",
     "TLS to servers: none, may, encrypt, fingerprint, dane, dane-only,"
     " verify or secure"},
    {"smtp_tls_CAfile", STR, "",
     "PEM file of the CAs a server certificate may chain to"},
    {"smtp_tls_protocols", STR, ">=TLSv1",
     "TLS protocols at the opportunistic level (Postfix syntax)"},
    {"smtp_tls_mandatory_protocols", STR, ">=TLSv1",
     "TLS protocols at encrypt, verify and secure (Postfix syntax)"},
    {"smtp_tls_policy_maps", STR, "",
     "per next hop (domain or [host]:port): \"level attr=value ...\""},
    {"smtp_tls_verify_cert_match", STR, "hostname",
     "names a certificate must carry at verify (hostname, nexthop, ...)"},
    {"smtp_tls_secure_cert_match", STR, "nexthop, dot-nexthop",
     "names a certificate must carry at secure"},
    {"smtp_tls_fingerprint_digest", STR, "sha256",
     "digest of the fingerprints of the fingerprint level (sha256, sha1,"
     " md5, sha512 ...)"},
    {"smtp_tls_fingerprint_cert_match", STR, "",
     "fingerprints (AA:BB:...) of the certificates or public keys accepted"
     " at the fingerprint level when a policy has no match="},
    {"smtp_tls_loglevel", INT_RANGE(0, 4), "1",
     "0: no TLS log lines; 1: the summary of each TLS session"},
    {"smtp_mta_sts_enable", BOOL, "yes",
     "honour recipient domains' MTA-STS policies (RFC 8461) when no"
     " smtp_tls_policy_maps entry applies; cached in data_directory/mta-sts"},
    {"smtp_mta_sts_fetch_timeout", TIME_RANGE(1, 300), "20s",
     "time limit for fetching an MTA-STS policy over HTTPS"},
    {"smtp_starttls_timeout", TIME_RANGE(1, INTMAX), "300s",
     "time limit for the TLS handshake after STARTTLS"},
    {"smtp_sasl_auth_enable", BOOL, "no",
     "AUTH to servers listed in smtp_sasl_password_maps"},
    {"smtp_sasl_password_maps", STR, "",
     "[host]:port, host or domain -> user:password for AUTH"},
    {"smtp_sasl_security_options", LIST, "noplaintext, noanonymous",
     "AUTH without TLS: noplaintext forbids PLAIN and LOGIN"},
    {"smtp_sasl_tls_security_options", LIST, "noanonymous",
     "AUTH over TLS (PLAIN and LOGIN allowed unless noplaintext)"},

    /* Bounces and notices. */
    {"notify_classes", LIST, "resource, software",
     "problems reported to the postmaster"},
    {"2bounce_notice_recipient", STR, "postmaster",
     "recipient of bounces that could not be delivered (empty: nobody)"},
    {"bounce_size_limit", SIZE, "50000",
     "most of the original message a DSN returns (headers only beyond)"},
    {"bounce_classes_file", STR, "",
     "rules that classify failures (conf/bounce-classes); empty: built in"},
    {"soft_bounce", BOOL, "no",
     "turn permanent delivery errors into temporary ones (testing)"},
};

/* mail_param_find - the table row of a parameter; NULL when unknown */
const MAIL_PARAM *mail_param_find(const char *name)
{
    for (size_t i = 0; i < SLUICE_ARRAY_LEN(mail_param_tab); i++)
        if (strcmp(mail_param_tab[i].name, name) == 0)
            return mail_param_tab + i;
    return NULL;
}

/* mail_param_table - the whole table, in its order */
const MAIL_PARAM *mail_param_table(size_t *count)
{
    *count = SLUICE_ARRAY_LEN(mail_param_tab);
    return mail_param_tab;
}
