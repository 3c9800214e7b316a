import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { buildSbom } from "../../../scripts/sbom.js";
import { tempDir } from "../../helpers/appliance.js";

const root = path.resolve(import.meta.dirname, "../../..");
const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8"));
const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
  name: string;
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

describe("npm run sbom", () => {
  const sbom = buildSbom(lock, manifest, { timestamp: new Date("2026-12-07T00:00:00Z"), serial: "00000000-0000-4000-8000-000000000000" });
  const purls = new Set(sbom.components.map((c) => c.purl));

  it("lists every production dependency at its pinned version, and no development-only package", () => {
    expect(sbom).toMatchObject({ bomFormat: "CycloneDX", specVersion: "1.5", serialNumber: "urn:uuid:00000000-0000-4000-8000-000000000000" });
    for (const [name, version] of Object.entries(manifest.dependencies)) {
      expect(version, `${name} is pinned exactly`).toMatch(/^\d+\.\d+\.\d+(-[\w.]+)?$/);
      expect(purls.has(`pkg:npm/${name.replace(/^@/, "%40")}@${version}`), name).toBe(true);
    }
    for (const dev of ["vitest", "playwright-core", "eslint", "fast-check", "oidc-provider"]) {
      expect(
        [...purls].some((p) => p.startsWith(`pkg:npm/${dev}@`)),
        dev,
      ).toBe(false);
    }
    const express = sbom.components.find((c) => c.name === "express")!;
    expect(express.hashes?.[0]).toMatchObject({ alg: "SHA-512", content: expect.stringMatching(/^[0-9a-f]{128}$/) });
    expect(express.licenses).toEqual([{ license: { id: "MIT" } }]);
  });

  it("records the dependency graph between listed components only", () => {
    const refs = new Set([sbom.metadata.component["bom-ref"], ...sbom.components.map((c) => c["bom-ref"])]);
    const rootDeps = sbom.dependencies.find((d) => d.ref === sbom.metadata.component["bom-ref"])!;
    expect(rootDeps.dependsOn).toContain("pkg:npm/express@5.3.0");
    for (const d of sbom.dependencies) for (const on of d.dependsOn) expect(refs.has(on), `${d.ref} → ${on}`).toBe(true);
  });

  it("refuses a lock file without the packages map, and writes the file from the command line", () => {
    expect(() => buildSbom({ ...lock, lockfileVersion: 1 }, manifest)).toThrow(/regenerate it with npm 7/);
    const dir = tempDir("wardkeep-sbom-");
    const out = path.join(dir, "sbom.json");
    const said = execFileSync("npx", ["tsx", "scripts/sbom.ts", "--out", out], { cwd: root, encoding: "utf8" });
    expect(said).toMatch(/^wrote .*sbom\.json: \d+ production components \(CycloneDX 1\.5\)\n$/);
    expect(JSON.parse(fs.readFileSync(out, "utf8")).components.length).toBe(sbom.components.length);
    const bad = spawnSync("npx", ["tsx", "scripts/sbom.ts", "--out"], { cwd: root, encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe("sbom: --out needs a file name\n");
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
