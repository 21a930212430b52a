-- citystream 0004: let the rollup tables drop a repeated block too. A block the sink re-inserts with the
-- same insert_deduplication_token is dropped by the raw table, but it is still pushed through the
-- materialized views; with deduplicate_blocks_in_dependent_materialized_views=1 the target table drops it
-- only when it has its own non_replicated_deduplication_window (verified on chDB 26.9: without it, a
-- replayed window was counted twice in sensor_1m).
ALTER TABLE {db}.sensor_1m MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.sensor_1h MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.vehicles_1h MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.alerts_1d MODIFY SETTING non_replicated_deduplication_window = 10000;
