// A real OIDC provider (npm oidc-provider) for stepgate's tests, on loopback only.
// client_credentials -> signed JWT access tokens (RFC 9068, typ at+jwt) with a `groups` claim.
// Env: HOST (127.0.0.1), PORT (9400), AUDIENCE (https://stepgate.test), TTL (300).
// Test control: POST /test/rotate-keys replaces the signing keys (new kids; old keys gone from
// /jwks), as an issuer rotating its keys would.
import http from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const HOST = process.env.HOST ?? '127.0.0.1';
const PORT = Number(process.env.PORT ?? 9400);
const ISSUER = `http://${HOST}:${PORT}`;
const AUDIENCE = process.env.AUDIENCE ?? 'https://stepgate.test'; // resource indicators must be absolute URIs

function jwk(type, opts, alg) {
  const { privateKey } = generateKeyPairSync(type, opts);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg}-${randomUUID().slice(0, 8)}`, alg, use: 'sig' };
}

function makeProvider() {
  const keys = [jwk('rsa', { modulusLength: 2048 }, 'RS256'), jwk('ec', { namedCurve: 'P-256' }, 'ES256')];
  const provider = new Provider(ISSUER, {
    jwks: { keys },
    scopes: ['openid', 'trigger', 'read'],
    clients: [
      { client_id: 'pipeline-bot', client_secret: 'bot-secret', grant_types: ['client_credentials'],
        redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'trigger read' },
      { client_id: 'reader-bot', client_secret: 'reader-secret', grant_types: ['client_credentials'],
        redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_post', scope: 'read' },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (resourceIndicator !== AUDIENCE) throw new errors.InvalidTarget();
          return {
            scope: 'trigger read',
            audience: AUDIENCE,
            accessTokenTTL: Number(process.env.TTL ?? 300),
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: process.env.ALG ?? 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: async (ctx, token) => ({
      groups: token.clientId === 'pipeline-bot' ? ['data-eng'] : ['viewers'],
    }),
  });
  provider.proxy = false;
  return { handler: provider.callback(), kids: keys.map((k) => k.kid) };
}

let current = makeProvider();
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/rotate-keys') {
    current = makeProvider();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kids: current.kids }));
    return;
  }
  current.handler(req, res);
});
server.listen(PORT, HOST, () => console.log(`oidc-provider listening on ${ISSUER} (aud ${AUDIENCE})`));
