import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shipSpool, spoolDir } from "../../../daemon/backups/pitr.js";
import { startTestAppliance, type TestAppliance } from "../../helpers/appliance.js";

/**
 * An appliance with WAL archiving on (the default) but no backup target yet: the spool must not
 * grow until it fills and PostgreSQL starts keeping WAL in pg_wal (docs/backups.md).
 */
let app: TestAppliance;
beforeAll(async () => {
  app = await startTestAppliance();
});
afterAll(async () => {
  await app?.close();
});

describe("the WAL spool without a backup target", () => {
  it("discards what archive_command spooled, since nothing could restore it, and leaves copies in progress alone", async () => {
    const dir = spoolDir(app.ctx);
    fs.mkdirSync(dir, { recursive: true });
    const segment = "000000010000000000000007";
    fs.writeFileSync(path.join(dir, segment), Buffer.alloc(1024, 7));
    fs.writeFileSync(path.join(dir, `.${segment}.tmp`), Buffer.alloc(16));
    const outcome = await shipSpool(app.ctx);
    expect(outcome).toMatchObject({ shipped: [], failed: [], discarded: 1 });
    expect(fs.readdirSync(dir)).toEqual([`.${segment}.tmp`]);
  });
});
