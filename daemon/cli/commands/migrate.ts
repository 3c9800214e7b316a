import type { Command } from "commander";
import { loadConfig } from "../../config/load.js";
import { applyMigrations, pendingMigrations } from "../../db/migrate.js";
import { withOfflineContext } from "../offline-context.js";
import { printResult, type GlobalOptions } from "../output.js";

export function registerMigrate(program: Command) {
  program
    .command("migrate")
    .description("apply pending database migrations as the owner role (safe while replicas run)")
    .option("--status", "only list pending migrations")
    .action(async (opts: { status?: boolean }, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      await withOfflineContext(config, async (ctx, targets) => {
        if (opts.status) {
          const pending = await pendingMigrations(ctx.db.owner);
          printResult(global, { pending }, pending.length ? `pending: ${pending.join(", ")}` : "schema is current");
          return;
        }
        const applied = await applyMigrations(ctx.db.owner, targets.ownerUrl, targets.appRole);
        printResult(global, { applied }, applied.length ? `applied: ${applied.join(", ")}` : "schema is current; nothing to apply");
      });
    });
}
