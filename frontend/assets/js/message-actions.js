// What a member does to a message once it is sent, on the chat page: edit it (own),
// delete it (own, or any for an administrator), react with one of the server's emoji.
// Adds to each message item the "(edited)" marker, the tombstone look, the reaction chips
// and a small toolbar (shown on hover or keyboard focus); applies the live
// `message_edited`, `message_deleted` and `reaction` frames. Never builds HTML from text:
// every node is made with the DOM and filled with textContent.
import { api, describe } from './api.js';
import { formatTime } from './layout.js';

/** What chat.js gives: who is signed in, how to find a message, redraw one, show an error. */
let page = null;
/** The emoji the server accepts (`GET /api/reactions`), loaded once. */
let emojiSet = null;
/** The open picker, if any (one at a time). */
let openPicker = null;

/**
 * Wires the module to the chat page. `context`: `me` (the user), `find(conversationId,
 * messageId)` → the message object kept in history, `redraw(message)` re-renders its
 * item, `showError(text)`.
 */
export function setupMessageActions(context) {
  page = context;
  document.addEventListener('click', (event) => {
    if (openPicker && !openPicker.contains(event.target) && !event.target.closest('.react-open')) closePicker();
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && openPicker) closePicker();
  });
}

function node(tag, { className, text, label, title, pressed } = {}, ...children) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  if (label) made.setAttribute('aria-label', label);
  if (title) made.title = title;
  if (pressed !== undefined) made.setAttribute('aria-pressed', pressed ? 'true' : 'false');
  if (tag === 'button') made.type = 'button';
  made.append(...children.filter(Boolean));
  return made;
}

const isAdmin = () => ['owner', 'admin'].includes(document.body.dataset.role);
const messagePath = (message) => `/api/conversations/${message.conversation_id}/messages/${message.id}`;

/** Adds the edit/delete/reaction parts to a rendered message item; returns it. */
export function decorateMessage(item, message) {
  if (!page || !message.id || message.pending) return item;
  const body = item.querySelector('.body');
  if (message.deleted_at) {
    item.classList.add('deleted');
    if (body) body.textContent = 'message deleted';
    return item;
  }
  if (message.edited_at) {
    const meta = item.querySelector('.meta');
    meta?.append(' ', node('span', {
      className: 'edited',
      text: '(edited)',
      title: `Edited ${formatTime(message.edited_at, true)}`,
    }));
  }
  if (message.reactions?.length) item.append(chips(message));
  item.append(toolbar(item, message));
  return item;
}

function chips(message) {
  const list = node('div', { className: 'reactions' });
  for (const reaction of message.reactions) {
    const who = `${reaction.count} reaction${reaction.count === 1 ? '' : 's'}`;
    list.append(node('button', {
      className: `chip${reaction.me ? ' me' : ''}`,
      text: `${reaction.emoji} ${reaction.count}`,
      label: `${reaction.emoji} ${who}${reaction.me ? ', including yours' : ''}`,
      pressed: reaction.me,
    }));
    list.lastChild.addEventListener('click', () => react(message, reaction.emoji, !reaction.me));
  }
  return list;
}

function toolbar(item, message) {
  const bar = node('div', { className: 'msg-actions' });
  const reactButton = node('button', { className: 'react-open', text: '☺+', label: 'Add a reaction', title: 'React' });
  reactButton.addEventListener('click', () => togglePicker(bar, message));
  bar.append(reactButton);
  const mine = message.sender_id === page.me.id;
  if (mine) {
    const editButton = node('button', { text: 'Edit', label: 'Edit message' });
    editButton.addEventListener('click', () => startEdit(item, message));
    bar.append(editButton);
  }
  if (mine || isAdmin()) {
    const deleteButton = node('button', { text: 'Delete', label: 'Delete message' });
    deleteButton.addEventListener('click', () => confirmDelete(bar, message));
    bar.append(deleteButton);
  }
  return bar;
}

// ---- edit and delete -------------------------------------------------------------------

function startEdit(item, message) {
  const body = item.querySelector('.body');
  if (!body || item.querySelector('form.edit')) return;
  const field = node('textarea', { label: 'Edit message' });
  field.value = message.body;
  field.maxLength = 4000;
  field.rows = Math.min(8, message.body.split('\n').length + 1);
  const save = node('button', { className: 'primary small', text: 'Save' });
  save.type = 'submit';
  const cancel = node('button', { className: 'small', text: 'Cancel' });
  const form = node('form', { className: 'edit' }, field, node('div', { className: 'edit-buttons' }, save, cancel));
  const finish = () => page.redraw(message);
  cancel.addEventListener('click', finish);
  field.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') finish();
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (field.value === message.body) return finish();
    save.disabled = true;
    try {
      const edited = await api(messagePath(message), { method: 'PATCH', body: { body: field.value } });
      message.body = edited.body;
      message.edited_at = edited.edited_at;
      finish();
    } catch (error) {
      save.disabled = false;
      page.showError(`Your edit was not saved: ${describe(error)}`);
    }
  });
  body.replaceWith(form);
  item.querySelector('.msg-actions')?.remove();
  field.focus();
}

