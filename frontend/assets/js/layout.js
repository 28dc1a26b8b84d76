// What every page does: find out who is signed in and show the matching navigation.
import { me, logout } from './api.js';

/**
 * Resolves to the signed-in user's `me` answer, or `null`. Marks `<body data-auth>` as
 * `in` or `out` (CSS shows the matching navigation links) and names the user.
 */
export async function session() {
  let answer = null;
  try {
    answer = await me();
  } catch {
    answer = null;
  }
  document.body.dataset.auth = answer ? 'in' : 'out';
  // Shows the administrators' links; the broker decides what they may really do.
  document.body.dataset.role = answer?.role || '';
  const who = document.getElementById('whoami');
  if (who) who.textContent = answer ? `Signed in as ${answer.user.username}` : '';
  const signout = document.getElementById('signout');
  if (signout && answer && !signout.dataset.wired) {
    signout.dataset.wired = 'true';
    signout.addEventListener('click', async () => {
      signout.disabled = true;
      // The chat page's socket closes as the session ends: it must not navigate too.
      document.body.dataset.signingOut = 'true';
      try {
        await logout();
      } catch {
        // Signed out already, or unreachable: the sign-in page tells which.
      }
      window.location.assign('/login?signed_out=1');
    });
  }
  return answer;
}

/** Like `session`, but sends a signed-out visitor to the sign-in page. */
export async function requireSession() {
  const answer = await session();
  if (!answer) {
    window.location.replace('/login?next=' + encodeURIComponent(window.location.pathname + window.location.search));
    return new Promise(() => {});
  }
  return answer;
}

/** Shows `message` in an error element (hides it for an empty message). */
export function showError(element, message) {
  if (!element) return;
  element.textContent = message || '';
  element.hidden = !message;
}

/** A time as the reader's locale writes it. */
export function formatTime(iso, withDate = false) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const today = new Date().toDateString() === date.toDateString();
  return date.toLocaleString(undefined, withDate || !today
    ? { dateStyle: 'medium', timeStyle: 'short' }
    : { timeStyle: 'short' });
}
