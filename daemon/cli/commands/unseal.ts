import type { Command } from "commander";
import { loadConfig } from "../../config/load.js";
import { callDaemon, daemonTarget, extractShare, OperatorError, readSecretFile, isInteractive, promptHidden } from "../../keys/index.js";
import { CliError, printResult, type GlobalOptions } from "../output.js";
import { aliasTo, hiddenAlias } from "../flags.js";

type UnsealOptions = { url?: string; caFile?: string; passphraseFile?: string; shareFile?: string; reset?: boolean; status?: boolean };

function describeState(body: Record<string, unknown>): string {
  if (!body.sealed) return `unsealed (${String(body.mode)})`;
  const progress = body.progress as { provided: number; threshold: number } | undefined;
  if (progress) return `sealed: ${progress.provided} of ${progress.threshold} shares entered on this replica`;
  return `sealed: ${String(body.reason ?? "")}`;
}

/**
 * `wardkeep unseal`: gives the running daemon its unseal secret over HTTPS on loopback. Each
 * custodian runs it once with their own share; the daemon reports progress until the threshold.
 */
export function registerUnseal(program: Command) {
  program
    .command("unseal")
    .description("unseal the running daemon: a passphrase, or one custodian's Shamir share per run")
    .option("--url <url>", "the daemon (default https://127.0.0.1:<server.port>); each replica is unsealed on its own")
    .option("--ca-file <file>", "CA certificate to trust (default dataDir/tls/ca.crt)")
    .addOption(hiddenAlias("--ca <file>", "--ca-file"))
    .on("option:ca", aliasTo("caFile"))
    .option("--passphrase-file <file>", "file holding the passphrase (- for stdin); otherwise asked without echo")
    .option("--share-file <file>", "file holding this custodian's share (- for stdin); otherwise asked without echo")
    .option("--reset", "discard the shares entered so far on this replica")
    .option("--status", "only show the seal state and progress")
    .action(async (opts: UnsealOptions, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const target = daemonTarget(loadConfig(), { url: opts.url, ca: opts.caFile });
      try {
        const current = await callDaemon(target, "GET", "/api/v1/keys/seal-status");
        if (current.status !== 200) throw new CliError(`the daemon answered ${current.status}: ${String(current.body.detail ?? "")}`);
        if (opts.status || (!current.body.sealed && !opts.reset)) {
          printResult(global, { state: current.body }, describeState(current.body));
          return;
        }
        let body: Record<string, unknown>;
        if (opts.reset) body = { reset: true };
        else if (current.body.mode === "passphrase") {
          if (!opts.passphraseFile && !isInteractive()) throw new CliError("no terminal to ask for the passphrase: use --passphrase-file FILE (- for stdin)");
          body = { passphrase: opts.passphraseFile ? readSecretFile(opts.passphraseFile, "passphrase") : await promptHidden("Unseal passphrase: ") };
        } else if (current.body.mode === "shamir") {
          const progress = current.body.progress as { provided: number; threshold: number } | undefined;
          if (!opts.shareFile && !isInteractive()) throw new CliError("no terminal to ask for the share: use --share-file FILE (- for stdin)");
          body = {
            share: opts.shareFile
              ? extractShare(readSecretFile(opts.shareFile, "share"))
              : await promptHidden(`Share (${(progress?.provided ?? 0) + 1} of ${progress?.threshold ?? "?"}): `),
          };
        } else body = {};
        const answer = await callDaemon(target, "POST", "/api/v1/keys/unseal", body);
        if (answer.status !== 200) throw new CliError(String(answer.body.detail ?? `the daemon answered ${answer.status}`), answer.status === 403 ? 3 : 1);
        printResult(global, { state: answer.body }, describeState(answer.body));
      } catch (err) {
        if (err instanceof OperatorError) throw new CliError(err.message);
        throw err;
      }
    });
}
