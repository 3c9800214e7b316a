/**
 * The per-endpoint concurrency limit of outbound webhooks (`webhooks.perEndpointConcurrency`,
 * docs/webhooks.md, "Delivery"): each claim counts an endpoint's claimed deliveries and takes its
 * oldest due ones, both by endpoint among the pending deliveries. `claimed_until` stays out of
 * the index, so a claim remains a HOT update.
 */
export const sql = /* sql */ `
CREATE INDEX webhook_deliveries_endpoint_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
`;
