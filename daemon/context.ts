import type { Registry } from "prom-client";
import type { Clock } from "./clock.js";
import type { Config } from "./config/schema.js";
import type { Database } from "./db/connection.js";
import type { RootKey } from "./keys/index.js";
import type { Logger } from "./log/logger.js";

/** What a running appliance hands to routes and services: built once in `startAppliance`. */
export type ApplianceContext = {
  config: Config;
  log: Logger;
  db: Database;
  rootKey: RootKey;
  metrics: Registry;
  clock: Clock;
  /** The public address (config/public-url.ts), set once the HTTPS listener has its port; read it with `appliancePublicUrl(ctx)`. */
  publicUrl?: string;
};
