import type { Request } from "express";
import { describe, expect, it } from "vitest";
import type { ApplianceContext } from "../../../daemon/context.js";
import { AppError } from "../../../daemon/kernel/errors.js";
import { randomKey } from "../../../daemon/keys/primitives.js";
import { RootKey } from "../../../daemon/keys/root-key.js";
import { filenameOf } from "../../../daemon/records/attachments/routes.js";
import { decodeCursor, encodeCursor, ifMatchVersion, pageQuery, rejectInvalidUtf8, text } from "../../../daemon/records/http.js";
import { z } from "zod";

function ctxWithKey(): ApplianceContext {
  const rootKey = new RootKey("keyfile");
  rootKey.open({ mode: "keyfile", unsealKey: randomKey(), generation: 1, keks: new Map(), internalKey: randomKey() });
  return { rootKey } as unknown as ApplianceContext;
}

const statusOf = (fn: () => unknown): number => {
  try {
    fn();
  } catch (err) {
    return err instanceof AppError ? err.status : -1;
  }
  return 0;
};

const reqWith = (ifMatch?: string) => ({ get: (h: string) => (h.toLowerCase() === "if-match" ? ifMatch : undefined) }) as unknown as Request;

describe("pagination cursors", () => {
  it("round-trips a position for the listing it was made for", () => {
    const ctx = ctxWithKey();
    const cursor = encodeCursor(ctx, "patients:t1:u1", ["2025-01-01T00:00:00.000Z", "0b7c6c2e-1111-4111-8111-111111111111"]);
    expect(decodeCursor(ctx, "patients:t1:u1", cursor)).toEqual(["2025-01-01T00:00:00.000Z", "0b7c6c2e-1111-4111-8111-111111111111"]);
    expect(decodeCursor(ctx, "patients:t1:u1", undefined)).toBeUndefined();
  });

  it("refuses a cursor that was altered, forged, borrowed from another listing or made by another appliance (400)", () => {
    const ctx = ctxWithKey();
    const cursor = encodeCursor(ctx, "patients:t1:u1", ["2025-01-01T00:00:00.000Z", "id"]);
    const [payload, tag] = cursor.split(".") as [string, string];
    const altered = Buffer.from(JSON.stringify({ p: "patients:t1:u1", k: ["1970-01-01T00:00:00.000Z", "id"] })).toString("base64url");
    expect(statusOf(() => decodeCursor(ctx, "patients:t1:u1", `${altered}.${tag}`))).toBe(400);
    expect(statusOf(() => decodeCursor(ctx, "patients:t1:u2", cursor))).toBe(400);
    expect(statusOf(() => decodeCursor(ctxWithKey(), "patients:t1:u1", cursor))).toBe(400);
    expect(statusOf(() => decodeCursor(ctx, "patients:t1:u1", `${payload}.${"A".repeat(22)}`))).toBe(400);
    expect(statusOf(() => decodeCursor(ctx, "patients:t1:u1", "not-a-cursor"))).toBe(400);
    expect(statusOf(() => decodeCursor(ctx, "patients:t1:u1", "%FF%FE"))).toBe(400);
  });

  it("bounds the page size: 1 to 100, anything else is invalid rather than capped", () => {
    const q = z.object(pageQuery).strict();
    expect(q.parse({}).limit).toBe(25);
    expect(q.parse({ limit: "100" }).limit).toBe(100);
    for (const bad of ["0", "101", "1e9", "99999999999999999999999", "-1", "2.5", "abc", ["1", "2"]]) expect(q.safeParse({ limit: bad }).success, String(bad)).toBe(false);
    expect(q.safeParse({ limit: "5", offset: "3" }).success).toBe(false);
  });
});

describe("If-Match", () => {
  it("answers 428 without it and 412 for wildcards, weak tags and lists", () => {
    expect(statusOf(() => ifMatchVersion(reqWith(undefined)))).toBe(428);
    expect(statusOf(() => ifMatchVersion(reqWith("  ")))).toBe(428);
    for (const bad of ["*", 'W/"3"', '"3", "4"', "3", '"abc"', '"12345678901"'])
      expect(
        statusOf(() => ifMatchVersion(reqWith(bad))),
        bad,
      ).toBe(412);
    expect(ifMatchVersion(reqWith('"7"'))).toBe(7);
  });
});

describe("request text", () => {
  it("refuses lone surrogates and trims within bounds", () => {
    const t = text(1, 10);
    expect(t.parse("  Ada  ")).toBe("Ada");
    expect(t.safeParse("\ud800abc").success).toBe(false);
    expect(t.safeParse("   ").success).toBe(false);
    expect(t.safeParse("x".repeat(11)).success).toBe(false);
  });

  it("refuses a JSON body that is not valid UTF-8 as invalid JSON", () => {
    expect(() => rejectInvalidUtf8(null, null, Buffer.from('{"a":"é"}'))).not.toThrow();
    expect(() => rejectInvalidUtf8(null, null, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d]))).toThrow(expect.objectContaining({ status: 400, type: "entity.parse.failed" }));
  });
});

describe("attachment filenames", () => {
  it("reads RFC 8187 UTF-8 names first, then plain ones", () => {
    expect(filenameOf(undefined)).toBeNull();
    expect(filenameOf("attachment")).toBeNull();
    expect(filenameOf("attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf; filename=\"resume.pdf\"")).toBe("résumé.pdf");
    expect(filenameOf('attachment; filename="scan 1.pdf"')).toBe("scan 1.pdf");
  });

  it("refuses invalid UTF-8, path separators and control characters (400)", () => {
    for (const bad of [
      "attachment; filename*=UTF-8''%FF%FE.pdf",
      'attachment; filename="../etc/passwd"',
      "attachment; filename*=UTF-8''a%00b",
      "attachment; filename*=UTF-8''a%5Cb",
    ]) {
      expect(
        statusOf(() => filenameOf(bad)),
        bad,
      ).toBe(400);
    }
  });
});
