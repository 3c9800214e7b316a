import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ESLint } from "eslint";
import { afterAll, describe, expect, it } from "vitest";
import { adminUiViolations, cycles, importGraph, ROOT, specifiers } from "../../../scripts/check-imports.js";

// The boundaries of docs/architecture.md, as `npm run lint` enforces them: the repository's own
// eslint.config.js, run on one import written at a given path.
const eslint = new ESLint({ cwd: path.resolve(import.meta.dirname, "../../..") });

async function verdict(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(`${code}\nexport {};\n`, { filePath });
  return result!.messages.filter((m) => m.ruleId?.endsWith("no-restricted-imports")).map((m) => m.message);
}

describe("import boundaries", () => {
  it("lets records use keys through keys/index.ts and refuses its internal files", async () => {
    expect(await verdict("daemon/records/notes/service.ts", `import { dataKeyFor } from "../../keys/index.js";`)).toEqual([]);
    const refused = await verdict("daemon/records/notes/service.ts", `import { dataKeyFor } from "../../keys/keyring.js";`);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatch(/through its index\.ts/);
  });

  it("lets any capability record events through audit/append.ts but not reach the chainer", async () => {
    expect(await verdict("daemon/keys/shred.ts", `import { recordKeyEvent } from "../audit/append.js";`)).toEqual([]);
    expect(await verdict("daemon/records/patients/access.ts", `import { notifyAuditIntake } from "../../audit/chainer.js";`)).toHaveLength(1);
  });

  it("keeps capabilities from importing the HTTP server, the CLI or the appliance", async () => {
    expect(await verdict("daemon/auth/login.ts", `import { buildApp } from "../http/app.js";`)).toHaveLength(1);
    expect(await verdict("daemon/keys/seal.ts", `import { run } from "../cli/main.js";`)).toHaveLength(1);
    expect(await verdict("daemon/access/users.ts", `import { startAppliance } from "../appliance.js";`)).toHaveLength(1);
  });

  it("keeps the kernel free of capabilities", async () => {
    expect(await verdict("daemon/kernel/define-route.ts", `import { policyBinding } from "../access/index.js";`)).toHaveLength(1);
    expect(await verdict("daemon/kernel/define-route.ts", `import type { ApplianceContext } from "../context.js";`)).toEqual([]);
  });

  it("lets composition roots wire routers and config schemas but not internals", async () => {
    expect(await verdict("daemon/http/app.ts", `import { keysRoutes } from "../keys/routes.js";`)).toEqual([]);
    expect(await verdict("daemon/config/schema.ts", `import { keysSchema } from "../keys/config.js";`)).toEqual([]);
    expect(await verdict("daemon/cli/commands/keys.ts", `import { rotateKek } from "../../keys/rotation.js";`)).toHaveLength(1);
  });

  it("keeps the snapshot engine to the kernel, db/, log/ and keys/index.ts", async () => {
    expect(await verdict("backup/snapshot.ts", `import { zeroize } from "../daemon/keys/index.js";`)).toEqual([]);
    expect(await verdict("backup/snapshot.ts", `import { AppError } from "../daemon/kernel/errors.js";`)).toEqual([]);
    expect(await verdict("backup/snapshot.ts", `import { zeroize } from "../daemon/keys/primitives.js";`)).toHaveLength(1);
    expect(await verdict("backup/snapshot.ts", `import { recordPhiEvent } from "../daemon/audit/append.js";`)).toHaveLength(1);
  });

  it("lets the admin UI import response types from schema.ts, and nothing that runs", async () => {
    expect(await verdict("admin-ui/src/lib/api.ts", `import type { UserRes } from "../../../daemon/access/schema.js";`)).toEqual([]);
    expect(await verdict("admin-ui/src/lib/api.ts", `import { userResponse } from "../../../daemon/access/schema.js";`)).toHaveLength(1);
    // A resource's own schema.ts inside a capability (records' data rights) counts as well; its service does not.
    expect(await verdict("admin-ui/src/lib/api.ts", `import type { LegalHoldRes } from "../../../daemon/records/data-rights/schema.js";`)).toEqual([]);
    expect(await verdict("admin-ui/src/lib/api.ts", `import type { LegalHoldView } from "../../../daemon/records/data-rights/legal-holds.js";`)).toHaveLength(1);
    expect(await verdict("admin-ui/src/lib/api.ts", `import type { Actor } from "../../../daemon/access/users.js";`)).toHaveLength(1);
  });
});

describe("import cycles", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "wk-imports-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("finds a circle of any length and leaves chains alone", () => {
    const g = (edges: Record<string, string[]>) => new Map(Object.entries(edges).map(([k, v]) => [k, new Set(v)]));
    expect(cycles(g({ a: ["b"], b: ["c"], c: ["a"], d: ["a"] }))).toEqual([["a", "b", "c"]]);
    expect(cycles(g({ a: ["a"] }))).toEqual([["a"]]);
    expect(cycles(g({ a: ["b", "c"], b: ["c"], c: [] }))).toEqual([]);
  });

  it("counts imports that load a module, lazy ones included, and not type-only ones", () => {
    const file = path.join(dir, "sample.ts");
    writeFileSync(
      file,
      [
        `import { a } from "./a.js";`,
        `import type { B } from "./b.js";`,
        `import { type C } from "./c.js";`,
        `export { d } from "./d.js";`,
        `export type { E } from "./e.js";`,
        `import "./f.js";`,
        `const g = () => import("./g.js");`,
      ].join("\n"),
    );
    expect(specifiers(file)).toEqual(["./a.js", "./d.js", "./f.js", "./g.js"]);
  });

  it("finds none in daemon/, backup/ and admin-ui/", () => {
    expect(cycles(importGraph())).toEqual([]);
  });

  it("holds the admin UI's Svelte components to types from schema.ts, which ESLint does not parse", () => {
    const component = (name: string, script: string) => {
      const file = path.join(dir, name);
      writeFileSync(file, `<script lang="ts">\n  ${script}\n</script>\n<p>x</p>\n`);
      return file;
    };
    const daemon = (p: string) => path.relative(dir, path.join(ROOT, "daemon", p));
    const good = component("Good.svelte", `import type { UserRes } from "${daemon("access/schema.js")}";`);
    const code = component("Code.svelte", `import { userResponse } from "${daemon("access/schema.js")}";`);
    const internal = component("Internal.svelte", `import type { Actor } from "${daemon("access/users.js")}";`);
    expect(adminUiViolations([good])).toEqual([]);
    expect(adminUiViolations([code])).toEqual([expect.stringMatching(/imports code from daemon\/access\/schema\.ts/)]);
    expect(adminUiViolations([internal])).toEqual([expect.stringMatching(/imports daemon\/access\/users\.ts/)]);
    expect(adminUiViolations()).toEqual([]);
  });
});
