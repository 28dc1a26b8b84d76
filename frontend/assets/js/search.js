// Search: the box at the top of the chat page's sidebar and its results — conversation,
// author, time and a snippet whose matched words are <mark> elements (built from the
// API's plain text and character ranges, never from markup). Choosing a result opens its
// conversation at that message (chat.js does the opening).
import { api, describe } from './api.js';
import { formatTime, showError } from './layout.js';

const LIMIT = 20;

/**
 * The snippet as DOM nodes: text, with each highlighted range (character offsets, as
 * the API gives them) in a <mark>.
 */
export function snippetNodes(text, highlights) {
  const chars = Array.from(text || '');
  const nodes = [];
  let at = 0;
  for (const range of highlights || []) {
    const start = Number(range.start);
    const end = Number(range.end);
    if (!(start >= at && end > start && end <= chars.length)) continue;
    if (start > at) nodes.push(document.createTextNode(chars.slice(at, start).join('')));
    const mark = document.createElement('mark');
    mark.textContent = chars.slice(start, end).join('');
    nodes.push(mark);
    at = end;
  }
  if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join('')));
  return nodes;
}

/**
 * Wires the search box. `open(conversationId, messageId)` shows a message in its
 * history; `label(hit)` names a hit's conversation (rooms by name, directs by the peer).
 */
export function startSearch({ open, label }) {
  const form = document.getElementById('search-form');
  const input = document.getElementById('search-q');
  const panel = document.getElementById('search-results');
  const list = document.getElementById('search-list');
  const status = document.getElementById('search-status');
  const more = document.getElementById('search-more');
  const close = document.getElementById('search-close');
  const error = document.getElementById('search-error');
  let current = { q: '', cursor: null, generation: 0 };

  function item(hit) {
    const message = hit.message || {};
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'search-hit';
    const meta = document.createElement('span');
    meta.className = 'search-meta';
    const where = document.createElement('span');
    where.className = 'search-where';
    where.textContent = label(hit);
    const who = document.createElement('span');
    who.className = 'search-who';
    who.textContent = message.sender_name || '';
    const when = document.createElement('time');
    when.dateTime = message.created_at || '';
    when.textContent = formatTime(message.created_at);
    meta.append(where, ' · ', who, ' · ', when);
    const snippet = document.createElement('span');
    snippet.className = 'search-snippet';
    snippet.append(...snippetNodes(hit.snippet, hit.highlights));
    button.append(meta, snippet);
    button.addEventListener('click', () => open(hit.conversation_id, message.id));
    const li = document.createElement('li');
    li.append(button);
    return li;
  }

  async function fetchPage(append) {
    const generation = current.generation;
    more.disabled = true;
    showError(error, '');
    try {
      const page = await api('/api/search', {
        query: { q: current.q, limit: LIMIT, cursor: append ? current.cursor : undefined },
      });
      if (generation !== current.generation) return;
      const results = page.results || [];
      if (!append) list.replaceChildren();
      list.append(...results.map(item));
      current.cursor = page.next_cursor || null;
      more.hidden = !current.cursor;
      const shown = list.children.length;
      status.textContent = shown
        ? `${shown}${current.cursor ? '+' : ''} result${shown === 1 ? '' : 's'} for “${current.q}”`
        : `No messages match “${current.q}”.`;
    } catch (failure) {
      if (generation === current.generation) showError(error, describe(failure));
    } finally {
      more.disabled = false;
    }
  }

  function reset() {
    current = { q: '', cursor: null, generation: current.generation + 1 };
    list.replaceChildren();
    status.textContent = '';
    showError(error, '');
    panel.hidden = true;
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (!q) {
      reset();
      return;
    }
    current = { q, cursor: null, generation: current.generation + 1 };
    panel.hidden = false;
    status.textContent = 'Searching…';
    fetchPage(false);
  });
  more.addEventListener('click', () => fetchPage(true));
  close.addEventListener('click', () => {
    input.value = '';
    reset();
    input.focus();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') close.click();
  });
}
