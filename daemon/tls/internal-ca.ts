// The appliance's TLS identity: an internal certificate authority created on first start, the
// server certificate it issues, and the path for a hospital to replace that certificate with one
// from its own CA (import a PEM pair, or sign our CSR). node-forge builds and signs certificates
// (DESIGN: PKI uses node-forge); keys are generated and checked with node:crypto (OpenSSL), which
// is both faster and the same parser the TLS server will use.
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { promises as fs } from "node:fs";
import { hostname as machineHostname } from "node:os";
import { isIP } from "node:net";
import path from "node:path";
import forge from "node-forge";
import { z } from "zod";

export class TlsError extends Error {
  override name = "TlsError";
}

export interface TlsMaterial {
  /** Server certificate, followed by any intermediate certificates of an imported chain. */
  certPem: string;
  keyPem: string;
  /**
   * What clients should trust: the internal CA certificate, or for an imported certificate the
   * issuing certificates that came with it (empty when the leaf was imported alone).
   */
  caPem: string;
  fingerprint256: string;
  notAfter: Date;
  /** The server certificate expires within 30 days of `now` (or has already expired). */
  expiresSoon: boolean;
  /** `imported` certificates come from the hospital's CA and are never replaced automatically. */
  source: "internal" | "imported";
  /** `reason` says why the server certificate was (re-)issued, for the start-up log line. */
  created: { ca: boolean; certificate: boolean; reason?: string };
}

export interface TlsMaterialOptions {
  dir: string;
  hostnames: string[];
  validityDays: number;
  now?: Date;
}

export interface ImportCertificateOptions {
  dir: string;
  certPem: string;
  /** When omitted, the key made with the last CSR (`server.next.key`) is used. */
  keyPem?: string;
  now?: Date;
}

export interface CertificateDescription {
  subject: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  fingerprint256: string;
  hostnames: string[];
}

const FILES = {
  caKey: "ca.key",
  caCert: "ca.crt",
  serverKey: "server.key",
  serverCert: "server.crt",
  /** Records that server.crt came from the hospital's CA, so it is not replaced by our own. */
  serverMeta: "server.json",
  pendingKey: "server.next.key",
  lock: ".lock",
} as const;

const DAY_MS = 24 * 60 * 60 * 1000;
const RENEWAL_WINDOW_DAYS = 30;
const CA_VALIDITY_YEARS = 10;
const CA_KEY_BITS = 3072; // NIST SP 800-57: 128-bit security for a key that lives ten years
const SERVER_KEY_BITS = 2048; // NIST SP 800-131A minimum; the certificate lives at most 397 days
const MIN_IMPORTED_RSA_BITS = 2048;
// Clients whose clocks run a little behind must not see a certificate that is not yet valid.
const CLOCK_SKEW_MS = 60 * 60 * 1000;
const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
// RFC 5280 4.1.2.5: CN is at most 64 characters.
const MAX_COMMON_NAME_LENGTH = 64;

const serverMetaSchema = z.object({
  source: z.enum(["internal", "imported"]),
  importedAt: z.string().optional(),
  fingerprint256: z.string().optional(),
});

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

export async function ensureTlsMaterial(opts: TlsMaterialOptions): Promise<TlsMaterial> {
  return issueUnderLock(opts, false);
}

/** Re-issues the server certificate under the internal CA, replacing an imported one too. */
export async function renewServerCertificate(opts: TlsMaterialOptions): Promise<TlsMaterial> {
  return issueUnderLock(opts, true);
}

