-- clickhouse-events.sql - sluice's events in ClickHouse, fed from Kafka
--
-- The events daemon produces each journal event (one JSON object) to
-- Kafka (events_kafka_brokers, events_kafka_topic; events(8)). Here:
--
--   sluice_events_queue   a Kafka-engine table: ClickHouse's consumer of
--                         the topic (group sluice-clickhouse)
--   sluice_events         MergeTree (Replacing: a re-sent event, same id,
--                         same row, is folded away as parts merge), one
--                         row an event, partitioned by month, ordered by
--                         tenant, day, kind, time: "what did tenant X do
--                         between A and B" reads only X's range
--   sluice_events_mv      moves what the queue reads into sluice_events
--   sluice_events_hourly  the rollup: events per hour x tenant x pool x
--                         provider x kind (SummingMergeTree: sum(events)
--                         when querying, parts may not be merged yet)
--   sluice_events_hourly_mv  feeds it from the queue too (ClickHouse
--                         18.16 does not pass a Kafka table's rows on
--                         through a view on a view)
--
-- Replace the broker list 'localhost:9092' and the topic 'sluice-events'
-- with yours (events_kafka_brokers, events_kafka_topic) before running:
--
--   sed -e 's/localhost:9092/kafka1:9092,kafka2:9092/' clickhouse-events.sql |
--       clickhouse-client --multiquery
--
-- Create the tables before sluice produces: a new consumer group starts
-- at the newest offset. Delivery is at least once (a crash re-sends a
-- batch), so an exact count deduplicates by id: uniqExact(id), or FINAL.
-- The rollup counts what arrived, re-sends included: exact enough for a
-- dashboard, off by the rare re-send. Written for ClickHouse 18.16
-- (Debian 12) and later; the JSON fields sluice does not write yet are
-- simply empty. A field a later sluice adds is not in these tables: set
-- input_format_skip_unknown_fields = 1 in the default profile of the
-- server (users.xml) so such an event is read, not refused.
--
-- Not here: the "tls" object of delivered, deferred and bounced events
-- ({"version", "cipher", "level"}, or null for plain text). ClickHouse
-- 18.16's JSONEachRow cannot read it into columns: an object in a String
-- column refuses the row (every TLS delivery), and with
-- input_format_import_nested_json = 1 columns `tls.version` ... take the
-- object but a null refuses the row (every plain-text delivery). Left
-- out, the object is skipped (input_format_skip_unknown_fields, which the
-- Kafka engine sets) and the row is read. To keep TLS in ClickHouse,
-- the producer would have to send the fields flat (tls_version ...), or
-- a newer ClickHouse read the object as a string
-- (input_format_json_read_objects_as_strings) for JSONExtractString.

CREATE TABLE IF NOT EXISTS sluice_events_queue
(
    id String,
    ts String,
    kind String,
    qid String,
    recipient Nullable(String),
    orig_recipient Nullable(String),
    sender Nullable(String),
    size Nullable(Int64),
    rcpt_count Nullable(Int64),
    client Nullable(String),
    relay Nullable(String),
    dsn Nullable(String),
    reply Nullable(String),
    delay Nullable(Float64),
    tenant Nullable(String),
    pool Nullable(String),
    source_ip Nullable(String),
    provider Nullable(String),
    trace_id Nullable(String)
)
ENGINE = Kafka('localhost:9092', 'sluice-events', 'sluice-clickhouse',
               'JSONEachRow');

CREATE TABLE IF NOT EXISTS sluice_events
(
    date Date,
    time DateTime, -- the event's ts, to the second
    id String,
    kind String,
    qid String,
    recipient String,
    recipient_domain String,
    orig_recipient String,
    sender String,
    sender_domain String,
    size Int64,
    rcpt_count Int64,
    client String,
    relay String,
    dsn String,
    reply String,
    delay Float64,
    tenant String,
    pool String,
    source_ip String,
    provider String,
    trace_id String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (tenant, date, kind, time, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS sluice_events_mv TO sluice_events AS
SELECT
    toDate(parseDateTimeBestEffort(ts)) AS date,
    parseDateTimeBestEffort(ts) AS time,
    id,
    kind,
    qid,
    ifNull(recipient, '') AS recipient,
    lower(substring(ifNull(recipient, ''),
                    position(ifNull(recipient, ''), '@') + 1)) AS recipient_domain,
    ifNull(orig_recipient, '') AS orig_recipient,
    ifNull(sender, '') AS sender,
    lower(substring(ifNull(sender, ''),
                    position(ifNull(sender, ''), '@') + 1)) AS sender_domain,
    ifNull(size, -1) AS size,
    ifNull(rcpt_count, -1) AS rcpt_count,
    ifNull(client, '') AS client,
    ifNull(relay, '') AS relay,
    ifNull(dsn, '') AS dsn,
    ifNull(reply, '') AS reply,
    ifNull(delay, -1) AS delay,
    ifNull(tenant, '') AS tenant,
    ifNull(pool, '') AS pool,
    ifNull(source_ip, '') AS source_ip,
    ifNull(provider, '') AS provider,
    ifNull(trace_id, '') AS trace_id
FROM sluice_events_queue;

CREATE TABLE IF NOT EXISTS sluice_events_hourly
(
    hour DateTime,
    tenant String,
    pool String,
    provider String,
    kind String,
    events UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, pool, provider, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS sluice_events_hourly_mv
TO sluice_events_hourly AS
SELECT
    toStartOfHour(parseDateTimeBestEffort(ts)) AS hour,
    ifNull(tenant, '') AS tenant,
    ifNull(pool, '') AS pool,
    ifNull(provider, '') AS provider,
    kind,
    count() AS events
FROM sluice_events_queue
GROUP BY hour, tenant, pool, provider, kind;
