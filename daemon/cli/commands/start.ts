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
      // Handlers go in before start-up so a signal during start-up still ends in an orderly stop.
      let signalled: (signal: NodeJS.Signals) => void = () => {};
      const stopRequested = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
      const onSignal = (signal: NodeJS.Signals) => {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
        signalled(signal);
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
      const appliance = await startAppliance(config, { log });
      if (global.json) process.stdout.write(JSON.stringify({ ok: true, url: appliance.url, port: appliance.server.port }) + "\n");
      log.info(`received ${await stopRequested}`);
      await appliance.stop();
    });
}
