-- citystream 0007: the v_* views read their tables with their definer's rights (SQL SECURITY DEFINER; the
-- definer is the user that runs the migrations, the database owner), so a role granted SELECT on a view
-- needs no grant on the table behind it: the analyst role of 0008 reads v_plate_reads, never plate_reads.
-- A later migration that replaces one of these views must write `DEFINER = CURRENT_USER SQL SECURITY
-- DEFINER` in its CREATE OR REPLACE VIEW (tests/security/test_access.py checks every v_* view).
ALTER TABLE {db}.v_sensor_readings MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_plate_reads MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_face_matches MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_alerts MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_device_status MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_frame_index MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_dead_letters MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_sensor_1m MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_sensor_1h MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_vehicles_1h MODIFY SQL SECURITY DEFINER;
ALTER TABLE {db}.v_alerts_1d MODIFY SQL SECURITY DEFINER;
