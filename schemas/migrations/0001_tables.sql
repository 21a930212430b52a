-- citystream 0001: the raw tables, one per event kind. `{db}` is replaced by the target database.
-- Dedup, first line: the sink inserts with an insert_deduplication_token derived from the Kafka
-- topic/partition/offset ranges of the batch; MergeTree drops a repeated token only when the table has
-- non_replicated_deduplication_window set. Second line: ReplacingMergeTree keyed on event_id (copies of
-- one event share tenant/device/captured_at, so they share the whole sorting key) and the v_* views.
-- Common columns: event_id, schema_version, tenant, gateway_id, device_id, seq, captured_at, district,
-- ingested_at (set by the sink when it builds the batch), kafka_partition, kafka_offset (provenance).

CREATE TABLE IF NOT EXISTS {db}.sensor_readings
(
    event_id        String,
    schema_version  UInt16,
    tenant          LowCardinality(String),
    gateway_id      LowCardinality(String),
    device_id       LowCardinality(String),
    seq             UInt64 CODEC(Delta, ZSTD(1)),
    captured_at     DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    district        LowCardinality(String),
    metric          LowCardinality(String),
    value           Float64 CODEC(Gorilla, ZSTD(1)),
    ingested_at     DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    kafka_partition UInt16,
    kafka_offset    UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(captured_at)
ORDER BY (tenant, metric, device_id, captured_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.plate_reads
(
    event_id        String,
    schema_version  UInt16,
    tenant          LowCardinality(String),
    gateway_id      LowCardinality(String),
    device_id       LowCardinality(String),
    seq             UInt64,
    captured_at     DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    district        LowCardinality(String),
    source_event_id String,
    registration    String,
    province        LowCardinality(String),
    plate_pseudonym FixedString(64),
    confidence      Float32,
    bbox            Array(Int32),
    watchlist_hit   Bool,
    ingested_at     DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (tenant, device_id, captured_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.face_matches
(
    event_id           String,
    schema_version     UInt16,
    tenant             LowCardinality(String),
    gateway_id         LowCardinality(String),
    device_id          LowCardinality(String),
    seq                UInt64,
    captured_at        DateTime64(3, 'UTC'),
    district           LowCardinality(String),
    source_event_id    String,
    watchlist_entry_id String,
    distance           Float32,
    bbox               Array(Int32),
    ingested_at        DateTime64(3, 'UTC'),
    kafka_partition    UInt16,
    kafka_offset       UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (tenant, device_id, captured_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    event_id        String,
    schema_version  UInt16,
    tenant          LowCardinality(String),
    gateway_id      LowCardinality(String),
    device_id       LowCardinality(String),
    seq             UInt64,
    captured_at     DateTime64(3, 'UTC'),
    district        LowCardinality(String),
    alert_type      LowCardinality(String),
    severity        LowCardinality(String),
    state           LowCardinality(String),
    message         String,
    value           Nullable(Float64),
    threshold       Nullable(Float64),
    source_event_id Nullable(String),
    ingested_at     DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(captured_at)
ORDER BY (tenant, alert_type, device_id, captured_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {db}.device_status
(
    event_id        String,
    schema_version  UInt16,
    tenant          LowCardinality(String),
    gateway_id      LowCardinality(String),
    device_id       LowCardinality(String),
    seq             UInt64,
    captured_at     DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    district        LowCardinality(String),
    state           LowCardinality(String),
    queue_depth     UInt32,
    fps             Float32,
    dropped         UInt64,
    spool_bytes     UInt64,
    gap_from_seq    Nullable(UInt64),
    gap_to_seq      Nullable(UInt64),
    detail          String,
    ingested_at     DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(captured_at)
ORDER BY (tenant, gateway_id, device_id, captured_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Frame metadata and the claim-check reference of the stored JPEG (never the image itself).
CREATE TABLE IF NOT EXISTS {db}.frame_index
(
    event_id        String,
    schema_version  UInt16,
    tenant          LowCardinality(String),
    gateway_id      LowCardinality(String),
    device_id       LowCardinality(String),
    seq             UInt64,
    captured_at     DateTime64(3, 'UTC'),
    district        LowCardinality(String),
    width           UInt16,
    height          UInt16,
    jpeg_bytes      UInt32,
    motion_score    Float32,
    keyframe        Bool,
    detections      UInt16,
    object_ref      String,
    sha256          FixedString(64),
    ingested_at     DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (tenant, device_id, captured_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- captured_at of a dead letter is its first_seen_at; gateway/device/seq are empty when unknown.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    event_id        String,
    schema_version  UInt16,
    tenant          LowCardinality(String),
    gateway_id      LowCardinality(String),
    device_id       LowCardinality(String),
    seq             UInt64,
    captured_at     DateTime64(3, 'UTC'),
    district        LowCardinality(String),
    stage           LowCardinality(String),
    reason          LowCardinality(String),
    detail          String,
    original_topic  LowCardinality(String),
    original_bytes  String CODEC(ZSTD(3)),
    headers         Map(String, String),
    first_seen_at   DateTime64(3, 'UTC'),
    ingested_at     DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(captured_at)
ORDER BY (tenant, stage, reason, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- The sink's write-ahead log of batch windows: which offset ranges it is about to insert. After a
-- crash between insert and commit, the restarted sink rebuilds exactly the logged window, so every
-- table block gets the same dedup token and ClickHouse drops the repeated insert.
CREATE TABLE IF NOT EXISTS {db}._sink_windows
(
    group_id     String,
    window_id    String,
    topic        String,
    partition    UInt32,
    first_offset UInt64,
    last_offset  UInt64,
    logged_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(logged_at)
ORDER BY (group_id, topic, partition, first_offset)
TTL toDateTime(logged_at) + INTERVAL 7 DAY;