export async function importCertificate(opts: ImportCertificateOptions): Promise<TlsMaterial> {
  const now = opts.now ?? new Date();
  const chain = parseCertificateChain(opts.certPem);
  const leaf = chain[0]!;

  await ensurePrivateDirectory(opts.dir);
  return withDirectoryLock(opts.dir, async () => {
    const { key, keyPem, fromPendingKey } = await selectImportKey(opts, leaf);
    assertImportable(leaf, key, now);

    const certPem = chain.map((c) => c.toString()).join("");
    // Order matters for a crash half-way: server.next.key is the only copy of a key the hospital
    // CA has certified, so it is renamed last; until the marker is written, a restart treats the
    // pair as a broken internal certificate and re-issues it, leaving server.next.key to retry.
    await fs.rm(path.join(opts.dir, FILES.serverMeta), { force: true });
    if (!fromPendingKey) await writeFileAtomic(opts.dir, FILES.serverKey, keyPem, 0o600);
    await writeFileAtomic(opts.dir, FILES.serverCert, certPem, 0o644);
    if (fromPendingKey) {
      await fs.rename(path.join(opts.dir, FILES.pendingKey), path.join(opts.dir, FILES.serverKey));
      await fsyncDirectory(opts.dir);
    }
    const meta: z.infer<typeof serverMetaSchema> = {
      source: "imported",
      importedAt: now.toISOString(),
      fingerprint256: leaf.fingerprint256,
    };
    await writeFileAtomic(opts.dir, FILES.serverMeta, JSON.stringify(meta, null, 2) + "\n", 0o644);

    return importedMaterial(chain, keyPem, now, { ca: false, certificate: true, reason: "imported" });
  });
}

/**
 * Makes a key (`server.next.key`) and a PKCS#10 request for the hospital's CA. The current
 * server certificate keeps working until the signed certificate is imported.
 */
export async function createCertificateSigningRequest(opts: { dir: string; hostnames: string[]; organization?: string }): Promise<{ csrPem: string; keyPath: string }> {
  const names = normalizeHostnames(opts.hostnames);
  await ensurePrivateDirectory(opts.dir);
  return withDirectoryLock(opts.dir, async () => {
    const { keyPem, forgeKey } = generateRsaKey(SERVER_KEY_BITS);
    const csr = forge.pki.createCertificationRequest();
    csr.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
    const subject: forge.pki.CertificateField[] = [];
    if (names[0]!.length <= MAX_COMMON_NAME_LENGTH) subject.push({ name: "commonName", value: names[0]! });
    if (opts.organization) subject.push({ name: "organizationName", value: opts.organization });
    csr.setSubject(subject);
    csr.setAttributes([
      {
        name: "extensionRequest",
        extensions: [
          { name: "subjectAltName", altNames: names.map(toAltName) },
          { name: "keyUsage", critical: true, digitalSignature: true, keyEncipherment: true },
          { name: "extKeyUsage", serverAuth: true },
        ],
      },
    ]);
    csr.sign(forgeKey, forge.md.sha256.create());

    const keyPath = path.join(opts.dir, FILES.pendingKey);
    await writeFileAtomic(opts.dir, FILES.pendingKey, keyPem, 0o600);
    return { csrPem: forge.pki.certificationRequestToPem(csr), keyPath };
  });
}

/**
 * A new RSA key pair and a self-signed certificate for it, for a protocol that exchanges keys as
 * certificates (SAML metadata names the SP's signing and encryption keys so); nothing trusts it
 * as an authority. The key is PKCS#8 PEM for the caller to keep sealed.
 */
export function createSelfSignedKeyPair(opts: { commonName: string; validityYears: number; now: Date }): { keyPem: string; certPem: string } {
  const { keyPem, forgeKey } = generateRsaKey(SERVER_KEY_BITS);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  cert.serialNumber = randomSerialNumber();
  cert.validity.notBefore = new Date(opts.now.getTime() - CLOCK_SKEW_MS);
  const notAfter = new Date(opts.now.getTime());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + opts.validityYears);
  cert.validity.notAfter = notAfter;
  const name: forge.pki.CertificateField[] = [{ name: "commonName", value: opts.commonName.slice(0, MAX_COMMON_NAME_LENGTH) }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.sign(forgeKey, forge.md.sha256.create());
  return { keyPem, certPem: forge.pki.certificateToPem(cert) };
}

