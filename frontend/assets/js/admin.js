// The people page (administrators): every account with its role and state. Owners change
// roles; administrators deactivate and reactivate accounts. The broker and auth decide
// who may do what; this page only offers what the signed-in role can do.
import { api, describe } from './api.js';
import { requireSession, showError, formatTime } from './layout.js';

const $ = (id) => document.getElementById(id);
const ROLES = ['member', 'admin', 'owner'];
let me = null;
let cursor = null;

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function roleCell(user) {
  const td = document.createElement('td');
  if (me.role !== 'owner' || user.id === me.user.id) {
    td.textContent = user.role;
    return td;
  }
  const select = document.createElement('select');
  select.setAttribute('aria-label', `Role of ${user.username}`);
  for (const role of ROLES) {
    const option = document.createElement('option');
    option.value = role;
    option.textContent = role;
    option.selected = role === user.role;
    select.append(option);
  }
  select.addEventListener('change', () => change(
    `/api/admin/users/${encodeURIComponent(user.id)}/role`, 'PUT', { role: select.value },
    `${user.username} is now ${select.value}.`,
  ));
  td.append(select);
  return td;
}

function actionCell(user) {
  const td = document.createElement('td');
  const mayManage = user.id !== me.user.id && (me.role === 'owner' || user.role === 'member');
  if (!mayManage) return td;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = user.active ? 'danger' : '';
  button.textContent = user.active ? 'Deactivate' : 'Reactivate';
  button.setAttribute('aria-label', `${button.textContent} ${user.username}`);
  button.addEventListener('click', () => {
    button.disabled = true;
    const action = user.active ? 'deactivate' : 'reactivate';
    change(`/api/admin/users/${encodeURIComponent(user.id)}/${action}`, 'POST', undefined,
      `${user.username} is ${action}d.`);
  });
  td.append(button);
  return td;
}

function row(user) {
  const tr = document.createElement('tr');
  tr.dataset.userId = user.id;
  const state = user.active ? 'active' : `deactivated ${formatTime(user.deactivated_at, true)}`;
  tr.append(cell(user.username), cell(user.email), roleCell(user), cell(state), actionCell(user));
  return tr;
}

async function change(path, method, body, done) {
  showError($('admin-error'), '');
  try {
    await api(path, { method, body });
    await load(false);
    $('admin-status').textContent = done;
  } catch (error) {
    showError($('admin-error'), describe(error));
    await load(false);
  }
}

async function load(more) {
  try {
    const page = await api('/api/admin/users', { query: { limit: 100, cursor: more ? cursor : undefined } });
    const rows = (page.users || []).map(row);
    if (more) $('admin-body').append(...rows);
    else $('admin-body').replaceChildren(...rows);
    cursor = page.next_cursor || null;
    $('admin-more').hidden = !cursor;
    const shown = $('admin-body').children.length;
    $('admin-status').textContent = `${shown} account${shown === 1 ? '' : 's'} shown`;
  } catch (error) {
    $('admin-status').textContent = '';
    showError($('admin-error'), error.status === 403 ? 'Only administrators can manage people.' : describe(error));
  }
}

async function start() {
  me = await requireSession();
  $('admin-more').addEventListener('click', () => load(true));
  load(false);
}

start();
