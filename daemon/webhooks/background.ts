import type { ApplianceContext } from "../context.js";
import { DeliveryWorker } from "./delivery.js";

/** The outbound delivery worker of this replica (docs/webhooks.md, "Delivery"), unless `webhooks.deliveryEnabled` is off. */
export function startWebhookServices(ctx: ApplianceContext): { stop(): Promise<void>; worker: DeliveryWorker | undefined } {
  if (!ctx.config.webhooks.deliveryEnabled) return { stop: async () => undefined, worker: undefined };
  const worker = new DeliveryWorker(ctx).start();
  return { stop: () => worker.stop(), worker };
}
