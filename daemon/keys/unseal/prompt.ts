import readline from "node:readline";
import { Writable } from "node:stream";

/**
 * Asks for a secret on the terminal without echoing it (passphrases and shares must not end up
 * in the scrollback or a screen recording). Only for interactive terminals.
 */
export async function promptHidden(question: string, input: NodeJS.ReadStream = process.stdin, output: NodeJS.WriteStream = process.stderr): Promise<string> {
  let muted = false;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (!muted) output.write(chunk);
      cb();
    },
  });
  const rl = readline.createInterface({ input, output: sink, terminal: true });
  try {
    output.write(question);
    muted = true;
    const answer = await new Promise<string>((resolve, reject) => {
      rl.once("line", resolve);
      rl.once("close", () => reject(new Error("no input (end of file)")));
      rl.once("SIGINT", () => reject(new Error("cancelled")));
    });
    return answer;
  } finally {
    muted = false;
    output.write("\n");
    rl.close();
  }
}

export function isInteractive(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY);
}
