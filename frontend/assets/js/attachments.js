// Files on the chat page (docs/ARCHITECTURE.md, "Attachments"). In the composer: the
// attach button, drag-and-drop onto the conversation and paste; each file is uploaded at
// once (XMLHttpRequest, for its progress) and shown as a chip until the message is sent.
// In messages: images as previews (the server's thumbnail) that open full size in a
// dialog, other files as download chips with their name and size.
//
// Nothing is kept: a reload forgets files not yet sent (the server deletes an upload no
// message claimed within the hour). File names come from users: they are only ever set
// with textContent or as attributes, never parsed as HTML.
import { BROKER, upload, describe } from './api.js';

/** At most this many files go with one message (the server refuses more). */
export const MAX_PER_MESSAGE = 10;

/**
 * Uploads at once; more wait their turn. A browser opens at most six connections to the
 * broker: with every one busy uploading, sending a message would wait behind the files.
 */
const PARALLEL_UPLOADS = 3;

/** The files waiting for their turn to upload, first chosen first: `{conversationId, file, item}`. */
const queue = [];
let uploading = 0;

/** The longest side of a preview in a message, in CSS pixels (the thumbnails' size). */
const PREVIEW_MAX = 400;

/**
 * What chat.js gives: `active()` → the open conversation's id, `onChange()` after the
 * pending files change, `showError(text)`; and the composer's elements.
 */
let page = null;

/**
 * Conversation id → its pending files, in the order chosen. Each is `{key, name, size,
 * state: 'queued' | 'uploading' | 'done' | 'failed', sent, attachment, error, abort,
 * element}`.
 */
const pending = new Map();

/** The full-size view, made on first use. */
let lightbox = null;

function node(tag, { className, text, label, title } = {}, ...children) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  if (label) made.setAttribute('aria-label', label);
  if (title) made.title = title;
  if (tag === 'button') made.type = 'button';
  made.append(...children.filter(Boolean));
  return made;
}

/** A size as people read it: "532 bytes", "14 KB", "3.2 MB" (powers of 1,024). */
export function formatSize(bytes) {
  const size = Number(bytes) || 0;
  if (size < 1024) return `${size} byte${size === 1 ? '' : 's'}`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = value < 10 ? 1 : 0;
  return `${value.toLocaleString(undefined, { maximumFractionDigits: digits })} ${units[unit]}`;
}

/**
 * The broker's URL of an attachment's file or thumbnail. Only a path of the broker's
 * own API is followed: a message's metadata never points the page anywhere else.
 */
function brokerUrl(attachment, thumbnail) {
  const given = thumbnail ? attachment.thumbnail_url : attachment.url;
  if (typeof given === 'string' && /^\/api\/attachments\/[\w-]+(\/thumbnail)?$/.test(given)) return BROKER + given;
  const id = encodeURIComponent(String(attachment.id || ''));
  return `${BROKER}/api/attachments/${id}${thumbnail ? '/thumbnail' : ''}`;
}

/** `[width, height]` scaled down to fit `max` on the longer side; null when unknown. */
function fitted(width, height, max) {
  const w = Number(width);
  const h = Number(height);
  if (!(w > 0 && h > 0)) return null;
  const scale = Math.min(1, max / Math.max(w, h));
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
}

/** The short label on a file chip's icon: its extension ("PDF"), or "FILE". */
function fileBadge(name) {
  const found = /\.([a-z0-9]{1,4})$/i.exec(name || '');
  return found ? found[1].toUpperCase() : 'FILE';
}

/**
 * Shows the broker's image `url` in `image`; `onFail()` when it cannot be had. Chromium
 * refuses a broker's `Cross-Origin-Resource-Policy: same-site` answer to a plain `<img>`
 * of a page served over http from another port (the all-in-one: pages on :8081, broker
 * on :8080), though both are one site. A CORS request is not subject to that policy: on
 * an error the image is fetched once with the session cookie and shown from a local copy.
 */
