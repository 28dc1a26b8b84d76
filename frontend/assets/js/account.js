// The account page: who you are, and deleting the account (typed confirmation and the
// current password).
// Signing out is the header's button (layout.js).
import { api, describe } from './api.js';
import { requireSession, showError, formatTime } from './layout.js';

const $ = (id) => document.getElementById(id);

async function start() {
  const { user } = await requireSession();
  $('acc-username').textContent = user.username;
  $('acc-email').textContent = user.email;
  if (user.created_at) {
    $('acc-since').textContent = formatTime(user.created_at, true);
    $('acc-since-row').hidden = false;
  }

  showVerification(user);

  const form = $('delete-form');
  const confirmInput = $('confirm');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const errorBox = $('delete-error');
    showError(errorBox, '');
    if (confirmInput.value.trim().toLowerCase() !== user.username.toLowerCase()) {
      confirmInput.setAttribute('aria-invalid', 'true');
      confirmInput.focus();
      showError(errorBox, `Type your username, ${user.username}, to confirm.`);
      return;
    }
    confirmInput.setAttribute('aria-invalid', 'false');
    const button = $('delete');
    button.disabled = true;
    try {
      await api('/api/users/me', { method: 'DELETE', body: { password: $('delete-password').value } });
      window.location.assign('/login?deleted=1');
    } catch (error) {
      const wrong = error.code === 'wrong_password' || error.code === 'password_required';
      $('delete-password').setAttribute('aria-invalid', wrong ? 'true' : 'false');
      showError(errorBox, wrong ? 'That is not your password.' : describe(error));
      button.disabled = false;
    }
  });
}

/** Whether the address is confirmed; if not, a button that mails a new link. */
function showVerification(user) {
  const status = $('acc-verified');
  if (user.email_verified === undefined) {
    status.textContent = 'Unknown right now';
    return;
  }
  status.textContent = user.email_verified
    ? 'Confirmed'
    : 'Not confirmed: until it is, microchat mails you nothing else';
  if (user.email_verified) return;
  $('verify-row').hidden = false;
  const button = $('resend');
  const notice = $('verify-notice');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await api('/api/auth/email/resend', { method: 'POST' });
      notice.textContent = 'A new link is on its way. Check your mail.';
    } catch (error) {
      notice.textContent = describe(error);
    }
    notice.hidden = false;
    button.disabled = false;
  });
}

start();
