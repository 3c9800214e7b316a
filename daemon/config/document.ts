import YAML from "yaml";
import { configJsonSchema, configLeaves } from "./load.js";
import { envAliases } from "./schema.js";

type Node = ReturnType<typeof configJsonSchema>;

function objectProps(node: Node): Record<string, Node> | undefined {
  if (node.properties) return node.properties;
  for (const sub of [...(node.allOf ?? []), ...(node.anyOf ?? [])]) {
    const found = objectProps(sub);
    if (found) return found;
  }
  return undefined;
}

function allowed(node: Node): string {
  if (node.enum) return `one of ${node.enum.map((v) => JSON.stringify(v)).join(", ")}`;
  const t = Array.isArray(node.type) ? node.type.join("|") : node.type;
  const range = node.minimum !== undefined || node.maximum !== undefined ? ` ${node.minimum ?? ""}..${node.maximum ?? ""}` : "";
  return `${t ?? "value"}${range}`;
}

/**
 * Renders config/default.yaml from the schema: every setting, its default, what it accepts and
 * its environment variable. `wardkeep config defaults` prints it; a test keeps the file equal.
 */
export function renderDefaultConfig(): string {
  const envFor = new Map(configLeaves().map((l) => [l.path.join("."), l.env]));
  for (const [alias, at] of Object.entries(envAliases)) {
    const key = at.join(".");
    envFor.set(key, `${envFor.get(key)} or ${alias}`);
  }
  const lines: string[] = [
    "# Wardkeep configuration: every setting with its default.",
    "# Generated from daemon/config/schema.ts by `wardkeep config defaults`; do not edit by hand.",
    "# Copy the settings you change into your own file and point WARDKEEP_CONFIG at it.",
    "# Environment variables (named on each setting) override the file.",
    "",
  ];
  const walk = (props: Record<string, Node>, at: string[], indent: string) => {
    for (const [key, node] of Object.entries(props)) {
      const here = [...at, key];
      const children = objectProps(node);
      if (node.description) lines.push(`${indent}# ${node.description}`);
      if (children && node.type !== "array") {
        lines.push(`${indent}${key}:`);
        walk(children, here, indent + "  ");
        lines.push("");
        continue;
      }
      lines.push(`${indent}# accepts: ${allowed(node)}; env: ${envFor.get(here.join("."))}`);
      if (node.default === undefined) {
        lines.push(`${indent}# ${key}:`);
      } else {
        const value = YAML.stringify(node.default, { flow: true }).trim();
        lines.push(`${indent}${key}: ${value}`);
      }
    }
  };
  walk(objectProps(configJsonSchema()) ?? {}, [], "");
  return (
    lines
      .join("\n")
      .replace(/\n{3,}/g, "\n\n")
      .trimEnd() + "\n"
  );
}
