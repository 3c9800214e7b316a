import { X509Certificate, generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import forge from "node-forge";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  TlsError,
  createCertificateSigningRequest,
  describeCertificate,
  ensureTlsMaterial,
  importCertificate,
  renewServerCertificate,
  type TlsMaterial,
} from "../../../daemon/tls/internal-ca.js";

const HOSTNAMES = ["localhost", "127.0.0.1", "::1", "wardkeep.hospital.example"];
const VALIDITY_DAYS = 397;
const DAY_MS = 24 * 60 * 60 * 1000;

const tempRoots: string[] = [];
function makeTempDir(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "wardkeep-tls-"));
  tempRoots.push(root);
  return path.join(root, "tls");
}

/** Every file in dir with its bytes, to prove a rejected import changed nothing. */
function snapshotDir(dir: string): Record<string, string> {
  return Object.fromEntries(fs.readdirSync(dir).map((f) => [f, fs.readFileSync(path.join(dir, f)).toString("base64")]));
}

/** node-forge writes PEM with CRLF; the module stores what Node's X509Certificate prints. */
function lf(pem: string): string {
  return pem.replace(/\r\n/g, "\n");
}

function fileMode(file: string): number {
  return fs.statSync(file).mode & 0o777;
}

// Creating the 3072-bit CA is the slow part, so it is made once and copied into directories that
// a test changes; each such test still starts from a CA and certificate created by the module.
let baseDir: string;
let base: TlsMaterial;

function copyOfBase(): string {
  const dir = makeTempDir();
  fs.mkdirSync(dir, { mode: 0o700 });
  for (const f of ["ca.key", "ca.crt", "server.key", "server.crt"]) {
    fs.copyFileSync(path.join(baseDir, f), path.join(dir, f));
  }
  return dir;
}

// ---- a hospital CA, as the hospital's IT would run it, built independently with node-forge ----

interface HospitalCa {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
  certPem: string;
}

function newRsaKey(): { pem: string; forgeKey: forge.pki.rsa.PrivateKey } {
  const { privateKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  return { pem: privateKey, forgeKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey };
}

function makeHospitalCa(): HospitalCa {
  const { forgeKey } = newRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  cert.serialNumber = "01";
  cert.validity.notBefore = new Date(Date.now() - DAY_MS);
  cert.validity.notAfter = new Date(Date.now() + 3650 * DAY_MS);
  const name = [{ name: "commonName", value: "St. Example Hospital Issuing CA" }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: "basicConstraints", critical: true, cA: true },
    { name: "keyUsage", critical: true, keyCertSign: true, cRLSign: true },
  ]);
  cert.sign(forgeKey, forge.md.sha256.create());
  return { cert, key: forgeKey, certPem: forge.pki.certificateToPem(cert) };
}

function issueFromHospitalCa(
  ca: HospitalCa,
  opts: {
    publicKey: forge.pki.PublicKey;
    hostnames: string[];
    notBefore?: Date;
    notAfter?: Date;
    extKeyUsage?: Record<string, boolean>;
  },
): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = opts.publicKey;
  cert.serialNumber = "00" + randomBytes(8).toString("hex");
  cert.validity.notBefore = opts.notBefore ?? new Date(Date.now() - DAY_MS);
  cert.validity.notAfter = opts.notAfter ?? new Date(Date.now() + 365 * DAY_MS);
  cert.setSubject([{ name: "commonName", value: opts.hostnames[0]! }]);
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "extKeyUsage", ...(opts.extKeyUsage ?? { serverAuth: true }) },
    {
      name: "subjectAltName",
      altNames: opts.hostnames.map((h) => (/^[\d.]+$|:/.test(h) ? { type: 7, ip: h } : { type: 2, value: h })),
    },
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

// ---- a real TLS server and client ----

async function withTlsServer<T>(material: { certPem: string; keyPem: string }, fn: (port: number) => Promise<T>): Promise<T> {
  const server = tls.createServer({ cert: material.certPem, key: material.keyPem, minVersion: "TLSv1.2" }, (s) => s.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    return await fn((server.address() as AddressInfo).port);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

function connect(port: number, opts: { ca?: string; servername: string }): Promise<"verified" | string> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca: opts.ca, servername: opts.servername }, () => {
      const verified = socket.authorized;
      socket.end();
      resolve(verified ? "verified" : String(socket.authorizationError));
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      socket.destroy();
      resolve(err.code ?? err.message);
    });
  });
}

