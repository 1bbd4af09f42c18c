// The comparison peer for Tessera's benchmark: node-oidc-provider (panva) configured as close
// to Tessera's defaults as it allows, with two bench-only routes that mint authorization codes
// and refresh tokens through the provider's own models (as a real sign-in + consent would).
// See README.md beside this file. Runs on Node 24 via run-peer.sh.
import * as crypto from 'node:crypto';

import Provider, { errors } from 'oidc-provider';
// The default in-memory adapter keeps its data in an LRU of only 1000 entries (per provider):
// under load it evicts codes and refresh tokens that are still valid (a batch of 3000 minted
// codes fails whole). Same adapter class, same LRU class, bigger store.
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

const PORT = Number.parseInt(process.env.PORT ?? '9090', 10);
const HOST = '127.0.0.1';
const ISSUER = `http://${HOST}:${PORT}`;
// Entries kept by the in-memory store (one LRU generation; up to twice this many are alive).
const STORE_MAX = Number.parseInt(process.env.PEER_STORE_MAX ?? '1000000', 10);
// Authorization code lifetime in seconds; Tessera's default tokens.code_ttl is 60 s.
const CODE_TTL = Number.parseInt(process.env.PEER_CODE_TTL ?? '60', 10);

const CLIENT_ID = 'bench';
const CLIENT_SECRET = 'bench-secret-bench-secret';
const REDIRECT_URI = 'http://127.0.0.1:1/cb';
const ACCOUNT_ID = 'user-1';
// The PKCE verifier of every minted code (RFC 7636: 43-128 unreserved characters).
const CODE_VERIFIER = 'bench-code-verifier-0123456789-abcdefghijklmnopqrstuvwxyz';
const CODE_CHALLENGE = crypto.hash('sha256', CODE_VERIFIER, 'base64url');
// Resource servers: JWT access tokens (the default resource) and opaque ones (introspectable;
// oidc-provider refuses to introspect or revoke JWT access tokens).
const RESOURCE_JWT = 'urn:bench';
const RESOURCE_OPAQUE = 'urn:bench:opaque';
const API_SCOPE = 'api:read';
// What a minted code or refresh token carries unless ?scope= says otherwise.
const DEFAULT_MINT_SCOPE = `openid offline_access ${API_SCOPE}`;
const MINT_MAX = 100_000;
// What the authorization endpoint stores in a code for a client with require_auth_time.
const MINT_CLAIMS = { id_token: { auth_time: { essential: true } } };

// Tessera's [tokens] defaults.
const MINUTES_15 = 15 * 60;
const DAY = 24 * 60 * 60;

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) throw new Error(`bad PORT ${process.env.PORT}`);
if (!Number.isInteger(STORE_MAX) || STORE_MAX < 1000) throw new Error('PEER_STORE_MAX must be an integer >= 1000');
if (!Number.isInteger(CODE_TTL) || CODE_TTL <= 0 || CODE_TTL > 600) throw new Error('PEER_CODE_TTL must be 1..600');

const store = new LRU({ maxSize: STORE_MAX });
const CLOCK_TOLERANCE = 15; // oidc-provider's default clockTolerance, as its default adapter gets

// An RS256 signing key made at start, like Tessera's first key (keys.rsa_bits = 2048).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = privateKey.export({ format: 'jwk' });
jwk.kid = crypto.createHash('sha256').update(jwk.n).digest('base64url').slice(0, 16);
jwk.alg = 'RS256';
jwk.use = 'sig';

const account = {
  accountId: ACCOUNT_ID,
  // Filtered by scope through `claims` below: profile -> name, preferred_username;
  // email -> email, email_verified (as Tessera's UserClaims::for_scopes).
  async claims() {
    return {
      sub: ACCOUNT_ID,
      name: 'Bench User',
      preferred_username: 'bench-user',
      email: 'bench-user@example.com',
      email_verified: true,
    };
  },
};

function resourceServer(indicator) {
  switch (indicator) {
    case RESOURCE_JWT:
      return {
        scope: API_SCOPE,
        audience: RESOURCE_JWT,
        accessTokenTTL: MINUTES_15,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      };
    case RESOURCE_OPAQUE:
      return {
        scope: API_SCOPE,
        audience: RESOURCE_OPAQUE,
        accessTokenTTL: MINUTES_15,
        accessTokenFormat: 'opaque',
      };
    default:
      throw new errors.InvalidTarget();
  }
}

