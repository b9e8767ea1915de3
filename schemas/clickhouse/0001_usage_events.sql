-- Usage events: exactly one row per unique (source, id), written by the
-- processors. kafka_partition and kafka_offset record where each row came from,
-- so a processor can resume exactly where the table ends after a crash.
--
-- Portable DDL: it runs on ClickHouse 18.16 and on current releases. Plain
-- MergeTree family, DateTime (not DateTime64), no Map, JSON, TTL or
-- SimpleAggregateFunction. Table names are unqualified: the migrator runs
-- with the target database selected.
CREATE TABLE IF NOT EXISTS usage_events
(
    id              String,
    source          String,
    type            String,
    subject         String,
    time            DateTime,
    api_id          String,
    key_id          String,
    method          String,
    route           String,
    path            String,
    status          UInt16,
    latency_ms      UInt32,
    request_bytes   UInt64,
    response_bytes  UInt64,
    units           Decimal(18, 6),
    ingested_at     DateTime,
    kafka_partition Int32,
    kafka_offset    Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (subject, time, source, id);

-- Records the dead-letter queue got, with the reason, for analysts.
CREATE TABLE IF NOT EXISTS usage_rejects
(
    received_at      DateTime,
    reason           String,
    detail           String,
    source_topic     String,
    source_partition Int32,
    source_offset    Int64,
    raw              String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, source_partition, source_offset);
