import type { ApplianceContext } from "../context.js";

/**
 * The delivery worker of this process, woken when a transaction that published an event commits,
 * so a delivery leaves at once instead of at the next poll. Other replicas find it at their poll.
 */
const wakers = new WeakMap<ApplianceContext, () => void>();

export function onPublished(ctx: ApplianceContext, wake: () => void): () => void {
  wakers.set(ctx, wake);
  return () => {
    if (wakers.get(ctx) === wake) wakers.delete(ctx);
  };
}

export function wakeDeliveryWorker(ctx: ApplianceContext): void {
  wakers.get(ctx)?.();
}
