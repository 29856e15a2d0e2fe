// panva's oidc-provider (OpenID Certified) as the upstream IdP of tests/upstream/.
//
// node op.mjs CONFIG.json: {"port", "issuer", "jwks": {"keys": [private JWKs]},
//   "clients": [{"client_id", "client_secret", "redirect_uris"}]}
// Anyone may sign in with any login at the provider's own development login form; the
// account's claims are derived from the login (sub, email, preferred_username), or
// taken from "accounts" in the config. Consent is granted automatically.
//
// Faults for the negative tests: POST /__test/tamper {"claims": {...}, "foreign_key": bool,
// "kid": "..."} rewrites the ID token of the NEXT token response (claims merged over the
// real ones), re-signed with the provider's own key, or with a key it never published.
import fs from "node:fs";
import Provider from "oidc-provider";
import * as jose from "jose";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const accounts = cfg.accounts || {};
let tamper = null;
const foreign = await jose.generateKeyPair("RS256", { extractable: true });

function claimsFor(id) {
  return { sub: id, email: id, email_verified: true, preferred_username: id, ...(accounts[id] || {}) };
}

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients.map((c) => ({
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    ...c,
  })),
  jwks: cfg.jwks,
  cookies: { keys: ["devicetrust-test-cookie-key"] },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => claimsFor(id) }),
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["preferred_username", "name", "oid"],
  },
  conformIdTokenClaims: false, // the code flow's ID token carries the scopes' claims
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid email profile");
    await grant.save();
    return grant;
  },
});

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

provider.use(async (ctx, next) => {
  if (ctx.path === "/__test/tamper" && ctx.method === "POST") {
    tamper = JSON.parse(await readBody(ctx.req));
    ctx.body = { ok: true };
    return;
  }
  await next();
  if (ctx.path === "/token" && ctx.status === 200 && tamper && ctx.body && ctx.body.id_token) {
    const t = tamper;
    tamper = null;
    const header = jose.decodeProtectedHeader(ctx.body.id_token);
    const payload = { ...jose.decodeJwt(ctx.body.id_token), ...(t.claims || {}) };
    let key;
    if (t.foreign_key) {
      key = foreign.privateKey;
    } else {
      const jwk = cfg.jwks.keys.find((k) => k.kid === header.kid);
      key = await jose.importJWK(jwk, header.alg);
    }
    ctx.body.id_token = await new jose.SignJWT(payload)
      .setProtectedHeader({ alg: header.alg, kid: t.kid || header.kid, typ: header.typ })
      .sign(key);
  }
});

provider.listen(cfg.port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${cfg.issuer}`);
});
