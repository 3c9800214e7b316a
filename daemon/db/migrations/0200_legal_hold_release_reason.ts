/**
 * A patient's legal hold is released with a reason, like a tenant or record-class hold
 * (retention_holds.release_reason). The reason may name the matter, so it is encrypted under the
 * patient's data key like the placing reason (records' encrypted-column registry) and is
 * crypto-shredded with the patient. Holds released before this migration have none (NULL).
 */
export const sql = /* sql */ `
ALTER TABLE legal_holds ADD COLUMN release_reason_enc bytea;
`;
