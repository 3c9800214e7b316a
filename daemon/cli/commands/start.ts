import type { Command } from "commander";
import { startAppliance } from "../../appliance.js";
import { loadConfig } from "../../config/load.js";
import { createLogger } from "../../log/logger.js";
import { isWorker, leavePrimary, onStopRequest, reportReady, startWorkers } from "../../workers.js";
import type { GlobalOptions } from "../output.js";

export function registerStart(program: Command) {
  program
    .command("start")
    .description("run the appliance (HTTPS API and admin UI); SIGTERM or Ctrl-C drains and stops")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig();
      const log = createLogger({ level: config.log.level });
      const worker = isWorker();
      // A primary (server.workers > 1) and its workers keep draining through a second signal: the
      // primary must outlive its workers to stop the embedded PostgreSQL after them.
      const clustered = worker || config.server.workers > 1;
      // Handlers go in before start-up so a signal during start-up still ends in an orderly stop.
      let signalled: (signal: NodeJS.Signals) => void = () => {};
      const stopRequested = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
      const onSignal = (signal: NodeJS.Signals) => {
        if (!clustered) {
          process.off("SIGTERM", onSignal);
          process.off("SIGINT", onSignal);
        }
        signalled(signal);
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
      if (worker) onStopRequest(() => onSignal("SIGTERM"));
      // server.workers > 1: this process keeps the embedded PostgreSQL and forks the workers (daemon/workers.ts).
      const running = config.server.workers > 1 && !worker ? await startWorkers(config, log) : await startAppliance(config, { log });
      const port = "server" in running ? running.server.port : running.port;
      if (worker) reportReady(running.url, port);
      else if (global.json) process.stdout.write(JSON.stringify({ ok: true, url: running.url, port }) + "\n");
      log.info(`received ${await stopRequested}`);
      await running.stop();
      leavePrimary();
    });
}
