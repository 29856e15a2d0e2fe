// A relying party built on panva's openid-client, driven by tests/oidc/test_oidc_node.py.
//   node rp.mjs start  ISSUER CLIENT_ID SECRET REDIRECT_URI
//     -> {"url", "verifier", "state", "nonce"}
//   node rp.mjs finish ISSUER CLIENT_ID SECRET CALLBACK_URL VERIFIER STATE NONCE
//     -> {"claims", "userinfo"}  (or {"error": ...} with exit code 1)
// Discovery, the code flow with PKCE (S256), id_token validation with its signature
// checked against the JWKS (enableNonRepudiationChecks), and userinfo, all done by the library.
import * as client from "openid-client";

const [cmd, issuer, clientId, secret, ...rest] = process.argv.slice(2);

async function config() {
  const c = await client.discovery(new URL(issuer), clientId, secret, client.ClientSecretBasic(secret), {
    execute: [client.allowInsecureRequests], // the test service listens on plain-http loopback
  });
  client.enableNonRepudiationChecks(c);
  return c;
}

try {
  const c = await config();
  if (cmd === "start") {
    const [redirectUri] = rest;
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(c, {
      redirect_uri: redirectUri,
      scope: "openid email profile",
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      nonce,
    });
    console.log(JSON.stringify({ url: url.href, verifier, state, nonce }));
  } else if (cmd === "finish") {
    const [callback, verifier, state, nonce] = rest;
    const tokens = await client.authorizationCodeGrant(c, new URL(callback), {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    const userinfo = await client.fetchUserInfo(c, tokens.access_token, claims.sub);
    console.log(JSON.stringify({ claims, userinfo }));
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.message), code: err && err.code }));
  process.exit(1);
}