async function expectTlsError(promise: Promise<unknown>, message: RegExp): Promise<TlsError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TlsError);
  const tlsError = err as TlsError;
  expect(tlsError.message).toMatch(message);
  expect(tlsError.message).not.toContain("\n");
  // Never key material: base64 DER of a key or certificate starts with "MII".
  expect(tlsError.message).not.toMatch(/MII[A-Za-z0-9+/]{16}/);
  return tlsError;
}

beforeAll(async () => {
  baseDir = makeTempDir();
  base = await ensureTlsMaterial({ dir: baseDir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
});

afterAll(() => {
  for (const root of tempRoots) fs.rmSync(root, { recursive: true, force: true });
});

describe("internal CA on first start", () => {
  it("creates the CA and the server certificate with keys readable only by the owner", () => {
    expect(base.created).toMatchObject({ ca: true, certificate: true });
    expect(base.source).toBe("internal");
    expect(fileMode(baseDir)).toBe(0o700);
    expect(fileMode(path.join(baseDir, "ca.key"))).toBe(0o600);
    expect(fileMode(path.join(baseDir, "server.key"))).toBe(0o600);
    // Atomic writes leave no temporary files (and the lock is released).
    expect(fs.readdirSync(baseDir).sort()).toEqual(["ca.crt", "ca.key", "server.crt", "server.key"]);
    expect(fs.readFileSync(path.join(baseDir, "server.key"), "utf8")).toBe(base.keyPem);
  });

  it("makes a CA that may only sign end-entity certificates", () => {
    const ca = new X509Certificate(base.caPem);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toMatch(/^CN=Wardkeep Internal CA [0-9a-f]{8}\nO=Wardkeep$/);
    expect(ca.publicKey.asymmetricKeyDetails?.modulusLength).toBe(3072);
    const years = (new Date(ca.validTo).getTime() - Date.now()) / (365.25 * DAY_MS);
    expect(years).toBeGreaterThan(9.9);
    expect(years).toBeLessThan(10.1);

    const forgeCa = forge.pki.certificateFromPem(base.caPem);
    const basicConstraints = forgeCa.getExtension("basicConstraints") as { cA: boolean; pathLenConstraint?: number };
    expect(basicConstraints).toMatchObject({ cA: true, pathLenConstraint: 0 });
    const keyUsage = forgeCa.getExtension("keyUsage") as Record<string, boolean>;
    expect(keyUsage).toMatchObject({ keyCertSign: true, cRLSign: true, digitalSignature: false });
  });

  it("issues a server certificate that verifies against the internal CA", () => {
    const ca = new X509Certificate(base.caPem);
    const server = new X509Certificate(base.certPem);
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.ca).toBe(false);
    expect(server.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]);
    expect(server.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(base.fingerprint256).toBe(server.fingerprint256);
    expect(base.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const lifetimeDays = (new Date(server.validTo).getTime() - new Date(server.validFrom).getTime()) / DAY_MS;
    expect(lifetimeDays).toBe(VALIDITY_DAYS);
    expect(base.notAfter.getTime()).toBe(new Date(server.validTo).getTime());
    // A positive 128-bit serial: 32 hex digits, top bit set in the magnitude.
    expect(server.serialNumber).toMatch(/^[89A-F][0-9A-F]{31}$/);
  });

  it("lists every requested DNS name and IP address, including IPv6, in the SAN", () => {
    const server = new X509Certificate(base.certPem);
    expect(server.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(server.checkIP("::1")).toBe("::1");
    expect(server.checkIP("0:0:0:0:0:0:0:1")).toBeDefined();
    expect(server.checkHost("wardkeep.hospital.example", { subject: "never" })).toBeDefined();
    expect(describeCertificate(base.certPem).hostnames.sort()).toEqual([...HOSTNAMES].sort());
  });

  it("serves TLS that a client trusting only the CA accepts for localhost and rejects for other names", async () => {
    await withTlsServer(base, async (port) => {
      expect(await connect(port, { ca: base.caPem, servername: "localhost" })).toBe("verified");
      expect(await connect(port, { ca: base.caPem, servername: "wardkeep.hospital.example" })).toBe("verified");
      expect(await connect(port, { ca: base.caPem, servername: "intranet.other.example" })).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
      // Without the internal CA the chain has no trust anchor.
      expect(await connect(port, { servername: "localhost" })).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/);
    });
  });

  it("describes the certificate for the doctor command", () => {
    const d = describeCertificate(base.certPem);
    expect(d.subject).toBe("CN=localhost, O=Wardkeep");
    expect(d.issuer).toMatch(/^CN=Wardkeep Internal CA [0-9a-f]{8}, O=Wardkeep$/);
    expect(d.fingerprint256).toBe(base.fingerprint256);
    expect(d.notAfter).toEqual(base.notAfter);
    expect(d.notBefore.getTime()).toBeLessThan(Date.now());
  });

  it("rejects host names that cannot go into a certificate", async () => {
    await expectTlsError(ensureTlsMaterial({ dir: copyOfBase(), hostnames: ["https://wardkeep"], validityDays: 30 }), /neither a DNS name nor an IP address/);
    await expectTlsError(ensureTlsMaterial({ dir: copyOfBase(), hostnames: [], validityDays: 30 }), /no host names/);
  });
});

describe("later starts", () => {
  it("reuses the CA and the certificate as they are", async () => {
    const dir = copyOfBase();
    const before = snapshotDir(dir);
    const again = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(again.created).toEqual({ ca: false, certificate: false });
    expect(again.fingerprint256).toBe(base.fingerprint256);
    expect(again.caPem).toBe(base.caPem);
    expect(snapshotDir(dir)).toEqual(before);
  });

  it("treats the same address written differently as already covered", async () => {
    const dir = copyOfBase();
    const again = await ensureTlsMaterial({
      dir,
      hostnames: ["LOCALHOST", "0:0:0:0:0:0:0:1", "[::1]", "wardkeep.hospital.example."],
      validityDays: VALIDITY_DAYS,
    });
    expect(again.created.certificate).toBe(false);
  });

  it("re-issues the server certificate, keeping the CA, when a host name is added", async () => {
    const dir = copyOfBase();
    const caKeyBefore = fs.readFileSync(path.join(dir, "ca.key"));
    const grown = await ensureTlsMaterial({
      dir,
      hostnames: [...HOSTNAMES, "10.20.30.40", "fd00::20"],
      validityDays: VALIDITY_DAYS,
    });
    expect(grown.created).toMatchObject({ ca: false, certificate: true });
    expect(grown.created.reason).toMatch(/does not cover 10\.20\.30\.40, fd00::20/);
    expect(grown.fingerprint256).not.toBe(base.fingerprint256);
    expect(grown.caPem).toBe(base.caPem);
    expect(fs.readFileSync(path.join(dir, "ca.key"))).toEqual(caKeyBefore);
    expect(grown.keyPem).not.toBe(base.keyPem);
    const server = new X509Certificate(grown.certPem);
    expect(server.verify(new X509Certificate(base.caPem).publicKey)).toBe(true);
    expect(server.checkIP("fd00::20")).toBeDefined();
    expect(fileMode(path.join(dir, "server.key"))).toBe(0o600);
  });

  it("re-issues a certificate that expires within 30 days, and not one that has longer", async () => {
    const dir = copyOfBase();
    const in40Days = new Date(base.notAfter.getTime() - 40 * DAY_MS);
    const kept = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS, now: in40Days });
    expect(kept.created.certificate).toBe(false);
    expect(kept.expiresSoon).toBe(false);

    const in10Days = new Date(base.notAfter.getTime() - 10 * DAY_MS);
    const renewed = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS, now: in10Days });
    expect(renewed.created).toMatchObject({ ca: false, certificate: true });
    expect(renewed.created.reason).toMatch(/expires/);
    expect(renewed.notAfter.getTime()).toBeGreaterThan(in10Days.getTime() + (VALIDITY_DAYS - 1) * DAY_MS);
    expect(renewed.caPem).toBe(base.caPem);
    expect(renewed.expiresSoon).toBe(false);
  });

  it("re-issues a certificate that the CA in the directory did not sign", async () => {
    const dir = copyOfBase();
    const stranger = makeHospitalCa();
    const key = newRsaKey();
    const foreignPem = issueFromHospitalCa(stranger, {
      publicKey: forge.pki.setRsaPublicKey(key.forgeKey.n, key.forgeKey.e),
      hostnames: HOSTNAMES,
    });
    fs.writeFileSync(path.join(dir, "server.crt"), foreignPem);
    fs.writeFileSync(path.join(dir, "server.key"), key.pem, { mode: 0o600 });

    const material = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(material.created).toMatchObject({ ca: false, certificate: true });
    expect(material.created.reason).toMatch(/not signed by the internal CA/);
    expect(new X509Certificate(material.certPem).checkIssued(new X509Certificate(base.caPem))).toBe(true);
  });

  it("renews on request under the same CA", async () => {
    const dir = copyOfBase();
    const renewed = await renewServerCertificate({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(renewed.created).toMatchObject({ ca: false, certificate: true });
    expect(renewed.fingerprint256).not.toBe(base.fingerprint256);
    expect(renewed.caPem).toBe(base.caPem);
    const reused = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(reused.fingerprint256).toBe(renewed.fingerprint256);
  });

  it("refuses to replace a CA whose key is missing, since clients already trust it", async () => {
    const dir = copyOfBase();
    fs.rmSync(path.join(dir, "ca.key"));
    await expectTlsError(ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS }), /ca\.crt exists without ca\.key/);
    expect(fs.readFileSync(path.join(dir, "ca.crt"), "utf8")).toBe(base.caPem);
  });
});

