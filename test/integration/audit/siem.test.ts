import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAuditEvent } from "../../../daemon/audit/append.js";
import { chainPendingEvents } from "../../../daemon/audit/chainer.js";
import { startSiemForwarder } from "../../../daemon/audit/siem.js";
import { inScope } from "../../../daemon/db/sql.js";
import { ensureTlsMaterial } from "../../../daemon/tls/internal-ca.js";
import { tempDir } from "../../helpers/appliance.js";
import { auditTestContext, type AuditTestContext } from "./context.js";

let t: AuditTestContext;
let collector: tls.Server;
let port = 0;
const frames: string[] = [];
let caFile = "";

/** A collector as a hospital runs one: TLS on its own port, RFC 5425 octet-counted frames. */
function startCollector(certPem: string, keyPem: string): Promise<void> {
  collector = tls.createServer({ cert: certPem, key: keyPem, minVersion: "TLSv1.2" }, (socket) => {
    let buf = Buffer.alloc(0);
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const space = buf.indexOf(0x20);
        if (space < 0) break;
        const len = Number(buf.subarray(0, space).toString());
        if (buf.length < space + 1 + len) break;
        frames.push(buf.subarray(space + 1, space + 1 + len).toString("utf8"));
        buf = buf.subarray(space + 1 + len);
      }
    });
  });
  return new Promise((resolve) =>
    collector.listen(0, "127.0.0.1", () => {
      port = (collector.address() as { port: number }).port;
      resolve();
    }),
  );
}

beforeAll(async () => {
  const dir = tempDir("wardkeep-siem-");
  const material = await ensureTlsMaterial({ dir, hostnames: ["localhost", "127.0.0.1"], validityDays: 30 });
  caFile = path.join(dir, "ca.crt");
  expect(fs.existsSync(caFile)).toBe(true);
  await startCollector(material.certPem, material.keyPem);
});
afterAll(async () => {
  collector?.close();
  await t?.close();
});

async function waitFor(cond: () => boolean, ms = 30_000) {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
}

describe("SIEM forwarding", () => {
  it("sends each chained event as RFC 5424 over TLS, ids only, never the reason or user agent", async () => {
    t = await auditTestContext({
      env: { WARDKEEP_AUDIT_SIEM_ENABLED: "true", WARDKEEP_AUDIT_SIEM_HOST: "localhost", WARDKEEP_AUDIT_SIEM_PORT: String(port), WARDKEEP_AUDIT_SIEM_CA_FILE: caFile },
    });
    const forwarder = startSiemForwarder(t.ctx)!;
    try {
      // The first leader starts its cursor at the chain head (audit.siem.startFrom "head"): events
      // written before it leads are not its to send, so write them once it does.
      await waitFor(() => forwarder.isLeader());
      expect(forwarder.isLeader()).toBe(true);
      for (const [i, outcome] of (["success", "denied", "failure"] as const).entries()) {
        await inScope(t.ctx.db.app, { kind: "appliance" }, (tx) =>
          appendAuditEvent(t.ctx, tx, {
            tenantId: null,
            actor: { userId: `u-${i}`, role: "practitioner", breakGlass: i === 0 },
            action: "patient.read",
            resourceType: "patient",
            resourceId: 'p"1]',
            patientId: "p-1",
            outcome,
            reason: "Patient Jane Roe collapsed",
            userAgent: "SecretBrowser/1.0",
            requestId: `req-${i}`,
          }),
        );
      }
      await chainPendingEvents(t.ctx);
      await waitFor(() => frames.length >= 3);
      expect(frames).toHaveLength(3);
      const re = /^<(\d+)>1 (\S+) (\S+) wardkeep (\d+) patient\.read \[wardkeep@32473 (.*)\] patient\.read (\w+)$/;
      const [first, second] = frames.map((f) => re.exec(f));
      expect(first).not.toBeNull();
      expect(Number(first![1])).toBe(13 * 8 + 5); // log audit, notice
      expect(Number(second![1])).toBe(13 * 8 + 4); // warning for a denial
      expect(new Date(first![2]!).toISOString()).toBe(first![2]);
      expect(first![5]).toContain('seq="1"');
      expect(first![5]).toContain('breakGlass="true"');
      expect(first![5]).toContain('resource="p\\"1\\]"'); // SD-PARAM escaping (RFC 5424 6.3.3)
      expect(first![5]).toMatch(/hash="[0-9a-f]{64}"/);
      for (const f of frames) {
        expect(f).not.toContain("Jane Roe");
        expect(f).not.toContain("SecretBrowser");
      }
    } finally {
      await forwarder.stop();
    }
  });

  it("does not forward when disabled, and refuses to run without a collector host", async () => {
    const off = await auditTestContext();
    try {
      expect(startSiemForwarder(off.ctx)).toBeUndefined();
    } finally {
      await off.close();
    }
    const noHost = await auditTestContext({ env: { WARDKEEP_AUDIT_SIEM_ENABLED: "true" } });
    try {
      expect(startSiemForwarder(noHost.ctx)).toBeUndefined();
      expect(noHost.logLines.some((l) => l.includes("audit.siem.host is empty"))).toBe(true);
    } finally {
      await noHost.close();
    }
  });
});
