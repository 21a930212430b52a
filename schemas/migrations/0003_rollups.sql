-- citystream 0003: rollups analysts use, kept by materialized views at insert time.
-- The sink inserts with deduplicate_blocks_in_dependent_materialized_views=1, so a block dropped by
-- its dedup token is dropped for the rollups too. A duplicate that arrives in a different batch (e.g. a
-- bridge retry) is removed from v_* by FINAL but counted once more in a rollup: rollups are for
-- dashboards and trends; exact counts come from the v_* views.

CREATE TABLE IF NOT EXISTS {db}.sensor_1m
(
    tenant     LowCardinality(String),
    district   LowCardinality(String),
    metric     LowCardinality(String),
    device_id  LowCardinality(String),
    minute     DateTime('UTC'),
    min_value  SimpleAggregateFunction(min, Float64),
    max_value  SimpleAggregateFunction(max, Float64),
    avg_state  AggregateFunction(avg, Float64),
    readings   SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, metric, district, device_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_sensor_1m TO {db}.sensor_1m AS
SELECT tenant, district, metric, device_id, toStartOfMinute(captured_at) AS minute,
       min(value) AS min_value, max(value) AS max_value, avgState(value) AS avg_state, count() AS readings
FROM {db}.sensor_readings
GROUP BY tenant, district, metric, device_id, minute;

CREATE TABLE IF NOT EXISTS {db}.sensor_1h
(
    tenant     LowCardinality(String),
    district   LowCardinality(String),
    metric     LowCardinality(String),
    device_id  LowCardinality(String),
    hour       DateTime('UTC'),
    min_value  SimpleAggregateFunction(min, Float64),
    max_value  SimpleAggregateFunction(max, Float64),
    avg_state  AggregateFunction(avg, Float64),
    readings   SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, metric, district, device_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_sensor_1h TO {db}.sensor_1h AS
SELECT tenant, district, metric, device_id, toStartOfHour(captured_at) AS hour,
       min(value) AS min_value, max(value) AS max_value, avgState(value) AS avg_state, count() AS readings
FROM {db}.sensor_readings
GROUP BY tenant, district, metric, device_id, hour;

-- Vehicles per camera per hour: reads and distinct plate pseudonyms (no registration text).
CREATE TABLE IF NOT EXISTS {db}.vehicles_1h
(
    tenant         LowCardinality(String),
    district       LowCardinality(String),
    device_id      LowCardinality(String),
    hour           DateTime('UTC'),
    reads          SimpleAggregateFunction(sum, UInt64),
    vehicles_state AggregateFunction(uniq, FixedString(64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, district, device_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_vehicles_1h TO {db}.vehicles_1h AS
SELECT tenant, district, device_id, toStartOfHour(captured_at) AS hour,
       count() AS reads, uniqState(plate_pseudonym) AS vehicles_state
FROM {db}.plate_reads
GROUP BY tenant, district, device_id, hour;

-- Alerts raised per district per day.
CREATE TABLE IF NOT EXISTS {db}.alerts_1d
(
    tenant     LowCardinality(String),
    district   LowCardinality(String),
    day        Date,
    alert_type LowCardinality(String),
    severity   LowCardinality(String),
    raised     SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, district, day, alert_type, severity);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_alerts_1d TO {db}.alerts_1d AS
SELECT tenant, district, toDate(captured_at, 'UTC') AS day, alert_type, severity, countIf(state = 'raised') AS raised
FROM {db}.alerts
GROUP BY tenant, district, day, alert_type, severity;

-- Finalized rollups for analysts.
CREATE VIEW IF NOT EXISTS {db}.v_sensor_1m AS
SELECT tenant, district, metric, device_id, minute, min(min_value) AS min_value, max(max_value) AS max_value,
       avgMerge(avg_state) AS avg_value, sum(readings) AS readings
FROM {db}.sensor_1m GROUP BY tenant, district, metric, device_id, minute;

CREATE VIEW IF NOT EXISTS {db}.v_sensor_1h AS
SELECT tenant, district, metric, device_id, hour, min(min_value) AS min_value, max(max_value) AS max_value,
       avgMerge(avg_state) AS avg_value, sum(readings) AS readings
FROM {db}.sensor_1h GROUP BY tenant, district, metric, device_id, hour;

CREATE VIEW IF NOT EXISTS {db}.v_vehicles_1h AS
SELECT tenant, district, device_id, hour, sum(reads) AS reads, uniqMerge(vehicles_state) AS vehicles
FROM {db}.vehicles_1h GROUP BY tenant, district, device_id, hour;

CREATE VIEW IF NOT EXISTS {db}.v_alerts_1d AS
SELECT tenant, district, day, alert_type, severity, sum(raised) AS raised
FROM {db}.alerts_1d GROUP BY tenant, district, day, alert_type, severity;
