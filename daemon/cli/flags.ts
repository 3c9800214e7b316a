import { Option, type Command } from "commander";

/**
 * The CLI's flag convention (docs/cli.md, "Flag convention"): long flags only, lowercase
 * kebab-case; a flag whose value is a path names what it holds and ends in `-file <file>` or
 * `-dir <dir>`; the tenant is always `--tenant <tenant>`. `flagConventionViolation` is the check
 * the test runs over every option of every command.
 */
export function flagConventionViolation(flags: string): string | null {
  const m = /^--([a-z0-9]+(?:-[a-z0-9]+)*)(?: ([<[])([a-z-]+)[>\]])?$/.exec(flags);
  if (!m) return "not a long, lowercase kebab-case flag";
  const [, name, , value] = m;
  if (value === "file" && !name!.endsWith("-file")) return "takes a <file> but does not end in -file";
  if (value === "dir" && !name!.endsWith("-dir")) return "takes a <dir> but does not end in -dir";
  if (name!.endsWith("-file") && value !== "file") return "ends in -file but does not take a <file>";
  if (name!.endsWith("-dir") && value !== "dir") return "ends in -dir but does not take a <dir>";
  if (name === "tenant" && value !== "tenant") return "the tenant is --tenant <tenant>";
  return null;
}

/**
 * Keeps an old spelling working for one release, hidden from --help: `.addOption(hiddenAlias(...))`
 * then `.on(aliasEvent, aliasTo("outDir"))` puts its value on the renamed option's attribute,
 * appended when the option repeats.
 */
export function hiddenAlias(oldFlags: string, now: string): Option {
  return new Option(oldFlags, `old spelling of ${now} (removed in the next release)`).hideHelp();
}

export function aliasTo(attribute: string, opts: { repeat?: boolean } = {}) {
  return function (this: Command, value: string) {
    const prev = this.getOptionValue(attribute) as string[] | undefined;
    this.setOptionValueWithSource(attribute, opts.repeat ? [...(prev ?? []), value] : value, "cli");
  };
}

/** Old spellings kept as hidden aliases in this release (docs/cli.md). */
export const RENAMED_FLAGS: Array<{ command: string; old: string; now: string }> = [
  { command: "audit verify", old: "--public-key", now: "--public-key-file" },
  { command: "audit export", old: "--out", now: "--out-dir" },
  { command: "keys recovery-kit", old: "--out", now: "--out-file" },
  { command: "tls csr", old: "--out", now: "--out-file" },
  { command: "tls import", old: "--cert", now: "--cert-file" },
  { command: "tls import", old: "--key", now: "--key-file" },
  { command: "unseal", old: "--ca", now: "--ca-file" },
  { command: "restore", old: "--recovery-key", now: "--recovery-key-file" },
  { command: "restore", old: "--recovery-share", now: "--recovery-share-file" },
  { command: "recover", old: "--recovery-key", now: "--recovery-key-file" },
  { command: "recover", old: "--recovery-share", now: "--recovery-share-file" },
];
