/**
 * Invites made at the appliance host's command line (`wardkeep tenant create --owner-email`,
 * `wardkeep user invite`) have no inviting account: the operator there is the host operator,
 * recorded in the audit trail as `host_operator`. `created_by` NULL says so, rather than
 * borrowing some super-admin's id for work that person did not do.
 */
export const sql = `
ALTER TABLE invites ALTER COLUMN created_by DROP NOT NULL;
`;
