/** The TLS capability's public face: the internal CA and server certificate, and the watcher that reloads it. */
export {
  createCertificateSigningRequest,
  createSelfSignedKeyPair,
  describeCertificate,
  ensureTlsMaterial,
  importCertificate,
  renewServerCertificate,
  TlsError,
  type CertificateDescription,
  type TlsMaterial,
} from "./internal-ca.js";
export { watchTlsDirectory, type TlsCredentials } from "./watch.js";
