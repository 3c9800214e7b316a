import { existsSync, readFileSync } from "node:fs";

// Sources run from daemon/, the build from dist/daemon/: package.json is one or two levels up.
const candidates = ["../package.json", "../../package.json"].map((p) => new URL(p, import.meta.url));
const packageFile = candidates.find((u) => existsSync(u)) ?? candidates[0]!;

/** The package version, read once; shown in the OpenAPI document, `--version` and doctor. */
export const APP_VERSION: string = (JSON.parse(readFileSync(packageFile, "utf8")) as { version: string }).version;