function showImage(image, url, onFail) {
  // Its box (sized in advance) stays empty until it has pixels: no broken-image icon
  // while the copy is fetched.
  image.classList.add('unloaded');
  image.addEventListener('load', () => image.classList.remove('unloaded'));
  image.addEventListener('error', async () => {
    try {
      const response = await fetch(url, { credentials: 'include' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const local = URL.createObjectURL(await response.blob());
      // A shown image keeps its pixels: the copy's URL is let go once it has loaded.
      image.addEventListener('load', () => URL.revokeObjectURL(local), { once: true });
      image.addEventListener('error', () => {
        URL.revokeObjectURL(local);
        onFail?.();
      }, { once: true });
      image.src = local;
    } catch {
      onFail?.();
    }
  }, { once: true });
  image.src = url;
}

// ---- the composer ----------------------------------------------------------------------

/**
 * Wires the composer. `context`: `active`, `onChange`, `showError` (see `page`), and the
 * elements `button` (attach), `input` (the hidden file input), `list` (where the chips
 * go), `composer` (takes pastes) and `dropZone` (takes dropped files).
 */
export function setupAttachments(context) {
  page = context;
  const { button, input, composer, dropZone } = context;
  button.addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    addFiles([...input.files]);
    // The same file can be chosen again (after removing it).
    input.value = '';
  });
  composer.addEventListener('paste', (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (!files.length) return;
    event.preventDefault();
    addFiles(files);
  });
  const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes('Files');
  const over = (event) => {
    if (!carriesFiles(event) || !page.active()) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    dropZone.classList.add('dropping');
  };
  dropZone.addEventListener('dragenter', over);
  dropZone.addEventListener('dragover', over);
  dropZone.addEventListener('dragleave', (event) => {
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove('dropping');
  });
  dropZone.addEventListener('drop', (event) => {
    dropZone.classList.remove('dropping');
    if (!carriesFiles(event) || !page.active()) return;
    event.preventDefault();
    addFiles([...event.dataTransfer.files]);
  });
  // A file dropped anywhere else would make the browser leave the page to show it,
  // losing the conversation and every pending upload.
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (event) => {
      if (carriesFiles(event) && !event.defaultPrevented) event.preventDefault();
    });
  }
}

function pendingOf(conversationId) {
  let files = pending.get(conversationId);
  if (!files) {
    files = [];
    pending.set(conversationId, files);
  }
  return files;
}

/** Uploads `files` to the open conversation, as many as one message may carry. */
function addFiles(files) {
  const conversationId = page.active();
  if (!conversationId || !files.length) return;
  const queued = pendingOf(conversationId);
  const room = Math.max(0, MAX_PER_MESSAGE - queued.filter((file) => file.state !== 'failed').length);
  const taken = files.slice(0, room);
  const left = files.length - taken.length;
  page.showError(left
    ? `A message carries at most ${MAX_PER_MESSAGE} files: ${left} ${left === 1 ? 'was' : 'were'} left out.`
    : '');
  for (const file of taken) start(conversationId, file);
  showPending();
  page.onChange();
}

function start(conversationId, file) {
  const item = {
    key: crypto.randomUUID(),
    name: file.name || 'pasted file',
    size: file.size,
    state: 'queued',
    sent: 0,
    attachment: null,
    error: '',
    abort: null,
    element: null,
  };
  pendingOf(conversationId).push(item);
  queue.push({ conversationId, file, item });
  nextUploads();
}

/** Starts waiting uploads while fewer than `PARALLEL_UPLOADS` are going. */
function nextUploads() {
  while (uploading < PARALLEL_UPLOADS && queue.length) {
    const { conversationId, file, item } = queue.shift();
    // Removed while it waited.
    if (item.state !== 'queued') continue;
    send(conversationId, file, item);
  }
}

function send(conversationId, file, item) {
  item.state = 'uploading';
  uploading += 1;
  if (item.element) {
    item.element.className = 'upload uploading';
    item.element.dataset.state = 'uploading';
    const removeButton = item.element.querySelector('.upload-remove');
    removeButton?.setAttribute('aria-label', `Cancel uploading ${item.name}`);
  }
  showProgress(item);
  const path = `/api/conversations/${encodeURIComponent(conversationId)}/attachments`;
  const { done, abort } = upload(path, file, (sent, total) => {
    item.sent = sent;
    item.total = total;
    showProgress(item);
  });
  item.abort = abort;
  done.then((attachment) => {
    item.state = 'done';
    item.attachment = attachment;
  }, (error) => {
    item.state = 'failed';
    item.error = describe(error);
  }).finally(() => {
    uploading -= 1;
    nextUploads();
    // A removed chip's upload is aborted: nothing to show.
    if (!pendingOf(conversationId).includes(item)) return;
    if (conversationId === page.active()) showPending();
    page.onChange();
  });
}

