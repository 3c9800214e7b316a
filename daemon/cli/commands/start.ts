import type { Command } from "commander";
import { startAppliance } from "../../appliance.js";
import { loadConfig } from "../../config/load.js";
import { createLogger } from "../../log/logger.js";
import type { GlobalOptions } from "../output.js";

export function registerStart(program: Command) {
  program
    .command("start")
    .description("run the appliance (HTTPS API and admin UI); SIGTERM or Ctrl-C drains and stops")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const log = createLogger({ level: config.log.level });
      const appliance = await startAppliance(config, { log });
      if (global.json) process.stdout.write(JSON.stringify({ ok: true, url: appliance.url, port: appliance.server.port }) + "\n");
      await new Promise<void>((resolve) => {
        const onSignal = (signal: NodeJS.Signals) => {
          log.info(`received ${signal}`);
          process.off("SIGTERM", onSignal);
          process.off("SIGINT", onSignal);
          void appliance.stop().then(() => resolve());
        };
        process.on("SIGTERM", onSignal);
        process.on("SIGINT", onSignal);
      });
    });
}
