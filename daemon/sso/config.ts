import { z } from "zod";

/** Settings of hospital sign-in (`sso:` in config/default.yaml); docs/sso.md explains them. */
export const ssoSchema = z
  .object({
    loginStateMinutes: z
      .number()
      .int()
      .min(1)
      .max(30)
      .default(10)
      .describe("How long a sign-in started at an identity provider may take to come back (state, nonce, PKCE verifier)."),
    discoveryCacheMinutes: z
      .number()
      .int()
      .min(1)
      .max(1440)
      .default(10)
      .describe("How long an identity provider's discovery document and keys are reused before they are fetched again."),
    requestTimeoutSeconds: z.number().int().min(1).max(60).default(10).describe("Time limit of each request to an identity provider (discovery, token, userinfo)."),
  })
  .strict();

export type SsoConfig = z.infer<typeof ssoSchema>;
