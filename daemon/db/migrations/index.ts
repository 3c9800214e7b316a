import * as m0001 from "./0001_foundation.js";

export type Migration = { name: string; sql: string };

/** In order. Forward-only: a released migration is never edited; fix forward with a new one. */
export const migrations: Migration[] = [{ name: "0001_foundation", sql: m0001.sql }];
