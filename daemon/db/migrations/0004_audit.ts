/**
 * Audit trail (DESIGN "Audit trail", docs/audit-format.md).
 *
 * - `audit_intake`: where a request's transaction writes its event (INSERT only for the app role),
 *   so the event commits or rolls back with the work.
 * - `audit_events`: the hash chain. Only the chainer (owner role) inserts, giving contiguous
 *   sequence numbers under the `audit_chain_head` row lock; nobody updates or deletes (trigger), the
 *   app role may only read. Range-partitioned by month of `recorded_at` so that retention drops a
 *   whole segment (partition) through `audit_drop_expired_segment`, which leaves an anchor.
 * - `audit_checkpoints`: Ed25519-signed chain heads, append-only.
 */
export const sql = /* sql */ `
CREATE FUNCTION audit_reject_change() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  -- The audit trail is evidence: 45 CFR 164.312(b) and ISO 27001 A.8.15 expect logs protected from
  -- tampering. Only a whole expired segment leaves, through audit_drop_expired_segment().
  RAISE EXCEPTION 'audit trail is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TABLE audit_intake (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id        uuid NOT NULL,
  occurred_at     timestamptz(3) NOT NULL,
  tenant_id       uuid,
  actor_user_id   text CHECK (length(actor_user_id) <= 200),
  actor_role      text CHECK (length(actor_role) <= 40),
  impersonator_id text CHECK (length(impersonator_id) <= 200),
  break_glass     boolean NOT NULL DEFAULT false,
  action          text NOT NULL CHECK (length(action) <= 100),
  resource_type   text NOT NULL CHECK (length(resource_type) <= 63),
  resource_id     text CHECK (length(resource_id) <= 200),
  patient_id      text CHECK (length(patient_id) <= 200),
  outcome         text NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
  source_ip       text CHECK (length(source_ip) <= 64),
  user_agent      text CHECK (length(user_agent) <= 512),
  request_id      text CHECK (length(request_id) <= 128),
  reason          text CHECK (length(reason) <= 500)
);
ALTER TABLE audit_intake ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_intake FORCE ROW LEVEL SECURITY;
-- A tenant's transaction may only write events for its own tenant (or appliance-level ones).
CREATE POLICY audit_intake_insert ON audit_intake FOR INSERT
  WITH CHECK (app_is_appliance_scope() OR tenant_id IS NULL OR tenant_id = app_tenant_id());
CREATE POLICY audit_intake_chainer_read ON audit_intake FOR SELECT USING (app_is_appliance_scope());
CREATE POLICY audit_intake_chainer_delete ON audit_intake FOR DELETE USING (app_is_appliance_scope());
-- INSERT only: a compromised app role cannot read pending events nor remove them before chaining.
GRANT INSERT ON audit_intake TO {{app_role}};

-- Each event is stored as its canonical bytes (docs/audit-format.md): the hash covers exactly the
-- stored text, so verification hashes what is there instead of rebuilding it column by column.
-- seq, recorded_at, tenant_id, actor_user_id and patient_id are copies for the primary key,
-- partitioning, row-level security and the auditors' indexes; verification checks that they
-- agree with the canonical text.
CREATE TABLE audit_events (
  seq           bigint NOT NULL CHECK (seq > 0),
  recorded_at   timestamptz(3) NOT NULL,
  tenant_id     uuid,
  actor_user_id text,
  patient_id    text,
  canonical     text NOT NULL,
  prev_hash     bytea NOT NULL CHECK (length(prev_hash) = 32),
  hash          bytea NOT NULL CHECK (length(hash) = 32),
  PRIMARY KEY (seq, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX audit_events_tenant_idx ON audit_events (tenant_id, seq);
CREATE INDEX audit_events_recorded_idx ON audit_events (recorded_at);
CREATE INDEX audit_events_patient_idx ON audit_events (patient_id, seq) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id, seq) WHERE actor_user_id IS NOT NULL;
-- Row triggers on a partitioned table are cloned to every partition; TRUNCATE triggers are not,
-- so audit_ensure_segment() adds one to each partition it creates.
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_events_read ON audit_events FOR SELECT
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id());
CREATE POLICY audit_events_chain ON audit_events FOR INSERT WITH CHECK (app_is_appliance_scope());
-- The app role reads; only the chainer (owner role) inserts.
GRANT SELECT ON audit_events TO {{app_role}};

-- One row: the last chained event. Its row lock is what serialises chainers across replicas.
CREATE TABLE audit_chain_head (
  id          boolean PRIMARY KEY DEFAULT true CHECK (id),
  seq         bigint NOT NULL,
  hash        bytea NOT NULL CHECK (length(hash) = 32),
  recorded_at timestamptz NOT NULL
);
INSERT INTO audit_chain_head (seq, hash, recorded_at) VALUES (0, decode(repeat('00', 32), 'hex'), '1970-01-01T00:00:00Z');
CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
GRANT SELECT ON audit_chain_head TO {{app_role}};

CREATE TABLE audit_checkpoints (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  seq        bigint NOT NULL CHECK (seq >= 0),
  head_hash  bytea NOT NULL CHECK (length(head_hash) = 32),
  signed_at  timestamptz NOT NULL,
  key_id     text NOT NULL CHECK (length(key_id) <= 100),
  public_key bytea NOT NULL CHECK (length(public_key) = 32),
  signature  bytea NOT NULL CHECK (length(signature) = 64),
  purpose    text NOT NULL CHECK (purpose IN ('periodic', 'export', 'retention', 'manual'))
);
CREATE INDEX audit_checkpoints_seq_idx ON audit_checkpoints (seq);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
-- Checkpoints are appliance-wide and signed; a forged row fails signature verification.
GRANT SELECT, INSERT ON audit_checkpoints TO {{app_role}};

-- What is left of a dropped segment: its last sequence number and hash, vouched for by a signed
-- checkpoint at that seq, so verification of the remaining chain starts from a known link.
CREATE TABLE audit_segment_anchors (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  segment        text NOT NULL UNIQUE,
  range_from     timestamptz NOT NULL,
  range_to       timestamptz NOT NULL,
  first_seq      bigint,
  last_seq       bigint,
  last_hash      bytea CHECK (length(last_hash) = 32),
  event_count    bigint NOT NULL,
  checkpoint_id  bigint REFERENCES audit_checkpoints (id),
  dropped_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER audit_segment_anchors_append_only BEFORE UPDATE OR DELETE ON audit_segment_anchors
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_segment_anchors_no_truncate BEFORE TRUNCATE ON audit_segment_anchors
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
GRANT SELECT ON audit_segment_anchors TO {{app_role}};

-- Evidence packs requested over the API: their progress, so every replica can answer for them.
CREATE TABLE audit_exports (
  id           text PRIMARY KEY CHECK (id ~ '^audit-[0-9TZ]+-[0-9a-f]{8}$'),
  tenant_id    uuid,
  requested_by text,
  range_from   timestamptz NOT NULL,
  range_to     timestamptz NOT NULL,
  formats      text[] NOT NULL,
  status       text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
  done_events  bigint NOT NULL DEFAULT 0,
  total_events bigint,
  manifest     jsonb,
  error        text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz
);
ALTER TABLE audit_exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_exports FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_exports_isolation ON audit_exports
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON audit_exports TO {{app_role}};

-- Creates the monthly segment holding ts (idempotent). Called by the chainer, as the owner role.
CREATE FUNCTION audit_ensure_segment(ts timestamptz) RETURNS text
  LANGUAGE plpgsql AS $$
DECLARE
  lo timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  hi timestamptz := (date_trunc('month', ts AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
  name text := 'audit_events_' || to_char(ts AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
  IF to_regclass(name) IS NULL THEN
    EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
    EXECUTE format('CREATE TRIGGER audit_segment_no_truncate BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()', name);
  END IF;
  RETURN name;
END $$;
REVOKE ALL ON FUNCTION audit_ensure_segment(timestamptz) FROM PUBLIC;

-- THE way audit events leave the database (docs/audit-format.md, "Retention"): drops the oldest
-- segment when it ended before now() - retain, only after a signed checkpoint exists at the
-- segment's last event, and records an anchor. Owner role only: the app role cannot execute it.
CREATE FUNCTION audit_drop_expired_segment(retain interval, checkpoint bigint) RETURNS text
  LANGUAGE plpgsql AS $$
DECLARE
  seg record;
  last_row record;
  first_seq_v bigint;
  count_v bigint;
  cp record;
BEGIN
  IF retain < interval '1 year' THEN
    RAISE EXCEPTION 'audit retention below one year is refused (%), see docs/audit-format.md', retain;
  END IF;
  PERFORM 1 FROM audit_chain_head FOR UPDATE;
  SELECT c.relname AS name,
         (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)'))[1]::timestamptz AS lo,
         (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)'))[2]::timestamptz AS hi
    INTO seg
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
   WHERE i.inhparent = 'audit_events'::regclass
   ORDER BY 2 LIMIT 1;
  IF seg IS NULL OR seg.hi > now() - retain THEN
    RETURN NULL;
  END IF;
  EXECUTE format('SELECT min(seq), count(*) FROM %I', seg.name) INTO first_seq_v, count_v;
  EXECUTE format('SELECT seq, hash FROM %I ORDER BY seq DESC LIMIT 1', seg.name) INTO last_row;
  IF count_v > 0 THEN
    SELECT * INTO cp FROM audit_checkpoints WHERE id = checkpoint;
    IF cp IS NULL OR cp.seq <> last_row.seq OR cp.head_hash <> last_row.hash THEN
      RAISE EXCEPTION 'audit segment % needs a signed checkpoint at seq % before it is dropped', seg.name, last_row.seq;
    END IF;
  END IF;
  INSERT INTO audit_segment_anchors (segment, range_from, range_to, first_seq, last_seq, last_hash, event_count, checkpoint_id)
  VALUES (seg.name, seg.lo, seg.hi, first_seq_v, last_row.seq, last_row.hash, count_v, CASE WHEN count_v > 0 THEN checkpoint END);
  EXECUTE format('ALTER TABLE audit_events DETACH PARTITION %I', seg.name);
  EXECUTE format('DROP TABLE %I', seg.name);
  RETURN seg.name;
END $$;
REVOKE ALL ON FUNCTION audit_drop_expired_segment(interval, bigint) FROM PUBLIC;
`;
