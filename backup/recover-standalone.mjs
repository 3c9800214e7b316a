#!/usr/bin/env node
// Wardkeep snapshot recovery WITHOUT Wardkeep: Node.js (18 or newer) standard library only.
//
// Decrypts and checks one snapshot with the recovery private key (the recovery kit's PEM file),
// then writes each table as a PostgreSQL COPY text file plus a load.sql script for psql. The
// standard library cannot speak the PostgreSQL wire protocol, so loading is done by psql:
//
//   node recover-standalone.mjs --snapshot DIR --recovery-key kit.pem --out OUT [--expect-signer HEX] [--keystore KDIR]
//   psql "postgres://..." -f OUT/load.sql                    # plain mode (default): typed tables
//   psql "postgres://..." -v mode=wardkeep -f OUT/load.sql   # into a schema made by `wardkeep migrate`
//
// DIR is a copy of `snapshots/<id>/` from the target (a NAS folder, `sftp get -r`,
// `aws s3 cp --recursive s3://bucket/prefix/snapshots/<id>/ DIR`). Every byte is authenticated
// before it is written out; any mismatch stops with a message and a non-zero exit.
//
// KDIR is a copy of `keystores/<id>/` (take the NEWEST one): the key-store backup. With it the
// script also opens every KEK version with the recovery key, unwraps every data key with them,
// checks that the appliance-internal key derives the signer of both manifests, and writes
// OUT/data-keys.json (0600: raw data keys, hex, by "keyId#version"; crypto-shredded subjects are
// not in it) so the field ciphertexts in the COPY files can be decrypted (FORMAT.md "Fields").
// The format is specified in backup/FORMAT.md.
import { createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey, diffieHellman, hkdfSync, timingSafeEqual, verify } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { brotliDecompressSync, gunzipSync } from "node:zlib";

function fail(message) {
  process.stderr.write(`recover-standalone: ${message}\n`);
  process.exit(1);
}

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (!k.startsWith("--")) fail(`unexpected argument ${k}`);
    out[k.slice(2)] = argv[++i];
  }
  for (const need of ["snapshot", "recovery-key", "out"]) if (!out[need]) fail(`--${need} is required (see the header of this file)`);
  for (const k of Object.keys(out)) if (!["snapshot", "recovery-key", "out", "expect-signer", "keystore"].includes(k)) fail(`unknown option --${k}`);
  return out;
}

// JSON with keys sorted by UTF-16 code unit, no whitespace (FORMAT.md "Manifest").
function canonicalJson(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(canonicalJson).join(",") + "]";
  const keys = Object.keys(v)
    .filter((k) => v[k] !== undefined)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(v[k])).join(",") + "}";
}

const hkdf = (ikm, salt, info, n = 32) => Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from(info), n));
const rawX25519Public = (key) => Buffer.from(key.export({ format: "jwk" }).x, "base64url");

// FORMAT.md "Keys": blob = 0x01 || ephemeral public (32) || nonce (12) || ciphertext || tag (16)
function unwrapRecovery(privateKey, blob) {
  if (blob[0] !== 1 || blob.length < 1 + 32 + 12 + 16) fail("the recovery-wrapped key is malformed");
  const eph = blob.subarray(1, 33);
  const nonce = blob.subarray(33, 45);
  const body = blob.subarray(45, blob.length - 16);
  const tag = blob.subarray(blob.length - 16);
  const recipient = rawX25519Public(createPublicKey(privateKey));
  const ephKey = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: eph.toString("base64url") }, format: "jwk" });
  const shared = diffieHellman({ privateKey, publicKey: ephKey });
  const label = "wardkeep/recovery-wrap/v1";
  const key = hkdf(shared, Buffer.concat([eph, recipient]), label);
  const d = createDecipheriv("aes-256-gcm", key, nonce);
  d.setAAD(Buffer.concat([Buffer.from(label), Buffer.from([1]), eph, recipient]));
  d.setAuthTag(tag);
  try {
    return Buffer.concat([d.update(body), d.final()]);
  } catch {
    fail("wrong recovery key: it cannot unwrap this snapshot's key");
  }
}