/** Drops a pending file (cancelling its upload if it is still going). */
function remove(conversationId, item) {
  const files = pendingOf(conversationId);
  const at = files.indexOf(item);
  if (at < 0) return;
  files.splice(at, 1);
  if (item.state === 'uploading') item.abort?.();
  // A waiting one is skipped when its turn comes.
  if (item.state === 'queued') item.state = 'removed';
  showPending();
  page.onChange();
  // The chip and its button are gone: keep the keyboard near them.
  page.button.focus();
}

/** Shows the open conversation's pending files (none when no conversation is open). */
export function showPending() {
  if (!page) return;
  const conversationId = page.active();
  const files = conversationId ? pendingOf(conversationId) : [];
  page.list.replaceChildren(...files.map((item) => chip(conversationId, item)));
  page.list.hidden = !files.length;
}

function chip(conversationId, item) {
  const status = node('span', { className: 'upload-status' });
  const progress = node('progress', { label: `Uploading ${item.name}` });
  progress.max = 100;
  let preview = node('span', { className: 'att-icon', text: fileBadge(item.name) });
  if (item.state === 'done' && item.attachment?.thumbnail_url) {
    const badge = preview;
    preview = Object.assign(node('img', { className: 'upload-thumb' }), { alt: '', width: 32, height: 32 });
    showImage(preview, brokerUrl(item.attachment, true), () => preview.replaceWith(badge));
  }
  preview.setAttribute('aria-hidden', 'true');
  const removeButton = node('button', {
    className: 'upload-remove',
    text: '✕',
    label: item.state === 'uploading' ? `Cancel uploading ${item.name}` : `Remove ${item.name}`,
    title: 'Remove',
  });
  removeButton.addEventListener('click', () => remove(conversationId, item));
  const element = node('li', { className: `upload ${item.state}` },
    preview,
    node('span', { className: 'upload-text' },
      node('span', { className: 'upload-name', text: item.name, title: item.name }),
      node('span', { className: 'upload-size', text: formatSize(item.size) }),
      item.state === 'uploading' || item.state === 'queued' ? progress : null,
      status),
    removeButton);
  element.dataset.state = item.state;
  item.element = element;
  if (item.state === 'failed') {
    status.textContent = item.error;
    status.setAttribute('role', 'alert');
  } else if (item.state === 'done') status.textContent = 'Ready';
  else if (item.state === 'queued') status.textContent = 'Waiting…';
  showProgress(item);
  return element;
}

function showProgress(item) {
  if (item.state !== 'uploading' || !item.element) return;
  const total = item.total || item.size || 1;
  const percent = Math.min(100, Math.round((item.sent / total) * 100));
  const progress = item.element.querySelector('progress');
  if (progress) progress.value = percent;
  const status = item.element.querySelector('.upload-status');
  if (status) status.textContent = `${percent} %`;
}

/**
 * The open conversation's files to send: `ready` (the uploaded attachments) and `busy`
 * (some are still uploading).
 */
export function pendingFor(conversationId) {
  const files = pending.get(conversationId) || [];
  return {
    ready: files.filter((file) => file.state === 'done').map((file) => file.attachment),
    busy: files.some((file) => file.state === 'uploading' || file.state === 'queued'),
  };
}

/** Takes the uploaded files for a message being sent; failed ones go too. */
export function takeReady(conversationId) {
  const files = pending.get(conversationId) || [];
  const ready = files.filter((file) => file.state === 'done').map((file) => file.attachment);
  pending.set(conversationId, files.filter((file) => file.state === 'uploading' || file.state === 'queued'));
  showPending();
  page.onChange();
  return ready;
}

/** Puts back the files of a message that was not sent, so they can go with the next. */
export function giveBack(conversationId, attachments) {
  if (!attachments?.length) return;
  const files = pendingOf(conversationId);
  const known = new Set(files.map((file) => file.attachment?.id));
  const back = attachments.filter((attachment) => !known.has(attachment.id)).map((attachment) => ({
    key: crypto.randomUUID(),
    name: attachment.name,
    size: attachment.size,
    state: 'done',
    sent: attachment.size,
    attachment,
    error: '',
    abort: null,
    element: null,
  }));
  files.unshift(...back);
  if (conversationId === page.active()) showPending();
  page.onChange();
}

// ---- in messages -----------------------------------------------------------------------

/** The files of a message: image previews and file chips, in the order sent. */
export function attachmentList(attachments) {
  const box = node('div', { className: 'attachments' });
  for (const attachment of attachments) {
    box.append(attachment.thumbnail_url ? imagePreview(attachment) : fileChip(attachment));
  }
  return box;
}

