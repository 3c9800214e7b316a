import { describe, expect, it } from "vitest";
import { ShamirError, combineShares, splitSecret } from "../../../daemon/keys/shamir.js";
import { randomKey } from "../../../daemon/keys/primitives.js";
import { createHash } from "node:crypto";

/** RFC 4648 base32 without padding, written independently of the module under test. */
function base32Decode(text: string): Buffer {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const bits = [...text].map((c) => alphabet.indexOf(c).toString(2).padStart(5, "0")).join("");
  const out: number[] = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) out.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(out);
}

function combinations<T>(items: T[], k: number): T[][] {
  if (k === 0) return [[]];
  return items.flatMap((item, i) => combinations(items.slice(i + 1), k - 1).map((rest) => [item, ...rest]));
}

/** Changes one base32 character of the share body to another valid base32 character. */
function mistype(share: string): string {
  const parts = share.split("-");
  const body = parts[5]!;
  const swapped = (body[1] === "A" ? "B" : "A") + body.slice(2);
  parts[5] = body[0] + swapped;
  return parts.join("-");
}

describe("splitSecret / combineShares", () => {
  it("encodes shares for people to print and type", async () => {
    const shares = await splitSecret(randomKey(), 5, 3);
    expect(shares).toHaveLength(5);
    shares.forEach((share, i) => {
      expect(share).toMatch(new RegExp(`^wks1-3-${i + 1}-[A-Z2-7]{4}(-[A-Z2-7]{1,4})+-[0-9A-F]{4}$`));
    });
    // One split id for the whole split.
    expect(new Set(shares.map((s) => s.split("-")[3])).size).toBe(1);
  });

  it("recovers the secret from every combination of 3 of 5 shares", async () => {
    const secret = randomKey();
    const shares = await splitSecret(secret, 5, 3);
    const combos = combinations(shares, 3);
    expect(combos).toHaveLength(10);
    for (const combo of combos) {
      expect((await combineShares(combo)).equals(secret)).toBe(true);
    }
    expect((await combineShares([...shares].reverse())).equals(secret)).toBe(true);
  });

  it("accepts shares typed in lower case with spaces and line breaks", async () => {
    const secret = randomKey();
    const shares = await splitSecret(secret, 3, 2);
    const typed = [shares[0]!.toLowerCase(), shares[2]!.replace(/-/g, " - ").replace(/(.{20})/, "$1\n")];
    expect((await combineShares(typed)).equals(secret)).toBe(true);
  });

  it("refuses too few shares with a clear error", async () => {
    const shares = await splitSecret(randomKey(), 5, 3);
    await expect(combineShares(shares.slice(0, 2))).rejects.toThrow(new ShamirError("need 3 shares, got 2"));
    await expect(combineShares(shares.slice(0, 1))).rejects.toThrow("need 3 shares, got 1");
    await expect(combineShares([])).rejects.toThrow(ShamirError);
  });

  it("names the share that was mistyped", async () => {
    const shares = await splitSecret(randomKey(), 5, 3);
    const label = shares[3]!.split("-").slice(0, 4).join("-");
    const input = [shares[0]!, mistype(shares[3]!), shares[4]!];
    await expect(combineShares(input)).rejects.toThrow(ShamirError);
    await expect(combineShares(input)).rejects.toThrow(`share #2 (${label}…) has a wrong checksum`);
  });

  it("catches a typo in the share header, not only in the body", async () => {
    const shares = await splitSecret(randomKey(), 5, 3);
    const wrongIndex = shares[1]!.replace(/^wks1-3-2-/, "wks1-3-4-");
    await expect(combineShares([shares[0]!, wrongIndex, shares[2]!])).rejects.toThrow(/share #2 \(wks1-3-4-[A-Z2-7]{4}…\) has a wrong checksum/);
  });

  it("explains characters that base32 never uses", async () => {
    const shares = await splitSecret(randomKey(), 3, 2);
    const parts = shares[1]!.split("-");
    parts[6] = "0" + parts[6]!.slice(1);
    await expect(combineShares([shares[0]!, parts.join("-")])).rejects.toThrow(/share #2 .* is malformed: .*0, 1, 8 and 9 are not base32/);
  });

  it("does not echo secret share bytes in error messages", async () => {
    const shares = await splitSecret(randomKey(), 3, 2);
    const bad = mistype(shares[1]!);
    const body = bad.split("-").slice(4, -1).join("-");
    await expect(combineShares([shares[0]!, bad])).rejects.toSatisfy((err: Error) => !err.message.includes(body) && !err.message.includes(body.slice(0, 9)));
  });

  it("refuses a garbled share", async () => {
    const shares = await splitSecret(randomKey(), 3, 2);
    await expect(combineShares([shares[0]!, "hello"])).rejects.toThrow(/share #2 is malformed/);
  });

  it("refuses to mix shares from two splits", async () => {
    const secret = randomKey();
    const first = await splitSecret(secret, 5, 3);
    let second = await splitSecret(secret, 5, 3);
    // Split ids are 20 random bits; make sure the two differ for this test.
    while (second[0]!.split("-")[3] === first[0]!.split("-")[3]) second = await splitSecret(secret, 5, 3);
    await expect(combineShares([first[0]!, first[1]!, second[2]!])).rejects.toThrow(/shares come from different splits/);
  });

  it("detects a share given twice", async () => {
    const shares = await splitSecret(randomKey(), 5, 3);
    await expect(combineShares([shares[0]!, shares[1]!, shares[1]!])).rejects.toThrow(/share #3 \(wks1-3-2-[A-Z2-7]{4}…\) duplicates share #2/);
    await expect(combineShares([shares[0]!, shares[1]!, shares[1]!.toLowerCase()])).rejects.toThrow(/duplicates/);
  });

  it("returns a wrong secret, without error, from an altered share with a valid checksum (the caller must verify)", async () => {
    // Documented limit: Shamir has no integrity of its own, and the checksum only catches typos.
    // Someone who alters a share and recomputes its checksum goes unnoticed here, which is why
    // unsealing checks the KEK's check value.
    const secret = randomKey();
    const shares = await splitSecret(secret, 3, 2);
    const parts = shares[1]!.split("-");
    const group = parts[5]!;
    parts[5] = (group[0] === "A" ? "B" : "A") + group.slice(1);
    const [prefix, t, i, splitId] = parts;
    const bytes = base32Decode(parts.slice(4, -1).join(""));
    parts[parts.length - 1] = createHash("sha256").update(`${prefix}-${t}-${i}-${splitId}-`).update(bytes).digest("hex").slice(0, 4).toUpperCase();
    const recovered = await combineShares([shares[0]!, parts.join("-")]);
    expect(recovered).toHaveLength(32);
    expect(recovered.equals(secret)).toBe(false);
  });

  it("validates threshold and share counts", async () => {
    const secret = randomKey();
    await expect(splitSecret(secret, 5, 1)).rejects.toThrow("threshold must be at least 2, got 1");
    await expect(splitSecret(secret, 2, 3)).rejects.toThrow("shares (2) must be at least the threshold (3)");
    await expect(splitSecret(secret, 256, 3)).rejects.toThrow("at most 255 shares, got 256");
    await expect(splitSecret(secret, 2.5, 2)).rejects.toThrow(ShamirError);
    await expect(splitSecret(Buffer.alloc(0), 3, 2)).rejects.toThrow(/non-empty/);
    const max = await splitSecret(Buffer.from("k"), 255, 255);
    expect(max).toHaveLength(255);
    expect((await combineShares(max)).toString()).toBe("k");
  });
});
