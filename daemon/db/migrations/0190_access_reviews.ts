/**
 * Access review campaigns (docs/access-reviews.md; HIPAA 164.308(a)(4), ISO 27001 A.5.18): a
 * campaign snapshots a tenant's active accounts (role, last sign-in, source, groups) when it
 * starts, a reviewer keeps or removes each with a comment, and at the deadline the accounts no
 * one reviewed are deactivated. Rows are never deleted: the closed campaign is the evidence.
 * The snapshot holds staff directory data (emails, names of staff), never PHI.
 */
export const sql = /* sql */ `
CREATE TABLE access_review_campaigns (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id     uuid NOT NULL REFERENCES tenants (id),
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
  -- 'schedule': the access-review-campaigns job; 'manual': started by an admin or the host operator.
  trigger       text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
  started_by    uuid,
  started_at    timestamptz NOT NULL,
  deadline_at   timestamptz NOT NULL,
  -- The tenant's inactivity limit when the campaign started, shown beside each account's idle days.
  unused_days   integer NOT NULL CHECK (unused_days > 0),
  closed_at     timestamptz,
  -- 'all-decided' (the last decision closed it) or 'deadline' (the job closed it).
  closed_reason text CHECK (closed_reason IS NULL OR closed_reason IN ('all-decided', 'deadline')),
  CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
  CHECK (deadline_at > started_at)
);
-- One open campaign per tenant: a second start while one runs is a conflict, not a duplicate.
CREATE UNIQUE INDEX access_review_campaigns_open_idx ON access_review_campaigns (tenant_id) WHERE status = 'open';
CREATE INDEX access_review_campaigns_tenant_idx ON access_review_campaigns (tenant_id, started_at DESC);
CREATE INDEX access_review_campaigns_deadline_idx ON access_review_campaigns (deadline_at) WHERE status = 'open';
ALTER TABLE access_review_campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_review_campaigns FORCE ROW LEVEL SECURITY;
CREATE POLICY access_review_campaigns_isolation ON access_review_campaigns
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON access_review_campaigns TO {{app_role}};

CREATE TABLE access_review_entries (
  campaign_id     uuid NOT NULL REFERENCES access_review_campaigns (id),
  tenant_id       uuid NOT NULL REFERENCES tenants (id),
  user_id         uuid NOT NULL REFERENCES users (id),
  -- The account as it was when the campaign started.
  email           text,
  display_name    text,
  role            text NOT NULL,
  source          text NOT NULL CHECK (source IN ('local', 'scim', 'idp')),
  break_glass     boolean NOT NULL,
  mfa_enabled     boolean NOT NULL,
  last_login_at   timestamptz,
  account_created timestamptz NOT NULL,
  groups          text[] NOT NULL DEFAULT '{}',
  -- The reviewer's decision, with a comment; null until decided.
  decision        text CHECK (decision IS NULL OR decision IN ('keep', 'remove')),
  comment         text CHECK (comment IS NULL OR length(comment) BETWEEN 1 AND 1000),
  decided_by      uuid,
  decided_at      timestamptz,
  -- What happened to the account: kept, removed (by the reviewer), deactivated-unreviewed (at the
  -- deadline), already-inactive (ended by something else before the decision took effect),
  -- kept-last-owner (unreviewed, but a tenant keeps one active owner).
  outcome         text CHECK (outcome IS NULL OR outcome IN ('kept', 'removed', 'deactivated-unreviewed', 'already-inactive', 'kept-last-owner')),
  PRIMARY KEY (campaign_id, user_id),
  CHECK ((decision IS NULL) = (decided_at IS NULL))
);
CREATE INDEX access_review_entries_tenant_idx ON access_review_entries (tenant_id);
ALTER TABLE access_review_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE access_review_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY access_review_entries_isolation ON access_review_entries
  USING (app_is_appliance_scope() OR tenant_id = app_tenant_id())
  WITH CHECK (app_is_appliance_scope() OR tenant_id = app_tenant_id());
GRANT SELECT, INSERT, UPDATE ON access_review_entries TO {{app_role}};
`;