export function describeCertificate(certPem: string): CertificateDescription {
  const cert = parseCertificateChain(certPem)[0]!;
  return {
    subject: oneLineName(cert.subject),
    issuer: oneLineName(cert.issuer),
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    fingerprint256: cert.fingerprint256,
    hostnames: subjectAltNames(cert),
  };
}

// ---------------------------------------------------------------------------------------------
// Internal CA and server certificate
// ---------------------------------------------------------------------------------------------

interface CertificateAuthority {
  keyPem: string;
  certPem: string;
  x509: X509Certificate;
  forgeKey: forge.pki.rsa.PrivateKey;
  forgeCert: forge.pki.Certificate;
}

async function issueUnderLock(opts: TlsMaterialOptions, forceRenewal: boolean): Promise<TlsMaterial> {
  const hostnames = normalizeHostnames(opts.hostnames);
  if (!Number.isInteger(opts.validityDays) || opts.validityDays < 1) {
    throw new TlsError(`validityDays must be a whole number of days of at least 1, not ${opts.validityDays}`);
  }
  const now = opts.now ?? new Date();
  await ensurePrivateDirectory(opts.dir);

  return withDirectoryLock(opts.dir, async () => {
    if (!forceRenewal) {
      const imported = await loadImported(opts.dir, now);
      if (imported) return imported;
    }

    const { ca, created: caCreated } = await loadOrCreateCa(opts.dir, now);
    if (!forceRenewal) {
      const existing = await loadServerPair(opts.dir);
      const reason = existing ? reasonToReissue(existing, ca, hostnames, opts.validityDays, now) : "no server certificate existed";
      if (existing && reason === null) {
        return internalMaterial(existing.certPem, existing.keyPem, ca, now, { ca: caCreated, certificate: false });
      }
      return issueServerCertificate(opts.dir, ca, hostnames, opts.validityDays, now, {
        ca: caCreated,
        certificate: true,
        reason: reason ?? undefined,
      });
    }
    return issueServerCertificate(opts.dir, ca, hostnames, opts.validityDays, now, {
      ca: caCreated,
      certificate: true,
      reason: "renewal requested",
    });
  });
}

async function loadOrCreateCa(dir: string, now: Date): Promise<{ ca: CertificateAuthority; created: boolean }> {
  const keyPem = await readOptional(path.join(dir, FILES.caKey));
  const certPem = await readOptional(path.join(dir, FILES.caCert));

  if (certPem !== null && keyPem === null) {
    // Making a new CA here would silently break every client that trusts the old one.
    throw new TlsError(
      `${path.join(dir, FILES.caCert)} exists without ${FILES.caKey}: restore ${FILES.caKey} from backup, or move ${FILES.caCert} away to create a new internal CA that clients must then trust`,
    );
  }
  if (certPem === null || keyPem === null) {
    // A ca.key without ca.crt is a first start interrupted before the certificate was written.
    return { ca: await createCa(dir, now), created: true };
  }

  let x509: X509Certificate;
  let key: KeyObject;
  try {
    x509 = new X509Certificate(certPem);
    key = createPrivateKey(keyPem);
  } catch {
    throw new TlsError(`the internal CA in ${dir} does not parse: restore ${FILES.caKey} and ${FILES.caCert} from backup, or move both away to create a new CA`);
  }
  if (!x509.checkPrivateKey(key)) {
    throw new TlsError(`${FILES.caKey} does not match ${FILES.caCert} in ${dir}: restore the pair from backup, or move both away to create a new CA`);
  }
  if (new Date(x509.validTo).getTime() <= now.getTime()) {
    throw new TlsError(
      `the internal CA in ${dir} expired on ${new Date(x509.validTo).toISOString()}: move ${FILES.caKey} and ${FILES.caCert} away to create a new CA, then give clients the new ${FILES.caCert}`,
    );
  }
  return {
    ca: {
      keyPem,
      certPem,
      x509,
      forgeKey: forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey,
      forgeCert: forge.pki.certificateFromPem(certPem),
    },
    created: false,
  };
}

