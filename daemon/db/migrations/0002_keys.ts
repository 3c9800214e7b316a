/**
 * The key store (docs/keys.md): wrapped keys live in their own schema, `keystore`, which data
 * snapshots exclude by name (daemon/keys/keystore.ts `SNAPSHOT_EXCLUDED_SCHEMAS`). That split is
 * what makes crypto-shredding survive a restore: an old data snapshot brings back ciphertexts,
 * never the keys that were destroyed since.
 *
 * Nothing here is usable without the unseal key: the KEK versions are AES-256-GCM-wrapped under
 * it, the data keys under a KEK version, and check values are HMACs (they reveal nothing).
 * Tables have no foreign keys into data tables on purpose: the key store and the data are
 * restored separately.
 */
export const sql = /* sql */ `
CREATE SCHEMA keystore;
REVOKE ALL ON SCHEMA keystore FROM PUBLIC;
GRANT USAGE ON SCHEMA keystore TO {{app_role}};

-- How this install's unseal key is obtained (one row). params holds only public values: argon2id
-- salt and costs, the Shamir threshold and split id, the HSM key label and the HSM-wrapped blob.
-- check_value = HMAC-SHA-256(unseal key, label): a wrong passphrase, share or key file is
-- detected before it is used for anything. generation counts rekeys.
CREATE TABLE keystore.seal (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  mode        text NOT NULL CHECK (mode IN ('keyfile', 'passphrase', 'shamir', 'pkcs11')),
  params      jsonb NOT NULL DEFAULT '{}'::jsonb,
  check_value bytea NOT NULL CHECK (length(check_value) = 32),
  generation  integer NOT NULL DEFAULT 1 CHECK (generation > 0),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON keystore.seal TO {{app_role}};

-- Root key-encryption key versions. wrapped: under the unseal key. wrapped_by_previous: under the
-- previous version, so a replica unsealed before a rekey can still follow a later rotation.
-- Exactly one version is active (new wraps); retiring versions are deleted once nothing uses them.
CREATE TABLE keystore.kek_versions (
  version             integer PRIMARY KEY CHECK (version > 0),
  wrapped             bytea NOT NULL,
  wrapped_by_previous bytea,
  check_value         bytea NOT NULL CHECK (length(check_value) = 32),
  state               text NOT NULL CHECK (state IN ('active', 'retiring')),
  created_at          timestamptz NOT NULL DEFAULT now(),
  retired_at          timestamptz
);
CREATE UNIQUE INDEX kek_versions_one_active ON keystore.kek_versions ((true)) WHERE state = 'active';
GRANT SELECT, INSERT, UPDATE, DELETE ON keystore.kek_versions TO {{app_role}};

-- Data keys: per tenant, per patient, a per-tenant blind-index key, the audit checkpoint
-- signing key and the appliance-internal key. key_id is what field ciphertext headers carry
-- ("tenant/<uuid>", "patient/<uuid>", ...): ids only, never PHI. One active version per key_id
-- takes new writes; retired versions stay readable (old snapshots and not-yet-re-encrypted rows).
CREATE TABLE keystore.data_keys (
  key_id         text NOT NULL CHECK (key_id ~ '^[a-z-]+(/[0-9a-f-]{36})?$'),
  version        integer NOT NULL CHECK (version > 0),
  kind           text NOT NULL CHECK (kind IN ('tenant', 'patient', 'index', 'audit-signing', 'appliance-internal')),
  tenant_id      uuid,
  patient_id     uuid,
  wrapped        bytea NOT NULL,
  kek_version    integer NOT NULL REFERENCES keystore.kek_versions (version),
  public_key     bytea,
  state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired')),
  nonce_count    bigint NOT NULL DEFAULT 0 CHECK (nonce_count >= 0),
  created_at     timestamptz NOT NULL DEFAULT now(),
  retired_at     timestamptz,
  PRIMARY KEY (key_id, version),
  CHECK ((kind IN ('tenant', 'patient', 'index')) = (tenant_id IS NOT NULL)),
  CHECK ((kind = 'patient') = (patient_id IS NOT NULL))
);
CREATE UNIQUE INDEX data_keys_one_active ON keystore.data_keys (key_id) WHERE state = 'active';
CREATE INDEX data_keys_tenant_idx ON keystore.data_keys (tenant_id);
CREATE INDEX data_keys_kek_idx ON keystore.data_keys (kek_version);
ALTER TABLE keystore.data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE keystore.data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY data_keys_isolation ON keystore.data_keys
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON keystore.data_keys TO {{app_role}};

-- Rotations and their progress (what status reports; the maintenance loop resumes open ones).
CREATE TABLE keystore.rotations (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  target        text NOT NULL CHECK (target IN ('kek', 'data-key')),
  key_id        text,
  tenant_id     uuid,
  from_version  integer NOT NULL,
  to_version    integer NOT NULL,
  reason        text NOT NULL CHECK (reason IN ('operator', 'nonce-budget')),
  started_at    timestamptz NOT NULL DEFAULT now(),
  completed_at  timestamptz,
  items_done    bigint NOT NULL DEFAULT 0,
  CHECK ((target = 'data-key') = (key_id IS NOT NULL))
);
CREATE INDEX rotations_open_idx ON keystore.rotations (target) WHERE completed_at IS NULL;
ALTER TABLE keystore.rotations ENABLE ROW LEVEL SECURITY;
ALTER TABLE keystore.rotations FORCE ROW LEVEL SECURITY;
CREATE POLICY rotations_isolation ON keystore.rotations
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON keystore.rotations TO {{app_role}};

-- Crypto-shredding: a deleted patient or tenant waits out the grace period here (cancellable),
-- then its data keys are deleted and the subject is recorded, ids only, in keystore.shredded
-- for ever, so a restore can re-apply the destruction.
CREATE TABLE keystore.shred_schedule (
  subject       text PRIMARY KEY,
  kind          text NOT NULL CHECK (kind IN ('tenant', 'patient')),
  tenant_id     uuid NOT NULL,
  patient_id    uuid,
  scheduled_at  timestamptz NOT NULL,
  destroy_after timestamptz NOT NULL,
  CHECK ((kind = 'patient') = (patient_id IS NOT NULL))
);
CREATE INDEX shred_schedule_due_idx ON keystore.shred_schedule (destroy_after);
CREATE TABLE keystore.shredded (
  subject       text PRIMARY KEY,
  kind          text NOT NULL CHECK (kind IN ('tenant', 'patient')),
  tenant_id     uuid NOT NULL,
  patient_id    uuid,
  scheduled_at  timestamptz NOT NULL,
  destroyed_at  timestamptz NOT NULL,
  key_versions  integer NOT NULL DEFAULT 0
);
CREATE INDEX shredded_tenant_idx ON keystore.shredded (tenant_id);
ALTER TABLE keystore.shred_schedule ENABLE ROW LEVEL SECURITY;
ALTER TABLE keystore.shred_schedule FORCE ROW LEVEL SECURITY;
CREATE POLICY shred_schedule_isolation ON keystore.shred_schedule
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
ALTER TABLE keystore.shredded ENABLE ROW LEVEL SECURITY;
ALTER TABLE keystore.shredded FORCE ROW LEVEL SECURITY;
CREATE POLICY shredded_isolation ON keystore.shredded
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope());
GRANT SELECT, INSERT, DELETE ON keystore.shred_schedule TO {{app_role}};
GRANT SELECT, INSERT ON keystore.shredded TO {{app_role}};

-- Recovery key pair (X25519). The public half wraps snapshot keys; the private half is kept
-- wrapped under the KEK only until the recovery kit is written, then wrapped_private is cleared:
-- the appliance can hand it out once.
CREATE TABLE keystore.recovery_keys (
  id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  public_key       bytea NOT NULL CHECK (length(public_key) = 32),
  wrapped_private  bytea,
  kek_version      integer REFERENCES keystore.kek_versions (version),
  state            text NOT NULL CHECK (state IN ('active', 'retired')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  issued_at        timestamptz,
  issued_shares    integer,
  issued_threshold integer,
  retired_at       timestamptz,
  CHECK ((wrapped_private IS NULL) = (kek_version IS NULL))
);
CREATE UNIQUE INDEX recovery_keys_one_active ON keystore.recovery_keys ((true)) WHERE state = 'active';
GRANT SELECT, INSERT, UPDATE ON keystore.recovery_keys TO {{app_role}};
`;
