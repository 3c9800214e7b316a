import { readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import YAML from "yaml";
import { configSchema, envAliases, type Config } from "./schema.js";

/** A configuration problem, always one line: the key, the value, where it came from, what is allowed. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

type JsonSchemaNode = {
  type?: string | string[];
  properties?: Record<string, JsonSchemaNode>;
  items?: JsonSchemaNode;
  enum?: unknown[];
  description?: string;
  default?: unknown;
  anyOf?: JsonSchemaNode[];
  allOf?: JsonSchemaNode[];
  minimum?: number;
  maximum?: number;
  pattern?: string;
};

export type Leaf = { path: string[]; env: string; node: JsonSchemaNode };

/** The JSON Schema of the configuration, as the input a file or the environment may give. */
export function configJsonSchema(): JsonSchemaNode {
  return z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" }) as JsonSchemaNode;
}

function objectNode(node: JsonSchemaNode): JsonSchemaNode | undefined {
  if (node.properties) return node;
  for (const sub of [...(node.allOf ?? []), ...(node.anyOf ?? [])]) {
    const found = objectNode(sub);
    if (found) return found;
  }
  return undefined;
}

/** Every settable leaf with its mechanical environment variable name. */
export function configLeaves(): Leaf[] {
  const leaves: Leaf[] = [];
  const walk = (node: JsonSchemaNode, at: string[]) => {
    const obj = objectNode(node);
    if (obj && obj.type !== "array") {
      for (const [key, child] of Object.entries(obj.properties ?? {})) walk(child, [...at, key]);
      return;
    }
    const env = "WARDKEEP_" + at.map((k) => k.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("_");
    leaves.push({ path: at, env, node });
  };
  walk(configJsonSchema(), []);
  return leaves;
}

function leafType(node: JsonSchemaNode): string {
  const t = node.type ?? node.anyOf?.find((n) => n.type)?.type;
  return Array.isArray(t) ? (t.find((x) => x !== "null") ?? "string") : (t ?? "string");
}

function coerceEnv(raw: string, node: JsonSchemaNode): unknown {
  switch (leafType(node)) {
    case "integer":
    case "number":
      return raw.trim() !== "" && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
    case "boolean":
      return raw === "true" ? true : raw === "false" ? false : raw;
    case "array":
      return raw
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
    default:
      return raw;
  }
}

function setPath(target: Record<string, unknown>, at: string[], value: unknown) {
  let cursor = target;
  for (const key of at.slice(0, -1)) {
    const next = cursor[key];
    if (typeof next !== "object" || next === null || Array.isArray(next)) cursor[key] = {};
    cursor = cursor[key] as Record<string, unknown>;
  }
  cursor[at[at.length - 1]!] = value;
}

function getPath(source: unknown, at: PropertyKey[]): unknown {
  let cursor = source;
  for (const key of at) {
    if (typeof cursor !== "object" || cursor === null) return undefined;
    cursor = (cursor as Record<PropertyKey, unknown>)[key];
  }
  return cursor;
}

function describeAllowed(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_value":
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "too_small":
      return issue.origin === "array" || issue.origin === "string"
        ? `at least ${issue.minimum} ${issue.origin === "string" ? "characters" : "items"}`
        : `a number of at least ${issue.minimum}`;
    case "too_big":
      return `a number of at most ${issue.maximum}`;
    case "invalid_type":
      return issue.expected === "int" ? "an integer" : `a ${issue.expected}`;
    case "unrecognized_keys":
      return `no key ${issue.keys.map((k) => JSON.stringify(k)).join(", ")} (check the spelling against config/default.yaml)`;
    case "invalid_format":
      return issue.message;
    default:
      return issue.message;
  }
}

export type ConfigSources = { file?: string; env?: NodeJS.ProcessEnv };

/**
 * Builds the configuration: schema defaults, then the YAML file named by WARDKEEP_CONFIG
 * (or `sources.file`), then WARDKEEP_* environment variables. Throws ConfigError with one line.
 */
export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? process.env;
  const file = sources.file ?? env.WARDKEEP_CONFIG;
  const raw: Record<string, unknown> = {};
  const origin = new Map<string, string>();

  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
      throw new ConfigError(`config: cannot read config file ${file} (${code})`);
    }
    let parsed: unknown;
    try {
      parsed = YAML.parse(text) ?? {};
    } catch (err) {
      const line = (err as { linePos?: { line: number }[] }).linePos?.[0]?.line;
      throw new ConfigError(`config: ${file}${line ? ` line ${line}` : ""} is not valid YAML`);
    }
    if (typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ConfigError(`config: ${file} must hold a mapping of settings, not ${typeof parsed}`);
    }
    Object.assign(raw, parsed);
    originFromFile(parsed as Record<string, unknown>, [], file, origin);
  }

  const leaves = configLeaves();
  const byEnv = new Map(leaves.map((l) => [l.env, l]));
  for (const [alias, at] of Object.entries(envAliases)) {
    const leaf = leaves.find((l) => l.path.join(".") === at.join("."));
    if (leaf) byEnv.set(alias, leaf);
  }
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("WARDKEEP_") || name === "WARDKEEP_CONFIG" || value === undefined) continue;
    const leaf = byEnv.get(name);
    if (!leaf) continue; // other WARDKEEP_* variables (for example test settings) are not config
    setPath(raw, leaf.path, coerceEnv(value, leaf.node));
    origin.set(leaf.path.join("."), `environment ${name}`);
  }

  refuseReplacedSettings(raw, origin, env, file);
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const at = issue.path.map(String).join(".") || "(top level)";
    const value = issue.code === "unrecognized_keys" ? undefined : getPath(raw, issue.path);
    const from = origin.get(issue.path.join(".")) ?? (file ? `file ${file}` : "defaults");
    // A database URL may carry a password: never echo it.
    const safe = typeof value === "string" ? value.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@") : value;
    const shown = value === undefined ? "" : ` = ${JSON.stringify(safe)}`;
    throw new ConfigError(`config: ${at}${shown} (${from}) is invalid: expected ${describeAllowed(issue)}`);
  }
  return result.data;
}

