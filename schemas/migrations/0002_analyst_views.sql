-- citystream 0002: analyst views that hide duplicates (FINAL collapses rows sharing the sorting key,
-- which includes event_id). Analysts and dashboards query v_<table>, never the raw tables.
CREATE VIEW IF NOT EXISTS {db}.v_sensor_readings AS SELECT * FROM {db}.sensor_readings FINAL;
CREATE VIEW IF NOT EXISTS {db}.v_plate_reads AS SELECT * FROM {db}.plate_reads FINAL;
CREATE VIEW IF NOT EXISTS {db}.v_face_matches AS SELECT * FROM {db}.face_matches FINAL;
CREATE VIEW IF NOT EXISTS {db}.v_alerts AS SELECT * FROM {db}.alerts FINAL;
CREATE VIEW IF NOT EXISTS {db}.v_device_status AS SELECT * FROM {db}.device_status FINAL;
CREATE VIEW IF NOT EXISTS {db}.v_frame_index AS SELECT * FROM {db}.frame_index FINAL;
CREATE VIEW IF NOT EXISTS {db}.v_dead_letters AS SELECT * FROM {db}.dead_letters FINAL;
