// The REST client: same-origin relative URLs, bearer tokens kept in sessionStorage, one refresh on a 401
// (shared by every request that fails at the same time, since refresh tokens rotate), and errors as
// ApiError with the server's {error:{code,message,details}} body.

const STORE_KEY = 'insights.session';

/** An HTTP error (status > 0) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details = [], retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
    this.retryAfter = retryAfter;
  }

  /** The message and every field error, as one line of text. */
  describe() {
    const fields = this.details.map((d) => `${d.field}: ${d.message}`);
    return fields.length ? `${this.message} — ${fields.join('; ')}` : this.message;
  }
}

/** Fires 'expired' when the session can no longer be refreshed (back to the login screen). */
export const sessionEvents = new EventTarget();

let session = load();
let refreshing = null;
let refreshTimer = null;

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    return s && s.accessToken && s.refreshToken ? s : null;
  } catch {
    return null;
  }
}

function save() {
  if (session) sessionStorage.setItem(STORE_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(STORE_KEY);
}

export function getSession() {
  return session;
}

export function accessToken() {
  return session ? session.accessToken : null;
}

/** Whether the access token is (nearly) past its lifetime, by the client's clock. */
export function tokenLikelyExpired(marginMs = 5000) {
  return !session || !session.expiresAt || Date.now() + marginMs >= session.expiresAt;
}

function setTokens(body) {
  session = {
    ...(session || {}),
    accessToken: body.accessToken,
    refreshToken: body.refreshToken,
    expiresAt: Date.now() + (Number(body.expiresIn) || 3600) * 1000,
  };
  if (body.user) session.user = body.user;
  save();
  scheduleRefresh();
}

/** Refreshes a minute before the access token expires, so live updates never stall on an expired token. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const wait = Math.max(10_000, session.expiresAt - Date.now() - 60_000);
  refreshTimer = setTimeout(() => {
    refresh().catch((e) => {
      // A network failure (server restarting): try again shortly; an auth failure has already logged out.
      if (e.status === 0) {
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(() => scheduleRefresh(), 30_000);
      }
    });
  }, wait);
}

export function endSession(reason = 'expired') {
  clearTimeout(refreshTimer);
  const had = session != null;
  session = null;
  save();
  if (had) sessionEvents.dispatchEvent(new CustomEvent('expired', { detail: reason }));
}

async function errorFrom(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const e = body && body.error ? body.error : {};
  const retry = res.headers.get('Retry-After');
  return new ApiError(res.status, e.code || `http_${res.status}`, e.message || `${res.status} ${res.statusText || 'error'}`,
    e.details || [], retry ? Number(retry) : null);
}

async function send(path, { method = 'GET', body, token, signal, accept = 'application/json' } = {}) {
  const headers = { Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'Cannot reach the server');
  }
}

/** POST /api/v1/auth/login. Throws ApiError (401 for bad credentials). */
export async function login(email, password) {
  const res = await send('/api/v1/auth/login', { method: 'POST', body: { email, password } });
  if (!res.ok) throw await errorFrom(res);
  const body = await res.json();
  session = null;
  setTokens(body);
  return session;
}

/**
 * POST /api/v1/auth/refresh, once at a time: callers that arrive while a refresh runs share it.
 * An auth failure ends the session; a network failure leaves it for a later try.
 */
export function refresh() {
  if (refreshing) return refreshing;
  if (!session) return Promise.reject(new ApiError(401, 'unauthenticated', 'Not signed in'));
  const used = session.refreshToken;
  refreshing = (async () => {
    const res = await send('/api/v1/auth/refresh', { method: 'POST', body: { refreshToken: used } });
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 400 || res.status === 401 || res.status === 403) endSession('expired');
      throw err;
    }
    setTokens(await res.json());
    return session.accessToken;
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** POST /api/v1/auth/logout with the bearer token; the local session ends whatever the answer. */
export async function logout() {
  const token = accessToken();
  clearTimeout(refreshTimer);
  try {
    if (token) await send('/api/v1/auth/logout', { method: 'POST', token });
  } catch {
    /* offline: the tokens expire by themselves */
  }
  session = null;
  save();
}

/**
 * An authenticated request. Returns the parsed JSON (null for 204), or the Response itself with
 * {raw: true}. On a 401 it refreshes once and repeats the request; if that fails, the session ends.
 */
export async function api(path, opts = {}) {
  if (!session) throw new ApiError(401, 'unauthenticated', 'Not signed in');
  if (refreshing) await refreshing.catch(() => {});
  let token = accessToken();
  let res = await send(path, { ...opts, token });
  if (res.status === 401 && session) {
    try {
      // Someone else may have refreshed while this request was in flight.
      token = accessToken() !== token ? accessToken() : await refresh();
    } catch (e) {
      if (e.status === 0) throw e;
      throw await errorFrom(res);
    }
    res = await send(path, { ...opts, token });
    if (res.status === 401) {
      const err = await errorFrom(res);
      endSession('expired');
      throw err;
    }
  }
  if (!res.ok) throw await errorFrom(res);
  if (opts.raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

// A session restored from sessionStorage after a reload keeps its refresh schedule.
if (session) scheduleRefresh();
