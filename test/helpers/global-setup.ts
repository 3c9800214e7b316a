import type { TestProject } from "vitest/node";
import { startTestCluster } from "./postgres.js";

/** Starts one embedded PostgreSQL for the whole run; each test file makes its own database. */
export default async function setup(project: TestProject) {
  const { cluster, stop } = await startTestCluster();
  project.provide("pgCluster", cluster);
  return stop;
}