function confirmDelete(bar, message) {
  const sure = node('button', { className: 'danger small', text: 'Yes, delete' });
  const keep = node('button', { className: 'small', text: 'Keep' });
  const ask = node('span', { className: 'confirm', text: 'Delete this message? ' }, sure, keep);
  keep.addEventListener('click', () => page.redraw(message));
  sure.addEventListener('click', async () => {
    sure.disabled = true;
    try {
      await api(messagePath(message), { method: 'DELETE' });
      tombstone(message, new Date().toISOString());
    } catch (error) {
      page.showError(`The message was not deleted: ${describe(error)}`);
    }
    page.redraw(message);
  });
  bar.replaceChildren(ask);
  bar.classList.add('asking');
  sure.focus();
}

function tombstone(message, at) {
  message.body = '';
  message.deleted_at = message.deleted_at || at;
  message.reactions = [];
  // A deleted message's files are deleted with it.
  message.attachments = [];
}

// ---- reactions -------------------------------------------------------------------------

async function loadEmoji() {
  if (!emojiSet) {
    const answer = await api('/api/reactions');
    emojiSet = answer.emoji || [];
  }
  return emojiSet;
}

function closePicker() {
  openPicker?.remove();
  openPicker = null;
}

async function togglePicker(bar, message) {
  if (openPicker && openPicker.parentElement === bar) return closePicker();
  closePicker();
  let choices;
  try {
    choices = await loadEmoji();
  } catch (error) {
    page.showError(describe(error));
    return;
  }
  const picker = node('div', { className: 'picker', label: 'Pick a reaction' });
  picker.setAttribute('role', 'group');
  for (const emoji of choices) {
    const choice = node('button', { className: 'pick', text: emoji, label: `React with ${emoji}` });
    choice.addEventListener('click', () => {
      closePicker();
      const mine = message.reactions?.find((r) => r.emoji === emoji)?.me;
      if (!mine) react(message, emoji, true);
    });
    picker.append(choice);
  }
  bar.append(picker);
  openPicker = picker;
  picker.querySelector('button')?.focus();
}

/** Adds or takes back the caller's reaction; shown at once, corrected by the live frame. */
async function react(message, emoji, add) {
  const path = `${messagePath(message)}/reactions/${encodeURIComponent(emoji)}`;
  try {
    await api(path, { method: add ? 'PUT' : 'DELETE' });
    const reaction = message.reactions?.find((r) => r.emoji === emoji);
    if (Boolean(reaction?.me) !== add) {
      setReaction(message, emoji, (reaction?.count || 0) + (add ? 1 : -1), add);
      page.redraw(message);
    }
  } catch (error) {
    page.showError(describe(error));
  }
}

/** Sets one emoji's count (and, given, whether the caller is among them). */
function setReaction(message, emoji, count, me) {
  message.reactions = message.reactions || [];
  let reaction = message.reactions.find((r) => r.emoji === emoji);
  if (!reaction) {
    reaction = { emoji, count: 0, me: false };
    message.reactions.push(reaction);
  }
  reaction.count = count;
  if (me !== undefined) reaction.me = me;
  message.reactions = message.reactions.filter((r) => r.count > 0);
}

// ---- live frames -----------------------------------------------------------------------

/** Applies a `message_edited`, `message_deleted` or `reaction` frame to kept history. */
export function applyMessageFrame(frame) {
  if (!page) return;
  if (frame.type === 'reaction') {
    const message = page.find(frame.conversation_id, frame.message_id);
    if (!message || message.deleted_at) return;
    // Counts are absolute: the same frame applied twice changes nothing.
    setReaction(message, frame.emoji, frame.count, frame.user_id === page.me.id ? frame.added : undefined);
    page.redraw(message);
    return;
  }
  const changed = frame.message || {};
  const message = page.find(changed.conversation_id, changed.id);
  if (!message) return;
  if (frame.type === 'message_deleted') tombstone(message, changed.deleted_at);
  else if (!message.deleted_at) {
    message.body = changed.body;
    message.edited_at = changed.edited_at;
  }
  page.redraw(message);
}