function imagePreview(attachment) {
  const size = fitted(attachment.width, attachment.height, PREVIEW_MAX);
  const image = node('img');
  image.alt = attachment.name;
  image.loading = 'lazy';
  image.decoding = 'async';
  // Sized before it loads, so the history does not jump as previews arrive.
  if (size) [image.width, image.height] = size;
  const open = node('button', {
    className: 'att-image',
    label: `Open ${attachment.name} full size`,
    title: `${attachment.name} (${formatSize(attachment.size)})`,
  }, image);
  open.addEventListener('click', () => openLightbox(attachment));
  // A preview that cannot be had (the file was removed): the name still shows.
  showImage(image, brokerUrl(attachment, true), () => open.replaceWith(fileChip(attachment)));
  return open;
}

function fileChip(attachment) {
  const link = node('a', {
    className: 'att-file',
    label: `Download ${attachment.name}, ${formatSize(attachment.size)}`,
    title: attachment.name,
  },
  node('span', { className: 'att-icon', text: fileBadge(attachment.name) }),
  node('span', { className: 'att-text' },
    node('span', { className: 'att-name', text: attachment.name }),
    node('span', { className: 'att-size', text: formatSize(attachment.size) })));
  link.querySelector('.att-icon').setAttribute('aria-hidden', 'true');
  // Anything but an image is served as a download (Content-Disposition: attachment).
  link.href = brokerUrl(attachment, false);
  link.download = attachment.name;
  return link;
}

// ---- the full-size view ----------------------------------------------------------------

function lightboxDialog() {
  if (lightbox) return lightbox;
  const frame = node('div', { className: 'lightbox-frame' });
  const name = node('span', { className: 'lightbox-name' });
  name.id = 'lightbox-name';
  const size = node('span', { className: 'lightbox-size' });
  const download = node('a', { className: 'button small', text: 'Download' });
  const close = node('button', { className: 'small', text: 'Close', label: 'Close the full-size view' });
  const dialog = node('dialog', { className: 'lightbox' },
    frame,
    node('div', { className: 'lightbox-bar' },
      node('span', { className: 'lightbox-title' }, name, ' ', size), download, close));
  dialog.setAttribute('aria-labelledby', 'lightbox-name');
  close.addEventListener('click', () => dialog.close());
  // A click on the backdrop (the dialog itself) or on the picture closes it; Esc too (the
  // dialog's own behaviour).
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog || event.target.closest?.('.lightbox-frame')) dialog.close();
  });
  // The picture goes with the view: a large original is not kept in the page.
  dialog.addEventListener('close', () => frame.replaceChildren());
  download.addEventListener('click', (event) => saveCopy(event, download));
  document.body.append(dialog);
  lightbox = { dialog, frame, name, size, download };
  return lightbox;
}

function openLightbox(attachment) {
  const view = lightboxDialog();
  const url = brokerUrl(attachment, false);
  // A new picture each time: a late answer for the previous one cannot land in this one.
  const image = node('img', { className: 'lightbox-image' });
  image.alt = attachment.name;
  if (attachment.width && attachment.height) {
    image.width = attachment.width;
    image.height = attachment.height;
  }
  view.frame.replaceChildren(image);
  showImage(image, url, () => {
    view.frame.replaceChildren(node('p', { className: 'lightbox-missing', text: 'The picture cannot be shown.' }));
  });
  view.name.textContent = attachment.name;
  const pixels = attachment.width ? ` · ${attachment.width} × ${attachment.height}` : '';
  view.size.textContent = `${formatSize(attachment.size)}${pixels}`;
  view.download.href = url;
  view.download.download = attachment.name;
  view.download.setAttribute('aria-label', `Download ${attachment.name}`);
  view.dialog.showModal();
}

/**
 * Saves the image under its own name. The broker shows images inline and is another
 * origin than these pages, where browsers ignore `download`: fetch it (with the session
 * cookie) and save the copy from this page's own blob URL.
 */
async function saveCopy(event, link) {
  event.preventDefault();
  try {
    const response = await fetch(link.href, { credentials: 'include' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const blob = await response.blob();
    const local = URL.createObjectURL(blob);
    const save = Object.assign(document.createElement('a'), { href: local, download: link.download });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(local), 10_000);
  } catch {
    page?.showError('The file could not be downloaded. Please try again.');
  }
}
