/**
 * Records (PHI): patients, appointments, clinical notes and their versions, consents and their
 * revocations, attachment metadata, legal holds and deletion requests (docs/records.md).
 *
 * Every PHI value sits in a `*_enc` bytea column as field ciphertext (daemon/keys/field-cipher.ts)
 * under the patient's data key, bound to tenant/table/column/row id; the columns are registered in
 * daemon/records/columns.ts so re-encryption after a key rotation finds them. Identifiers used for
 * lookups (MRN, email) also have a blind index (HMAC under the tenant's index key).
 *
 * Every table: ENABLE + FORCE ROW LEVEL SECURITY on app_tenant_id() / app_is_appliance_scope().
 * Cross-table references carry the tenant id in a composite foreign key, so a row can never point
 * at another tenant's patient even if a service forgot a filter.
 */
export const sql = /* sql */ `
-- A purge keeps the patient row as a tombstone (status 'purged', every PHI column NULL) so the ids
-- in the audit trail, break-glass history and notifications keep pointing at something.
CREATE TABLE patients (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'purged')),
  name_enc      bytea,
  birth_date_enc bytea,
  mrn_enc       bytea,
  phone_enc     bytea,
  email_enc     bytea,
  address_enc   bytea,
  mrn_bidx      text CHECK (mrn_bidx ~ '^[0-9a-f]{64}$'),
  email_bidx    text CHECK (email_bidx ~ '^[0-9a-f]{64}$'),
  version       integer NOT NULL DEFAULT 1 CHECK (version > 0),
  created_at    timestamptz NOT NULL,
  created_by    uuid REFERENCES users (id),
  updated_at    timestamptz NOT NULL,
  updated_by    uuid REFERENCES users (id),
  purged_at     timestamptz,
  UNIQUE (tenant_id, id),
  CHECK (status <> 'active' OR name_enc IS NOT NULL),
  CHECK (status <> 'purged' OR (name_enc IS NULL AND birth_date_enc IS NULL AND mrn_enc IS NULL AND phone_enc IS NULL
                                AND email_enc IS NULL AND address_enc IS NULL AND mrn_bidx IS NULL AND email_bidx IS NULL
                                AND purged_at IS NOT NULL))
);
-- An MRN names one patient per tenant.
CREATE UNIQUE INDEX patients_mrn_key ON patients (tenant_id, mrn_bidx) WHERE mrn_bidx IS NOT NULL;
CREATE INDEX patients_email_idx ON patients (tenant_id, email_bidx) WHERE email_bidx IS NOT NULL;
CREATE INDEX patients_page_idx ON patients (tenant_id, created_at, id);
ALTER TABLE patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE patients FORCE ROW LEVEL SECURITY;
CREATE POLICY patients_isolation ON patients
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
-- No DELETE: erasure is a purge to a tombstone plus crypto-shredding.
GRANT SELECT, INSERT, UPDATE ON patients TO {{app_role}};

-- The foreign keys the identity capability left open (migration 0003).
ALTER TABLE care_team_assignments ADD CONSTRAINT care_team_assignments_patient_fk
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
ALTER TABLE break_glass_grants ADD CONSTRAINT break_glass_grants_patient_fk
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
ALTER TABLE admin_notifications ADD CONSTRAINT admin_notifications_patient_fk
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);

-- History tables (note versions, consents, revocations) are never rewritten: an UPDATE may only
-- replace ciphertext columns (background re-encryption after a key rotation writes the same
-- plaintext under the new key version), and a DELETE happens only inside a purge transaction,
-- which names the patient (or tenant) it purges in wardkeep.purge_patient / wardkeep.purge_tenant.
-- Defence in depth against a bug in a service, not against a compromised app role.
CREATE FUNCTION records_history_guard() RETURNS trigger
  LANGUAGE plpgsql AS $$
DECLARE
  old_plain jsonb;
  new_plain jsonb;
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF coalesce(current_setting('wardkeep.purge_patient', true), '') = OLD.patient_id::text
       OR coalesce(current_setting('wardkeep.purge_tenant', true), '') = OLD.tenant_id::text THEN
      RETURN OLD;
    END IF;
    RAISE EXCEPTION 'records history is append-only: DELETE on % outside a purge', TG_TABLE_NAME
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) INTO old_plain FROM jsonb_each(to_jsonb(OLD)) WHERE key NOT LIKE '%\\_enc';
  SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) INTO new_plain FROM jsonb_each(to_jsonb(NEW)) WHERE key NOT LIKE '%\\_enc';
  IF old_plain IS DISTINCT FROM new_plain THEN
    RAISE EXCEPTION 'records history is append-only: UPDATE on % may only re-encrypt', TG_TABLE_NAME
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;

-- Schedule ---------------------------------------------------------------------------------------
-- Time, patient and practitioner only: no clinical content, so front desk may see it.
CREATE TABLE appointments (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id       uuid NOT NULL REFERENCES tenants (id),
  patient_id      uuid NOT NULL,
  practitioner_id uuid NOT NULL REFERENCES users (id),
  starts_at       timestamptz NOT NULL,
  ends_at         timestamptz NOT NULL,
  status          text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'arrived', 'completed', 'cancelled', 'no_show')),
  version         integer NOT NULL DEFAULT 1 CHECK (version > 0),
  created_at      timestamptz NOT NULL,
  created_by      uuid REFERENCES users (id),
  updated_at      timestamptz NOT NULL,
  updated_by      uuid REFERENCES users (id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  CHECK (ends_at > starts_at AND ends_at - starts_at <= interval '24 hours')
);
CREATE INDEX appointments_page_idx ON appointments (tenant_id, starts_at, id);
CREATE INDEX appointments_practitioner_idx ON appointments (tenant_id, practitioner_id, starts_at);
CREATE INDEX appointments_patient_idx ON appointments (tenant_id, patient_id);
ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointments FORCE ROW LEVEL SECURITY;
CREATE POLICY appointments_isolation ON appointments
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON appointments TO {{app_role}};

-- Clinical notes and transcriptions --------------------------------------------------------------
CREATE TABLE notes (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid NOT NULL REFERENCES tenants (id),
  patient_id       uuid NOT NULL,
  kind             text NOT NULL CHECK (kind IN ('note', 'transcription')),
  -- draft: editable; signed: the current version is signed off; amended: a signed note with a
  -- later, not yet signed amendment (the signed version stays as it was).
  status           text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'signed', 'amended')),
  current_version  integer NOT NULL DEFAULT 1 CHECK (current_version > 0),
  signed_version   integer,
  signed_by        uuid REFERENCES users (id),
  signed_at        timestamptz,
  source_attachment_id uuid,
  -- Row version for ETags: moves on every edit, amendment and sign-off.
  version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
  created_at       timestamptz NOT NULL,
  created_by       uuid NOT NULL REFERENCES users (id),
  updated_at       timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  UNIQUE (tenant_id, id),
  CHECK ((status = 'draft') = (signed_version IS NULL)),
  CHECK (signed_version IS NULL OR (signed_by IS NOT NULL AND signed_at IS NOT NULL AND signed_version <= current_version))
);
CREATE INDEX notes_patient_idx ON notes (tenant_id, patient_id, created_at, id);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_isolation ON notes
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {{app_role}};

-- Every version of every note, the original included: an edit or amendment adds a row.
CREATE TABLE note_versions (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants (id),
  patient_id  uuid NOT NULL,
  note_id     uuid NOT NULL,
  version     integer NOT NULL CHECK (version > 0),
  change      text NOT NULL CHECK (change IN ('original', 'edit', 'amendment')),
  body_enc    bytea NOT NULL,
  reason_enc  bytea,
  created_at  timestamptz NOT NULL,
  created_by  uuid NOT NULL REFERENCES users (id),
  FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  UNIQUE (note_id, version),
  -- An amendment of a signed note always says why.
  CHECK (change <> 'amendment' OR reason_enc IS NOT NULL)
);
ALTER TABLE note_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE note_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY note_versions_isolation ON note_versions
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON note_versions TO {{app_role}};
CREATE TRIGGER note_versions_history BEFORE UPDATE OR DELETE ON note_versions
  FOR EACH ROW EXECUTE FUNCTION records_history_guard();

-- Consents ---------------------------------------------------------------------------------------
-- A grant is a row that never changes; a revocation is a separate event. "In force at T" is
-- answered from these two tables alone, so any past moment can be asked about too.
CREATE TABLE consents (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  patient_id    uuid NOT NULL,
  consent_type  text NOT NULL CHECK (consent_type ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  text_version  text NOT NULL CHECK (text_version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
  scope_enc     bytea,
  method        text NOT NULL CHECK (method IN ('signature', 'attestation')),
  evidence_enc  bytea NOT NULL,
  granted_at    timestamptz NOT NULL,
  granted_by    uuid NOT NULL REFERENCES users (id),
  expires_at    timestamptz,
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  UNIQUE (tenant_id, id),
  CHECK (expires_at IS NULL OR expires_at > granted_at)
);
CREATE INDEX consents_patient_idx ON consents (tenant_id, patient_id, consent_type, granted_at);
ALTER TABLE consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE consents FORCE ROW LEVEL SECURITY;
CREATE POLICY consents_isolation ON consents
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON consents TO {{app_role}};
CREATE TRIGGER consents_history BEFORE UPDATE OR DELETE ON consents
  FOR EACH ROW EXECUTE FUNCTION records_history_guard();

CREATE TABLE consent_revocations (
  consent_id    uuid PRIMARY KEY,
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  patient_id    uuid NOT NULL,
  revoked_at    timestamptz NOT NULL,
  revoked_by    uuid NOT NULL REFERENCES users (id),
  method        text NOT NULL CHECK (method IN ('signature', 'attestation')),
  evidence_enc  bytea NOT NULL,
  reason_enc    bytea,
  FOREIGN KEY (tenant_id, consent_id) REFERENCES consents (tenant_id, id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id)
);
ALTER TABLE consent_revocations ENABLE ROW LEVEL SECURITY;
ALTER TABLE consent_revocations FORCE ROW LEVEL SECURITY;
CREATE POLICY consent_revocations_isolation ON consent_revocations
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON consent_revocations TO {{app_role}};
CREATE TRIGGER consent_revocations_history BEFORE UPDATE OR DELETE ON consent_revocations
  FOR EACH ROW EXECUTE FUNCTION records_history_guard();

-- Attachments ------------------------------------------------------------------------------------
-- The bytes live in files under records.attachmentsDir, encrypted in authenticated segments under
-- a random per-file key; file_key_enc is that key as field ciphertext under the patient's data
-- key (so rotation re-wraps it and crypto-shredding the patient makes every file unreadable).
CREATE TABLE attachments (
  id               uuid PRIMARY KEY,
  tenant_id        uuid NOT NULL REFERENCES tenants (id),
  patient_id       uuid NOT NULL,
  kind             text NOT NULL CHECK (kind IN ('audio', 'document', 'image', 'other')),
  media_type       text NOT NULL CHECK (length(media_type) <= 127 AND media_type ~ '^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$'),
  filename_enc     bytea,
  file_key_enc     bytea NOT NULL,
  plain_sha256_enc bytea NOT NULL,
  size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
  stored_bytes     bigint NOT NULL CHECK (stored_bytes > 0),
  -- Of the stored (encrypted) file: checkable without any key, e.g. by a backup verification.
  cipher_sha256    bytea NOT NULL CHECK (length(cipher_sha256) = 32),
  storage_path     text NOT NULL CHECK (storage_path ~ '^[0-9a-f-]{36}/[0-9a-f-]{36}/[0-9a-f-]{36}\\.wka$'),
  created_at       timestamptz NOT NULL,
  created_by       uuid NOT NULL REFERENCES users (id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  UNIQUE (tenant_id, id)
);
CREATE INDEX attachments_patient_idx ON attachments (tenant_id, patient_id, created_at, id);
ALTER TABLE attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE attachments FORCE ROW LEVEL SECURITY;
CREATE POLICY attachments_isolation ON attachments
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON attachments TO {{app_role}};
ALTER TABLE notes ADD CONSTRAINT notes_source_attachment_fk
  FOREIGN KEY (tenant_id, source_attachment_id) REFERENCES attachments (tenant_id, id) ON DELETE SET NULL (source_attachment_id);

-- Legal holds and deletion requests --------------------------------------------------------------
CREATE TABLE legal_holds (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    uuid NOT NULL REFERENCES tenants (id),
  patient_id   uuid NOT NULL,
  reason_enc   bytea NOT NULL,
  placed_at    timestamptz NOT NULL,
  placed_by    uuid NOT NULL REFERENCES users (id),
  released_at  timestamptz,
  released_by  uuid REFERENCES users (id),
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  CHECK ((released_at IS NULL) = (released_by IS NULL))
);
CREATE INDEX legal_holds_patient_idx ON legal_holds (tenant_id, patient_id) WHERE released_at IS NULL;
ALTER TABLE legal_holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE legal_holds FORCE ROW LEVEL SECURITY;
CREATE POLICY legal_holds_isolation ON legal_holds
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON legal_holds TO {{app_role}};

CREATE TABLE deletion_requests (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  subject       text NOT NULL CHECK (subject IN ('patient', 'tenant')),
  patient_id    uuid,
  status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'cancelled', 'purged')),
  requested_at  timestamptz NOT NULL,
  requested_by  uuid NOT NULL REFERENCES users (id),
  purge_after   timestamptz NOT NULL,
  cancelled_at  timestamptz,
  cancelled_by  uuid REFERENCES users (id),
  purged_at     timestamptz,
  -- Set while a purge is due but a legal hold blocks it (audited once, when it starts blocking).
  blocked_since timestamptz,
  FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
  CHECK ((subject = 'patient') = (patient_id IS NOT NULL)),
  CHECK (purge_after > requested_at),
  CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
  CHECK ((status = 'purged') = (purged_at IS NOT NULL))
);
-- One pending request per patient, and one per tenant.
CREATE UNIQUE INDEX deletion_requests_pending_patient ON deletion_requests (tenant_id, patient_id) WHERE status = 'pending' AND subject = 'patient';
CREATE UNIQUE INDEX deletion_requests_pending_tenant ON deletion_requests (tenant_id) WHERE status = 'pending' AND subject = 'tenant';
CREATE INDEX deletion_requests_due_idx ON deletion_requests (purge_after) WHERE status = 'pending';
ALTER TABLE deletion_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE deletion_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY deletion_requests_isolation ON deletion_requests
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON deletion_requests TO {{app_role}};
`;
