import { Command } from "commander";
import { APP_VERSION } from "../version.js";
import { registerAccess } from "./commands/access.js";
import { registerAccessReview } from "./commands/access-review.js";
import { registerAdmin } from "./commands/admin.js";
import { registerAlerts } from "./commands/alerts.js";
import { registerAudit } from "./commands/audit.js";
import { registerBackup } from "./commands/backup.js";
import { registerConfig } from "./commands/config.js";
import { registerDoctor } from "./commands/doctor.js";
import { registerMigrate } from "./commands/migrate.js";
import { registerRecover } from "./commands/recover.js";
import { registerSession } from "./commands/session.js";
import { registerStart } from "./commands/start.js";
import { registerWebhook } from "./commands/webhook.js";
import { registerDataRights } from "./commands/data-rights.js";
import { registerRetention } from "./commands/retention.js";
import { registerTenant } from "./commands/tenant.js";
import { registerToken } from "./commands/token.js";
import { registerScim } from "./commands/scim.js";
import { registerIdp } from "./commands/idp.js";
import { registerUser } from "./commands/user.js";
import { registerKeys } from "./commands/keys.js";
import { registerTls } from "./commands/tls.js";
import { registerUnseal } from "./commands/unseal.js";

/** `wardkeep`: the operator's command line. Each command lives in commands/<name>.ts. */
export function buildProgram(): Command {
  const program = new Command("wardkeep")
    .description("Wardkeep: on-premise PHI appliance")
    .version(APP_VERSION)
    .option("--json", "machine-readable output: one JSON object on stdout")
    .exitOverride()
    .addHelpText(
      "after",
      [
        "",
        "Exit codes (every command; docs/cli.md):",
        "  0  done",
        '  1  failed: one readable line on stderr says why (with --json: {"ok": false, "error"} on stdout)',
        "  2  the command line is wrong: unknown command or option, or a required option missing",
        "  3  a backup target could not be reached (backup target add|test, backup wal): nothing was saved;",
        "     an identity provider cannot be used (idp test)",
      ].join("\n"),
    );
  registerStart(program);
  registerMigrate(program);
  registerDoctor(program);
  registerAdmin(program);
  registerConfig(program);
  registerUnseal(program);
  registerKeys(program);
  registerTls(program);
  registerBackup(program);
  registerRecover(program);
  registerAudit(program);
  registerAlerts(program);
  registerTenant(program);
  registerToken(program);
  registerScim(program);
  registerIdp(program);
  registerAccess(program);
  registerSession(program);
  registerUser(program);
  registerWebhook(program);
  registerRetention(program);
  registerDataRights(program);
  registerAccessReview(program);
  for (const cmd of program.commands) applyExitOverride(cmd);
  return program;
}

function applyExitOverride(cmd: Command) {
  cmd.exitOverride();
  for (const sub of cmd.commands) applyExitOverride(sub);
}
