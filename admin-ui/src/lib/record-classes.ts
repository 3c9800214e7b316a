import type { RecordClass } from "../../../daemon/retention/schema.js";

/** What each retention record class is called on screen (Retention and Data rights). */
export const CLASS_LABEL: Record<RecordClass, string> = {
  note: "Clinical notes",
  audio: "Audio recordings",
  attachment: "Other attachments",
  appointment: "Appointments",
  consent: "Consents",
  patient: "Patient records",
  session: "Sign-in sessions",
  invite: "Expired invites",
  support_request: "Support access requests",
  export_file: "Audit evidence packs",
  audit_event: "Audit events",
};
