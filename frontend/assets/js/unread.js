// Unread counts: the badge text of a conversation ("99+" past the server's cap of 100)
// and the tab title "(N) …" with the total. The counts come from the server (the
// conversation list, and the reader's own `read` frames, so every tab agrees); chat.js
// adds one for each live message of someone else in a conversation not on screen.

/** The server counts at most this many per conversation. */
const CAP = 100;

const baseTitle = document.title;

/** What a badge shows for `count` unread messages. */
export function unreadLabel(count) {
  return count >= CAP ? '99+' : String(count);
}

/** Puts the total of `conversations`' unread counts in the tab title. */
export function showUnreadTotal(conversations) {
  let total = 0;
  for (const conversation of conversations) total += conversation.unread || 0;
  const shown = total >= CAP ? '99+' : String(total);
  document.title = total ? `(${shown}) ${baseTitle}` : baseTitle;
}

/** The unread count a conversation starts with, from `GET /api/conversations`. */
export function unreadFromList(conversation, active) {
  return conversation.id === active ? 0 : (conversation.unread_count || 0);
}

/**
 * Applies the caller's own `read` frame (from any of their tabs or devices): the count
 * it carries is what is left unread there. Returns true when it was one.
 */
export function applyOwnRead(frame, me, conversations) {
  if (frame.user_id !== me.id || typeof frame.unread_count !== 'number') return false;
  const conversation = conversations.get(frame.conversation_id);
  if (!conversation) return false;
  conversation.unread = frame.unread_count;
  return true;
}