async function createCa(dir: string, now: Date): Promise<CertificateAuthority> {
  const { keyPem, forgeKey } = generateRsaKey(CA_KEY_BITS);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  cert.serialNumber = randomSerialNumber();
  cert.validity.notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  const notAfter = new Date(now.getTime());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  cert.validity.notAfter = notAfter;
  // The random suffix keeps two appliances' CAs apart in a client's trust store.
  const name: forge.pki.CertificateField[] = [
    { name: "commonName", value: `Wardkeep Internal CA ${randomBytes(4).toString("hex")}` },
    { name: "organizationName", value: "Wardkeep" },
  ];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    // pathLen 0: a stolen CA key cannot be used to mint further intermediate CAs.
    { name: "basicConstraints", critical: true, cA: true, pathLenConstraint: 0 },
    { name: "keyUsage", critical: true, keyCertSign: true, cRLSign: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(forgeKey, forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);

  // Key first: a crash in between leaves ca.key alone, which the next start replaces.
  await writeFileAtomic(dir, FILES.caKey, keyPem, 0o600);
  await writeFileAtomic(dir, FILES.caCert, certPem, 0o644);
  return { keyPem, certPem, x509: new X509Certificate(certPem), forgeKey, forgeCert: cert };
}

interface ServerPair {
  certPem: string;
  keyPem: string;
  x509: X509Certificate | null;
  keyMatches: boolean;
}

async function loadServerPair(dir: string): Promise<ServerPair | null> {
  const certPem = await readOptional(path.join(dir, FILES.serverCert));
  const keyPem = await readOptional(path.join(dir, FILES.serverKey));
  if (certPem === null || keyPem === null) return null;
  try {
    const x509 = new X509Certificate(certPem);
    return { certPem, keyPem, x509, keyMatches: x509.checkPrivateKey(createPrivateKey(keyPem)) };
  } catch {
    return { certPem, keyPem, x509: null, keyMatches: false };
  }
}

function reasonToReissue(server: ServerPair, ca: CertificateAuthority, hostnames: string[], validityDays: number, now: Date): string | null {
  const cert = server.x509;
  if (!cert) return "the existing certificate does not parse";
  if (!server.keyMatches) return "the existing key does not match the certificate";
  // A certificate from a previous CA (or planted in the directory) must not be served as ours.
  if (!cert.checkIssued(ca.x509) || !cert.verify(ca.x509.publicKey)) {
    return "the existing certificate was not signed by the internal CA";
  }
  const missing = hostnames.filter((h) => !certificateCovers(cert, h));
  if (missing.length > 0) return `the existing certificate does not cover ${missing.join(", ")}`;

  const notBefore = new Date(cert.validFrom).getTime();
  const notAfter = new Date(cert.validTo).getTime();
  if (notBefore > now.getTime()) return "the existing certificate is not valid yet";
  // A certificate shorter-lived than the window would otherwise be re-issued on every start.
  const windowMs = validityDays > RENEWAL_WINDOW_DAYS ? RENEWAL_WINDOW_DAYS * DAY_MS : (validityDays * DAY_MS) / 2;
  const caNotAfter = new Date(ca.x509.validTo).getTime();
  // Already cut short by the CA's own expiry: re-issuing cannot make it last longer.
  const cappedByCa = notAfter >= caNotAfter;
  if (notAfter - now.getTime() < windowMs && !cappedByCa) {
    return `the existing certificate expires on ${new Date(notAfter).toISOString()}`;
  }
  return null;
}

async function issueServerCertificate(
  dir: string,
  ca: CertificateAuthority,
  hostnames: string[],
  validityDays: number,
  now: Date,
  created: TlsMaterial["created"],
): Promise<TlsMaterial> {
  const { keyPem, forgeKey } = generateRsaKey(SERVER_KEY_BITS);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  cert.serialNumber = randomSerialNumber();
  const notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  const caNotAfter = new Date(ca.x509.validTo).getTime();
  cert.validity.notBefore = notBefore;
  // A certificate cannot usefully outlive its issuer: clients reject the chain after that.
  cert.validity.notAfter = new Date(Math.min(notBefore.getTime() + validityDays * DAY_MS, caNotAfter));
  const subject: forge.pki.CertificateField[] = [];
  if (hostnames[0]!.length <= MAX_COMMON_NAME_LENGTH) subject.push({ name: "commonName", value: hostnames[0]! });
  subject.push({ name: "organizationName", value: "Wardkeep" });
  cert.setSubject(subject);
  cert.setIssuer(ca.forgeCert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", critical: true, cA: false },
    { name: "keyUsage", critical: true, digitalSignature: true, keyEncipherment: true },
    { name: "extKeyUsage", serverAuth: true },
    // Clients match the SAN only (RFC 6125, CA/B Forum BR 7.1.2.7); CN is for humans.
    { name: "subjectAltName", altNames: hostnames.map(toAltName) },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: ca.forgeCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(ca.forgeKey, forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);

  // An imported certificate's marker must go first: if we crash after it, the next start
  // re-issues the (now unmarked) pair, which is what renewal asked for anyway.
  await fs.rm(path.join(dir, FILES.serverMeta), { force: true });
  // Key before certificate: a crash in between leaves a mismatched pair, re-issued next start.
  await writeFileAtomic(dir, FILES.serverKey, keyPem, 0o600);
  await writeFileAtomic(dir, FILES.serverCert, certPem, 0o644);
  return internalMaterial(certPem, keyPem, ca, now, created);
}

function internalMaterial(certPem: string, keyPem: string, ca: CertificateAuthority, now: Date, created: TlsMaterial["created"]): TlsMaterial {
  const x509 = new X509Certificate(certPem);
  const notAfter = new Date(x509.validTo);
  return {
    certPem,
    keyPem,
    caPem: ca.certPem,
    fingerprint256: x509.fingerprint256,
    notAfter,
    expiresSoon: expiresWithinRenewalWindow(notAfter, now),
    source: "internal",
    created,
  };
}

// ---------------------------------------------------------------------------------------------
// Imported certificates
// ---------------------------------------------------------------------------------------------

async function loadImported(dir: string, now: Date): Promise<TlsMaterial | null> {
  const metaText = await readOptional(path.join(dir, FILES.serverMeta));
  if (metaText === null) return null;
  let meta: z.infer<typeof serverMetaSchema>;
  try {
    meta = serverMetaSchema.parse(JSON.parse(metaText));
  } catch {
    throw new TlsError(`${path.join(dir, FILES.serverMeta)} is not valid: re-import the hospital certificate, or delete the file to return to the internal CA`);
  }
  if (meta.source !== "imported") return null;

  const certPem = await readOptional(path.join(dir, FILES.serverCert));
  const keyPem = await readOptional(path.join(dir, FILES.serverKey));
  if (certPem === null || keyPem === null) {
    throw new TlsError(
      `the imported certificate in ${dir} is missing ${certPem === null ? FILES.serverCert : FILES.serverKey}: re-import it, or delete ${FILES.serverMeta} to return to the internal CA`,
    );
  }
  let chain: X509Certificate[];
  let matches: boolean;
  try {
    chain = parseCertificateChain(certPem);
    matches = chain[0]!.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    matches = false;
    chain = [];
  }
  if (!matches) {
    throw new TlsError(
      `the imported ${FILES.serverCert} and ${FILES.serverKey} in ${dir} do not parse or do not match: re-import the certificate with its key, or delete ${FILES.serverMeta} to return to the internal CA`,
    );
  }
  // Kept even when expired: replacing a hospital-issued certificate with one from a CA its
  // clients do not trust would not restore service either; expiresSoon makes it loud instead.
  return importedMaterial(chain, keyPem, now, { ca: false, certificate: false });
}

async function selectImportKey(opts: ImportCertificateOptions, leaf: X509Certificate): Promise<{ key: KeyObject; keyPem: string; fromPendingKey: boolean }> {
  if (opts.keyPem !== undefined) {
    const key = parsePrivateKey(opts.keyPem);
    if (!leaf.checkPrivateKey(key)) {
      throw new TlsError("the private key does not match the certificate: import the key that was generated together with this certificate's signing request");
    }
    return { key, keyPem: opts.keyPem, fromPendingKey: false };
  }
  const pendingPem = await readOptional(path.join(opts.dir, FILES.pendingKey));
  if (pendingPem === null) {
    throw new TlsError(
      `no private key was given and there is no pending signing-request key (${FILES.pendingKey}) in ${opts.dir}: pass the private key, or create a certificate signing request first`,
    );
  }
  const key = parsePrivateKey(pendingPem);
  if (!leaf.checkPrivateKey(key)) {
    throw new TlsError(
      `the certificate was not issued for the latest signing request (its key does not match ${FILES.pendingKey}): import the certificate issued for that request, or pass the matching private key`,
    );
  }
  return { key, keyPem: pendingPem, fromPendingKey: true };
}

function assertImportable(leaf: X509Certificate, key: KeyObject, now: Date): void {
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= now.getTime()) {
    throw new TlsError(`the certificate expired on ${notAfter.toISOString()}: ask the issuing CA for a new certificate`);
  }
  if (notBefore.getTime() > now.getTime()) {
    throw new TlsError(`the certificate is not valid until ${notBefore.toISOString()}: check this appliance's clock, or import it after that time`);
  }
  // Node reports the extended key usage OIDs as `keyUsage`; undefined means the extension is
  // absent, which RFC 5280 4.2.1.12 treats as "any purpose".
  const extendedKeyUsage = leaf.keyUsage;
  if (extendedKeyUsage !== undefined && !extendedKeyUsage.includes(OID_SERVER_AUTH)) {
    throw new TlsError("the certificate is not for TLS servers (its extended key usage lacks serverAuth): ask the issuing CA for a server certificate");
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (key.asymmetricKeyType === "rsa" && bits !== undefined && bits < MIN_IMPORTED_RSA_BITS) {
    throw new TlsError(
      `the certificate's RSA key has ${bits} bits, below the ${MIN_IMPORTED_RSA_BITS} that NIST SP 800-131A requires: request a certificate for a new ${MIN_IMPORTED_RSA_BITS}-bit or larger key`,
    );
  }
}

function importedMaterial(chain: X509Certificate[], keyPem: string, now: Date, created: TlsMaterial["created"]): TlsMaterial {
  const leaf = chain[0]!;
  const notAfter = new Date(leaf.validTo);
  return {
    certPem: chain.map((c) => c.toString()).join(""),
    keyPem,
    caPem: chain
      .slice(1)
      .map((c) => c.toString())
      .join(""),
    fingerprint256: leaf.fingerprint256,
    notAfter,
    expiresSoon: expiresWithinRenewalWindow(notAfter, now),
    source: "imported",
    created,
  };
}

function parsePrivateKey(keyPem: string): KeyObject {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyPem)) {
    throw new TlsError("the private key is not a PEM private key: use the file that begins with -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY)");
  }
  if (keyPem.includes("ENCRYPTED")) {
    throw new TlsError("the private key is encrypted with a passphrase: decrypt it first (openssl pkey -in key.pem -out plain-key.pem) and import the decrypted file");
  }
  try {
    const key = createPrivateKey(keyPem);
    return key;
  } catch {
    // OpenSSL's own message is not repeated: it can quote parts of the input.
    throw new TlsError("the private key could not be read: check that the PEM file is complete and not corrupted");
  }
}

