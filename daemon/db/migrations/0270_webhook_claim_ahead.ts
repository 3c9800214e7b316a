/**
 * Claim-ahead per endpoint for outbound webhooks (docs/webhooks.md, "Delivery"): a claim names
 * the delivery worker that holds it, so a worker that alone holds an endpoint's claims may keep
 * the next ones claimed beyond `webhooks.perEndpointConcurrency` (sent only as its own slots to
 * that endpoint free up), while claims split between workers stay within the limit. Not indexed,
 * so a claim remains a HOT update.
 */
export const sql = /* sql */ `
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by uuid;
`;
