/**
 * Import-cycle check over the TypeScript import graph of daemon/, backup/ and admin-ui/src/
 * (run by `npm run lint`). ESLint's no-restricted-imports says which folder may import which;
 * this says nothing imports itself in a circle, which a per-file rule cannot see, and applies the
 * admin UI's rule to its Svelte components, which ESLint does not parse here.
 * A lazy `import("...")` counts: it still means two modules that cannot be read apart.
 *
 *   tsx scripts/check-imports.ts            exits 1 and names each cycle
 *   tsx scripts/check-imports.ts --edges    prints every edge between top-level folders
 */
import { readdirSync, readFileSync, statSync, existsSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";

export const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const SOURCE_DIRS = ["daemon", "backup", "admin-ui/src"];

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.(ts|svelte)$/.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

/** An import or re-export that is erased at run time (`import type`, or every name `type`). */
function typeOnly(node: ts.ImportDeclaration | ts.ExportDeclaration): boolean {
  if (ts.isExportDeclaration(node))
    return (
      node.isTypeOnly ||
      (!!node.exportClause && ts.isNamedExports(node.exportClause) && node.exportClause.elements.length > 0 && node.exportClause.elements.every((e) => e.isTypeOnly))
    );
  const clause = node.importClause;
  if (!clause) return false; // `import "./x.js"` runs the module
  if (clause.isTypeOnly) return true;
  const named = clause.namedBindings;
  return !clause.name && !!named && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
}

/** Every module a file names, with whether the naming is erased at run time. */
export function imports(path: string): { spec: string; typeOnly: boolean }[] {
  let text = readFileSync(path, "utf8");
  if (path.endsWith(".svelte")) text = [...text.matchAll(/<script[^>]*>([\s\S]*?)<\/script>/g)].map((m) => m[1]).join("\n");
  const file = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: { spec: string; typeOnly: boolean }[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push({ spec: node.moduleSpecifier.text, typeOnly: typeOnly(node) });
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) {
      out.push({ spec: node.arguments[0].text, typeOnly: false });
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push({ spec: node.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

/**
 * Module specifiers of a file that load a module at run time: static imports, re-exports and
 * `import("...")`. Type-only imports are left out: they are erased, and a capability may name
 * another's types (ApplianceContext names RootKey) without a cycle at run time.
 */
export function specifiers(path: string): string[] {
  return imports(path)
    .filter((i) => !i.typeOnly)
    .map((i) => i.spec);
}

/**
 * Svelte components of the admin UI, which ESLint does not parse here: like the UI's .ts files
 * they may import from the daemon only `import type`, and only from a schema.ts or the kernel.
 */
export function adminUiViolations(files = sourceFiles(join(ROOT, "admin-ui/src")).filter((f) => f.endsWith(".svelte"))): string[] {
  const out: string[] = [];
  for (const file of files) {
    for (const { spec, typeOnly } of imports(file)) {
      const target = resolveSpecifier(file, spec);
      if (!target || !relative(ROOT, target).startsWith("daemon/")) continue;
      const where = relative(ROOT, target);
      if (!typeOnly) out.push(`${relative(ROOT, file)}: imports code from ${where}; the admin UI takes only types from the daemon (import type)`);
      else if (!/^daemon\/([a-z-]+\/([a-z-]+\/)?schema|kernel\/.*)\.ts$/.test(where))
        out.push(`${relative(ROOT, file)}: imports ${where}; the admin UI takes types from daemon/<capability>/[<resource>/]schema.ts and daemon/kernel/ only`);
    }
  }
  return out;
}

/** Resolves a relative specifier to a source file (`./x.js` is `./x.ts` under NodeNext). */
function resolveSpecifier(from: string, spec: string): string | null {
  if (!spec.startsWith(".")) return null;
  const base = resolve(dirname(from), spec);
  const candidates = [base, base.replace(/\.js$/, ".ts"), `${base}.ts`, join(base, "index.ts")];
  return candidates.find((c) => existsSync(c) && statSync(c).isFile()) ?? null;
}

export function importGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const dir of SOURCE_DIRS) {
    for (const file of sourceFiles(join(ROOT, dir))) {
      const to = new Set<string>();
      for (const spec of specifiers(file)) {
        const target = resolveSpecifier(file, spec);
        if (target) to.add(target);
      }
      graph.set(file, to);
    }
  }
  return graph;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
export function cycles(graph: Map<string, Set<string>>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const connect = (v: string): void => {
    indices.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!indices.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indices.get(w)!));
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)?.has(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) connect(v);
  return found;
}

/** One path around a component, so the message shows how the circle closes. */
function loopThrough(graph: Map<string, Set<string>>, component: string[]): string[] {
  const members = new Set(component);
  const start = component[0]!;
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let p: string | undefined = v; p && p !== start; p = previous.get(p)) path.splice(1, 0, p);
        return [...path, start];
      }
      if (!previous.has(w)) {
        previous.set(w, v);
        queue.push(w);
      }
    }
  }
  return component;
}

const rel = (p: string): string => relative(ROOT, p);

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  const graph = importGraph();
  if (process.argv.includes("--edges")) {
    for (const [from, tos] of graph) for (const to of tos) console.log(`${rel(from)} -> ${rel(to)}`);
    process.exit(0);
  }
  const found = cycles(graph);
  for (const component of found) console.error(`import cycle (${component.length} files): ${loopThrough(graph, component).map(rel).join(" -> ")}`);
  const violations = adminUiViolations();
  for (const v of violations) console.error(v);
  if (found.length > 0 || violations.length > 0) process.exit(1);
  console.log(`no import cycle among ${graph.size} files; the admin UI's components import only daemon types`);
}
