/**
 * The retention register's remaining classes and triggers (docs/retention.md).
 *
 * - Record classes `consent`, `patient`, `support_request`, `export_file` and `audit_event`
 *   beside the first six; triggers `last_encounter`, `discharge` and `age_of_majority` beside
 *   `creation` and `expiry`.
 * - `retention_shreds`: a patient the purge reduced to its tombstone (nothing of theirs left),
 *   whose data keys were scheduled for crypto-shredding after keys.shredGraceDays; the run that
 *   saw the keys destroyed is recorded in the same transaction as its count and audit event, so
 *   a killed purge neither loses nor double-counts a shredding.
 * - `retention_encounters`: the end of a patient's latest encounter (an arrived or completed
 *   appointment) that a purge destroyed, so the trigger "last encounter" still counts from it
 *   once the appointment itself is gone.
 * - The purge may delete a support request that has ended (and that no session still names) and
 *   a tenant's finished evidence pack.
 */
export const sql = /* sql */ `
ALTER TABLE retention_rules DROP CONSTRAINT retention_rules_record_class_check;
ALTER TABLE retention_rules ADD CONSTRAINT retention_rules_record_class_check CHECK (record_class IN
  ('note', 'audio', 'attachment', 'appointment', 'consent', 'patient', 'session', 'invite', 'support_request', 'export_file', 'audit_event'));
ALTER TABLE retention_rules DROP CONSTRAINT retention_rules_trigger_check;
ALTER TABLE retention_rules ADD CONSTRAINT retention_rules_trigger_check CHECK (trigger IN
  ('creation', 'expiry', 'last_encounter', 'discharge', 'age_of_majority'));
ALTER TABLE retention_holds DROP CONSTRAINT retention_holds_record_class_check;
ALTER TABLE retention_holds ADD CONSTRAINT retention_holds_record_class_check CHECK (record_class IN
  ('note', 'audio', 'attachment', 'appointment', 'consent', 'patient', 'session', 'invite', 'support_request', 'export_file', 'audit_event'));

CREATE TABLE retention_shreds (
  tenant_id       uuid NOT NULL REFERENCES tenants (id),
  patient_id      uuid NOT NULL,
  run_id          uuid NOT NULL REFERENCES retention_runs (id),
  scheduled_at    timestamptz NOT NULL,
  destroy_after   timestamptz NOT NULL,
  shredded_run_id uuid REFERENCES retention_runs (id),
  shredded_at     timestamptz,
  PRIMARY KEY (tenant_id, patient_id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  CHECK ((shredded_run_id IS NULL) = (shredded_at IS NULL))
);
CREATE INDEX retention_shreds_due_idx ON retention_shreds (tenant_id, destroy_after) WHERE shredded_run_id IS NULL;
ALTER TABLE retention_shreds ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_shreds FORCE ROW LEVEL SECURITY;
CREATE POLICY retention_shreds_isolation ON retention_shreds
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON retention_shreds TO {{app_role}};

CREATE TABLE retention_encounters (
  tenant_id         uuid NOT NULL REFERENCES tenants (id),
  patient_id        uuid NOT NULL,
  last_encounter_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, patient_id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id)
);
ALTER TABLE retention_encounters ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_encounters FORCE ROW LEVEL SECURITY;
CREATE POLICY retention_encounters_isolation ON retention_encounters
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON retention_encounters TO {{app_role}};

GRANT DELETE ON support_requests, audit_exports TO {{app_role}};
CREATE INDEX appointments_encounter_idx ON appointments (tenant_id, patient_id, ends_at) WHERE status IN ('arrived', 'completed');
CREATE INDEX consents_retention_idx ON consents (tenant_id, granted_at, id);
`;
