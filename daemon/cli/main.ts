import { CommanderError } from "commander";
import { printFailure, type GlobalOptions } from "./output.js";
import { buildProgram } from "./program.js";

export { buildProgram };

export async function runCli(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end through here with exit code 0.
      if (err.exitCode !== 0) process.exitCode = err.exitCode === 1 ? 2 : err.exitCode;
      return;
    }
    printFailure(program.opts<GlobalOptions>(), err);
  }
}

await runCli(process.argv);
