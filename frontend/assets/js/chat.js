// The chat page: rooms and direct conversations beside the open conversation, live
// messages, presence, typing and read receipts over the WebSocket; history pages back
// with the `before` cursor and catches up with `after` the last message seen.
import { api, describe } from './api.js';
import { requireSession, showError, formatTime } from './layout.js';
import { Live } from './live.js';
import { setupMessageActions, decorateMessage, applyMessageFrame } from './message-actions.js';
import { unreadLabel, showUnreadTotal, unreadFromList, applyOwnRead } from './unread.js';
import { startNotifications, onNotification, refreshNotifications } from './notifications.js';
import { startSearch } from './search.js';
import {
  setupAttachments, showPending, pendingFor, takeReady, giveBack, attachmentList,
} from './attachments.js';

const PAGE = 50;
const TYPING_SEND_EVERY_MS = 3_000;
const TYPING_SHOW_MS = 5_000;
const SEND_TIMEOUT_MS = 10_000;

const $ = (id) => document.getElementById(id);
const els = {
  connection: $('connection'),
  roomList: $('room-list'),
  dmList: $('dm-list'),
  browseList: $('browse-list'),
  roomTools: $('room-tools'),
  roomForm: $('room-form'),
  roomError: $('room-error'),
  people: $('people'),
  onlineCount: $('online-count'),
  title: $('conv-title'),
  sub: $('conv-sub'),
  leave: $('leave'),
  scroll: $('messages-scroll'),
  older: $('older'),
  edge: $('history-edge'),
  messages: $('messages'),
  empty: $('empty-hint'),
  typing: $('typing'),
  conversation: $('conversation'),
  composer: $('composer'),
  body: $('body'),
  send: $('send'),
  attach: $('attach'),
  attachInput: $('attach-input'),
  uploads: $('uploads'),
  sendError: $('send-error'),
};

const state = {
  me: null,
  /** id → conversation view (+ `unread`). */
  conversations: new Map(),
  /** id → {id, username, online, since}. */
  users: new Map(),
  /** conversation id → {messages: [], ids: Set, hasMore, loaded, loading}. */
  threads: new Map(),
  /** conversation id → Map(user id → newest message id they read). */
  reads: new Map(),
  /** conversation id → Map(user id → {username, timer}). */
  typing: new Map(),
  /** client id → {conversationId, body, attachments, element, timer}. */
  pending: new Map(),
  lastReadSent: new Map(),
  lastTypingSent: 0,
  active: null,
};

let live = null;

// ---- helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/** UUIDv7 ids are time-ordered: plain string comparison orders them. */
const newer = (a, b) => (a || '') > (b || '');

function thread(conversationId) {
  let found = state.threads.get(conversationId);
  if (!found) {
    found = { messages: [], ids: new Set(), hasMore: true, loaded: false, loading: false };
    state.threads.set(conversationId, found);
  }
  return found;
}

function otherMember(conversation) {
  return (conversation.members || []).find((member) => member.user_id !== state.me.id);
}

function conversationName(conversation) {
  if (conversation.kind === 'room') return `#${conversation.name}`;
  const other = otherMember(conversation);
  return other ? other.username : 'Direct conversation';
}

function userName(userId) {
  if (userId === state.me.id) return state.me.username;
  const user = state.users.get(userId);
  if (user) return user.username;
  for (const conversation of state.conversations.values()) {
    const member = (conversation.members || []).find((m) => m.user_id === userId);
    if (member) return member.username;
  }
  return 'someone';
}

function nearBottom() {
  const { scrollTop, scrollHeight, clientHeight } = els.scroll;
  return scrollHeight - scrollTop - clientHeight < 80;
}

function scrollToBottom() {
  els.scroll.scrollTop = els.scroll.scrollHeight;
}

// ---- conversations ---------------------------------------------------------------------

