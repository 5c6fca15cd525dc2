// The live-updates client for GET /api/v1/ws.
//
// Opens `new WebSocket(url, ["bearer", accessToken])`. Server frames (JSON text):
//   {"type":"ready","lastSeq":N}                       once after connect (N = the organization's newest seq)
//   {"seq":42,"type":"interaction.created"|"sentiment.scored"|"pattern.detected"|"alert","data":{...}}
//   {"type":"alert","data":{...}}                      a node's own alert (admins only; unnumbered)
//   {"type":"batch","events":[<event frames>]}
//   {"type":"resync"}                                  reload state over REST
// Client frame: {"type":"resume","lastSeq":41}, sent right after `open` when events (or a `ready`) were
// seen before, so the server replays what was missed.
//
// Reconnects with exponential backoff and full jitter (base 500 ms, cap 15 s; reset once a connection has
// stayed up for STABLE_MS), at once on the browser's `online` event or when the tab becomes visible. A
// close with code 4401 (token expired) or a refused upgrade with an expired token gets a fresh access
// token first.

const BASE_MS = 500;
const CAP_MS = 15_000;
const STABLE_MS = 10_000;
/** After this many failed attempts in a row the state shows "offline" (attempts go on). */
const OFFLINE_AFTER = 6;
/** How many recent sequence numbers are remembered to drop duplicates. */
const SEEN_MAX = 1000;

export class LiveClient {
  /**
   * @param {object} o
   * @param {() => string|null} o.token             the current access token
   * @param {() => Promise<string>} o.refreshToken  gets a fresh access token (rejects if impossible)
   * @param {() => boolean} o.tokenExpired          whether the access token is past its lifetime
   * @param {() => Promise<void>} o.probeAuth       an authenticated REST call (refreshes on a 401)
   * @param {(type: string, data: any, seq: number) => void} o.onEvent
   * @param {(why: string) => void} o.onResync      reload KPIs, charts, table and feed over REST
   * @param {(state: 'live'|'reconnecting'|'offline', info: object) => void} o.onState
   */
  constructor(o) {
    this.o = o;
    this.ws = null;
    this.state = 'offline';
    this.running = false;
    this.attempt = 0;
    this.failures = 0;
    this.timer = null;
    this.stableTimer = null;
    this.nextAt = 0;
    /** The highest sequence number seen (from events or `ready`); null before the first connection. */
    this.lastSeq = null;
    this.seen = new Set();
    this.connReady = null;
    this.connectedOnce = false;
    // Back online: a socket that survived the outage may be half-open (browsers send no pings), so
    // start a fresh one at once; the resume frame fills any gap.
    this.onOnline = () => {
      if (!this.running) return;
      this.dropSocket(4000, 'network changed');
      this.reconnectNow('online');
    };
    this.onOffline = () => {
      if (this.running) this.setState('offline');
    };
    this.onVisible = () => {
      if (document.visibilityState === 'visible' && !this.ws) this.reconnectNow('visible');
    };
  }

  url() {
    const scheme = location.protocol === 'http:' ? 'ws:' : 'wss:';
    return `${scheme}//${location.host}/api/v1/ws`;
  }

  start() {
    if (this.running) return;
    this.running = true;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.connect();
  }

  /** Closes for good (logout). */
  stop() {
    this.running = false;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    this.dropSocket(1000, 'logout');
    this.lastSeq = null;
    this.seen.clear();
    this.setState('offline');
  }