describe("importing a certificate from the hospital's CA", () => {
  let hospital: HospitalCa;
  beforeAll(() => {
    hospital = makeHospitalCa();
  });

  function hospitalCertificate(opts: { notBefore?: Date; notAfter?: Date; extKeyUsage?: Record<string, boolean> } = {}) {
    const key = newRsaKey();
    const certPem = issueFromHospitalCa(hospital, {
      publicKey: forge.pki.setRsaPublicKey(key.forgeKey.n, key.forgeKey.e),
      hostnames: ["wardkeep.hospital.example", "10.0.0.5"],
      ...opts,
    });
    return { certPem, keyPem: key.pem };
  }

  it("rejects a key that does not belong to the certificate, changing nothing", async () => {
    const dir = copyOfBase();
    const before = snapshotDir(dir);
    const { certPem } = hospitalCertificate();
    await expectTlsError(importCertificate({ dir, certPem, keyPem: newRsaKey().pem }), /^the private key does not match the certificate/);
    expect(snapshotDir(dir)).toEqual(before);
  });

  it("rejects an expired certificate, changing nothing", async () => {
    const dir = copyOfBase();
    const before = snapshotDir(dir);
    const expired = hospitalCertificate({
      notBefore: new Date(Date.now() - 400 * DAY_MS),
      notAfter: new Date(Date.now() - DAY_MS),
    });
    await expectTlsError(importCertificate({ dir, ...expired }), /^the certificate expired on \d{4}-\d\d-\d\d/);
    expect(snapshotDir(dir)).toEqual(before);
  });

  it("rejects garbage instead of a PEM certificate or key, changing nothing", async () => {
    const dir = copyOfBase();
    const before = snapshotDir(dir);
    const good = hospitalCertificate();
    await expectTlsError(importCertificate({ dir, certPem: "not a certificate at all", keyPem: good.keyPem }), /^the certificate is not a PEM certificate/);
    await expectTlsError(
      importCertificate({
        dir,
        certPem: "-----BEGIN CERTIFICATE-----\nAAAAbroken\n-----END CERTIFICATE-----\n",
        keyPem: good.keyPem,
      }),
      /certificate 1 in the PEM file could not be read/,
    );
    const notAKey = await expectTlsError(importCertificate({ dir, certPem: good.certPem, keyPem: "hunter2" }), /^the private key is not a PEM private key/);
    expect(notAKey.message).not.toContain("hunter2");
    expect(snapshotDir(dir)).toEqual(before);
  });

  it("rejects a certificate that is not for TLS servers", async () => {
    const dir = copyOfBase();
    const clientOnly = hospitalCertificate({ extKeyUsage: { clientAuth: true } });
    await expectTlsError(importCertificate({ dir, ...clientOnly }), /lacks serverAuth/);
  });

  it("rejects a chain whose issuers are out of order", async () => {
    const dir = copyOfBase();
    const good = hospitalCertificate();
    await expectTlsError(importCertificate({ dir, certPem: hospital.certPem + good.certPem, keyPem: good.keyPem }), /chain is out of order/);
  });

  it("keeps an imported certificate on later starts and warns when it expires soon", async () => {
    const dir = copyOfBase();
    const soon = hospitalCertificate({ notAfter: new Date(Date.now() + 20 * DAY_MS) });
    const imported = await importCertificate({ dir, certPem: soon.certPem + hospital.certPem, keyPem: soon.keyPem });
    expect(imported).toMatchObject({ source: "imported", expiresSoon: true });
    expect(imported.caPem).toBe(lf(hospital.certPem));
    expect(fileMode(path.join(dir, "server.key"))).toBe(0o600);

    const later = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(later).toMatchObject({ source: "imported", expiresSoon: true, created: { ca: false, certificate: false } });
    expect(later.fingerprint256).toBe(imported.fingerprint256);
    expect(later.certPem).toBe(lf(soon.certPem + hospital.certPem));

    // An explicit renewal returns to the internal CA.
    const renewed = await renewServerCertificate({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(renewed).toMatchObject({ source: "internal", caPem: base.caPem, expiresSoon: false });
    expect(fs.existsSync(path.join(dir, "server.json"))).toBe(false);
  });

  it("round-trips a CSR: the hospital signs it and the import needs no key", async () => {
    const dir = copyOfBase();
    const names = ["wardkeep.hospital.example", "10.0.0.5", "fd00::5"];
    const { csrPem, keyPath } = await createCertificateSigningRequest({
      dir,
      hostnames: names,
      organization: "St. Example Hospital",
    });
    expect(keyPath).toBe(path.join(dir, "server.next.key"));
    expect(fileMode(keyPath)).toBe(0o600);
    const pendingKeyPem = fs.readFileSync(keyPath, "utf8");
    // Until the signed certificate arrives, the appliance keeps serving its current one.
    expect(fs.readFileSync(path.join(dir, "server.key"), "utf8")).toBe(base.keyPem);

    // The hospital CA's side: check the request, then issue what it asks for.
    const csr = forge.pki.certificationRequestFromPem(csrPem);
    expect(csr.verify()).toBe(true);
    expect(csr.subject.getField("CN").value).toBe("wardkeep.hospital.example");
    expect(csr.subject.getField("O").value).toBe("St. Example Hospital");
    const requested = csr.getAttribute({ name: "extensionRequest" }) as unknown as {
      extensions: { name: string; altNames?: { type: number; value?: string; ip?: string }[] }[];
    };
    const san = requested.extensions.find((e) => e.name === "subjectAltName")!;
    expect(san.altNames!.map((n) => (n.type === 7 ? n.ip : n.value))).toEqual(["wardkeep.hospital.example", "10.0.0.5", expect.stringMatching(/^fd00:0{0,4}:/)]);
    const certPem = issueFromHospitalCa(hospital, { publicKey: csr.publicKey!, hostnames: names });

    const imported = await importCertificate({ dir, certPem });
    expect(imported).toMatchObject({ source: "imported", expiresSoon: false, created: { certificate: true } });
    expect(fs.existsSync(keyPath)).toBe(false);
    expect(fs.readFileSync(path.join(dir, "server.key"), "utf8")).toBe(pendingKeyPem);
    expect(fileMode(path.join(dir, "server.key"))).toBe(0o600);
    expect(describeCertificate(imported.certPem)).toMatchObject({
      issuer: "CN=St. Example Hospital Issuing CA",
      hostnames: ["wardkeep.hospital.example", "10.0.0.5", "fd00::5"],
    });

    // Not signed by the internal CA and missing localhost, yet kept: the hospital chose it.
    const later = await ensureTlsMaterial({ dir, hostnames: HOSTNAMES, validityDays: VALIDITY_DAYS });
    expect(later).toMatchObject({ source: "imported", created: { ca: false, certificate: false } });
    expect(later.fingerprint256).toBe(imported.fingerprint256);
    expect(later.keyPem).toBe(pendingKeyPem);

    await withTlsServer(later, async (port) => {
      expect(await connect(port, { ca: hospital.certPem, servername: "wardkeep.hospital.example" })).toBe("verified");
    });

    // A second import without a key has no pending CSR key left to use.
    await expectTlsError(importCertificate({ dir, certPem }), /no private key was given/);
  });
});
