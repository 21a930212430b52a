-- citystream 0008: ClickHouse roles (issue 16). requires: access management
-- Applied only where the migrating user may manage access (a ClickHouse server, user with
-- access_management). Embedded chDB cannot (no writable access storage: CREATE ROLE is refused), so
-- schemas/migrate.py skips this file there with a logged reason and tries again at the next run.
-- Per-tenant analyst roles and row policies are made from settings by `citystream migrate`
-- (schemas/migrate.py: tenant_policy_statements). Give users these roles; never grant raw tables to analysts.
CREATE ROLE IF NOT EXISTS citystream_ingest_writer;
CREATE ROLE IF NOT EXISTS citystream_analyst;
CREATE ROLE IF NOT EXISTS citystream_privacy_officer;
-- ingest writer: the sink's raw tables and insert windows, the rollup tables its materialized views fill,
-- audit entries (append only: no SELECT, ALTER or DROP on audit_log), and the migration check at its start.
GRANT SELECT, INSERT ON {db}.sensor_readings TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}.plate_reads TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}.face_matches TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}.alerts TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}.device_status TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}.frame_index TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}.dead_letters TO citystream_ingest_writer;
GRANT SELECT, INSERT ON {db}._sink_windows TO citystream_ingest_writer;
GRANT INSERT ON {db}.sensor_1m TO citystream_ingest_writer;
GRANT INSERT ON {db}.sensor_1h TO citystream_ingest_writer;
GRANT INSERT ON {db}.vehicles_1h TO citystream_ingest_writer;
GRANT INSERT ON {db}.alerts_1d TO citystream_ingest_writer;
GRANT INSERT ON {db}.audit_log TO citystream_ingest_writer;
GRANT SELECT ON {db}._migrations TO citystream_ingest_writer;
-- analyst: the analyst views only: plate pseudonyms, no plate text (0005), no faces (biometric, PDPA s.26),
-- no frames (v_frame_index), no dead letters (original input, images included), no audit log.
GRANT SELECT ON {db}.v_sensor_readings TO citystream_analyst;
GRANT SELECT ON {db}.v_plate_reads TO citystream_analyst;
GRANT SELECT ON {db}.v_alerts TO citystream_analyst;
GRANT SELECT ON {db}.v_device_status TO citystream_analyst;
GRANT SELECT ON {db}.v_sensor_1m TO citystream_analyst;
GRANT SELECT ON {db}.v_sensor_1h TO citystream_analyst;
GRANT SELECT ON {db}.v_vehicles_1h TO citystream_analyst;
GRANT SELECT ON {db}.v_alerts_1d TO citystream_analyst;
-- privacy officer: reads everything of the database (data-subject search, audit log), erases a plate's
-- records (ALTER DELETE on the linked tables), recounts vehicles_1h and appends audit entries. No ALTER,
-- TRUNCATE or DROP on audit_log.
GRANT SELECT ON {db}.* TO citystream_privacy_officer;
GRANT ALTER DELETE ON {db}.plate_reads TO citystream_privacy_officer;
GRANT ALTER DELETE ON {db}.alerts TO citystream_privacy_officer;
GRANT ALTER DELETE ON {db}.frame_index TO citystream_privacy_officer;
GRANT ALTER DELETE ON {db}.dead_letters TO citystream_privacy_officer;
GRANT ALTER DELETE, INSERT ON {db}.vehicles_1h TO citystream_privacy_officer;
GRANT INSERT ON {db}.audit_log TO citystream_privacy_officer;
