import { SCHEMA_ENTERPRISE_USER, SCHEMA_GROUP, SCHEMA_USER } from "./protocol.js";

/**
 * The discovery endpoints (RFC 7644 §4): what this server supports, so a client does not try
 * bulk, sort or complex filters. They describe exactly the subset docs/scim.md lists.
 */

const meta = (resourceType: string, location: string) => ({ resourceType, location });

export function serviceProviderConfig(baseUrl: string) {
  return {
    schemas: ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
    patch: { supported: true },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    filter: { supported: true, maxResults: 200 },
    changePassword: { supported: false },
    sort: { supported: false },
    etag: { supported: false },
    authenticationSchemes: [
      {
        type: "oauthbearertoken",
        name: "Bearer token",
        description: "A per-tenant SCIM token created by a tenant admin (console, API or `wardkeep scim token create`)",
        primary: true,
      },
    ],
    meta: meta("ServiceProviderConfig", `${baseUrl}/ServiceProviderConfig`),
  };
}

const RT = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";

export function resourceTypes(baseUrl: string) {
  return [
    {
      schemas: [RT],
      id: "User",
      name: "User",
      endpoint: "/Users",
      description: "A person's account in this tenant",
      schema: SCHEMA_USER,
      schemaExtensions: [{ schema: SCHEMA_ENTERPRISE_USER, required: false }],
      meta: meta("ResourceType", `${baseUrl}/ResourceTypes/User`),
    },
    {
      schemas: [RT],
      id: "Group",
      name: "Group",
      endpoint: "/Groups",
      description: "A directory group",
      schema: SCHEMA_GROUP,
      meta: meta("ResourceType", `${baseUrl}/ResourceTypes/Group`),
    },
  ];
}

const attr = (name: string, type: string, extra: Record<string, unknown> = {}) => ({
  name,
  type,
  multiValued: false,
  required: false,
  caseExact: false,
  mutability: "readWrite",
  returned: "default",
  uniqueness: "none",
  ...extra,
});

export function schemas(baseUrl: string) {
  const S = "urn:ietf:params:scim:schemas:core:2.0:Schema";
  return [
    {
      schemas: [S],
      id: SCHEMA_USER,
      name: "User",
      description: "User account",
      attributes: [
        attr("userName", "string", { required: true, uniqueness: "server" }),
        attr("externalId", "string", { caseExact: true }),
        attr("name", "complex", { subAttributes: [attr("givenName", "string"), attr("familyName", "string"), attr("formatted", "string")] }),
        attr("displayName", "string"),
        attr("emails", "complex", { multiValued: true, subAttributes: [attr("value", "string"), attr("type", "string"), attr("primary", "boolean")] }),
        attr("active", "boolean"),
      ],
      meta: meta("Schema", `${baseUrl}/Schemas/${SCHEMA_USER}`),
    },
    {
      schemas: [S],
      id: SCHEMA_GROUP,
      name: "Group",
      description: "Group",
      attributes: [
        attr("displayName", "string", { required: true, uniqueness: "server" }),
        attr("externalId", "string", { caseExact: true }),
        attr("members", "complex", {
          multiValued: true,
          subAttributes: [attr("value", "string", { mutability: "immutable" }), attr("display", "string", { mutability: "readOnly" })],
        }),
      ],
      meta: meta("Schema", `${baseUrl}/Schemas/${SCHEMA_GROUP}`),
    },
  ];
}
