/**
 * API tokens made at the appliance host's command line (`wardkeep token create`) have no
 * creating account, like the host operator's invites (0020): `created_by` NULL says so.
 */
export const sql = `
ALTER TABLE api_tokens ALTER COLUMN created_by DROP NOT NULL;
`;
