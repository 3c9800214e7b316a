/** The records capability's public face: what the HTTP layer needs besides records' routers. */
export { rejectInvalidUtf8 } from "./http.js";
/** Removes an attachment's encrypted file (the retention purge, after its row is gone). */
export { removeStored as removeAttachmentFile } from "./attachments/store.js";
/** The retention register's patient class: a patient with nothing left becomes the erasure purge's tombstone. */
export { purgePatientRows as reducePatientToTombstone } from "./data-rights/deletion.js";
/** The retention register's trigger "age of majority": ids of patients born before a date (birth dates decrypted in records only). */
export { patientsBornBefore } from "./patients/service.js";
/** Patients' names beside their ids on the Audit page (only for roles that may read them; audited). */
export { readPatientNames } from "./patients/names.js";
/** Data rights for the CLI (`wardkeep data-rights`): erasure requests, patient holds, one patient's export. */
export { cancelDeletion, listDeletionRequests, requestPatientDeletion, requestTenantDeletion } from "./data-rights/deletion.js";
export { listLegalHolds, placeLegalHold, releaseLegalHold } from "./data-rights/legal-holds.js";
export { streamExport } from "./data-rights/export.js";
export { deletionListQuery, legalHoldPlace, legalHoldRelease, type DeletionRequestRes, type LegalHoldRes } from "./data-rights/schema.js";
