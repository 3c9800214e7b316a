#!/usr/bin/env node
// The `wardkeep` command. From a source checkout it runs the TypeScript through tsx; the
// Docker image ships only the compiled build in dist/.
import { existsSync } from "node:fs";

const source = new URL("../daemon/cli/main.ts", import.meta.url);
if (existsSync(source)) {
  const { register } = await import("tsx/esm/api");
  register();
  await import(source.href);
} else {
  await import(new URL("../dist/daemon/cli/main.js", import.meta.url).href);
}