async function loadConversations() {
  const answer = await api('/api/conversations');
  const previous = state.conversations;
  state.conversations = new Map();
  for (const conversation of answer.conversations || []) {
    conversation.unread = unreadFromList(conversation, state.active);
    state.conversations.set(conversation.id, conversation);
    const reads = readsOf(conversation.id);
    for (const member of conversation.members || []) {
      if (member.last_read_id && newer(member.last_read_id, reads.get(member.user_id))) {
        reads.set(member.user_id, member.last_read_id);
      }
    }
  }
  renderConversations();
  if (state.active && !state.conversations.has(state.active)) closeConversation('This conversation is gone.');
}

function readsOf(conversationId) {
  let reads = state.reads.get(conversationId);
  if (!reads) {
    reads = new Map();
    state.reads.set(conversationId, reads);
  }
  return reads;
}

function conversationItem(conversation) {
  const other = conversation.kind === 'direct' ? otherMember(conversation) : null;
  const online = other ? state.users.get(other.user_id)?.online : undefined;
  const unread = conversation.unread || 0;
  return el('li', {},
    el('button', {
      type: 'button',
      class: 'conv',
      dataset: { id: conversation.id },
      'aria-current': conversation.id === state.active ? 'true' : null,
      onclick: () => select(conversation.id),
    },
    other ? el('span', { class: `dot ${online ? 'on' : 'off'}`, 'aria-hidden': 'true' }) : null,
    el('span', { class: 'conv-name', text: conversationName(conversation) }),
    other ? el('span', { class: 'visually-hidden', text: online ? ' (online)' : ' (offline)' }) : null,
    unread ? el('span', { class: 'badge', text: unreadLabel(unread), 'aria-label': `${unread} unread` }) : null));
}

function renderConversations() {
  const all = [...state.conversations.values()];
  const rooms = all.filter((c) => c.kind === 'room').sort((a, b) => a.name.localeCompare(b.name));
  const directs = all.filter((c) => c.kind !== 'room')
    .sort((a, b) => conversationName(a).localeCompare(conversationName(b)));
  els.roomList.replaceChildren(...rooms.map(conversationItem));
  if (!rooms.length) els.roomList.append(el('li', { class: 'none', text: 'No rooms joined yet.' }));
  els.dmList.replaceChildren(...directs.map(conversationItem));
  if (!directs.length) els.dmList.append(el('li', { class: 'none', text: 'Message someone from People below.' }));
  showUnreadTotal(all);
}

async function loadRooms() {
  const answer = await api('/api/rooms');
  const open = (answer.rooms || []).filter((room) => !room.joined);
  els.browseList.replaceChildren(...open.map((room) => el('li', {},
    el('span', { class: 'room-name', text: `#${room.name}` }),
    room.topic ? el('span', { class: 'room-topic', text: room.topic }) : null,
    el('button', {
      type: 'button',
      class: 'small',
      'aria-label': `Join #${room.name}`,
      text: 'Join',
      onclick: () => joinRoom(room.id),
    }))));
  if (!open.length) els.browseList.append(el('li', { class: 'none', text: 'No other rooms to join.' }));
}

async function joinRoom(id) {
  try {
    await api(`/api/rooms/${id}/join`, { method: 'POST' });
    await loadConversations();
    await loadRooms();
    select(id);
  } catch (error) {
    showError(els.roomError, describe(error));
  }
}

async function leaveRoom() {
  const id = state.active;
  const conversation = id && state.conversations.get(id);
  if (!conversation || conversation.kind !== 'room') return;
  els.leave.disabled = true;
  try {
    await api(`/api/rooms/${id}/leave`, { method: 'POST' });
    state.conversations.delete(id);
    state.threads.delete(id);
    closeConversation(`You left ${conversationName(conversation)}.`);
    await loadRooms();
  } catch (error) {
    showError(els.sendError, describe(error));
  } finally {
    els.leave.disabled = false;
  }
}

