import type { SealProgressRes } from "../../../daemon/keys/schema.js";
import { api, onApiResponse } from "./api";

const SEALED = "urn:wardkeep:problem:sealed";
/** While sealed, how often the unseal page asks again: other custodians enter their shares from their own browsers. */
const SEALED_POLL_MS = 2_000;

/**
 * This replica's seal state, from the public `GET /api/v1/keys/seal-status`. While it is sealed
 * the console draws only the unseal page (App.svelte): no screen, so no request for anyone's
 * data, is made. It is read at start, again whenever an answer is the `sealed` problem (sealed
 * by another operator or another tab), and every two seconds while sealed, so each custodian's
 * browser shows the Shamir progress ("2 of 3") as the others enter their shares.
 */
class SealStore {
  state = $state<SealProgressRes>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    onApiResponse((r) => {
      if (r.problem?.type === SEALED && !this.state?.sealed) void this.check();
    });
  }

  get sealed(): boolean {
    return this.state?.sealed === true;
  }

  async check(): Promise<void> {
    clearTimeout(this.#timer);
    try {
      this.state = await api.keys.sealStatus();
    } catch {
      // Not reachable: keep what we knew; the pages say the appliance cannot be reached.
    }
    if (this.state?.sealed) this.#timer = setTimeout(() => void this.check(), SEALED_POLL_MS);
  }

  /** An answer of the unseal or seal call is the freshest state there is. */
  set(state: SealProgressRes) {
    this.state = state;
    if (state.sealed) {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => void this.check(), SEALED_POLL_MS);
    }
  }
}

export const seal = new SealStore();
