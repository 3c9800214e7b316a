import { describe, expect, it } from "vitest";
import {
  DecryptionError,
  FieldFormatError,
  NonceBudget,
  UnknownKeyVersionError,
  blindIndex,
  decryptField,
  encryptField,
  normaliseEmail,
  readFieldHeader,
  type DataKey,
  type DataKeyLookup,
  type FieldContext,
} from "../../../daemon/keys/field-cipher.js";
import { randomKey } from "../../../daemon/keys/primitives.js";

const ctx: FieldContext = {
  tenantId: "tenant-a",
  table: "patients",
  column: "name",
  rowId: "row-1",
};
const v1: DataKey = { id: "tenant:tenant-a", version: 1, key: randomKey() };
const v2: DataKey = { id: "tenant:tenant-a", version: 2, key: randomKey() };

function keyStore(...keys: DataKey[]): DataKeyLookup {
  return (id, version) => keys.find((k) => k.id === id && k.version === version);
}
const lookup = keyStore(v1, v2);

describe("encryptField / decryptField", () => {
  it.each([
    ["an empty string", ""],
    ["unicode text", "Zoë Ångström — 患者 👩‍⚕️"],
  ])("round-trips %s", (_name, value) => {
    const ct = encryptField(v1, ctx, value);
    expect(decryptField(lookup, ctx, ct).toString("utf8")).toBe(value);
  });

  it("round-trips 1 MB of binary data", () => {
    const data = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    const ct = encryptField(v1, ctx, data);
    expect(decryptField(lookup, ctx, ct).equals(data)).toBe(true);
  });

  it("writes a readable header with format, key id and key version", () => {
    expect(readFieldHeader(encryptField(v2, ctx, "x"))).toEqual({
      formatVersion: 1,
      keyId: "tenant:tenant-a",
      keyVersion: 2,
    });
  });

  it("produces a different ciphertext each time for the same value", () => {
    const a = encryptField(v1, ctx, "same value");
    const b = encryptField(v1, ctx, "same value");
    expect(a.equals(b)).toBe(false);
  });

  it.each<[string, Partial<FieldContext>]>([
    ["another row", { rowId: "row-2" }],
    ["another column", { column: "dob" }],
    ["another table", { table: "notes" }],
    ["another tenant", { tenantId: "tenant-b" }],
  ])("refuses a ciphertext moved to %s", (_name, change) => {
    const ct = encryptField(v1, ctx, "Jane Doe");
    expect(() => decryptField(lookup, { ...ctx, ...change }, ct)).toThrow(DecryptionError);
  });

  it("binds the context unambiguously ('ab'+'c' is not 'a'+'bc')", () => {
    const ct = encryptField(v1, { ...ctx, table: "ab", column: "c" }, "x");
    expect(() => decryptField(lookup, { ...ctx, table: "a", column: "bc" }, ct)).toThrow(DecryptionError);
  });

  it("rejects a flipped bit anywhere in the stored value", () => {
    const ct = encryptField(v1, ctx, "Jane Doe, MRN 0012345");
    for (let i = 0; i < ct.length; i++) {
      const bad = Buffer.from(ct);
      bad[i]! ^= 0x04;
      expect(() => decryptField(lookup, ctx, bad), `byte ${i}`).toThrow();
    }
  });

  it("rejects a flipped bit in nonce, body or tag as tampering", () => {
    const ct = encryptField(v1, ctx, "Jane Doe, MRN 0012345");
    const headerLength = 6 + Buffer.byteLength(v1.id);
    const positions = {
      nonce: headerLength + 5,
      body: headerLength + 12 + 3,
      tag: ct.length - 1,
    };
    for (const [part, at] of Object.entries(positions)) {
      const bad = Buffer.from(ct);
      bad[at]! ^= 0x01;
      expect(() => decryptField(lookup, ctx, bad), part).toThrow(DecryptionError);
    }
  });

  it("authenticates the header even if a tampered key id or version resolves to the same key bytes", () => {
    const ct = encryptField(v1, ctx, "Jane Doe");
    // A permissive key store that answers any (id, version) with v1's bytes.
    const anything: DataKeyLookup = (id, version) => ({
      id,
      version,
      key: v1.key,
    });
    const versionFlipped = Buffer.from(ct);
    versionFlipped[4]! ^= 0x02; // key version 1 -> 3
    expect(readFieldHeader(versionFlipped).keyVersion).toBe(3);
    expect(() => decryptField(anything, ctx, versionFlipped)).toThrow(DecryptionError);
    const idFlipped = Buffer.from(ct);
    idFlipped[7]! ^= 0x01; // "tenant:..." -> "tdnant:..."
    expect(() => decryptField(anything, ctx, idFlipped)).toThrow(DecryptionError);
  });

  it("reads with the version in the header across a rotation", () => {
    const store: DataKey[] = [v1];
    const rotatingLookup: DataKeyLookup = (id, version) => store.find((k) => k.id === id && k.version === version);
    const old = encryptField(v1, ctx, "written before rotation");

    store.push(v2); // rotate: new writes use v2, v1 stays readable
    const fresh = encryptField(v2, ctx, "written after rotation");

    expect(readFieldHeader(old).keyVersion).toBe(1);
    expect(readFieldHeader(fresh).keyVersion).toBe(2);
    expect(decryptField(rotatingLookup, ctx, old).toString()).toBe("written before rotation");
    expect(decryptField(rotatingLookup, ctx, fresh).toString()).toBe("written after rotation");
  });

  it("says clearly which key version is missing (for example after crypto-shredding)", () => {
    const ct = encryptField(v2, ctx, "x");
    const onlyV1 = keyStore(v1);
    expect(() => decryptField(onlyV1, ctx, ct)).toThrow(UnknownKeyVersionError);
    expect(() => decryptField(onlyV1, ctx, ct)).toThrow('no data key "tenant:tenant-a" version 2');
    try {
      decryptField(onlyV1, ctx, ct);
    } catch (err) {
      expect(err).not.toBeInstanceOf(DecryptionError);
      expect((err as UnknownKeyVersionError).keyVersion).toBe(2);
    }
  });

  it("refuses a key store that answers with a different version", () => {
    const ct = encryptField(v2, ctx, "x");
    expect(() => decryptField(() => v1, ctx, ct)).toThrow(/lookup returned "tenant:tenant-a" version 1 instead/);
  });

  it("rejects an unknown format version clearly", () => {
    const ct = encryptField(v1, ctx, "x");
    ct[0] = 2;
    expect(() => readFieldHeader(ct)).toThrow(FieldFormatError);
    expect(() => decryptField(lookup, ctx, ct)).toThrow("unsupported field ciphertext format version 2");
  });

  it("rejects truncated input clearly", () => {
    const ct = encryptField(v1, ctx, "Jane");
    expect(() => decryptField(lookup, ctx, Buffer.alloc(0))).toThrow("field ciphertext is empty");
    expect(() => decryptField(lookup, ctx, ct.subarray(0, 20))).toThrow(/truncated/);
    expect(() => decryptField(lookup, ctx, ct.subarray(0, 6 + v1.id.length + 12 + 15))).toThrow(/truncated/);
    // Losing the last bytes of a longer value leaves a parseable value whose tag then fails.
    expect(() => decryptField(lookup, ctx, ct.subarray(0, ct.length - 1))).toThrow(DecryptionError);
  });

  it("refuses an empty context component", () => {
    expect(() => encryptField(v1, { ...ctx, rowId: "" }, "x")).toThrow(/rowId must not be empty/);
  });
});

