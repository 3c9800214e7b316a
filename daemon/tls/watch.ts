import fs from "node:fs";
import path from "node:path";
import { X509Certificate, createPrivateKey } from "node:crypto";
import type { Logger } from "../log/logger.js";
/** A server certificate chain and its private key, PEM. */
export type TlsCredentials = { certPem: string; keyPem: string };

/**
 * Reloads the server certificate when `wardkeep tls renew|import` rewrites dataDir/tls, so a new
 * certificate is served without a restart or a dropped connection. A half-written pair (key
 * renamed, certificate not yet) fails the match check and waits for the next change.
 */
export function watchTlsDirectory(dir: string, reload: (tls: TlsCredentials) => void, log: Logger): () => void {
  let timer: NodeJS.Timeout | undefined;
  let served = "";
  const check = () => {
    try {
      const certPem = fs.readFileSync(path.join(dir, "server.crt"), "utf8");
      const keyPem = fs.readFileSync(path.join(dir, "server.key"), "utf8");
      const cert = new X509Certificate(certPem);
      if (cert.fingerprint256 === served) return;
      if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return;
      reload({ certPem, keyPem });
      if (served) log.info("TLS certificate reloaded", { fingerprint256: cert.fingerprint256, notAfter: new Date(cert.validTo).toISOString() });
      served = cert.fingerprint256;
    } catch {
      /* mid-write or unreadable: the next change event retries */
    }
  };
  try {
    served = new X509Certificate(fs.readFileSync(path.join(dir, "server.crt"))).fingerprint256;
  } catch {
    /* no certificate yet */
  }
  let watcher: fs.FSWatcher;
  try {
    watcher = fs.watch(dir, () => {
      clearTimeout(timer);
      timer = setTimeout(check, 200);
    });
  } catch {
    return () => undefined;
  }
  watcher.unref();
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}
