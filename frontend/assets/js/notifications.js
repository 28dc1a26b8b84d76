// The notification bell in the header of the chat page: the count of unread @mentions,
// a list of them (who, where, what) opened from it, live `notification` frames adding
// to it, and marking read (one by clicking it, which also opens its conversation; or
// all). The text of a mention is the message as the server shows it: empty once the
// reader may no longer see it. Built from DOM nodes only: no HTML from strings.
import { api, describe } from './api.js';
import { formatTime } from './layout.js';

const PAGE = 20;

const state = {
  unread: 0,
  items: [],
  hasMore: false,
  open: (_conversationId) => {},
  els: null,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** A bell drawn as SVG (no emoji font needed), from DOM nodes. */
function bellIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  for (const [key, value] of Object.entries({
    viewBox: '0 0 24 24', width: '18', height: '18', fill: 'none', stroke: 'currentColor',
    'stroke-width': '2', 'stroke-linecap': 'round', 'stroke-linejoin': 'round', 'aria-hidden': 'true',
  })) svg.setAttribute(key, value);
  for (const d of ['M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9', 'M10.3 21a1.94 1.94 0 0 0 3.4 0']) {
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}

function renderCount() {
  const { count, bell } = state.els;
  count.hidden = state.unread === 0;
  count.textContent = state.unread > 99 ? '99+' : String(state.unread);
  bell.setAttribute('aria-label', state.unread ? `Notifications: ${state.unread} unread` : 'Notifications');
}

function item(notification) {
  const where = notification.conversation_name ? `#${notification.conversation_name}` : 'a direct message';
  const unread = !notification.read_at;
  return el('li', { class: unread ? 'notification unread' : 'notification' },
    el('button', { type: 'button', class: 'notification-open', onclick: () => openOne(notification) },
      el('span', { class: 'notification-head' },
        el('strong', { text: notification.sender_name }),
        el('span', { text: ` mentioned you in ${where}` }),
        el('time', { datetime: notification.created_at, text: ` · ${formatTime(notification.created_at)}` })),
      el('span', { class: 'notification-snippet', text: notification.snippet || '(no longer visible)' })));
}

function renderList() {
  const { list, more, empty } = state.els;
  list.replaceChildren(...state.items.map(item));
  empty.hidden = state.items.length > 0;
  more.hidden = !state.hasMore;
}

async function load({ older = false } = {}) {
  const query = { limit: PAGE };
  if (older && state.items.length) query.before = state.items[state.items.length - 1].id;
  try {
    const page = await api('/api/notifications', { query });
    state.items = older ? state.items.concat(page.notifications) : page.notifications;
    state.hasMore = page.has_more;
    state.unread = page.unread_count;
    state.els.error.hidden = true;
  } catch (error) {
    state.els.error.textContent = describe(error);
    state.els.error.hidden = false;
  }
  renderCount();
  renderList();
}

async function markRead(body) {
  try {
    const answer = await api('/api/notifications/read', { method: 'POST', body });
    state.unread = answer.unread_count;
  } catch (error) {
    state.els.error.textContent = describe(error);
    state.els.error.hidden = false;
  }
  renderCount();
}

async function openOne(notification) {
  setOpen(false);
  state.open(notification.conversation_id);
  if (!notification.read_at) {
    notification.read_at = new Date().toISOString();
    renderList();
    await markRead({ ids: [notification.id] });
  }
}

async function markAll() {
  const now = new Date().toISOString();
  for (const notification of state.items) notification.read_at ||= now;
  renderList();
  await markRead({ all: true });
}

function setOpen(open) {
  const { panel, bell } = state.els;
  panel.hidden = !open;
  bell.setAttribute('aria-expanded', String(open));
  if (open) load();
}

/** A live `notification` frame: someone mentioned the user. */
export function onNotification(frame) {
  if (!state.els || !frame.notification) return;
  if (state.items.some((n) => n.id === frame.notification.id)) return;
  state.items.unshift(frame.notification);
  state.unread += 1;
  renderCount();
  renderList();
}

/** After a reconnect: mentions may have come meanwhile. */
export function refreshNotifications() {
  if (state.els) load();
}

/**
 * Puts the bell in the page header; `open(conversationId)` shows a conversation when a
 * notification is clicked.
 */
export function startNotifications(open) {
  state.open = open;
  const count = el('span', { class: 'badge bell-count', hidden: true });
  const bell = el('button', {
    type: 'button', class: 'small bell', id: 'bell', 'aria-haspopup': 'true', 'aria-expanded': 'false',
    'aria-controls': 'notifications', onclick: () => setOpen(state.els.panel.hidden),
  }, bellIcon(), count);
  const list = el('ul', { class: 'notification-list', id: 'notification-list' });
  const empty = el('p', { class: 'none', text: 'Nobody has mentioned you yet.' });
  const more = el('button', { type: 'button', class: 'small', hidden: true, onclick: () => load({ older: true }) },
    'Older mentions');
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const panel = el('section', { class: 'notifications', id: 'notifications', 'aria-label': 'Notifications', hidden: true },
    el('header', { class: 'notifications-head' },
      el('h2', { text: 'Mentions' }),
      el('button', { type: 'button', class: 'small', id: 'mark-all-read', onclick: markAll }, 'Mark all read')),
    error, list, empty, more);
  state.els = { bell, count, list, empty, more, error, panel };
  const session = document.querySelector('.topbar .session');
  session?.prepend(el('div', { class: 'bell-wrap' }, bell, panel));
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !panel.hidden) {
      setOpen(false);
      bell.focus();
    }
  });
  load();
}
