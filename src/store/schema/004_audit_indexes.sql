-- 004: the audit log's secondary indexes cover begin records only.
-- GET /v1/audit filters begin records (ref_seq IS NULL) by key, label and
-- time, and finds each one's completion through audit_ref; no query looks a
-- completion up by key, label or time. Indexing completions there cost
-- three B-tree inserts per proxied request on the writer for nothing.
-- (Export and verify walk the table in seq order and use no index.)
DROP INDEX audit_key;
DROP INDEX audit_label;
DROP INDEX audit_ts;
CREATE INDEX audit_key ON audit (key_id, seq) WHERE ref_seq IS NULL;
CREATE INDEX audit_label ON audit (label, seq) WHERE ref_seq IS NULL;
CREATE INDEX audit_ts ON audit (ts_ms) WHERE ref_seq IS NULL;