  /** Closes the current socket without triggering a reconnect. */
  dropSocket(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  /** Skips the backoff wait (online event, visible tab, a click on the indicator). */
  reconnectNow(why) {
    if (!this.running || this.ws) return;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect(why);
  }

  setState(state, extra = {}) {
    this.state = state;
    this.o.onState(state, { attempt: this.attempt, nextAt: this.nextAt, ...extra });
  }

  connect() {
    if (!this.running) return;
    const token = this.o.token();
    if (!token) return;
    let ws;
    try {
      ws = new WebSocket(this.url(), ['bearer', token]);
    } catch {
      this.scheduleReconnect(false, null);
      return;
    }
    this.ws = ws;
    this.connReady = null;
    let opened = false;

    ws.onopen = () => {
      opened = true;
      // What the server agreed to (permessage-deflate), for the browser test and for debugging.
      document.body.dataset.wsExtensions = ws.extensions || '';
      this.failures = 0;
      this.setState('live');
      if (this.lastSeq != null) this.sendFrame({ type: 'resume', lastSeq: this.lastSeq });
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, STABLE_MS);
      this.connectedOnce = true;
    };

    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.handleFrame(frame);
    };

    ws.onerror = () => {
      /* a close event always follows */
    };

    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.stableTimer);
      this.scheduleReconnect(opened, ev.code);
    };
  }

  sendFrame(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  async scheduleReconnect(wasOpen, code) {
    if (!this.running) return;
    this.failures += 1;
    // 4401: the server closed because the access token expired. A refused upgrade (never opened) may
    // be an expired or revoked token too: the browser does not say, so ask the REST API, whose 401
    // handling refreshes the token (or ends the session).
    let refreshed = false;
    if (code === 4401 || (!wasOpen && this.o.tokenExpired())) {
      try {
        await this.o.refreshToken();
        refreshed = true;
      } catch {
        /* network failure: keep backing off; auth failure: the session ends and stop() follows */
      }
    } else if (!wasOpen && navigator.onLine !== false) {
      try {
        await this.o.probeAuth();
      } catch {
        /* unreachable server: back off */
      }
    }
    if (!this.running || this.ws) return;
    const exp = Math.min(CAP_MS, BASE_MS * 2 ** this.attempt);
    const delay = refreshed && this.attempt === 0 ? 0 : Math.floor(Math.random() * exp);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.nextAt = Date.now() + delay;
    const offline = navigator.onLine === false || this.failures >= OFFLINE_AFTER;
    this.setState(offline ? 'offline' : 'reconnecting', { code });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  handleFrame(frame) {
    if (!frame || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'ready': {
        const n = Number(frame.lastSeq);
        if (!Number.isFinite(n)) return;
        this.connReady = n;
        // On a fresh start, `ready` is the point from which events arrive live. When resuming, the
        // replay brings the numbers in between, so lastSeq stays until those arrive.
        if (this.lastSeq == null) this.lastSeq = n;
        return;
      }
      case 'batch':
        if (Array.isArray(frame.events)) for (const e of frame.events) this.handleFrame(e);
        return;
      case 'resync':
        // Everything up to the connection's `ready` comes from the REST reload; later events arrive live.
        this.seen.clear();
        if (this.connReady != null) this.lastSeq = this.connReady;
        this.o.onResync('server');
        return;
      case 'alert':
        // The nodes' own alerts are not events of the organization: they come unnumbered, to admins
        // only, and GET /api/v1/alerts lists the current ones after a reconnect.
        if (frame.seq == null) {
          try {
            this.o.onEvent('alert', frame.data, null);
          } catch (e) {
            setTimeout(() => {
              throw e;
            });
          }
          return;
        }
        break;
      default:
        break;
    }
    if (typeof frame.type !== 'string' || frame.seq == null) return;
    const seq = Number(frame.seq);
    if (!Number.isFinite(seq)) return;
    // Replayed and live events may interleave after a resume: drop only exact repeats.
    if (this.seen.has(seq)) return;
    this.seen.add(seq);
    if (this.seen.size > SEEN_MAX) {
      const drop = [...this.seen].sort((a, b) => a - b).slice(0, this.seen.size - SEEN_MAX / 2);
      for (const s of drop) this.seen.delete(s);
    }
    if (this.lastSeq == null || seq > this.lastSeq) this.lastSeq = seq;
    try {
      this.o.onEvent(frame.type, frame.data, seq);
    } catch (e) {
      // A bad event must not stop the stream; report it where developers look.
      setTimeout(() => {
        throw e;
      });
    }
  }
}
