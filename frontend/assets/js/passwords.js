// The password, session and email-verification pages. A mailed link carries its token
// in the URL fragment (#token=…), which the browser sends to no server; the page reads
// it, removes it from the address bar and history, and posts it to the broker.
import { api, describe, ApiError } from './api.js';
import { requireSession, showError, formatTime } from './layout.js';

const $ = (id) => document.getElementById(id);
const errorBox = $('form-error');

function notify(message) {
  const notice = $('notice');
  notice.textContent = message;
  notice.hidden = !message;
}

/** The token of a mailed link, taken out of the address bar. */
function takeToken() {
  const token = new URLSearchParams(window.location.hash.slice(1)).get('token') || '';
  if (window.location.hash) history.replaceState(null, '', window.location.pathname);
  return token;
}

function linkProblem(error) {
  if (error instanceof ApiError && error.status === 404 && /token|link/.test(error.message)) {
    return 'This link is invalid, already used or expired. Ask for a new one.';
  }
  return describe(error);
}

/** Runs `action` with the form's button disabled; errors go to the error box. */
function onSubmit(form, action, problem = describe) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(errorBox, '');
    const first = form.querySelector('input:invalid');
    if (first) {
      first.setAttribute('aria-invalid', 'true');
      first.focus();
      const label = form.querySelector(`label[for="${first.id}"]`)?.textContent || 'This field';
      showError(errorBox, first.validity.tooShort
        ? `${label} must be at least ${first.minLength} characters.`
        : `${label} is not valid.`);
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await action(Object.fromEntries(new FormData(form)));
    } catch (error) {
      showError(errorBox, problem(error));
    } finally {
      button.disabled = false;
    }
  });
}

async function changePassword() {
  await requireSession();
  const form = $('password-form');
  onSubmit(form, async ({ old_password: oldPassword, new_password: newPassword }) => {
    const answer = await api('/api/auth/password', {
      method: 'POST',
      body: { old_password: oldPassword, new_password: newPassword },
    });
    form.reset();
    const others = answer.sessions_ended;
    notify(`Your password is changed. ${others} other session${others === 1 ? ' was' : 's were'} signed out.`);
  }, (error) => (error instanceof ApiError && error.status === 401
    ? 'Your current password is not right.'
    : describe(error)));
}

function forgotPassword() {
  const form = $('forgot-form');
  onSubmit(form, async ({ email }) => {
    await api('/api/auth/password/forgot', { method: 'POST', body: { email: email.trim() } });
    notify('If an account has this address, a link is on its way. Check your mail.');
  });
}

function resetPassword() {
  const token = takeToken();
  const form = $('reset-form');
  if (!token) {
    showError(errorBox, 'This page needs the link from your mail. Ask for a new one.');
    form.hidden = true;
    return;
  }
  onSubmit(form, async ({ new_password: newPassword }) => {
    await api('/api/auth/password/reset', {
      method: 'POST',
      body: { token, new_password: newPassword },
    });
    window.location.assign('/login?password_reset=1');
  }, linkProblem);
}

function sessionRow(session) {
  const row = document.createElement('tr');
  const cells = [
    session.user_agent || 'Unknown device',
    session.ip || '—',
    session.created_at ? formatTime(session.created_at, true) : '—',
    session.last_used_at ? formatTime(session.last_used_at, true) : '—',
  ];
  for (const text of cells) {
    const cell = document.createElement('td');
    cell.textContent = text;
    row.append(cell);
  }
  const action = document.createElement('td');
  if (session.current) {
    action.textContent = 'This session';
  } else {
    const end = document.createElement('button');
    end.type = 'button';
    end.textContent = 'Sign out';
    end.setAttribute('aria-label', `Sign out ${cells[0]} from ${cells[1]}`);
    end.addEventListener('click', async () => {
      end.disabled = true;
      try {
        await api(`/api/auth/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' });
        row.remove();
        notify('The session is signed out.');
      } catch (error) {
        showError(errorBox, describe(error));
        end.disabled = false;
      }
    });
    action.append(end);
  }
  row.append(action);
  return row;
}

async function mySessions() {
  await requireSession();
  const rows = $('session-rows');
  const load = async () => {
    const { sessions } = await api('/api/auth/sessions');
    rows.replaceChildren(...sessions.map(sessionRow));
  };
  try {
    await load();
  } catch (error) {
    showError(errorBox, describe(error));
  }
  $('end-others').addEventListener('click', async () => {
    try {
      const answer = await api('/api/auth/sessions/end-others', { method: 'POST' });
      notify(`${answer.sessions_ended} other session${answer.sessions_ended === 1 ? ' was' : 's were'} signed out.`);
      await load();
    } catch (error) {
      showError(errorBox, describe(error));
    }
  });
}

async function verifyEmail() {
  const token = takeToken();
  if (!token) {
    notify('');
    showError(errorBox, 'This page needs the link from your mail. You can ask for a new one on your account page.');
    return;
  }
  try {
    const answer = await api('/api/auth/email/verify', { method: 'POST', body: { token } });
    notify(`Thank you: ${answer.email} is confirmed.`);
  } catch (error) {
    notify('');
    showError(errorBox, linkProblem(error));
  }
}

const pages = {
  'change-password': changePassword,
  'forgot-password': forgotPassword,
  'reset-password': resetPassword,
  sessions: mySessions,
  'verify-email': verifyEmail,
};
const page = [...document.body.classList].find((name) => name.startsWith('page-'))?.slice(5);
pages[page]?.();
