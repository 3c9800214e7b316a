import type { TestProject } from "vitest/node";
import { buildCliBundle } from "./cli-bundle.js";
import { PROJECT_ROOT } from "./daemon-process.js";
import { startTestCluster } from "./postgres.js";

/**
 * Starts one embedded PostgreSQL for the whole run (each test file makes its own database) and bundles the
 * CLI once; the test workers inherit WARDKEEP_TEST_CLI_BUNDLE and start `wardkeep` from it (daemon-process.ts).
 */
export default async function setup(project: TestProject) {
  process.env.WARDKEEP_TEST_CLI_BUNDLE = await buildCliBundle(PROJECT_ROOT);
  const { cluster, stop } = await startTestCluster();
  project.provide("pgCluster", cluster);
  return stop;
}