/** The server certificate first, then any issuing certificates, each of which must parse. */
function parseCertificateChain(certPem: string): X509Certificate[] {
  const blocks = certPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) {
    throw new TlsError("the certificate is not a PEM certificate: use the file that begins with -----BEGIN CERTIFICATE-----");
  }
  const chain = blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new TlsError(`certificate ${i + 1} in the PEM file could not be read: check that the file is complete and not corrupted`);
    }
  });
  // Servers send the chain in file order and RFC 8446 4.4.2 expects leaf first, each certificate
  // certifying the one before; a root-first file is a common mistake that breaks some clients.
  for (let i = 1; i < chain.length; i++) {
    if (!chain[i - 1]!.checkIssued(chain[i]!)) {
      throw new TlsError(
        `the certificate chain is out of order (certificate ${i + 1} did not issue certificate ${i}): put the server certificate first, then each issuing CA in turn`,
      );
    }
  }
  return chain;
}

// ---------------------------------------------------------------------------------------------
// Host names and certificate fields
// ---------------------------------------------------------------------------------------------

// Underscores are outside RFC 1123 but occur in machine host names (os.hostname() is passed in);
// refusing them would stop the appliance from starting, and only our own CA signs these names.
const DNS_LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function normalizeHostnames(hostnames: string[]): string[] {
  const names: string[] = [];
  for (const raw of hostnames) {
    const name = canonicalHostname(raw);
    if (!names.includes(name)) names.push(name);
  }
  if (names.length === 0) {
    throw new TlsError("no host names were given: list the DNS names and IP addresses clients use to reach the appliance");
  }
  return names;
}