// FORMAT.md "Objects": header 59 bytes, then segments of segmentBytes + 16.
function decryptObject(sealed, snapshotKey, ad, keyId, name) {
  if (sealed.length < 59 + 16 || sealed.subarray(0, 8).toString("ascii") !== "WKSTRM01") fail(`${name}: not a snapshot object`);
  const header = sealed.subarray(0, 59);
  const segmentBytes = header.readUInt32BE(8);
  const salt = header.subarray(12, 44);
  const prefix = header.subarray(44, 51);
  if (header.subarray(51, 59).toString("hex") !== keyId) fail(`${name}: sealed under another snapshot key`);
  const key = hkdf(snapshotKey, salt, Buffer.concat([Buffer.from("wardkeep-backup/segment-key/v1\u0000"), Buffer.from(ad)]));
  const out = [];
  const full = segmentBytes + 16;
  let offset = 59;
  for (let i = 0; ; i++) {
    const last = sealed.length - offset <= full;
    const seg = sealed.subarray(offset, last ? sealed.length : offset + full);
    if (seg.length < 16) fail(`${name}: truncated`);
    const nonce = Buffer.alloc(12);
    prefix.copy(nonce, 0);
    nonce.writeUInt32BE(i, 7);
    nonce[11] = last ? 1 : 0;
    const d = createDecipheriv("aes-256-gcm", key, nonce);
    d.setAAD(header);
    d.setAuthTag(seg.subarray(seg.length - 16));
    try {
      out.push(d.update(seg.subarray(0, seg.length - 16)), d.final());
    } catch {
      fail(`${name}: segment ${i} failed authentication (tampered, reordered or truncated)`);
    }
    if (last) break;
    offset += full;
  }
  return Buffer.concat(out);
}

// FORMAT.md "Key-store backups": manifest like a snapshot's, one object `keystore.wkd`.
function openKeyStore(dir, privateKey, expectSigner) {
  const file = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8"));
  const body = file.body;
  if (body.format !== "wardkeep-keystore" || body.formatVersion !== 1) fail("--keystore: not a Wardkeep key-store backup manifest of format version 1");
  const id = path.basename(path.resolve(dir));
  if (/^\d{8}T\d{6}Z-[0-9a-f]{8}$/.test(id) && body.keystoreId !== id) fail(`the key-store manifest in ${id} belongs to ${body.keystoreId}`);
  const wrap = body.keyWraps.find((w) => w.type === "recovery");
  if (!wrap) fail("the key-store backup has no recovery-key wrapping");
  const key = unwrapRecovery(privateKey, Buffer.from(wrap.wrapped, "base64"));
  const bytes = Buffer.from(canonicalJson(body), "utf8");
  const mac = createHmac("sha256", hkdf(key, Buffer.alloc(0), "wardkeep-backup/manifest-mac/v1"))
    .update(bytes)
    .digest();
  const given = Buffer.from(file.mac.value, "base64");
  if (given.length !== 32 || !timingSafeEqual(mac, given)) fail("the key-store manifest failed its MAC check (tampered or swapped)");
  const signer = Buffer.from(body.signer.publicKey, "base64");
  const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), signer]);
  if (!verify(null, bytes, createPublicKey({ key: spki, format: "der", type: "spki" }), Buffer.from(file.signature.value, "base64")))
    fail("the key-store manifest signature is invalid");
  if (expectSigner && expectSigner.toLowerCase() !== signer.toString("hex")) fail(`the key-store backup was signed by ${signer.toString("hex")}, not the expected signer`);
  const stored = fs.readFileSync(path.join(dir, "keystore.wkd"));
  if (createHash("sha256").update(stored).digest("hex") !== body.object.sha256) fail("keystore.wkd: the stored bytes do not match the manifest digest");
  const plain = decryptObject(stored, key, `keystore/${body.keystoreId}`, body.encryption.keyId, "keystore.wkd");
  if (createHash("sha256").update(plain).digest("hex") !== body.object.plainSha256) fail("keystore.wkd: the data digest does not match the manifest");
  key.fill(0);
  const contents = JSON.parse(plain.toString("utf8"));
  // KEK versions: wrapped for the recovery key like a snapshot key; check value = HMAC-SHA256(kek, "wardkeep/kek-check/v1|<version>").
  const keks = new Map();
  for (const k of contents.kekVersions) {
    const kek = unwrapRecovery(privateKey, Buffer.from(k.wraps.recovery, "base64"));
    if (createHmac("sha256", kek).update(`wardkeep/kek-check/v1|${k.version}`).digest("hex") !== k.checkValue) fail(`KEK version ${k.version} does not match its check value`);
    keks.set(k.version, kek);
  }
  // Data keys: 0x01 || nonce (12) || AES-256-GCM ciphertext || tag (16) under their KEK version,
  // associated data "wardkeep/data-key/v1|<keyId>|<version>|<kekVersion>".
  const dataKeys = {};
  let internal;
  for (const d of contents.dataKeys) {
    const blob = Buffer.from(d.wrapped, "hex");
    const kek = keks.get(d.kekVersion);
    if (!kek || blob[0] !== 1) fail(`data key ${d.keyId} v${d.version} is malformed`);
    const dec = createDecipheriv("aes-256-gcm", kek, blob.subarray(1, 13));
    dec.setAAD(Buffer.from(`wardkeep/data-key/v1|${d.keyId}|${d.version}|${d.kekVersion}`));
    dec.setAuthTag(blob.subarray(blob.length - 16));
    let raw;
    try {
      raw = Buffer.concat([dec.update(blob.subarray(13, blob.length - 16)), dec.final()]);
    } catch {
      fail(`data key ${d.keyId} v${d.version} does not unwrap with KEK version ${d.kekVersion}`);
    }
    if (d.keyId === "appliance-internal" && d.state === "active") internal = raw;
    const shredded = contents.shredded.some((s) => (s.kind === "tenant" ? s.tenantId === d.tenantId : s.subject === d.keyId));
    if (!shredded) dataKeys[`${d.keyId}#${d.version}`] = raw.toString("hex");
  }
  for (const kek of keks.values()) kek.fill(0);
  // The manifests' Ed25519 signing seed = HKDF-SHA256(appliance-internal key, salt empty, "wardkeep-backup/manifest-signing/v1").
  let derivedSigner = null;
  if (internal) {
    const seed = hkdf(internal, Buffer.alloc(0), "wardkeep-backup/manifest-signing/v1");
    const priv = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
    derivedSigner = createPublicKey(priv).export({ format: "der", type: "spki" }).subarray(12);
    if (!derivedSigner.equals(signer)) fail("the key-store backup was not signed by the appliance whose keys it holds");
  }
  return { id: body.keystoreId, dataKeys, derivedSigner, shredded: contents.shredded.map((s) => s.subject), kekVersions: keks.size };
}

