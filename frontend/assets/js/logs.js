// The logs page (administrators): the filter form is a plain GET form, so a filtered
// view is a link; this module reads the query and asks the broker.
import { api, describe } from './api.js';
import { requireSession, showError, formatTime } from './layout.js';

const $ = (id) => document.getElementById(id);
const FIELDS = ['service', 'level', 'trace_id', 'user'];
const filters = {};
let cursor = null;

function cell(text, className) {
  const td = document.createElement('td');
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function row(entry) {
  const tr = document.createElement('tr');
  const time = document.createElement('td');
  const stamp = document.createElement('time');
  stamp.dateTime = entry.created_at || '';
  stamp.textContent = formatTime(entry.created_at, true);
  time.append(stamp);
  const level = cell(entry.level, `level level-${entry.level}`);
  const what = document.createElement('td');
  const name = document.createElement('strong');
  name.textContent = entry.name;
  const data = document.createElement('code');
  data.className = 'log-data';
  data.textContent = typeof entry.data === 'string' ? entry.data : JSON.stringify(entry.data);
  what.append(name, ' ', data);
  // What a user wrote through /handle is marked so, whatever it is named: never an audit.
  if (entry.kind === 'user_written') {
    const badge = document.createElement('span');
    badge.className = 'badge badge-user-written';
    badge.textContent = 'written by a user';
    what.prepend(badge, ' ');
  }
  const trace = document.createElement('td');
  if (entry.trace_id) {
    const link = document.createElement('a');
    link.href = `/logs?trace_id=${encodeURIComponent(entry.trace_id)}`;
    link.textContent = entry.trace_id.slice(0, 8) + '…';
    link.setAttribute('aria-label', `All entries of trace ${entry.trace_id}`);
    link.title = entry.trace_id;
    trace.append(link);
  }
  tr.append(time, level, cell(entry.service), what, trace);
  return tr;
}

async function load(more) {
  const errorBox = $('logs-error');
  showError(errorBox, '');
  $('logs-status').textContent = 'Loading…';
  try {
    const page = await api('/api/logs', { query: { ...filters, limit: 100, cursor: more ? cursor : undefined } });
    const rows = (page.logs || []).map(row);
    if (more) $('logs-body').append(...rows);
    else $('logs-body').replaceChildren(...rows);
    cursor = page.next_cursor || null;
    $('logs-more').hidden = !cursor;
    const shown = $('logs-body').children.length;
    $('logs-status').textContent = shown ? `${shown} entr${shown === 1 ? 'y' : 'ies'} shown` : 'No entries match.';
  } catch (error) {
    $('logs-status').textContent = '';
    showError(errorBox, error.status === 403 ? 'Only administrators can read the logs.' : describe(error));
  }
}

async function start() {
  await requireSession();
  const params = new URLSearchParams(window.location.search);
  for (const field of FIELDS) {
    const value = (params.get(field) || '').trim();
    if (value) filters[field] = value;
    const input = $(field);
    if (input && value) input.value = value;
  }
  $('logs-more').addEventListener('click', () => load(true));
  load(false);
}

start();
