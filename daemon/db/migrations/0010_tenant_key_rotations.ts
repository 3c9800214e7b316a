/**
 * Tenant key rotation (docs/keys.md "Rotating a tenant's keys"): patient data lives under one
 * data key per patient, so rotating a tenant means a new version of every data key of that
 * tenant and re-encrypting what each covers. The run is persisted so that it resumes where it
 * stopped after a crash or a kill:
 *
 * - `keystore.tenant_rotations`: one row per run; `cursor` is the last key id given a new
 *   version (keys are taken in key id order, only those created before the run started),
 *   `keys_rotated_at` is set once every key has its new version, `completed_at` once nothing is
 *   left to re-encrypt. At most one open run per tenant.
 * - `keystore.rotations.tenant_rotation_id` links each key's own rotation (and its
 *   re-encryption progress, `items_done`) to the run.
 * - Re-encryption looks for old ciphertexts one patient at a time: the tables whose index did
 *   not start with (tenant_id, patient_id) get one.
 */
export const sql = /* sql */ `
CREATE TABLE keystore.tenant_rotations (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       uuid NOT NULL,
  started_at      timestamptz NOT NULL DEFAULT now(),
  keys_total      integer NOT NULL CHECK (keys_total >= 0),
  keys_rotated    integer NOT NULL DEFAULT 0 CHECK (keys_rotated >= 0),
  cursor          text,
  keys_rotated_at timestamptz,
  completed_at    timestamptz,
  CHECK (completed_at IS NULL OR keys_rotated_at IS NOT NULL)
);
CREATE UNIQUE INDEX tenant_rotations_open_idx ON keystore.tenant_rotations (tenant_id) WHERE completed_at IS NULL;
CREATE INDEX tenant_rotations_tenant_idx ON keystore.tenant_rotations (tenant_id, started_at DESC);
ALTER TABLE keystore.tenant_rotations ENABLE ROW LEVEL SECURITY;
ALTER TABLE keystore.tenant_rotations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rotations_isolation ON keystore.tenant_rotations
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON keystore.tenant_rotations TO {{app_role}};

ALTER TABLE keystore.rotations ADD COLUMN tenant_rotation_id bigint REFERENCES keystore.tenant_rotations (id);
CREATE INDEX rotations_tenant_rotation_idx ON keystore.rotations (tenant_rotation_id) WHERE tenant_rotation_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS note_versions_patient_idx ON note_versions (tenant_id, patient_id);
CREATE INDEX IF NOT EXISTS consent_revocations_patient_idx ON consent_revocations (tenant_id, patient_id);
CREATE INDEX IF NOT EXISTS legal_holds_all_patient_idx ON legal_holds (tenant_id, patient_id);
`;
