/**
 * The retention register (daemon/retention/, docs/retention.md).
 *
 * `retention_rules`: a tenant's rule per record class (trigger, period in days, legal basis and
 * the legal minimum the tenant entered); a class without a row uses the default from config.
 * `retention_holds`: holds on a whole tenant or one record class of it (per-patient holds are the
 * records capability's `legal_holds`); a record under any open hold is never purged.
 * `retention_runs`: one row per purge run and tenant, with counts and id ranges per class kept up
 * to date batch by batch in the batch's own transaction (so a killed run resumes without losing or
 * double-counting anything), and the signed disposition certificate once it finishes.
 */
export const sql = `
CREATE TABLE retention_rules (
  tenant_id          uuid NOT NULL REFERENCES tenants (id),
  record_class       text NOT NULL CHECK (record_class IN ('note', 'audio', 'attachment', 'appointment', 'session', 'invite')),
  trigger            text NOT NULL CHECK (trigger IN ('creation', 'expiry')),
  period_days        integer NOT NULL CHECK (period_days > 0 AND period_days <= 36500),
  legal_basis        text CHECK (length(legal_basis) <= 500),
  legal_minimum_days integer CHECK (legal_minimum_days > 0 AND legal_minimum_days <= 36500),
  updated_at         timestamptz NOT NULL,
  updated_by         uuid REFERENCES users (id),
  PRIMARY KEY (tenant_id, record_class),
  CHECK (legal_minimum_days IS NULL OR period_days >= legal_minimum_days)
);
ALTER TABLE retention_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY retention_rules_isolation ON retention_rules
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON retention_rules TO {{app_role}};

CREATE TABLE retention_holds (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  -- NULL: every class of the tenant.
  record_class text CHECK (record_class IN ('note', 'audio', 'attachment', 'appointment', 'session', 'invite')),
  reason       text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  placed_at    timestamptz NOT NULL,
  placed_by    uuid REFERENCES users (id),
  released_at  timestamptz,
  released_by  uuid REFERENCES users (id),
  release_reason text CHECK (length(release_reason) <= 500),
  CHECK ((released_at IS NULL) = (release_reason IS NULL))
);
CREATE INDEX retention_holds_open_idx ON retention_holds (tenant_id) WHERE released_at IS NULL;
ALTER TABLE retention_holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_holds FORCE ROW LEVEL SECURITY;
CREATE POLICY retention_holds_isolation ON retention_holds
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON retention_holds TO {{app_role}};

CREATE TABLE retention_runs (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  job_run_id   bigint,
  status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz,
  -- The rules the run applied: class -> {trigger, periodDays, cutoff, legalBasis}.
  rules        jsonb NOT NULL,
  -- class -> {count, batches, firstId, lastId}; updated in each batch's transaction.
  counts       jsonb NOT NULL DEFAULT '{}'::jsonb,
  certificate  text,
  signature    bytea,
  key_id       text,
  public_key   bytea,
  CHECK ((status = 'finished') = (finished_at IS NOT NULL))
);
CREATE INDEX retention_runs_tenant_idx ON retention_runs (tenant_id, started_at DESC);
ALTER TABLE retention_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY retention_runs_isolation ON retention_runs
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON retention_runs TO {{app_role}};

-- The purge removes expired sessions and invites of a tenant past their retention.
GRANT DELETE ON sessions, invites TO {{app_role}};
CREATE INDEX notes_retention_idx ON notes (tenant_id, created_at, id);
CREATE INDEX attachments_retention_idx ON attachments (tenant_id, kind, created_at, id);
`;
