// The register and sign-in pages.
import { api, login, describe, ApiError } from './api.js';
import { session, showError } from './layout.js';

const registerForm = document.getElementById('register-form');
const loginForm = document.getElementById('login-form');
const errorBox = document.getElementById('form-error');

function nextPage() {
  const next = new URLSearchParams(window.location.search).get('next') || '';
  // Only our own paths: never an open redirect.
  return /^\/(?!\/)[\w\-/?=&%.]*$/.test(next) ? next : '/chat';
}

function busy(form, on) {
  const button = form.querySelector('button[type="submit"]');
  button.disabled = on;
  form.setAttribute('aria-busy', on ? 'true' : 'false');
}

function invalid(form) {
  for (const input of form.querySelectorAll('input')) {
    input.setAttribute('aria-invalid', input.validity.valid ? 'false' : 'true');
  }
  const first = form.querySelector('input:invalid');
  if (!first) return null;
  first.focus();
  const label = form.querySelector(`label[for="${first.id}"]`)?.textContent || 'This field';
  if (first.validity.valueMissing) return `${label} is required.`;
  if (first.validity.typeMismatch) return `${label} must be a valid email address.`;
  if (first.validity.tooShort) return `${label} must be at least ${first.minLength} characters.`;
  return `${label} is not valid.`;
}

function loginMessage(error) {
  if (error instanceof ApiError && error.status === 401) {
    return 'Wrong username or password. Check them and try again.';
  }
  return describe(error);
}

if (registerForm) {
  registerForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(errorBox, '');
    const problem = invalid(registerForm);
    if (problem) return showError(errorBox, problem);
    const data = Object.fromEntries(new FormData(registerForm));
    busy(registerForm, true);
    try {
      await api('/api/auth/register', {
        method: 'POST',
        body: { username: data.username.trim(), email: data.email.trim(), password: data.password },
      });
      await login(data.username.trim(), data.password);
      window.location.assign('/chat');
    } catch (error) {
      let message = describe(error);
      if (error instanceof ApiError && error.status === 409) {
        message = 'That username or email is already taken. Choose another, or sign in.';
      }
      showError(errorBox, message);
      busy(registerForm, false);
    }
  });
}

if (loginForm) {
  const notice = document.getElementById('notice');
  const params = new URLSearchParams(window.location.search);
  if (params.has('deleted')) {
    notice.textContent = 'Your account has been deleted.';
    notice.hidden = false;
  } else if (params.has('password_reset')) {
    notice.textContent = 'Your password is set. Sign in with the new one.';
    notice.hidden = false;
  } else if (params.has('signed_out')) {
    notice.textContent = 'You are signed out.';
    notice.hidden = false;
  }
  loginForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    showError(errorBox, '');
    const problem = invalid(loginForm);
    if (problem) return showError(errorBox, problem);
    const data = Object.fromEntries(new FormData(loginForm));
    busy(loginForm, true);
    try {
      await login(data.login.trim(), data.password);
      window.location.assign(nextPage());
    } catch (error) {
      showError(errorBox, loginMessage(error));
      const password = document.getElementById('password');
      password.value = '';
      password.focus();
      busy(loginForm, false);
    }
  });
}

// Already signed in: go straight on.
session().then((answer) => {
  if (answer && loginForm) window.location.replace(nextPage());
});