function canonicalHostname(raw: string): string {
  const trimmed = raw.trim();
  const unbracketed = trimmed.startsWith("[") && trimmed.endsWith("]") ? trimmed.slice(1, -1) : trimmed;
  if (isIP(unbracketed) !== 0) {
    if (unbracketed.includes("%")) {
      throw new TlsError(`"${raw}" has an IPv6 zone index, which a certificate cannot hold: use the address without %zone`);
    }
    return canonicalIp(unbracketed);
  }
  const name = trimmed.toLowerCase().replace(/\.$/, "");
  const labels = name.split(".");
  const valid = name.length <= 253 && labels.every((label, i) => (i === 0 && label === "*" && labels.length > 2) || DNS_LABEL.test(label));
  if (!valid) {
    throw new TlsError(`"${raw}" is neither a DNS name nor an IP address: use a name such as wardkeep.hospital.local or an address such as 10.0.0.5`);
  }
  return name;
}

/** The WHATWG URL parser compresses IPv6 (RFC 5952 style), so "0:0::1" and "::1" compare equal. */
function canonicalIp(ip: string): string {
  if (isIP(ip) === 4) return new URL(`http://${ip}/`).hostname;
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

function toAltName(name: string): { type: number; value: string } {
  // Raw octets rather than forge's `ip` field, whose IPv6 parser misreads forms like ::ffff:a.b.c.d.
  if (isIP(name) !== 0) return { type: 7, value: ipToBytes(name).toString("binary") };
  return { type: 2, value: name };
}

function ipToBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split(".").map(Number));
  let text = ip;
  const tail: number[] = [];
  const embeddedV4 = text.match(/:(\d+\.\d+\.\d+\.\d+)$/);
  if (embeddedV4) {
    tail.push(...embeddedV4[1]!.split(".").map(Number));
    text = text.slice(0, -embeddedV4[1]!.length) + "0:0";
  }
  const [head, rest] = text.split("::") as [string, string | undefined];
  const headGroups = head ? head.split(":") : [];
  const restGroups = rest ? rest.split(":") : [];
  const zeros = rest === undefined ? [] : new Array<string>(8 - headGroups.length - restGroups.length).fill("0");
  const groups = [...headGroups, ...zeros, ...restGroups];
  const bytes = Buffer.alloc(16);
  groups.forEach((g, i) => bytes.writeUInt16BE(parseInt(g, 16), i * 2));
  if (tail.length === 4) Buffer.from(tail).copy(bytes, 12);
  return bytes;
}

