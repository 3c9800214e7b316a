import { OpenAPIRegistry, OpenApiGeneratorV31 } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";

/**
 * The API description is generated from the same zod schemas that validate requests, so it
 * cannot drift from what the daemon accepts. Each capability's schema module registers its
 * paths here when it is loaded.
 */
export const openApiRegistry = new OpenAPIRegistry();

export const problemSchema = z
  .object({
    type: z.string().describe("Stable URN naming the kind of problem, e.g. urn:wardkeep:problem:not-found"),
    title: z.string(),
    status: z.number().int(),
    detail: z.string().describe("A sentence for people; never carries PHI"),
    instance: z.string().optional(),
    requestId: z.string().optional(),
  })
  .passthrough();

export const problemResponse = (description: string) => ({
  description,
  content: { "application/problem+json": { schema: problemSchema } },
});

export const jsonResponse = (description: string, schema: z.ZodType) => ({
  description,
  content: { "application/json": { schema } },
});

export const jsonBody = (schema: z.ZodType) => ({ content: { "application/json": { schema } }, required: true });

export function buildOpenApiDocument(version: string) {
  return new OpenApiGeneratorV31(openApiRegistry.definitions).generateDocument({
    openapi: "3.1.0",
    info: {
      title: "Wardkeep API",
      version,
      description:
        "On-premise PHI appliance. Errors are RFC 9457 application/problem+json with a stable `type` URN. All endpoints are HTTPS only.",
    },
    servers: [{ url: "/" }],
  });
}
