import { ApiError } from "./api";
import { session } from "./session.svelte";

/**
 * Step-up for sensitive actions (role changes, MFA resets, key rotation, exports): when the API
 * answers `step-up-required` with a way to satisfy it, ask for a fresh authenticator or recovery
 * code, send it to `POST /api/v1/auth/mfa`, and retry the action once. Where no code can help
 * (support access, API tokens) the server's message is shown as it is.
 */
class StepUpStore {
  open = $state(false);
  reason = $state("");
  #resolve: ((confirmed: boolean) => void) | undefined;

  async run<T>(action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (err) {
      if (!(err instanceof ApiError && err.stepUpPossible)) throw err;
      const confirmed = await this.#ask(err.message);
      if (!confirmed) throw new Error("Not done: this change needs a fresh code from your authenticator app.", { cause: err });
      return await action();
    }
  }

  #ask(reason: string): Promise<boolean> {
    this.#resolve?.(false);
    this.reason = reason;
    this.open = true;
    return new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Throws (and stays open) on a wrong code, so the dialog can show why. */
  async confirm(input: { code: string } | { recoveryCode: string }): Promise<void> {
    await session.verify(input);
    this.open = false;
    this.#resolve?.(true);
    this.#resolve = undefined;
  }

  cancel() {
    this.open = false;
    this.#resolve?.(false);
    this.#resolve = undefined;
  }
}

export const stepUp = new StepUpStore();