function certificateCovers(cert: X509Certificate, name: string): boolean {
  if (isIP(name) !== 0) return cert.checkIP(name) !== undefined;
  // RFC 6125 6.4.4: a client with SAN DNS names never falls back to the subject CN.
  return cert.checkHost(name, { subject: "never" }) !== undefined;
}

/** DNS names and IP addresses from the subjectAltName extension, IPv6 compressed. */
function subjectAltNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName;
  if (!san) return [];
  const names: string[] = [];
  for (const entry of san.split(/, (?=[A-Za-z][A-Za-z0-9 ]*:)/)) {
    const colon = entry.indexOf(":");
    const type = entry.slice(0, colon);
    let value = entry.slice(colon + 1);
    // Node quotes values holding separators so they cannot forge extra entries (CVE-2021-44532).
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    if (type === "DNS") names.push(value.toLowerCase());
    else if (type === "IP Address" && isIP(value) !== 0) names.push(canonicalIp(value));
  }
  return names;
}

function oneLineName(multiline: string): string {
  return multiline.split("\n").join(", ");
}

function expiresWithinRenewalWindow(notAfter: Date, now: Date): boolean {
  return notAfter.getTime() - now.getTime() < RENEWAL_WINDOW_DAYS * DAY_MS;
}

// RFC 5280 4.1.2.2 and CA/B Forum BR 7.1: positive, at most 20 octets, at least 64 random bits.
// The top bit is set so the magnitude is a full 128 bits, and a 0x00 octet keeps it positive
// in DER while staying a minimal encoding.
function randomSerialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! | 0x80;
  return "00" + bytes.toString("hex");
}