async function createRoom(event) {
  event.preventDefault();
  showError(els.roomError, '');
  const data = new FormData(els.roomForm);
  const name = String(data.get('name') || '').trim().replace(/^#/, '').toLowerCase();
  if (!/^[a-z0-9_-]{2,32}$/.test(name)) {
    showError(els.roomError, 'A room name is 2–32 of a–z, 0–9, _ and -.');
    return;
  }
  try {
    const room = await api('/api/rooms', { method: 'POST', body: { name, topic: String(data.get('topic') || '').trim() } });
    els.roomForm.reset();
    await loadConversations();
    select(room.id || room.room?.id);
  } catch (error) {
    showError(els.roomError, describe(error));
  }
}

async function openDirect(userId) {
  try {
    const answer = await api('/api/conversations', { method: 'POST', body: { user_id: userId } });
    const conversation = answer.conversation || answer;
    if (!state.conversations.has(conversation.id)) {
      conversation.unread = 0;
      state.conversations.set(conversation.id, conversation);
    }
    renderConversations();
    select(conversation.id);
    refreshUsers();
  } catch (error) {
    showError(els.sendError, describe(error));
  }
}

// ---- people and presence ---------------------------------------------------------------

async function loadUsers() {
  const [all, online] = await Promise.all([
    api('/api/users', { query: { limit: 100 } }),
    api('/api/users', { query: { online: 'true' } }).catch(() => ({ users: [] })),
  ]);
  usersLoadedAt = Date.now();
  const onlineIds = new Set((online.users || []).map((user) => user.id));
  // A full page may not name everyone: keep who we heard of live. Otherwise the list
  // is complete, and people who deleted their account drop out of it.
  const users = (all.users || []).length >= 100 ? state.users : new Map();
  for (const user of [...(all.users || []), ...(online.users || [])]) {
    users.set(user.id, {
      id: user.id,
      username: user.username,
      online: onlineIds.has(user.id) || Boolean(user.online),
      since: user.since,
    });
  }
  state.users = users;
  renderPeople();
  renderConversations();
  if (state.active) renderHeader();
}

let usersLoadedAt = 0;

/** Reloads people and presence, at most every 5 s. */
function refreshUsers() {
  if (Date.now() - usersLoadedAt < 5_000) return Promise.resolve();
  return loadUsers().catch(() => {});
}

function renderPeople() {
  const people = [...state.users.values()]
    .filter((user) => user.id !== state.me.id)
    .sort((a, b) => (b.online - a.online) || a.username.localeCompare(b.username));
  const onlineCount = people.filter((user) => user.online).length;
  els.onlineCount.textContent = `(${onlineCount} online)`;
  els.people.replaceChildren(...people.map((user) => el('li', {
    class: 'person',
    dataset: { userId: user.id, username: user.username, online: String(user.online) },
  },
  el('span', { class: `dot ${user.online ? 'on' : 'off'}`, 'aria-hidden': 'true' }),
  el('span', { class: 'person-name', text: user.username }),
  el('span', {
    class: 'presence',
    text: user.online ? 'online' : 'offline',
    title: user.since ? `${user.online ? 'Online since' : 'Last seen'} ${formatTime(user.since, true)}` : null,
  }),
  el('button', {
    type: 'button',
    class: 'small',
    text: 'Message',
    'aria-label': `Message ${user.username}`,
    onclick: () => openDirect(user.id),
  }))));
  if (!people.length) els.people.append(el('li', { class: 'none', text: 'Nobody else here yet.' }));
}

function onPresence(frame) {
  const known = state.users.get(frame.user_id);
  state.users.set(frame.user_id, {
    id: frame.user_id,
    username: frame.username || known?.username || 'someone',
    online: Boolean(frame.online),
    since: frame.since,
  });
  renderPeople();
  renderConversations();
  if (state.active) renderHeader();
}

// ---- the open conversation -------------------------------------------------------------

function renderHeader() {
  const conversation = state.conversations.get(state.active);
  if (!conversation) return;
  els.title.textContent = conversationName(conversation);
  els.leave.hidden = conversation.kind !== 'room';
  els.leave.setAttribute('aria-label', `Leave ${conversationName(conversation)}`);
  if (conversation.kind === 'room') {
    const members = `${conversation.member_count} member${conversation.member_count === 1 ? '' : 's'}`;
    els.sub.textContent = conversation.topic ? `${conversation.topic} · ${members}` : members;
  } else {
    const other = otherMember(conversation);
    const user = other && state.users.get(other.user_id);
    els.sub.textContent = user?.online ? 'Online' : 'Offline';
  }
}

async function select(conversationId) {
  const conversation = state.conversations.get(conversationId);
  if (!conversation) return;
  state.active = conversationId;
  conversation.unread = 0;
  if (window.location.hash !== `#${conversationId}`) history.replaceState(null, '', `#${conversationId}`);
  renderConversations();
  renderHeader();
  els.empty.hidden = true;
  els.composer.hidden = false;
  showError(els.sendError, '');
  showPending();
  showSendable();
  renderTyping();
  const current = thread(conversationId);
  renderMessages();
  scrollToBottom();
  els.body.focus();
  if (!current.loaded) {
    await loadOlder(conversationId);
    if (state.active === conversationId) scrollToBottom();
  }
  markRead(conversationId);
}

function closeConversation(reason) {
  state.active = null;
  els.title.textContent = 'Pick a conversation';
  els.sub.textContent = reason || '';
  els.leave.hidden = true;
  els.messages.replaceChildren();
  els.older.hidden = true;
  els.edge.hidden = true;
  els.composer.hidden = true;
  showPending();
  els.empty.hidden = false;
  history.replaceState(null, '', window.location.pathname);
  renderConversations();
}

function messageItem(message) {
  const mine = message.sender_id === state.me.id;
  return decorateMessage(el('li', {
    class: `message${mine ? ' mine' : ''}${message.pending ? ' pending' : ''}`,
    dataset: { id: message.id || '', sender: message.sender_id },
  },
  el('p', { class: 'meta' },
    el('span', { class: 'sender', text: mine ? 'You' : message.sender_name || userName(message.sender_id) }),
    ' ',
    el('time', { datetime: message.created_at || '', text: formatTime(message.created_at) })),
  el('p', { class: 'body', text: message.body }),
  message.attachments?.length && !message.deleted_at ? attachmentList(message.attachments) : null,
  message.pending ? el('p', { class: 'status', text: message.failed || 'Sending…' }) : null), message);
}

/** Re-renders one kept message in place (edits, deletes, reactions: message-actions.js). */
function redrawMessage(message) {
  if (message.conversation_id !== state.active) return;
  const item = els.messages.querySelector(`li[data-id="${CSS.escape(message.id)}"]`);
  if (!item) return;
  item.replaceWith(messageItem(message));
  renderReceipts();
}

function renderMessages() {
  const current = state.threads.get(state.active);
  const messages = current ? current.messages : [];
  els.messages.replaceChildren(...messages.map(messageItem));
  for (const pending of state.pending.values()) {
    if (pending.conversationId === state.active) els.messages.append(pending.element);
  }
  renderHistoryEdge();
  renderReceipts();
}

function renderHistoryEdge() {
  const current = state.threads.get(state.active);
  if (!current) return;
  els.older.hidden = !(current.loaded && current.hasMore);
  els.edge.hidden = !(current.loaded && !current.hasMore);
  els.edge.textContent = current.messages.length ? 'This is the start of the conversation.' : 'No messages yet. Say hello!';
}

/** Shows "Seen" under the newest of my messages someone else has read. */
function renderReceipts() {
  for (const old of els.messages.querySelectorAll('.receipt')) old.remove();
  const conversationId = state.active;
  const current = state.threads.get(conversationId);
  if (!current) return;
  const readers = [...readsOf(conversationId).entries()].filter(([userId]) => userId !== state.me.id);
  if (!readers.length) return;
  const mine = current.messages.filter((m) => m.sender_id === state.me.id);
  for (let i = mine.length - 1; i >= 0; i -= 1) {
    const message = mine[i];
    const seenBy = readers.filter(([, upTo]) => !newer(message.id, upTo)).map(([userId]) => userName(userId));
    if (!seenBy.length) continue;
    const item = els.messages.querySelector(`li[data-id="${CSS.escape(message.id)}"]`);
    if (!item) return;
    const conversation = state.conversations.get(conversationId);
    const text = conversation?.kind === 'direct' ? 'Seen' : `Seen by ${seenBy.join(', ')}`;
    item.append(el('p', { class: 'receipt', text }));
    return;
  }
}

async function loadOlder(conversationId = state.active) {
  const current = thread(conversationId);
  if (current.loading || (current.loaded && !current.hasMore)) return;
  current.loading = true;
  els.older.disabled = true;
  const before = current.messages[0]?.id;
  try {
    const page = await api(`/api/conversations/${conversationId}/messages`, { query: { before, limit: PAGE } });
    const older = (page.messages || []).filter((m) => !current.ids.has(m.id)).reverse();
    for (const message of older) current.ids.add(message.id);
    current.messages = [...older, ...current.messages];
    current.hasMore = Boolean(page.has_more);
    current.loaded = true;
    if (state.active === conversationId) {
      const fromBottom = els.scroll.scrollHeight - els.scroll.scrollTop;
      renderMessages();
      els.scroll.scrollTop = els.scroll.scrollHeight - fromBottom;
    }
  } catch (error) {
    showError(els.sendError, describe(error));
  } finally {
    current.loading = false;
    els.older.disabled = false;
  }
}

/** Fetches what was missed since the newest message we have (after a reconnect). */
async function catchUp(conversationId) {
  const current = state.threads.get(conversationId);
  if (!current?.loaded) return;
  for (let round = 0; round < 20; round += 1) {
    const after = current.messages[current.messages.length - 1]?.id;
    if (!after) {
      current.loaded = false;
      current.hasMore = true;
      await loadOlder(conversationId);
      return;
    }
    const page = await api(`/api/conversations/${conversationId}/messages`, { query: { after, limit: 100 } });
    for (const message of page.messages || []) addMessage(message, { live: false });
    if (!page.has_more) break;
  }
}

async function catchUpAll() {
  for (const conversationId of state.threads.keys()) {
    try {
      await catchUp(conversationId);
    } catch {
      // The next reconnect or resync tries again.
    }
  }
  if (state.active) markRead(state.active);
}

function addMessage(message, { live: isLive }) {
  if (!state.conversations.has(message.conversation_id)) {
    loadConversations().catch(() => {});
  }
  settlePendingFor(message);
  clearTyping(message.conversation_id, message.sender_id);
  const current = thread(message.conversation_id);
  if (current.ids.has(message.id)) return;
  current.ids.add(message.id);
  const last = current.messages[current.messages.length - 1];
  const atEnd = !last || newer(message.id, last.id);
  if (atEnd) current.messages.push(message);
  else {
    current.messages.push(message);
    current.messages.sort((a, b) => (a.id < b.id ? -1 : 1));
  }
  if (message.conversation_id === state.active) {
    const stick = nearBottom() || message.sender_id === state.me.id;
    if (atEnd) {
      const pendingFirst = els.messages.querySelector('li.pending');
      els.messages.insertBefore(messageItem(message), pendingFirst);
      renderHistoryEdge();
      renderReceipts();
    } else {
      renderMessages();
    }
    if (stick) scrollToBottom();
    if (isLive) markRead(message.conversation_id);
  } else if (message.sender_id !== state.me.id) {
    const conversation = state.conversations.get(message.conversation_id);
    if (conversation) {
      conversation.unread = (conversation.unread || 0) + 1;
      renderConversations();
    }
  }
}

function markRead(conversationId) {
  if (conversationId !== state.active || document.visibilityState !== 'visible') return;
  const current = state.threads.get(conversationId);
  const newest = current?.messages.filter((m) => m.sender_id !== state.me.id).pop();
  if (!newest || !newer(newest.id, state.lastReadSent.get(conversationId))) return;
  state.lastReadSent.set(conversationId, newest.id);
  const frame = { type: 'read', conversation_id: conversationId, up_to: newest.id };
  if (!live.send(frame)) {
    api(`/api/conversations/${conversationId}/read`, { method: 'POST', body: { up_to: newest.id } })
      .catch(() => state.lastReadSent.delete(conversationId));
  }
}

function onRead(frame) {
  if (applyOwnRead(frame, state.me, state.conversations)) renderConversations();
  const reads = readsOf(frame.conversation_id);
  if (newer(frame.up_to, reads.get(frame.user_id))) reads.set(frame.user_id, frame.up_to);
  if (frame.conversation_id === state.active) renderReceipts();
}

// ---- typing ----------------------------------------------------------------------------

function onTyping(frame) {
  if (frame.user_id === state.me.id) return;
  let typing = state.typing.get(frame.conversation_id);
  if (!typing) {
    typing = new Map();
    state.typing.set(frame.conversation_id, typing);
  }
  clearTimeout(typing.get(frame.user_id)?.timer);
  typing.set(frame.user_id, {
    username: frame.username || userName(frame.user_id),
    timer: setTimeout(() => clearTyping(frame.conversation_id, frame.user_id), TYPING_SHOW_MS),
  });
  if (frame.conversation_id === state.active) renderTyping();
}

function clearTyping(conversationId, userId) {
  const typing = state.typing.get(conversationId);
  if (!typing?.has(userId)) return;
  clearTimeout(typing.get(userId).timer);
  typing.delete(userId);
  if (conversationId === state.active) renderTyping();
}

function renderTyping() {
  const names = [...(state.typing.get(state.active)?.values() || [])].map((t) => t.username);
  if (!names.length) els.typing.textContent = '';
  else if (names.length === 1) els.typing.textContent = `${names[0]} is typing…`;
  else if (names.length === 2) els.typing.textContent = `${names[0]} and ${names[1]} are typing…`;
  else els.typing.textContent = 'Several people are typing…';
}

function typed() {
  if (!state.active || !els.body.value.trim()) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  state.lastTypingSent = now;
  live.send({ type: 'typing', conversation_id: state.active });
}

// ---- sending ---------------------------------------------------------------------------

/** The ids of a message's files, as one string to compare. */
const fileKey = (attachments) => (attachments || []).map((attachment) => attachment.id).join(',');

function settlePendingFor(message) {
  if (message.sender_id !== state.me.id) return;
  for (const [clientId, pending] of state.pending) {
    if (pending.conversationId === message.conversation_id && pending.body === message.body
      && fileKey(pending.attachments) === fileKey(message.attachments)) {
      settle(clientId);
      return;
    }
  }
}

function settle(clientId) {
  const pending = state.pending.get(clientId);
  if (!pending) return;
  clearTimeout(pending.timer);
  pending.element.remove();
  state.pending.delete(clientId);
}

/**
 * Marks a pending message as not sent. `refused`: the server said no, so its files go
 * back to the composer (after a mere timeout the message may still arrive with them).
 */
function failPending(clientId, reason, refused = false) {
  const pending = state.pending.get(clientId);
  if (!pending) return;
  clearTimeout(pending.timer);
  if (refused) giveBack(pending.conversationId, pending.attachments);
  const status = pending.element.querySelector('.status');
  if (status) status.textContent = `Not sent: ${reason}`;
  pending.element.classList.add('failed');
}

async function sendViaRest(conversationId, body, attachmentIds) {
  const request = attachmentIds.length ? { body, attachment_ids: attachmentIds } : { body };
  const answer = await api(`/api/conversations/${conversationId}/messages`, { method: 'POST', body: request });
  const message = answer?.message || answer;
  if (message?.id) addMessage(message, { live: false });
}

/**
 * Send waits for uploads: while a file is still uploading the button is off (and Enter
 * says why), so a message never goes without a file its author chose for it.
 */
function showSendable() {
  const { busy } = state.active ? pendingFor(state.active) : { busy: false };
  els.send.disabled = busy;
  els.send.title = busy ? 'Waiting for the uploads to finish' : '';
}

async function send(event) {
  event.preventDefault();
  showError(els.sendError, '');
  const body = els.body.value.trim();
  const conversationId = state.active;
  if (!conversationId) return;
  const files = pendingFor(conversationId);
  if (files.busy) {
    showError(els.sendError, 'Wait for the uploads to finish, or remove them.');
    return;
  }
  if (!body && !files.ready.length) return;
  if (body.length > 4000) {
    showError(els.sendError, 'A message is at most 4,000 characters.');
    return;
  }
  const attachments = takeReady(conversationId);
  const attachmentIds = attachments.map((attachment) => attachment.id);
  els.body.value = '';
  autosize();
  const clientId = crypto.randomUUID();
  const frame = { type: 'send', conversation_id: conversationId, body, client_id: clientId };
  if (attachmentIds.length) frame.attachment_ids = attachmentIds;
  if (live.send(frame)) {
    const element = messageItem({
      sender_id: state.me.id, body, attachments, pending: true, created_at: new Date().toISOString(),
    });
    state.pending.set(clientId, {
      conversationId,
      body,
      attachments,
      element,
      timer: setTimeout(() => failPending(clientId, 'no answer from the server; it may arrive later.'), SEND_TIMEOUT_MS),
    });
    els.messages.append(element);
    scrollToBottom();
    return;
  }
  try {
    await sendViaRest(conversationId, body, attachmentIds);
  } catch (error) {
    els.body.value = body;
    giveBack(conversationId, attachments);
    autosize();
    showError(els.sendError, `Your message was not sent: ${describe(error)}`);
  }
}

function autosize() {
  els.body.style.height = 'auto';
  els.body.style.height = `${Math.min(els.body.scrollHeight, 160)}px`;
}

// ---- live frames -----------------------------------------------------------------------

function onFrame(frame) {
  switch (frame.type) {
    case 'message':
      addMessage(frame.message, { live: true });
      break;
    case 'ack':
      if (frame.client_id) settle(frame.client_id);
      addMessage(frame.message, { live: true });
      break;
    case 'presence':
      onPresence(frame);
      break;
    case 'typing':
      onTyping(frame);
      break;
    case 'read':
      onRead(frame);
      break;
    case 'membership':
      if (frame.user_id === state.me.id || !state.conversations.has(frame.conversation_id)) {
        // A new conversation: its members' presence only reaches us from now on.
        loadConversations().then(loadUsers).catch(() => {});
      } else {
        const conversation = state.conversations.get(frame.conversation_id);
        conversation.member_count = Math.max(0, (conversation.member_count || 0) + (frame.joined ? 1 : -1));
        if (frame.conversation_id === state.active) renderHeader();
      }
      break;
    case 'conversation_deleted':
      state.conversations.delete(frame.conversation_id);
      state.threads.delete(frame.conversation_id);
      if (state.active === frame.conversation_id) closeConversation('This conversation was deleted.');
      else renderConversations();
      break;
    case 'resync':
      catchUpAll();
      refreshNotifications();
      break;
    case 'notification':
      onNotification(frame);
      break;
    case 'message_edited':
    case 'message_deleted':
    case 'reaction':
      applyMessageFrame(frame);
      break;
    case 'error':
      if (frame.client_id) failPending(frame.client_id, frame.message || 'refused', true);
      else showError(els.sendError, frame.message || 'The server refused that.');
      break;
    default:
      break;
  }
}

function onState(connection, detail) {
  els.connection.dataset.state = connection;
  if (connection === 'open') els.connection.textContent = 'Live';
  else if (connection === 'connecting') els.connection.textContent = 'Connecting…';
  else if (connection === 'waiting') els.connection.textContent = `Offline — reconnecting in ${detail} s`;
  else if (connection === 'ended') {
    els.connection.textContent = 'Signed out';
    if (!document.body.dataset.signingOut) window.location.assign('/login?signed_out=1');
  }
}

async function onOpen(reconnect) {
  if (!reconnect) return;
  try {
    await loadConversations();
    await Promise.all([catchUpAll(), loadUsers()]);
    refreshNotifications();
  } catch {
    // Shown by the connection state; the next reconnect tries again.
  }
}

// ---- search results --------------------------------------------------------------------

/** The UUID right after `id` (history's `before` is exclusive). */
function nextId(id) {
  const hex = (BigInt(`0x${id.replace(/-/g, '')}`) + 1n).toString(16).padStart(32, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Opens a conversation at one of its messages (a search result): when the message is not
 * loaded, its history is loaded around it (a page up to it, then forward to the newest),
 * then it is scrolled into view and marked for a moment.
 */
async function openAt(conversationId, messageId) {
  if (!state.conversations.has(conversationId)) await loadConversations().catch(() => {});
  if (!state.conversations.has(conversationId)) return;
  const current = thread(conversationId);
  if (!current.ids.has(messageId)) {
    const path = `/api/conversations/${conversationId}/messages`;
    try {
      const upTo = await api(path, { query: { before: nextId(messageId), limit: 25 } });
      const messages = (upTo.messages || []).reverse();
      for (let round = 0, more = true; more && messages.length && round < 20; round += 1) {
        const page = await api(path, { query: { after: messages[messages.length - 1].id, limit: 100 } });
        messages.push(...(page.messages || []));
        more = Boolean(page.has_more);
      }
      Object.assign(current, {
        messages, ids: new Set(messages.map((m) => m.id)), hasMore: Boolean(upTo.has_more), loaded: true,
      });
    } catch (error) {
      showError(els.sendError, describe(error));
      return;
    }
  }
  await select(conversationId);
  const item = els.messages.querySelector(`li[data-id="${CSS.escape(messageId)}"]`);
  if (!item) return;
  item.scrollIntoView({ block: 'center' });
  item.classList.add('jumped');
  setTimeout(() => item.classList.remove('jumped'), 3_000);
}

/** A search hit's conversation, as the sidebar names it. */
function hitLabel(hit) {
  const conversation = state.conversations.get(hit.conversation_id);
  if (conversation) return conversationName(conversation);
  return hit.conversation_kind === 'room' ? `#${hit.conversation_name}` : 'Direct conversation';
}

// ---- start -----------------------------------------------------------------------------

async function start() {
  const session = await requireSession();
  state.me = session.user;
  setupMessageActions({
    me: state.me,
    find: (conversationId, id) => state.threads.get(conversationId)?.messages.find((m) => m.id === id),
    redraw: redrawMessage,
    showError: (text) => showError(els.sendError, text),
  });
  els.composer.addEventListener('submit', send);
  setupAttachments({
    active: () => state.active,
    onChange: showSendable,
    showError: (text) => showError(els.sendError, text),
    button: els.attach,
    input: els.attachInput,
    list: els.uploads,
    composer: els.composer,
    dropZone: els.conversation,
  });
  els.body.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      els.composer.requestSubmit();
    }
  });
  els.body.addEventListener('input', () => {
    autosize();
    typed();
  });
  els.older.addEventListener('click', () => loadOlder());
  els.scroll.addEventListener('scroll', () => {
    if (els.scroll.scrollTop < 40 && state.active) {
      const current = state.threads.get(state.active);
      if (current?.loaded && current.hasMore && !current.loading) loadOlder();
    }
  });
  els.roomForm.addEventListener('submit', createRoom);
  startSearch({ open: openAt, label: hitLabel });
  els.leave.addEventListener('click', leaveRoom);
  // Rooms others made since the page loaded show up when the list is opened.
  els.roomTools.addEventListener('toggle', () => {
    if (els.roomTools.open) loadRooms().catch((error) => showError(els.roomError, describe(error)));
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    if (state.active) markRead(state.active);
    refreshUsers();
  });
  window.addEventListener('focus', refreshUsers);

  startNotifications((conversationId) => select(conversationId));
  live = new Live({ onFrame, onState, onOpen });
  live.connect();
  try {
    await Promise.all([loadConversations(), loadUsers(), loadRooms()]);
  } catch (error) {
    showError(els.sendError, describe(error));
  }
  const wanted = window.location.hash.slice(1);
  if (wanted && state.conversations.has(wanted)) select(wanted);
  setInterval(refreshUsers, 60_000);
}

start();
