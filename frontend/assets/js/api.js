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

/** How long a request the broker refused as `overloaded` is tried again, in ms. */
const OVERLOAD_PATIENCE_MS = 30_000;

/**
 * Calls the broker. `body` is sent as JSON; `query` is an object of query parameters
 * (empty values are left out). Resolves to the JSON answer (`null` for 204).
 *
 * A request the broker refused as `overloaded` (503: nothing was done, as in a login
 * storm) is sent again after its `Retry-After`, stretched by up to half at random so
 * the refused do not all come back at once, for up to `OVERLOAD_PATIENCE_MS`.
 */
export async function api(path, options = {}) {
  const giveUp = Date.now() + OVERLOAD_PATIENCE_MS;
  for (;;) {
    try {
      return await callOnce(path, options);
    } catch (error) {
      const wait = overloadWait(error);
      if (wait === null || Date.now() + wait > giveUp) throw error;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

/** Milliseconds to wait before repeating a request refused as `overloaded`, else `null`. */
function overloadWait(error) {
  if (!(error instanceof ApiError) || error.status !== 503 || error.code !== 'overloaded') return null;
  const seconds = Number.parseInt(error.retryAfter || '', 10);
  return (Number.isFinite(seconds) && seconds > 0 ? seconds : 1) * 1000 * (1 + Math.random() / 2);
}

/** One call of `api`, not repeated. */
async function callOnce(path, { method = 'GET', body, query } = {}) {
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
  if (!response.ok) throw refusal(response.status, data, response.headers.get('Retry-After'));
  return data;
}

/** The `ApiError` of a refused request, from its status and JSON error body. */
function refusal(status, data, retryAfter) {
  const error = data?.error || {};
  return new ApiError(
    status,
    error.code || `http_${status}`,
    error.message || `The request failed (HTTP ${status}).`,
    retryAfter,
  );
}

/**
 * Uploads one file as the multipart part `file` with XMLHttpRequest, the one browser API
 * that reports upload progress. `onProgress(sent, total)` is called as bytes go out.
 * Returns `{done, abort}`: `done` resolves to the JSON answer or rejects with an
 * `ApiError` (code `aborted` after `abort()`).
 */
export function upload(path, file, onProgress) {
  const request = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    request.open('POST', BROKER + path);
    request.withCredentials = true;
    request.setRequestHeader('Accept', 'application/json');
    if (csrfToken) request.setRequestHeader('X-CSRF-Token', csrfToken);
    request.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress?.(event.loaded, event.total);
    });
    request.addEventListener('load', () => {
      let data = null;
      try {
        data = JSON.parse(request.responseText);
      } catch {
        data = null;
      }
      if (request.status >= 200 && request.status < 300) resolve(data);
      else reject(refusal(request.status, data, request.getResponseHeader('Retry-After')));
    });
    // A refusal sent before the whole body was read (a file over the limit) can reach
    // the browser as a dropped connection rather than as the answer.
    request.addEventListener('error', () => reject(new ApiError(0, 'network',
      'The upload was cut off: the file may be too large, or the server cannot be reached.')));
    request.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'The upload was cancelled.')));
    const form = new FormData();
    form.append('file', file, file.name || 'file');
    request.send(form);
  });
  return { done, abort: () => request.abort() };
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
  if (error.status === 503 && error.code === 'overloaded') {
    return 'The server is too busy right now. Please try again in a moment.';
  }
  if (error.status === 503) return 'The service is unavailable right now. Please try again shortly.';
  // Server messages are sentence fragments ("a room with that name already exists").
  const text = String(error.message || 'The server refused that.');
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}${/[.!?]$/.test(text) ? '' : '.'}`;
}