function generateRsaKey(bits: number): { keyPem: string; forgeKey: forge.pki.rsa.PrivateKey } {
  const { privateKey } = generateKeyPairSync("rsa", {
    modulusLength: bits,
    publicExponent: 0x10001,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  return { keyPem: privateKey, forgeKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey };
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

async function ensurePrivateDirectory(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  // Private keys live here: other local accounts must not even list or read the directory.
  await fs.chmod(dir, 0o700);
}

async function readOptional(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/** A reader sees the old file or the new one, never a torn write, even after power loss. */
async function writeFileAtomic(dir: string, name: string, content: string, mode: number): Promise<void> {
  const tmp = path.join(dir, `.${name}.${randomBytes(6).toString("hex")}.tmp`);
  // Created with its final mode, so a key is never readable by others even for an instant.
  const handle = await fs.open(tmp, "wx", mode);
  try {
    await handle.chmod(mode);
    await handle.writeFile(content, "utf8");
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await fs.rename(tmp, path.join(dir, name));
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDirectory(dir);
}

async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const LOCK_WAIT_MS = 30_000;
const LOCK_STALE_MS = 2 * 60_000;
const inProcessLocks = new Map<string, Promise<unknown>>();

/**
 * The CA key/certificate pair and the server pair are each two files; a second writer (the
 * `wardkeep tls` command while the daemon starts, or another replica on a shared volume)
 * interleaving with us could leave a key that does not match its certificate.
 */
async function withDirectoryLock<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const key = path.resolve(dir);
  const previous = inProcessLocks.get(key) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(() => withLockFile(key, work));
  inProcessLocks.set(key, run);
  try {
    return await run;
  } finally {
    if (inProcessLocks.get(key) === run) inProcessLocks.delete(key);
  }
}

async function withLockFile<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const lockPath = path.join(dir, FILES.lock);
  const owner = `${machineHostname()} ${process.pid}\n`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await fs.writeFile(lockPath, owner, { flag: "wx", mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      if (await lockIsStale(lockPath)) {
        await fs.rm(lockPath, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new TlsError(`${lockPath} is held by another wardkeep process: wait for it to finish, or delete the file if no other wardkeep process is running`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  try {
    return await work();
  } finally {
    await fs.rm(lockPath, { force: true });
  }
}

async function lockIsStale(lockPath: string): Promise<boolean> {
  try {
    const [text, stat] = await Promise.all([fs.readFile(lockPath, "utf8"), fs.stat(lockPath)]);
    if (Date.now() - stat.mtimeMs > LOCK_STALE_MS) return true;
    const [host, pidText] = text.trim().split(" ");
    if (host !== machineHostname() || !pidText) return false;
    try {
      process.kill(Number(pidText), 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === "ESRCH";
    }
  } catch {
    return false;
  }
}