describe("blindIndex", () => {
  const indexKey = randomKey();
  const mrn = { tenantId: "tenant-a", table: "patients", column: "mrn" };

  it("is deterministic for a tenant and column", () => {
    const a = blindIndex(indexKey, mrn, "0012345");
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(blindIndex(indexKey, mrn, "0012345")).toBe(a);
    expect(blindIndex(indexKey, mrn, "0012346")).not.toBe(a);
  });

  it("differs across tenants and columns for the same value, even under one key", () => {
    const a = blindIndex(indexKey, mrn, "0012345");
    expect(blindIndex(indexKey, { ...mrn, tenantId: "tenant-b" }, "0012345")).not.toBe(a);
    expect(blindIndex(indexKey, { ...mrn, column: "ssn" }, "0012345")).not.toBe(a);
    expect(blindIndex(randomKey(), mrn, "0012345")).not.toBe(a);
  });

  it("normalises with NFKC and trimming by default", () => {
    const a = blindIndex(indexKey, mrn, "0012345");
    expect(blindIndex(indexKey, mrn, "  ００１２３４５\n")).toBe(a); // full-width digits
  });

  it("lower-cases emails when given normaliseEmail", () => {
    const email = { tenantId: "tenant-a", table: "patients", column: "email" };
    const a = blindIndex(indexKey, email, "jane.doe@example.org", {
      normalise: normaliseEmail,
    });
    expect(
      blindIndex(indexKey, email, " Jane.Doe@Example.ORG ", {
        normalise: normaliseEmail,
      }),
    ).toBe(a);
    // Without the email normaliser case is significant.
    expect(blindIndex(indexKey, email, "Jane.Doe@Example.ORG")).not.toBe(a);
  });

  it("refuses a short index key", () => {
    expect(() => blindIndex(Buffer.alloc(16), mrn, "x")).toThrow(/at least 32 bytes/);
  });
});

describe("NonceBudget", () => {
  it("flags rotation when a key version reaches its limit", () => {
    const budget = new NonceBudget({ limit: 3 });
    expect(budget.record("k", 1)).toEqual({ used: 1, shouldRotate: false });
    budget.record("k", 1);
    expect(budget.shouldRotate("k", 1)).toBe(false);
    expect(budget.record("k", 1)).toEqual({ used: 3, shouldRotate: true });
    expect(budget.shouldRotate("k", 1)).toBe(true);
    expect(budget.remaining("k", 1)).toBe(0);
    // Versions and keys are counted separately.
    expect(budget.shouldRotate("k", 2)).toBe(false);
    expect(budget.used("other", 1)).toBe(0);
  });

  it("counts field encryptions when passed to encryptField", () => {
    const budget = new NonceBudget({ limit: 2 });
    encryptField(v1, ctx, "a", { nonceBudget: budget });
    expect(budget.shouldRotate(v1.id, v1.version)).toBe(false);
    encryptField(v1, ctx, "b", { nonceBudget: budget });
    expect(budget.shouldRotate(v1.id, v1.version)).toBe(true);
    expect(budget.used(v2.id, v2.version)).toBe(0);
  });

  it("defaults to a margin below the 2^32 random-nonce bound of SP 800-38D §8.3", () => {
    const budget = new NonceBudget();
    expect(budget.limit).toBeLessThan(2 ** 32);
    expect(budget.limit).toBeGreaterThan(2 ** 31);
    expect(budget.record("k", 1, budget.limit - 1).shouldRotate).toBe(false);
    expect(budget.record("k", 1).shouldRotate).toBe(true);
    expect(() => new NonceBudget({ limit: 2 ** 32 + 1 })).toThrow(RangeError);
  });
});
