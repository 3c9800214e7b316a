/**
 * `npm run sbom [-- --out FILE]`: a CycloneDX 1.5 SBOM (JSON) of the production dependencies,
 * written from package-lock.json, which pins every installed version and its integrity hash. No
 * network and no extra tool: the lock file is what `npm ci` installs, so the SBOM lists exactly
 * what ships. docs/hardening.md ("Dependencies and advisories") says how to check it for
 * advisories on a machine that can reach them.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

type LockPackage = {
  version?: string;
  resolved?: string;
  integrity?: string;
  license?: string;
  dev?: boolean;
  devOptional?: boolean;
  optional?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
};
type Lock = { name: string; version: string; lockfileVersion: number; packages: Record<string, LockPackage> };
type Manifest = { name: string; version: string; description?: string; license?: string };

type Component = {
  type: "library";
  "bom-ref": string;
  name: string;
  group?: string;
  version: string;
  purl: string;
  scope: "required" | "optional";
  hashes?: { alg: string; content: string }[];
  licenses?: { license: { id: string } }[] | { expression: string }[];
  externalReferences?: { type: "distribution"; url: string }[];
};

/** `node_modules/a/node_modules/@s/b` → `@s/b`. */
function nameOf(lockPath: string): string {
  const i = lockPath.lastIndexOf("node_modules/");
  return lockPath.slice(i + "node_modules/".length);
}

/** npm's purl: the scope's @ is percent-encoded (purl-spec, npm type). */
function purlOf(name: string, version: string): string {
  return `pkg:npm/${name.startsWith("@") ? "%40" + name.slice(1) : name}@${version}`;
}

/** Subresource-integrity strings (`sha512-<base64>`) as CycloneDX hashes (hex). */
function hashesOf(integrity: string | undefined): Component["hashes"] {
  if (!integrity) return undefined;
  const algs: Record<string, string> = { sha512: "SHA-512", sha384: "SHA-384", sha256: "SHA-256", sha1: "SHA-1" };
  const hashes = integrity
    .split(/\s+/)
    .map((entry) => /^(sha\d+)-(.+)$/.exec(entry))
    .filter((m): m is RegExpExecArray => m !== null && m[1]! in algs)
    .map((m) => ({ alg: algs[m[1]!]!, content: Buffer.from(m[2]!, "base64").toString("hex") }));
  return hashes.length ? hashes : undefined;
}

const SPDX_ID = /^[A-Za-z0-9.+-]+$/;

function licensesOf(license: string | undefined): Component["licenses"] {
  if (!license) return undefined;
  return SPDX_ID.test(license) ? [{ license: { id: license } }] : [{ expression: license }];
}

/** The SBOM of the packages `npm ci --omit=dev` installs, in lock-file order. */
export function buildSbom(lock: Lock, manifest: Manifest, opts: { timestamp?: Date; serial?: string } = {}) {
  if (lock.lockfileVersion < 2) throw new Error(`package-lock.json version ${lock.lockfileVersion} has no "packages" map; regenerate it with npm 7 or newer`);
  const components: Component[] = [];
  const refOf = new Map<string, string>();
  for (const [lockPath, p] of Object.entries(lock.packages)) {
    if (lockPath === "" || p.dev || p.devOptional || p.link || !p.version) continue;
    const name = nameOf(lockPath);
    const purl = purlOf(name, p.version);
    refOf.set(lockPath, purl);
    if (components.some((c) => c["bom-ref"] === purl)) continue; // the same version nested twice
    const slash = name.startsWith("@") ? name.indexOf("/") : -1;
    components.push({
      type: "library",
      "bom-ref": purl,
      ...(slash > 0 ? { group: name.slice(0, slash), name: name.slice(slash + 1) } : { name }),
      version: p.version,
      purl,
      scope: p.optional ? "optional" : "required",
      ...(hashesOf(p.integrity) ? { hashes: hashesOf(p.integrity) } : {}),
      ...(licensesOf(p.license) ? { licenses: licensesOf(p.license) } : {}),
      ...(p.resolved ? { externalReferences: [{ type: "distribution" as const, url: p.resolved }] } : {}),
    });
  }
  // Dependencies as npm resolves them: the nearest node_modules up the tree that has the name.
  const resolve = (from: string, dep: string): string | undefined => {
    let base = from;
    for (;;) {
      const candidate = `${base ? base + "/" : ""}node_modules/${dep}`;
      if (refOf.has(candidate)) return refOf.get(candidate);
      if (!base) return undefined;
      const i = base.lastIndexOf("/node_modules/");
      base = i >= 0 ? base.slice(0, i) : "";
    }
  };
  const rootRef = purlOf(manifest.name, manifest.version);
  const dependencies = [
    { ref: rootRef, dependsOn: Object.keys(lock.packages[""]?.dependencies ?? {}).flatMap((d) => resolve("", d) ?? []) },
    ...[...refOf].map(([lockPath, ref]) => {
      const p = lock.packages[lockPath]!;
      const deps = Object.keys({ ...p.dependencies, ...p.optionalDependencies });
      return { ref, dependsOn: [...new Set(deps.flatMap((d) => resolve(lockPath, d) ?? []))] };
    }),
  ].filter((d, i, all) => all.findIndex((x) => x.ref === d.ref) === i);
  return {
    bomFormat: "CycloneDX",
    specVersion: "1.5",
    serialNumber: `urn:uuid:${opts.serial ?? randomUUID()}`,
    version: 1,
    metadata: {
      timestamp: (opts.timestamp ?? new Date()).toISOString(),
      tools: { components: [{ type: "application", name: "wardkeep scripts/sbom.ts", version: manifest.version }] },
      component: { type: "application", "bom-ref": rootRef, name: manifest.name, version: manifest.version, purl: rootRef, description: manifest.description },
    },
    components,
    dependencies,
  };
}

function main(argv: string[]) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  const outFlag = argv.indexOf("--out");
  const out = outFlag >= 0 ? argv[outFlag + 1] : "sbom.cdx.json";
  if (!out) throw new Error("--out needs a file name");
  const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8")) as Lock;
  const manifest = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as Manifest;
  const sbom = buildSbom(lock, manifest);
  fs.writeFileSync(out, JSON.stringify(sbom, null, 2) + "\n");
  process.stdout.write(`wrote ${out}: ${sbom.components.length} production components (CycloneDX ${sbom.specVersion})\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`sbom: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