const quote = (s) => `"${s.replaceAll('"', '""')}"`;
const PLAIN_TYPES =
  /^(bigint|integer|smallint|boolean|text|bytea|uuid|jsonb?|numeric(\(\d+(,\d+)?\))?|real|double precision|date|inet|character varying(\(\d+\))?|timestamp(\(\d\))? with(out)? time zone|time(\(\d\))? with(out)? time zone|interval)(\[\])?$/;

function main() {
  const a = args(process.argv.slice(2));
  const file = JSON.parse(fs.readFileSync(path.join(a.snapshot, "manifest.json"), "utf8"));
  const body = file.body;
  const id = path.basename(path.resolve(a.snapshot));
  if (body.format !== "wardkeep-snapshot" || body.formatVersion !== 1) fail("not a Wardkeep snapshot manifest of format version 1");
  if (/^\d{8}T\d{6}Z-[0-9a-f]{8}$/.test(id) && body.snapshotId !== id) fail(`the manifest in ${id} belongs to snapshot ${body.snapshotId}`);

  const pem = fs.readFileSync(a["recovery-key"], "utf8").match(/-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----/);
  if (!pem) fail("no PKCS#8 PEM private key in the recovery kit file (for a Shamir-split kit, combine the shares with `wardkeep` first)");
  const privateKey = createPrivateKey(pem[0]);
  const wrap = body.keyWraps.find((w) => w.type === "recovery");
  if (!wrap) fail("this snapshot has no recovery-key wrapping");
  const snapshotKey = unwrapRecovery(privateKey, Buffer.from(wrap.wrapped, "base64"));

  const bytes = Buffer.from(canonicalJson(body), "utf8");
  const mac = createHmac("sha256", hkdf(snapshotKey, Buffer.alloc(0), "wardkeep-backup/manifest-mac/v1"))
    .update(bytes)
    .digest();
  const given = Buffer.from(file.mac.value, "base64");
  if (given.length !== 32 || !timingSafeEqual(mac, given)) fail("the manifest failed its MAC check (tampered or swapped)");
  const signer = Buffer.from(body.signer.publicKey, "base64");
  const spki = Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), signer]);
  if (!verify(null, bytes, createPublicKey({ key: spki, format: "der", type: "spki" }), Buffer.from(file.signature.value, "base64"))) fail("the manifest signature is invalid");
  if (a["expect-signer"] && a["expect-signer"].toLowerCase() !== signer.toString("hex")) fail(`the manifest was signed by ${signer.toString("hex")}, not the expected signer`);

  let keyStore;
  if (a.keystore) {
    keyStore = openKeyStore(a.keystore, privateKey, a["expect-signer"]);
    if (keyStore.derivedSigner && !keyStore.derivedSigner.equals(signer)) fail("the snapshot was not signed by the appliance whose key-store backup was given");
  }

  fs.mkdirSync(a.out, { recursive: true });
  if (keyStore) {
    fs.writeFileSync(path.join(a.out, "data-keys.json"), JSON.stringify({ keystoreId: keyStore.id, shredded: keyStore.shredded, keys: keyStore.dataKeys }, null, 2) + "\n", {
      mode: 0o600,
    });
  }
  const load = [
    "-- Generated by recover-standalone.mjs from snapshot " + body.snapshotId,
    "\\set ON_ERROR_STOP on",
    "\\if :{?mode}",
    "\\else",
    "\\set mode plain",
    "\\endif",
    "SELECT :'mode' = 'wardkeep' AS wardkeep_mode \\gset",
    "BEGIN;",
    "SELECT set_config('wardkeep.scope', 'appliance', true);",
    "\\if :wardkeep_mode",
    `-- Into a database whose schema \`wardkeep migrate\` made at ${body.database.schemaVersion}: seeded rows replaced, RLS lifted for the load.`,
    "-- Needs a superuser connection (session_replication_role, and row-level security does not bind superusers).",
    "SET LOCAL session_replication_role = replica; -- no triggers, no FK checks during the load",
    ...body.partitions.flatMap((p) => [
      `CREATE TABLE IF NOT EXISTS ${quote(p.schema)}.${quote(p.table)} PARTITION OF ${quote(p.parentSchema)}.${quote(p.parent)} ${p.bound};`,
      ...p.triggers.map((t) => `DROP TRIGGER IF EXISTS ${quote(t.name)} ON ${quote(p.schema)}.${quote(p.table)}; ${t.definition};`),
    ]),
    ...body.objects.map((o) => `TRUNCATE ONLY ${quote(o.schema)}.${quote(o.table)};`),
    ...body.objects.map((o) => `\\copy ${quote(o.schema)}.${quote(o.table)} (${o.columns.map(quote).join(", ")}) FROM '${o.name}.copy'`),
    ...body.sequences.map((s) => `SELECT setval('${quote(s.schema)}.${quote(s.name)}', ${s.lastValue}, ${s.isCalled});`),
    "\\else",
    "-- Plain mode: every table in schema wardkeep_recovered, typed columns, no constraints.",
    "CREATE SCHEMA wardkeep_recovered;",
  ];
  let total = 0;
  for (const o of body.objects) {
    const stored = fs.readFileSync(path.join(a.snapshot, o.path));
    if (createHash("sha256").update(stored).digest("hex") !== o.sha256) fail(`${o.name}: the stored bytes do not match the manifest digest`);
    let plain = decryptObject(stored, snapshotKey, `${body.snapshotId}/${o.name}`, body.encryption.keyId, o.name);
    if (body.compression.alg === "gzip") plain = gunzipSync(plain);
    else if (body.compression.alg === "brotli") plain = brotliDecompressSync(plain);
    if (createHash("sha256").update(plain).digest("hex") !== o.plainSha256) fail(`${o.name}: the data digest does not match the manifest`);
    let rows = 0;
    for (let i = plain.indexOf(10); i !== -1; i = plain.indexOf(10, i + 1)) rows++;
    if (rows !== o.rows) fail(`${o.name}: ${rows} rows, the manifest says ${o.rows}`);
    fs.writeFileSync(path.join(a.out, `${o.name}.copy`), plain, { mode: 0o600 });
    const table = `wardkeep_recovered.${quote(`${o.schema}.${o.table}`)}`;
    load.push(`CREATE TABLE ${table} (${o.columns.map((c, i) => `${quote(c)} ${PLAIN_TYPES.test(o.types[i]) ? o.types[i] : "text"}`).join(", ")});`);
    load.push(`\\copy ${table} FROM '${o.name}.copy'`);
    total += rows;
  }
  load.push("\\endif", "COMMIT;", "");
  fs.writeFileSync(path.join(a.out, "load.sql"), load.join("\n"), { mode: 0o600 });
  snapshotKey.fill(0);
  process.stdout.write(
    `snapshot ${body.snapshotId} verified and decrypted: ${body.objects.length} tables, ${total} rows -> ${a.out}\n` +
      `audit chain head at snapshot time: ${body.auditHead ? `seq ${body.auditHead.seq}, hash ${body.auditHead.hash}` : "none"}\n` +
      `signer (Ed25519, raw hex): ${signer.toString("hex")}\n` +
      (keyStore
        ? `key-store backup ${keyStore.id}: ${keyStore.kekVersions} KEK version(s), ${Object.keys(keyStore.dataKeys).length} data key(s) -> ${path.join(a.out, "data-keys.json")} (${keyStore.shredded.length} crypto-shredded subject(s) left out); signer derived from its appliance key: ${keyStore.derivedSigner ? "matches" : "not checked"}\n`
        : "") +
      `load: cd ${a.out} && psql "postgres://USER@HOST/DB" -f load.sql\n`,
  );
}

main();
