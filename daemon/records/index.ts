/** The records capability's public face: what the HTTP layer needs besides records' routers. */
export { rejectInvalidUtf8 } from "./http.js";
/** Removes an attachment's encrypted file (the retention purge, after its row is gone). */
export { removeStored as removeAttachmentFile } from "./attachments/store.js";
/** Patients' names beside their ids on the Audit page (only for roles that may read them; audited). */
export { readPatientNames } from "./patients/names.js";
