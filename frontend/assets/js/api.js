// The broker's REST API from the browser: the HttpOnly session cookie travels with
// `credentials: 'include'`; writes also carry the CSRF token as `X-CSRF-Token`.

const meta = document.querySelector('meta[name="broker"]');

/** The broker's origin, e.g. `http://127.0.0.1:8080`. */
export const BROKER = (meta?.content || 'http://127.0.0.1:8080').replace(/\/+$/, '');

/** The broker's WebSocket URL. */
export const WS_URL = `${BROKER.replace(/^http/, 'ws')}/ws`;

let csrfToken = null;

/** Remembers the CSRF token (from login or `GET /api/auth/me`). */
export function setCsrf(token) {
  if (token) csrfToken = token;
}

/** An API error: HTTP status (0 when unreachable), the error code and a readable message. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/**
 * Calls the broker. `body` is sent as JSON; `query` is an object of query parameters
 * (empty values are left out). Resolves to the JSON answer (`null` for 204).
 */
export async function api(path, { method = 'GET', body, query } = {}) {
  const url = new URL(BROKER + path);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'include',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error || {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || `The request failed (HTTP ${response.status}).`,
      response.headers.get('Retry-After'),
    );
  }
  return data;
}

/** The signed-in user and session (`{user, session, csrf_token}`), or `null` when signed out. */
export async function me() {
  try {
    const answer = await api('/api/auth/me');
    setCsrf(answer?.csrf_token);
    return answer;
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

/** Signs in; resolves to the login answer and keeps its CSRF token. */
export async function login(loginName, password) {
  const answer = await api('/api/auth/login', { method: 'POST', body: { login: loginName, password } });
  setCsrf(answer?.csrf_token);
  return answer;
}

/** Ends the session everywhere. */
export async function logout() {
  await api('/api/auth/logout', { method: 'POST' });
}

/** A readable sentence for an error from `api`. */
export function describe(error) {
  if (!(error instanceof ApiError)) return 'Something went wrong. Please try again.';
  if (error.status === 429) {
    const seconds = Number.parseInt(error.retryAfter || '', 10);
    return Number.isFinite(seconds)
      ? `Too many attempts. Try again in ${seconds} second${seconds === 1 ? '' : 's'}.`
      : 'Too many attempts. Please wait a moment and try again.';
  }
  if (error.status === 503) return 'The service is unavailable right now. Please try again shortly.';
  // Server messages are sentence fragments ("a room with that name already exists").
  const text = String(error.message || 'The server refused that.');
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}${/[.!?]$/.test(text) ? '' : '.'}`;
}
