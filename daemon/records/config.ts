import { z } from "zod";

/** Settings of the records capability (`records:` in config/default.yaml); docs/records.md explains them. */
export const recordsSchema = z
  .object({
    attachmentsDir: z
      .string()
      .default("attachments")
      .describe("Where encrypted attachment files live (relative paths are inside dataDir). Replicas must share it (NFS/SMB mount); the database holds only metadata and digests."),
    attachmentMaxBytes: z
      .number()
      .int()
      .min(1024)
      .max(10 * 1024 ** 3)
      .default(200 * 1024 ** 2)
      .describe("Largest attachment accepted (audio recording, scanned document), in bytes; larger uploads get 413 and nothing is kept."),
    attachmentSegmentKib: z
      .number()
      .int()
      .min(4)
      .max(16384)
      .default(256)
      .describe("Plaintext KiB per authenticated segment of an attachment file; an upload or download holds about one segment in memory."),
    deletionGraceDays: z
      .number()
      .int()
      .min(1)
      .max(3650)
      .default(30)
      .describe("Days between a patient or tenant deletion request and the purge (cancellable until then); the data keys are destroyed at the purge."),
    purgeIntervalMinutes: z
      .number()
      .int()
      .min(1)
      .max(1440)
      .default(60)
      .describe("How often this replica looks for deletion requests whose grace period has ended (row locks keep replicas from purging the same one)."),
    exportBatchSize: z.number().int().min(1).max(1000).default(100).describe("Patients read (and audited) per transaction while streaming a data-rights export."),
  })
  .strict();

export type RecordsConfig = z.infer<typeof recordsSchema>;
