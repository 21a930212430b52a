-- citystream 0006: the audit log of personal-data processing (PDPA record of processing, issue 16): who did
-- what, when, for which tenant and subject, with the reason and legal basis. Append-only:
-- - plain MergeTree (no Replacing/Collapsing engine that could fold a row away), and no TTL unless
--   retention.tables.audit_log is set;
-- - the code has no update or delete path for it (citystream.audit only inserts; the privacy erasure never
--   touches it; the read-only query path refuses writes);
-- - on a ClickHouse server, grant INSERT and SELECT on audit_log only (no ALTER UPDATE/DELETE, TRUNCATE or
--   DROP) to every role but the database owner; see docs/PRIVACY.md.
-- The subject of a plate request is its keyed pseudonym, never the plate text. details is a JSON object.
CREATE TABLE IF NOT EXISTS {db}.audit_log
(
    at          DateTime64(3, 'UTC'),
    actor       LowCardinality(String),
    action      LowCardinality(String),
    tenant      LowCardinality(String),
    subject     String,
    reason      String,
    legal_basis String,
    details     String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, action);
