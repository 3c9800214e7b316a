/**
 * Legal holds and erasure requests made at the appliance host's command line (`wardkeep
 * data-rights holds place|release`, `erasures request|cancel`) have no acting account, like the
 * host operator's invites (0020) and API tokens (0021): `placed_by`, `released_by`,
 * `requested_by` or `cancelled_by` NULL says so (the audit trail records `host_operator`). A
 * release is still told apart by `released_at`, so its pairing with `released_by` becomes
 * "no releaser without a release".
 */
export const sql = /* sql */ `
ALTER TABLE legal_holds ALTER COLUMN placed_by DROP NOT NULL;
DO $$
DECLARE c text;
BEGIN
  SELECT conname INTO c FROM pg_constraint
   WHERE conrelid = 'legal_holds'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%released_at IS NULL%released_by IS NULL%';
  IF c IS NOT NULL THEN EXECUTE format('ALTER TABLE legal_holds DROP CONSTRAINT %I', c); END IF;
END $$;
ALTER TABLE legal_holds ADD CONSTRAINT legal_holds_releaser_check CHECK (released_at IS NOT NULL OR released_by IS NULL);
ALTER TABLE deletion_requests ALTER COLUMN requested_by DROP NOT NULL;
`;
