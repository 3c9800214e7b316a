import type { RecordClass } from "../../../daemon/retention/schema.js";

/** What each retention record class is called on screen (Retention and Data rights). */
export const CLASS_LABEL: Record<RecordClass, string> = {
  note: "Clinical notes",
  audio: "Audio recordings",
  attachment: "Other attachments",
  appointment: "Appointments",
  session: "Sign-in sessions",
  invite: "Expired invites",
};
