import { ConfigError } from "../config/load.js";
import { AppError } from "../kernel/errors.js";

/** Options every command accepts. */
export type GlobalOptions = { json?: boolean };

/**
 * CLI contract (DESIGN "Interfaces"): exit 0 on success; on failure exit non-zero with one
 * readable line on stderr — or, with --json, one JSON object on stdout.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function oneLine(err: unknown): string {
  if (err instanceof AppError || err instanceof ConfigError || err instanceof CliError) return err.message;
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0]!.slice(0, 500);
}

export function printResult(opts: GlobalOptions, result: unknown, human: string | string[]) {
  if (opts.json) {
    process.stdout.write(JSON.stringify({ ok: true, ...(result as object) }) + "\n");
    return;
  }
  const lines = Array.isArray(human) ? human : [human];
  if (lines.length) process.stdout.write(lines.join("\n") + "\n");
}

export function printFailure(opts: GlobalOptions, err: unknown) {
  const message = oneLine(err);
  if (opts.json) {
    process.stdout.write(JSON.stringify({ ok: false, error: message }) + "\n");
  } else {
    process.stderr.write(`wardkeep: ${message}\n`);
  }
  process.exitCode = err instanceof CliError ? err.exitCode : 1;
}
