// A node-saml SP for tests/test_saml_node.py, driven over stdin/stdout (one JSON object a line).
//
// argv[2] is a JSON object: {idpCert, entryPoint, issuer, callbackUrl, privateKey, publicCert,
// options}. The script first prints {"metadata": ...} (the SP metadata node-saml generates),
// then answers each command line:
//   {"op": "login"}                      -> {"url": <HTTP-Redirect URL of a signed AuthnRequest>}
//   {"op": "acs", "SAMLResponse": <b64>} -> {"ok": true, "profile": ...}
//                                        or {"ok": false, "error": ..., "status": ...}
// One process makes the requests and validates the responses, so node-saml's own
// InResponseTo cache (validateInResponseTo: "always") is in play.
import readline from "node:readline";

import { SAML } from "@node-saml/node-saml";

const config = JSON.parse(process.argv[2]);
const saml = new SAML({
  idpCert: config.idpCert,
  entryPoint: config.entryPoint,
  issuer: config.issuer,
  audience: config.issuer,
  callbackUrl: config.callbackUrl,
  privateKey: config.privateKey,
  signatureAlgorithm: "sha256",
  digestAlgorithm: "sha256",
  identifierFormat: "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
  wantAssertionsSigned: true,
  wantAuthnResponseSigned: true,
  validateInResponseTo: "always",
  // node-saml's defaults stay in place unless a test overrides them: RequestedAuthnContext
  // exact urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport.
  ...(config.options || {}),
});

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
out({ metadata: saml.generateServiceProviderMetadata(null, config.publicCert) });

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "login") {
      out({ url: await saml.getAuthorizeUrlAsync(cmd.relayState || "", undefined, {}) });
    } else if (cmd.op === "acs") {
      const result = await saml.validatePostResponseAsync({ SAMLResponse: cmd.SAMLResponse });
      out({ ok: true, profile: result.profile });
    } else {
      out({ ok: false, error: `unknown op ${cmd.op}` });
    }
  } catch (err) {
    out({ ok: false, error: String(err && err.message), status: err.xmlStatus ?? null });
  }
}
