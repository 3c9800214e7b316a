import { inDataDir } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import { KeyFileUnseal } from "./keyfile.js";
import { UnsealError, type UnsealSource } from "./source.js";

/** Picks the configured unseal source. */
export function openUnsealSource(config: Config): UnsealSource {
  switch (config.keys.unseal) {
    case "keyfile":
      return new KeyFileUnseal(inDataDir(config, config.keys.keyFile));
    default:
      return {
        mode: config.keys.unseal,
        unseal: async () => {
          throw new UnsealError(`unseal mode ${config.keys.unseal} needs an operator: run \`wardkeep unseal\``);
        },
      };
  }
}
