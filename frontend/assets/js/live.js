// The broker's WebSocket: JSON frames in and out, a ping every 25 s, and reconnection
// with exponential backoff (and jitter) after the network or the server goes away.
import { WS_URL } from './api.js';

const PING_EVERY_MS = 25_000;
/**
 * The id of the ping sent as a socket opens. The broker answers a ping from the socket's
 * own loop, which starts only once the socket is registered for live events: what a
 * reconnected page fetches after that answer misses nothing (fetched at `open`, a message
 * sent between the fetch and the registration would arrive neither way).
 */
const REGISTERED_PING = 1;
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

/** Close codes after which reconnecting is pointless: the session is over. */
const SESSION_ENDED = new Set([4001, 4003]);

/**
 * One live connection. Callbacks: `onFrame(frame)`, `onState(state, detail)` with state
 * `connecting`, `open`, `waiting` (detail: seconds until the next attempt) or `ended`
 * (detail: the close code), and `onOpen(isReconnect)`, called once the broker has
 * registered the socket for live events (its answer to the first ping).
 */
export class Live {
  constructor({ onFrame, onState, onOpen }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.onOpen = onOpen;
    this.socket = null;
    this.attempt = 0;
    this.opened = false;
    this.timer = null;
    this.pinger = null;
    this.stopped = false;
    window.addEventListener('online', () => this.reconnectNow());
    window.addEventListener('offline', () => this.socket?.close());
  }

  /** Opens the socket (again). */
  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.onState('connecting');
    let socket;
    try {
      socket = new WebSocket(WS_URL);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    let reconnect = false;
    socket.addEventListener('open', () => {
      reconnect = this.opened;
      this.opened = true;
      this.attempt = 0;
      this.onState('open');
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: 'ping' }), PING_EVERY_MS);
      this.send({ type: 'ping', id: REGISTERED_PING });
    });
    socket.addEventListener('message', (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame?.type === 'pong' && frame.id === REGISTERED_PING) {
        this.onOpen(reconnect);
        return;
      }
      if (frame && typeof frame.type === 'string') this.onFrame(frame);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.pinger);
      if (SESSION_ENDED.has(event.code)) {
        this.stopped = true;
        this.onState('ended', event.code);
        return;
      }
      this.scheduleRetry();
    });
  }

  scheduleRetry() {
    if (this.stopped) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt += 1;
    this.onState('waiting', Math.ceil(delay / 1000));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Retries at once (the browser says the network is back). */
  reconnectNow() {
    if (this.stopped || this.isOpen() || this.socket) return;
    this.attempt = 0;
    this.connect();
  }

  /** Whether frames can be sent now. */
  isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Sends a frame; false when the socket is not open. */
  send(frame) {
    if (!this.isOpen()) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Closes for good (signing out). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.socket?.close(1000);
  }
}
