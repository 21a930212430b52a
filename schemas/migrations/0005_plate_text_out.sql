-- citystream 0005: no plate text in the analytics tables (PDPA minimisation, issue 16). PlateRead no
-- longer carries registration/province; plate_reads keeps only the keyed pseudonym, and the plate text
-- already stored goes with the columns. v_plate_reads is recreated because ClickHouse expanded its
-- SELECT * when 0002 created it. Plate watchlist alerts written before this named the plate in their
-- message: the message is rewritten (an alert names its watchlist entry from now on).
ALTER TABLE {db}.plate_reads DROP COLUMN IF EXISTS registration;
ALTER TABLE {db}.plate_reads DROP COLUMN IF EXISTS province;
CREATE OR REPLACE VIEW {db}.v_plate_reads AS SELECT * FROM {db}.plate_reads FINAL;
ALTER TABLE {db}.alerts UPDATE message = 'ทะเบียนในบัญชีเฝ้าระวัง / watchlisted plate (plate text removed by migration 0005)'
    WHERE alert_type = 'plate_watchlist' AND position(message, '(entry ') = 0;
