import { createHash, X509Certificate } from "node:crypto";
import { DOMParser } from "@xmldom/xmldom";

/** The part of an xmldom element this module reads. */
type XmlElement = {
  localName: string | null;
  textContent: string | null;
  getAttribute(name: string): string | null;
  getElementsByTagNameNS(ns: string, name: string): { length: number; item(i: number): XmlElement | null };
};

/**
 * IdP metadata import (docs/sso.md "SAML 2.0"): the entity id, the HTTP-Redirect single sign-on
 * URL, the HTTP-Redirect single logout URL when it offers one, and the signing certificates, which the provider's settings then pin. Metadata is often
 * fetched over plain links or mailed around, so an administrator can require that one of the
 * certificates has the SHA-256 fingerprint the IdP's console shows.
 */
const MD = "urn:oasis:names:tc:SAML:2.0:metadata";
const DS = "http://www.w3.org/2000/09/xmldsig#";
const REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";

export type ImportedIdp = { idpEntityId: string; idpSsoUrl: string; idpSloUrl?: string; idpCertificates: string[]; fingerprints: string[] };

export class MetadataRefused extends Error {}

const children = (el: XmlElement, ns: string, name: string): XmlElement[] => {
  const out: XmlElement[] = [];
  const list = el.getElementsByTagNameNS(ns, name);
  for (let i = 0; i < list.length; i++) out.push(list.item(i)!);
  return out;
};

function toPem(base64: string): string {
  const body = base64.replace(/\s+/g, "");
  return `-----BEGIN CERTIFICATE-----\n${body.match(/.{1,64}/g)!.join("\n")}\n-----END CERTIFICATE-----\n`;
}

/** SHA-256 fingerprint as the IdP consoles print it: upper-case hex pairs joined by colons. */
export function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

const normalFingerprint = (f: string) => f.replace(/[^0-9a-f]/gi, "").toUpperCase();

export function parseIdpMetadata(xml: string, opts: { entityId?: string; pinFingerprint?: string } = {}): ImportedIdp {
  if (xml.length > 1_000_000) throw new MetadataRefused("the metadata is larger than 1 MB");
  if (/<!DOCTYPE/i.test(xml)) throw new MetadataRefused("the metadata has a DOCTYPE (refused: entity expansion)");
  const errors: string[] = [];
  const doc = new DOMParser({ errorHandler: { error: (m: string) => errors.push(m), fatalError: (m: string) => errors.push(m) } }).parseFromString(xml, "text/xml");
  if (errors.length > 0 || !doc?.documentElement) throw new MetadataRefused("the metadata is not well-formed XML");
  const root = doc.documentElement as unknown as XmlElement;
  const entities = children(root, MD, "EntityDescriptor");
  if (root.localName === "EntityDescriptor") entities.unshift(root);
  const idps = entities.filter((e) => children(e, MD, "IDPSSODescriptor").length > 0 && (!opts.entityId || e.getAttribute("entityID") === opts.entityId));
  if (idps.length === 0)
    throw new MetadataRefused(opts.entityId ? `no identity provider with entityID ${opts.entityId} in the metadata` : "no identity provider (IDPSSODescriptor) in the metadata");
  if (idps.length > 1) throw new MetadataRefused("the metadata describes several identity providers; name the one to use (entityId)");
  const entity = idps[0]!;
  const descriptor = children(entity, MD, "IDPSSODescriptor")[0]!;
  const sso = children(descriptor, MD, "SingleSignOnService").find((s) => s.getAttribute("Binding") === REDIRECT);
  if (!sso?.getAttribute("Location")) throw new MetadataRefused("the identity provider offers no HTTP-Redirect SingleSignOnService");
  const slo = children(descriptor, MD, "SingleLogoutService")
    .find((s) => s.getAttribute("Binding") === REDIRECT)
    ?.getAttribute("Location");
  const certs = children(descriptor, MD, "KeyDescriptor")
    .filter((k) => (k.getAttribute("use") ?? "signing") === "signing" || k.getAttribute("use") === "")
    .flatMap((k) => children(k, DS, "X509Certificate"))
    .map((c) => toPem(c.textContent ?? ""));
  const unique = [...new Set(certs)];
  if (unique.length === 0) throw new MetadataRefused("the metadata names no signing certificate");
  if (unique.length > 2) throw new MetadataRefused(`the metadata names ${unique.length} signing certificates; at most two (current and next) can be pinned`);
  let fingerprints: string[];
  try {
    fingerprints = unique.map(fingerprintOf);
  } catch {
    throw new MetadataRefused("a signing certificate in the metadata cannot be read");
  }
  if (opts.pinFingerprint && !fingerprints.some((f) => normalFingerprint(f) === normalFingerprint(opts.pinFingerprint!))) {
    throw new MetadataRefused("no signing certificate in the metadata has the expected SHA-256 fingerprint");
  }
  return {
    idpEntityId: entity.getAttribute("entityID") ?? "",
    idpSsoUrl: sso.getAttribute("Location")!,
    ...(slo ? { idpSloUrl: slo } : {}),
    idpCertificates: unique,
    fingerprints,
  };
}

/** For display: the fingerprint of each pinned certificate (hex SHA-256 of the DER). */
export function describePinned(pems: string[]): string[] {
  return pems.map((p) => {
    try {
      return fingerprintOf(p);
    } catch {
      return createHash("sha256").update(p).digest("hex");
    }
  });
}
