import type { ApplianceContext } from "../context.js";
import { startAuditChainer } from "./chainer.js";

/** The audit capability's background work in a running daemon: chaining, checkpoints, SIEM. */
export function startAuditServices(ctx: ApplianceContext): { stop(): Promise<void> } {
  const chainer = startAuditChainer(ctx);
  return {
    async stop() {
      await chainer.stop();
    },
  };
}
