import fs from "node:fs";
import type { Command } from "commander";
import { createFirstSuperAdmin, ensureSetupToken, superAdminInput } from "../../auth/index.js";
import { loadConfig } from "../../config/load.js";
import { pendingMigrations } from "../../db/migrate.js";
import { withOfflineContext } from "../offline-context.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";

function readPasswordFile(file: string): string {
  if (file === "-") return fs.readFileSync(0, "utf8").replace(/\r?\n$/, "");
  try {
    return fs.readFileSync(file, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    throw new CliError(`cannot read password file ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
}

export function registerAdmin(program: Command) {
  const admin = program.command("admin").description("appliance administrators");

  admin
    .command("create")
    .description("create the first super-admin without the UI (automated installs)")
    .requiredOption("--email <email>", "work email of the administrator")
    .requiredOption("--password-file <file>", "file holding the password (- for stdin); never pass a password as an argument")
    .action(async (opts: { email: string; passwordFile: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const parsed = superAdminInput.safeParse({ email: opts.email, password: readPasswordFile(opts.passwordFile) });
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new CliError(`--${issue.path[0] === "email" ? "email" : "password-file"}: ${issue.message}`);
      }
      await withOfflineContext(config, async (ctx) => {
        if ((await pendingMigrations(ctx.db.app)).length) throw new CliError("the database schema is not current; run `wardkeep migrate` first");
        const created = await createFirstSuperAdmin(ctx, parsed.data);
        printResult(global, { id: created.id, email: created.email }, `super-admin ${created.email} created (${created.id})`);
      });
    });

  admin
    .command("setup-token")
    .description("issue a new one-time setup token (replaces any outstanding one) while no super-admin exists")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      await withOfflineContext(config, async (ctx) => {
        const outcome = await ensureSetupToken(ctx, { reissue: true });
        if (outcome.state !== "issued") throw new CliError("setup is already complete: a super-admin exists");
        printResult(global, { token: outcome.token, expiresAt: outcome.expiresAt.toISOString() }, [
          `setup token (valid until ${outcome.expiresAt.toISOString()}):`,
          `  ${outcome.token}`,
        ]);
      });
    });
}
