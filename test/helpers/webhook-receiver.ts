import { createPublicKey, verify } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";

/**
 * A real HTTP receiver for outbound webhooks that checks every request with the Standard
 * Webhooks reference code (`standardwebhooks` Webhook.verify) against the secrets the test gives
 * it, and `v1a` signatures with `verifyV1a` against the public keys it is given. `answer` decides
 * the response per request (default 204), so a test can play an endpoint that is down, gone,
 * redirecting, asking to retry later or slow (`after`: the answer waits for that promise);
 * `peakInFlight` is the most requests it held open at once.
 */

/**
 * A `v1a` verifier written from the Standard Webhooks 1.0 text, independent of the appliance's
 * code: the public key is `whpk_` + base64 of the 32-byte Ed25519 key; the header is a
 * space-separated list of `version,signature`; a `v1a` signature is base64 of the Ed25519
 * signature over `{webhook-id}.{webhook-timestamp}.{body}`. True when any `v1a` entry verifies.
 */
export function verifyV1a(publicKey: string, headers: { id: string; timestamp: string; signature: string }, body: string): boolean {
  if (!publicKey.startsWith("whpk_")) throw new Error("not a whpk_ public key");
  const raw = Buffer.from(publicKey.slice("whpk_".length), "base64");
  if (raw.length !== 32) throw new Error("an Ed25519 public key is 32 bytes");
  const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  const content = Buffer.from(`${headers.id}.${headers.timestamp}.${body}`, "utf8");
  return headers.signature.split(" ").some((entry) => {
    const [version, sig] = entry.split(",", 2);
    return version === "v1a" && sig !== undefined && verify(null, content, key, Buffer.from(sig, "base64"));
  });
}
export type Received = {
  path: string;
  id: string;
  timestamp: string;
  signature: string;
  body: string;
  /** Which of the receiver's secrets verify this request (by index into `secrets`). */
  verifiedBy: number[];
  /** Which of the receiver's Ed25519 public keys verify a `v1a` signature of it (by index into `publicKeys`). */
  verifiedByKey: number[];
  at: number;
};

export type Answer = { status: number; headers?: Record<string, string>; after?: Promise<unknown> } | "reset";

export class WebhookReceiver {
  readonly received: Received[] = [];
  secrets: string[] = [];
  /** `whpk_` public keys of `v1a` endpoints. */
  publicKeys: string[] = [];
  answer: (r: Received, n: number) => Answer = () => ({ status: 204 });
  /** Requests received and not yet answered, now and at most. */
  inFlight = 0;
  peakInFlight = 0;
  private server: http.Server | undefined;
  port = 0;

  async listen(port = 0): Promise<this> {
    this.server = http.createServer((req, res) => {
      this.peakInFlight = Math.max(this.peakInFlight, ++this.inFlight);
      res.on("close", () => this.inFlight--);
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const headers = {
          "webhook-id": String(req.headers["webhook-id"] ?? ""),
          "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
          "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
        };
        const verifiedBy: number[] = [];
        this.secrets.forEach((secret, i) => {
          try {
            new Webhook(secret).verify(body, headers);
            verifiedBy.push(i);
          } catch {
            // not signed with this secret
          }
        });
        const verifiedByKey: number[] = [];
        this.publicKeys.forEach((key, i) => {
          if (verifyV1a(key, { id: headers["webhook-id"], timestamp: headers["webhook-timestamp"], signature: headers["webhook-signature"] }, body)) verifiedByKey.push(i);
        });
        const r: Received = {
          path: req.url ?? "",
          id: headers["webhook-id"],
          timestamp: headers["webhook-timestamp"],
          signature: headers["webhook-signature"],
          body,
          verifiedBy,
          verifiedByKey,
          at: Date.now(),
        };
        this.received.push(r);
        const a = this.answer(r, this.received.length);
        if (a === "reset") {
          req.socket.destroy();
          return;
        }
        const send = () => {
          res.writeHead(a.status, a.headers ?? {});
          res.end();
        };
        if (a.after) void a.after.then(send);
        else send();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(port, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** A port nothing listens on (yet): an endpoint that is down. */
export async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export async function until<T>(fn: () => Promise<T> | T, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms; last value: ${JSON.stringify(v)?.slice(0, 800)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