/**
 * Settings that were replaced: a configuration that still sets one is refused at start with one
 * line naming the replacement, rather than an "unknown key" that leaves the operator guessing (or,
 * from the environment, silently ignored).
 */
export const replacedSettings: Record<string, string> = {
  "server.trustProxy": "server.trustedProxies (the addresses of the proxies in front; docs/hardening.md)",
  "sso.publicUrl": "server.publicUrl (the one public address for redirects, invite links and identity providers; docs/hardening.md)",
};

function refuseReplacedSettings(raw: Record<string, unknown>, origin: Map<string, string>, env: NodeJS.ProcessEnv, file: string | undefined) {
  for (const [key, replacement] of Object.entries(replacedSettings)) {
    const at = key.split(".");
    const envName = "WARDKEEP_" + at.map((k) => k.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("_");
    const from = getPath(raw, at) !== undefined ? (origin.get(key) ?? (file ? `file ${file}` : "defaults")) : env[envName] !== undefined ? `environment ${envName}` : null;
    if (from) throw new ConfigError(`config: ${key} (${from}) was replaced by ${replacement}`);
  }
}

function originFromFile(obj: Record<string, unknown>, at: string[], file: string, origin: Map<string, string>) {
  for (const [key, value] of Object.entries(obj)) {
    const here = [...at, key];
    origin.set(here.join("."), `file ${file}`);
    if (value && typeof value === "object" && !Array.isArray(value)) {
      originFromFile(value as Record<string, unknown>, here, file, origin);
    }
  }
}

/** Resolves a path setting against dataDir unless it is absolute. */
export function inDataDir(config: Config, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(config.dataDir, p);
}
