// Small DOM and formatting helpers. User data only ever goes into the page as text (textContent),
// never as HTML.

/** Shorthand for document.getElementById. */
export const $ = (id) => document.getElementById(id);

/**
 * Creates an element. `props`: className, text (textContent), title, dataset {k: v}, attrs {name: value}
 * (set with setAttribute; "style" and event-handler attributes are refused), on {event: handler}.
 * Children may be nodes, strings (as text) or null/false (skipped).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text != null) node.textContent = String(props.text);
  if (props.title != null) node.title = String(props.title);
  if (props.dataset) for (const [k, v] of Object.entries(props.dataset)) node.dataset[k] = String(v);
  if (props.attrs) {
    for (const [k, v] of Object.entries(props.attrs)) {
      if (k === 'style' || k.startsWith('on')) throw new Error(`el(): attribute ${k} is not allowed`);
      if (v === false || v == null) continue;
      node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  if (props.on) for (const [ev, fn] of Object.entries(props.on)) node.addEventListener(ev, fn);
  for (const child of children) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Removes every child of a node. */
export function clear(node) {
  node.replaceChildren();
}

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const pctFmt = new Intl.NumberFormat('en-US', { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });

export const fmt = {
  int: (n) => (n == null || Number.isNaN(n) ? '—' : intFmt.format(n)),
  pct: (x) => (x == null || Number.isNaN(x) ? '—' : pctFmt.format(x)),
  /** A sentiment score in [-1, 1], signed, two decimals. */
  score: (x) => (x == null || Number.isNaN(x) ? '—' : (x > 0 ? '+' : x < 0 ? '−' : '') + Math.abs(x).toFixed(2)),
  /** "2026-11-30 03:39:59" in UTC. */
  dateTime: (iso) => {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().slice(0, 19).replace('T', ' ');
  },
  /** "03:39:59" when the time is today (UTC), else "11-29 03:39". */
  feedTime: (iso) => {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '—';
    const s = d.toISOString();
    if (s.slice(0, 10) === new Date().toISOString().slice(0, 10)) return s.slice(11, 19);
    return `${s.slice(5, 10)} ${s.slice(11, 16)}`;
  },
  shortId: (id) => (id ? String(id).slice(0, 8) : '—'),
  /** "churn_risk" → "Churn risk". */
  words: (s) => {
    const t = String(s ?? '').replace(/[_.-]+/g, ' ').trim();
    return t ? t[0].toUpperCase() + t.slice(1) : '—';
  },
};

/** The CSS class of a sentiment label or score. */
export function sentimentClass(sentiment) {
  if (!sentiment) return 'sent-pending';
  const label = sentiment.label || (sentiment.score > 0.05 ? 'positive' : sentiment.score < -0.05 ? 'negative' : 'neutral');
  return label === 'positive' ? 'sent-pos' : label === 'negative' ? 'sent-neg' : 'sent-neu';
}

/**
 * A chip showing a sentiment (label and score); while it is null, "scoring…" for an interaction with
 * text and "—" for one without (page views, app opens: nothing to score).
 */
export function sentimentChip(sentiment, hasText = true) {
  if (!sentiment && !hasText) return el('span', { className: 'chip sent-none', text: '—', title: 'No text to score' });
  if (!sentiment) return el('span', { className: 'chip sent-pending', text: 'scoring…', title: 'Not scored yet' });
  const label = sentiment.label || '';
  const title = `${label} · score ${fmt.score(sentiment.score)} · confidence ${fmt.pct(sentiment.confidence)}\n`
    + `positive ${fmt.pct(sentiment.positive)} · neutral ${fmt.pct(sentiment.neutral)} · negative ${fmt.pct(sentiment.negative)}`;
  return el('span', { className: `chip ${sentimentClass(sentiment)}`, title },
    el('span', { className: 'chip-label', text: label }), ' ', el('span', { className: 'chip-score', text: fmt.score(sentiment.score) }));
}

/** The color class of an average score (no label). */
export function scoreClass(x) {
  if (x == null) return '';
  return x > 0.05 ? 'pos' : x < -0.05 ? 'neg' : 'neu';
}

/** Start of today, UTC, as RFC 3339. */
export function todayStartUtc(now = new Date()) {
  return `${now.toISOString().slice(0, 10)}T00:00:00Z`;
}

/** A date input's value ("YYYY-MM-DD") as RFC 3339 midnight UTC, optionally shifted by whole days. */
export function dateToRfc3339(value, plusDays = 0) {
  if (!value) return '';
  const d = new Date(`${value}T00:00:00Z`);
  if (Number.isNaN(d.getTime())) return '';
  d.setUTCDate(d.getUTCDate() + plusDays);
  return `${d.toISOString().slice(0, 10)}T00:00:00Z`;
}

/** A query string from an object, skipping empty values. */
export function qs(params) {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === '' || (Array.isArray(v) && v.length === 0)) continue;
    sp.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  const s = sp.toString();
  return s ? `?${s}` : '';
}

/** Transient notices in the corner. kind: info | warn | error. */
export function toast(message, kind = 'info', ms = 8000) {
  const box = $('toasts');
  if (!box) return;
  const node = el('div', { className: `toast toast-${kind}` },
    el('span', { text: message }),
    el('button', { className: 'toast-x', text: '✕', attrs: { type: 'button', 'aria-label': 'Dismiss' }, on: { click: () => node.remove() } }));
  box.prepend(node);
  while (box.children.length > 5) box.lastElementChild.remove();
  setTimeout(() => node.remove(), ms);
}