const configuration = {
  adapter: (model) => new MemoryAdapter(model, store, CLOCK_TOLERANCE),
  clockTolerance: CLOCK_TOLERANCE,
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: [REDIRECT_URI],
      scope: `openid profile email offline_access ${API_SCOPE}`,
      id_token_signed_response_alg: 'RS256',
      // Tessera's ID tokens always carry auth_time.
      require_auth_time: true,
    },
  ],
  jwks: { keys: [jwk] },
  // Tessera: response type code only, and these three client authentication methods.
  responseTypes: ['code'],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
  scopes: ['openid', 'profile', 'email', 'offline_access', API_SCOPE],
  claims: {
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  async findAccount(_ctx, _id) {
    return account;
  },
  features: {
    devInteractions: { enabled: false },
    // Not in Tessera.
    dPoP: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated confidential client may introspect (Tessera refuses public ones).
      async allowedPolicy(_ctx, client) {
        return client.clientAuthMethod !== 'none';
      },
    },
    revocation: {
      enabled: true,
      async allowedPolicy(_ctx, client, token) {
        return token.clientId === client.clientId;
      },
    },
    resourceIndicators: {
      enabled: true,
      // No resource parameter: the JWT resource server (so client_credentials gives a JWT).
      async defaultResource(_ctx, _client, oneOf) {
        return oneOf ?? RESOURCE_JWT;
      },
      // Code exchange and refresh without a resource parameter: use the code's / refresh
      // token's resource, so their access tokens are JWTs too (as all of Tessera's are).
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(_ctx, indicator) {
        return resourceServer(indicator);
      },
    },
  },
  // Tessera rotates the refresh token on every use (and revokes the family on reuse;
  // oidc-provider revokes the grant on reuse).
  rotateRefreshToken: true,
  ttl: {
    AccessToken: MINUTES_15,
    AuthorizationCode: CODE_TTL,
    ClientCredentials: MINUTES_15,
    IdToken: MINUTES_15,
    RefreshToken: 30 * DAY,
    Grant: 90 * DAY, // Tessera's refresh_token_max_ttl: the family ends 90 days after sign-in
    Session: 7 * DAY,
    Interaction: 60 * 60,
    DeviceCode: 10 * 60,
    BackchannelAuthenticationRequest: 10 * 60,
    PreAuthorizedCode: 10 * 60,
  },
  // PKCE: oidc-provider's default (required for public clients only, S256 only) is Tessera's.
};

const provider = new Provider(ISSUER, configuration);

provider.on('server_error', (_ctx, err) => {
  console.error('peer: server_error:', err);
});

function mintCount(ctx) {
  const n = Number(ctx.query.n ?? '1');
  if (!Number.isInteger(n) || n < 1 || n > MINT_MAX) {
    ctx.throw(400, `n must be an integer from 1 to ${MINT_MAX}`);
  }
  return n;
}

function mintScope(ctx) {
  const scope = typeof ctx.query.scope === 'string' ? ctx.query.scope : DEFAULT_MINT_SCOPE;
  const scopes = scope.split(' ').filter(Boolean);
  const allowed = new Set(configuration.clients[0].scope.split(' '));
  if (!scopes.includes('openid') || scopes.some((s) => !allowed.has(s))) {
    ctx.throw(400, `scope must include openid and be within "${[...allowed].join(' ')}"`);
  }
  return scopes;
}

// One Grant per minted code / refresh token, as one sign-in + consent makes: the grant of a
// code that is replayed is revoked, and the in-memory adapter indexes tokens per grant.
async function newGrant(scopes) {
  const grant = new provider.Grant({ accountId: ACCOUNT_ID, clientId: CLIENT_ID });
  grant.addOIDCScope(scopes.filter((s) => s !== API_SCOPE).join(' '));
  if (scopes.includes(API_SCOPE)) grant.addResourceScope(RESOURCE_JWT, API_SCOPE);
  return grant.save();
}

function resourceFor(scopes) {
  return scopes.includes(API_SCOPE) ? RESOURCE_JWT : undefined;
}

async function mintCodes(ctx) {
  const n = mintCount(ctx);
  const scopes = mintScope(ctx);
  const client = await provider.Client.find(CLIENT_ID);
  const codes = [];
  for (let i = 0; i < n; i += 1) {
    const grantId = await newGrant(scopes);
    const code = new provider.AuthorizationCode({
      accountId: ACCOUNT_ID,
      authTime: Math.floor(Date.now() / 1000),
      claims: MINT_CLAIMS,
      client,
      codeChallenge: CODE_CHALLENGE,
      codeChallengeMethod: 'S256',
      grantId,
      redirectUri: REDIRECT_URI,
      resource: resourceFor(scopes),
      scope: scopes.join(' '),
    });
    codes.push(await code.save());
  }
  ctx.set('cache-control', 'no-store');
  ctx.body = { codes, code_verifier: CODE_VERIFIER, redirect_uri: REDIRECT_URI };
}

async function mintRefresh(ctx) {
  const n = mintCount(ctx);
  const scopes = mintScope(ctx);
  if (!scopes.includes('offline_access')) ctx.throw(400, 'scope must include offline_access');
  const client = await provider.Client.find(CLIENT_ID);
  const tokens = [];
  for (let i = 0; i < n; i += 1) {
    const grantId = await newGrant(scopes);
    const token = new provider.RefreshToken({
      accountId: ACCOUNT_ID,
      authTime: Math.floor(Date.now() / 1000),
      claims: MINT_CLAIMS,
      client,
      grantId,
      gty: 'authorization_code',
      resource: resourceFor(scopes),
      rotations: 0,
      scope: scopes.join(' '),
    });
    tokens.push(await token.save());
  }
  ctx.set('cache-control', 'no-store');
  ctx.body = { refresh_tokens: tokens };
}

// Bench-only routes, ahead of the provider's own (Provider#use inserts before its router).
provider.use(async (ctx, next) => {
  if (ctx.path === '/bench/mint-codes' || ctx.path === '/bench/mint-refresh') {
    if (ctx.method !== 'POST') {
      ctx.set('allow', 'POST');
      ctx.throw(405);
    }
    if (ctx.path === '/bench/mint-codes') await mintCodes(ctx);
    else await mintRefresh(ctx);
    return;
  }
  await next();
});

const server = provider.listen(PORT, HOST, () => {
  console.log(`peer: oidc-provider on ${ISSUER} (node ${process.version}, pid ${process.pid}, kid ${jwk.kid})`);
});

function stop(signal) {
  console.log(`peer: ${signal}, closing`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
