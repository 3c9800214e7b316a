import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { flagConventionViolation, RENAMED_FLAGS } from "../../../daemon/cli/flags.js";
import { buildProgram } from "../../../daemon/cli/program.js";

/** Every command, by its path under `wardkeep` ("audit export"), built without spawning a process. */
function commands(): Map<string, Command> {
  const out = new Map<string, Command>();
  const walk = (c: Command, p: string[]) => {
    out.set(p.join(" "), c);
    for (const s of c.commands) walk(s, [...p, s.name()]);
  };
  walk(buildProgram(), []);
  return out;
}

/** Parses `argv` for one command with its action replaced, and returns the options the action got. */
async function parsedOptions(argv: string[]): Promise<Record<string, unknown>> {
  const program = buildProgram();
  let got: Record<string, unknown> | undefined;
  const walk = (c: Command) => {
    c.action(function (this: Command) {
      got = this.opts();
    });
    c.commands.forEach(walk);
  };
  program.commands.forEach(walk);
  await program.parseAsync(argv, { from: "user" });
  return got!;
}

function helpOf(path: string): string {
  return commands().get(path)!.helpInformation();
}

describe("CLI flag convention (docs/cli.md)", () => {
  it("every option of every command is long, kebab-case, names a path as -file <file> or -dir <dir>, and the tenant as --tenant <tenant>", () => {
    const offenders: string[] = [];
    for (const [path, cmd] of commands()) {
      for (const o of cmd.options) {
        if (o.hidden || o.flags === "-V, --version") continue;
        const why = flagConventionViolation(o.flags);
        if (why) offenders.push(`wardkeep ${path} ${o.flags}: ${why}`);
      }
    }
    expect(offenders).toEqual([]);
    // The check itself catches what it is for.
    expect(flagConventionViolation("--out <dir>")).toBe("takes a <dir> but does not end in -dir");
    expect(flagConventionViolation("--public-key <file>")).toBe("takes a <file> but does not end in -file");
    expect(flagConventionViolation("--tenant <id>")).toBe("the tenant is --tenant <tenant>");
    expect(flagConventionViolation("--outDir <dir>")).toBe("not a long, lowercase kebab-case flag");
  });

  it("keeps every old spelling as a hidden alias: absent from --help, present in the command", () => {
    for (const r of RENAMED_FLAGS) {
      const cmd = commands().get(r.command)!;
      const help = helpOf(r.command);
      expect(help, r.command).toContain(`${r.now} <`);
      expect(help, r.command).not.toMatch(new RegExp(`${r.old} <`));
      expect(cmd.options.find((o) => o.long === r.old)?.hidden, `${r.command} ${r.old}`).toBe(true);
    }
  });

  it("maps an old spelling to the same value as the new one", async () => {
    const range = ["--from", "2026-01-01", "--to", "2026-02-01"];
    const now = await parsedOptions(["audit", "export", ...range, "--out-dir", "/tmp/packs"]);
    const old = await parsedOptions(["audit", "export", ...range, "--out", "/tmp/packs"]);
    expect(now.outDir).toBe("/tmp/packs");
    expect(old.outDir).toBe("/tmp/packs");
    // Repeatable options collect old and new spellings together.
    const keys = await parsedOptions(["audit", "verify", "--public-key", "a.pem", "--public-key-file", "b.pem", "--public-key", "c.pem"]);
    expect(keys.publicKeyFile).toEqual(["a.pem", "b.pem", "c.pem"]);
    const tls = await parsedOptions(["tls", "import", "--cert", "chain.pem", "--key", "key.pem"]);
    expect(tls).toMatchObject({ certFile: "chain.pem", keyFile: "key.pem" });
    const restore = await parsedOptions(["restore", "snap-1", "--scratch", "--recovery-share", "s1", "--recovery-share", "s2"]);
    expect(restore.recoveryShareFile).toEqual(["s1", "s2"]);
  });

  it("still refuses a required option given under neither spelling", async () => {
    await expect(parsedOptions(["audit", "export", "--from", "2026-01-01", "--to", "2026-02-01"])).rejects.toThrow(/required option '--out-dir <dir>' not specified/);
  });
});
