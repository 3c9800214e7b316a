import * as m0001 from "./0001_foundation.js";
import * as m0002 from "./0002_keys.js";
import * as m0003 from "./0003_identity.js";
import * as m0004 from "./0004_audit.js";
import * as m0005 from "./0005_backups.js";
import * as m0006 from "./0006_records.js";
import * as m0007 from "./0007_hot_path_lookups.js";
import * as m0008 from "./0008_siem_cursor.js";
import * as m0009 from "./0009_backup_catalogue.js";
import * as m0010 from "./0010_tenant_key_rotations.js";
import * as m0020 from "./0020_host_operator_invites.js";
import * as m0021 from "./0021_host_operator_api_tokens.js";
import * as m0030 from "./0030_alerts.js";
import * as m0031 from "./0031_alert_channels.js";
import * as m0040 from "./0040_webhooks.js";
import * as m0050 from "./0050_jobs.js";
import * as m0051 from "./0051_retention.js";
import * as m0070 from "./0070_cache_invalidation.js";
import * as m0080 from "./0080_pitr.js";
import * as m0090 from "./0090_sso.js";
import * as m0100 from "./0100_scim.js";
import * as m0110 from "./0110_saml.js";
import * as m0120 from "./0120_tenant_security_policy.js";
import * as m0160 from "./0160_sign_in_limits.js";

export type Migration = { name: string; sql: string };

/** In order. Forward-only: a released migration is never edited; fix forward with a new one. */
export const migrations: Migration[] = [
  { name: "0001_foundation", sql: m0001.sql },
  { name: "0002_keys", sql: m0002.sql },
  { name: "0003_identity", sql: m0003.sql },
  { name: "0004_audit", sql: m0004.sql },
  { name: "0005_backups", sql: m0005.sql },
  { name: "0006_records", sql: m0006.sql },
  { name: "0007_hot_path_lookups", sql: m0007.sql },
  { name: "0008_siem_cursor", sql: m0008.sql },
  { name: "0009_backup_catalogue", sql: m0009.sql },
  { name: "0010_tenant_key_rotations", sql: m0010.sql },
  { name: "0020_host_operator_invites", sql: m0020.sql },
  { name: "0021_host_operator_api_tokens", sql: m0021.sql },
  { name: "0030_alerts", sql: m0030.sql },
  { name: "0031_alert_channels", sql: m0031.sql },
  { name: "0040_webhooks", sql: m0040.sql },
  { name: "0050_jobs", sql: m0050.sql },
  { name: "0051_retention", sql: m0051.sql },
  { name: "0070_cache_invalidation", sql: m0070.sql },
  { name: "0080_pitr", sql: m0080.sql },
  { name: "0090_sso", sql: m0090.sql },
  { name: "0100_scim", sql: m0100.sql },
  { name: "0110_saml", sql: m0110.sql },
  { name: "0120_tenant_security_policy", sql: m0120.sql },
  { name: "0160_sign_in_limits", sql: m0160.sql },
];
