import type { Command } from "commander";
import { renderDefaultConfig } from "../../config/document.js";
import { loadConfig } from "../../config/load.js";
import { printResult, type GlobalOptions } from "../output.js";

export function registerConfig(program: Command) {
  const config = program.command("config").description("configuration");
  config
    .command("defaults")
    .description("print every setting with its default (the text of config/default.yaml)")
    .action(() => {
      process.stdout.write(renderDefaultConfig());
    });
  config
    .command("check")
    .description("validate the configuration from WARDKEEP_CONFIG and WARDKEEP_* variables")
    .action(async (_opts, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const effective = loadConfig();
      const shown = {
        ...effective,
        database: { ...effective.database, url: effective.database.url?.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@") },
      };
      printResult(global, { config: shown }, "configuration is valid");
    });
}
