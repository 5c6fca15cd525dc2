// The Insights dashboard: login, KPIs, charts, live feed, filterable table, customer drill-down, export.
// Served from /static/app.js; talks to the same origin only (REST under /api/v1, live updates over
// wss://<host>/api/v1/ws). User data is put into the page with textContent only.

import { api, ApiError, login, logout, refresh, getSession, accessToken, tokenLikelyExpired, sessionEvents } from './api.js';
import { LiveClient } from './live.js';
import { trendChart, channelChart } from './charts.js';
import { $, el, clear, fmt, qs, toast, sentimentChip, scoreClass, todayStartUtc, dateToRfc3339 } from './util.js';

const FEED_MAX = 50;
const SUMMARY_MIN_INTERVAL_MS = 10_000;
const CHANNELS = ['web', 'mobile', 'email', 'chat', 'phone'];
const HISTORY_PAGE_SIZE = 20;

const state = {
  charts: null,
  live: null,
  // KPIs
  today: null, // {start, interactions}
  totals: null, // 30-day totals
  summaryTimer: null,
  summaryLastAt: 0,
  summaryInFlight: null,
  summaryAgain: false,
  trendDays: 30,
  // feed
  feed: [], // interactions, newest first
  feedRows: new Map(), // id -> li
  feedPaused: false,
  feedHeld: [],
  feedLoading: null, // {liveSince: Map}
  // table
  filters: emptyFilters(),
  page: 1,
  pageSize: 25,
  sort: 'timestamp',
  order: 'desc',
  tableAbort: null,
  tableNew: 0,
  // insight alerts, firing first then newest (GET /api/v1/alerts?kind=insight, then `alert` events)
  alerts: [],
  // customer panel
  cp: null, // {id, page, totalPages, profile}
  names: new Map(), // customer id -> display name
  reloading: null,
  reloadAgain: false,
  stale: false,
};

function emptyFilters() {
  return { channels: [], sentimentMin: '', sentimentMax: '', segments: '', q: '', from: '', to: '', customerId: '' };
}

// ---------------------------------------------------------------- views

function showLogin(message) {
  document.body.dataset.view = 'login';
  $('app-view').hidden = true;
  $('login-view').hidden = false;
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('password').value = '';
  ($('email').value ? $('password') : $('email')).focus();
}

function showApp() {
  document.body.dataset.view = 'app';
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  const s = getSession();
  const user = (s && s.user) || {};
  $('user-name').textContent = user.name ? `${user.name} · ${user.role || ''}` : user.email || '';
  $('user-name').title = user.email || '';
  $('org-name').textContent = '';
  startDashboard();
}

function startDashboard() {
  if (!state.charts) state.charts = { trend: trendChart($('chart-trend')), channels: channelChart($('chart-channels')) };
  readHash();
  writeFiltersToForm();
  renderSortHeaders();
  if (!state.live) {
    state.live = new LiveClient({
      token: accessToken,
      refreshToken: refresh,
      tokenExpired: () => tokenLikelyExpired(),
      probeAuth: () => api('/api/v1/me').then(() => {}),
      onEvent,
      onResync: () => reloadAll(),
      onState: renderConnection,
    });
  }
  // Live first, so events that arrive while the REST loads run are merged into what they return.
  state.live.start();
  reloadAll();
}

function teardown() {
  if (state.live) state.live.stop();
  state.live = null;
  if (state.charts) {
    state.charts.trend.destroy();
    state.charts.channels.destroy();
  }
  state.charts = null;
  clearTimeout(state.summaryTimer);
  state.summaryTimer = null;
  state.summaryAgain = false;
  if (state.tableAbort) state.tableAbort.abort();
  state.feed = [];
  state.feedRows.clear();
  state.feedHeld = [];
  clear($('feed'));
  clear($('table').tBodies[0]);
  closeCustomer();
  for (const id of ['kpi-today', 'kpi-sentiment', 'kpi-negative', 'kpi-customers']) {
    $(id).textContent = '—';
    delete $(id).dataset.value;
  }
  state.today = null;
  state.totals = null;
  state.names.clear();
  names.queue.length = 0;
  names.requested.clear();
  renderConnection('offline', {});
}

/** Loads everything over REST (first load and after a `resync`). Overlapping calls collapse into one more. */
async function reloadAll() {
  if (state.reloading) {
    state.reloadAgain = true;
    return state.reloading;
  }
  state.reloading = (async () => {
    do {
      state.reloadAgain = false;
      state.stale = false;
      await Promise.allSettled([refreshSummaries(true), loadTable(), loadFeed(), loadAlerts()]);
    } while (state.reloadAgain);
  })().finally(() => {
    state.reloading = null;
  });
  return state.reloading;
}

// ---------------------------------------------------------------- connection indicator

function renderConnection(s, info) {
  // Back live after REST calls failed (the server was down when the page loaded, say): reload.
  if (s === 'live' && document.body.dataset.connection !== 'live' && state.stale && state.live) {
    state.stale = false;
    reloadAll();
  }
  document.body.dataset.connection = s;
  const text = s === 'live' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : 'offline';
  $('connection-text').textContent = text;
  const btn = $('connection');
  btn.dataset.state = s;
  if (s === 'live') btn.title = 'Live updates connected';
  else if (info && info.nextAt) btn.title = `Live updates disconnected; next try at ${new Date(info.nextAt).toLocaleTimeString()}. Click to retry now.`;
  else btn.title = 'Live updates disconnected. Click to retry now.';
}

// ---------------------------------------------------------------- KPIs, charts, most negative

/** Dashboard (30 d and today) and trends, at most once every 10 s unless forced. */
function refreshSummaries(force = false) {
  if (state.summaryInFlight) {
    // Whatever changed after the running request started needs one more round.
    if (force) state.summaryAgain = true;
    else scheduleSummaries(SUMMARY_MIN_INTERVAL_MS);
    return state.summaryInFlight;
  }
  const since = Date.now() - state.summaryLastAt;
  if (!force && since < SUMMARY_MIN_INTERVAL_MS) {
    scheduleSummaries(SUMMARY_MIN_INTERVAL_MS - since);
    return Promise.resolve();
  }
  clearTimeout(state.summaryTimer);
  state.summaryTimer = null;
  state.summaryLastAt = Date.now();
  state.summaryInFlight = Promise.allSettled([loadKpis(), loadTrend()]).finally(() => {
    state.summaryInFlight = null;
    if (state.summaryAgain && state.charts) {
      state.summaryAgain = false;
      refreshSummaries(true);
    }
  });
  return state.summaryInFlight;
}

function scheduleSummaries(ms) {
  if (state.summaryTimer) return;
  state.summaryTimer = setTimeout(() => {
    state.summaryTimer = null;
    refreshSummaries();
  }, Math.max(0, ms));
}

async function loadKpis() {
  const start = todayStartUtc();
  try {
    const [month, today] = await Promise.all([
      api('/api/v1/insights/dashboard'),
      api(`/api/v1/insights/dashboard${qs({ from: start, interval: 'day' })}`),
    ]);
    state.totals = { ...month.totals };
    state.today = { start, interactions: today.totals.interactions, customers: today.totals.customers };
    renderKpis();
    if (state.charts) state.charts.channels.update(month.byChannel);
    renderNegativeCustomers(month.topNegativeCustomers || []);
    $('kpi-today').closest('.kpi').classList.remove('kpi-error');
  } catch (e) {
    if (handledAuth(e)) return;
    for (const id of ['kpi-today-sub', 'kpi-sentiment-sub']) $(id).textContent = `could not load: ${e.message}`;
  }
}

function setKpi(id, text, value, cls) {
  const node = $(id);
  node.textContent = text;
  if (value == null) delete node.dataset.value;
  else node.dataset.value = String(value);
  node.classList.remove('pos', 'neg', 'neu');
  if (cls) node.classList.add(cls);
}

function renderKpis() {
  const t = state.totals;
  const d = state.today;
  if (d) {
    setKpi('kpi-today', fmt.int(d.interactions), d.interactions);
    $('kpi-today-sub').textContent = `${fmt.int(d.customers)} customers since 00:00 UTC`;
  }
  if (t) {
    setKpi('kpi-sentiment', fmt.score(t.averageSentiment), t.averageSentiment ?? '', scoreClass(t.averageSentiment));
    $('kpi-sentiment-sub').textContent = `${fmt.int(t.scored)} scored · ${fmt.int(t.unscored)} unscored (no text or pending)`;
    setKpi('kpi-negative', fmt.pct(t.negativeShare), t.negativeShare ?? '', t.negativeShare > 0.3 ? 'neg' : '');
    $('kpi-negative-sub').textContent = 'of scored interactions';
    setKpi('kpi-customers', fmt.int(t.customers), t.customers);
    $('kpi-customers-sub').textContent = `${fmt.int(t.interactions)} interactions in 30 days`;
  }
}

async function loadTrend() {
  const to = new Date();
  const from = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() - (state.trendDays - 1)));
  try {
    const body = await api(`/api/v1/insights/trends${qs({ interval: 'day', from: from.toISOString(), to: to.toISOString() })}`);
    if (state.charts) state.charts.trend.update(body.points);
  } catch (e) {
    if (handledAuth(e)) return;
    if (e.status !== 0) toast(`Trend: ${e.message}`, 'error');
  }
}

function renderNegativeCustomers(list) {
  const ol = $('negative-customers');
  clear(ol);
  $('negative-empty').hidden = list.length > 0;
  for (const c of list.slice(0, 8)) {
    const name = c.name || c.externalId || fmt.shortId(c.customerId);
    if (c.name || c.externalId) setName(c.customerId, name);
    ol.append(el('li', {},
      customerButton(c.customerId, name),
      el('span', { className: 'muted small', text: c.segment || '' }),
      el('span', { className: 'spacer' }),
      el('span', { className: 'small muted', text: `${fmt.int(c.negative)}/${fmt.int(c.interactions)} neg` }),
      el('span', { className: `score ${scoreClass(c.averageSentiment)}`, text: fmt.score(c.averageSentiment) })));
  }
}

// ---------------------------------------------------------------- live events

function onEvent(type, data) {
  if (!data) return;
  switch (type) {
    case 'interaction.created':
      onInteraction(data);
      break;
    case 'sentiment.scored':
      onScored(data);
      break;
    case 'pattern.detected':
      if (state.cp && state.cp.id === data.customerId) renderPatterns(data.patterns || []);
      break;
    case 'alert':
      if (data.kind === 'insight') upsertAlert(data);
      toast(alertText(data), data.state === 'resolved' ? 'info' : 'warn', 15_000);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- insight alerts

async function loadAlerts() {
  try {
    const body = await api(`/api/v1/alerts${qs({ kind: 'insight', pageSize: 20 })}`);
    state.alerts = body.data || [];
    renderAlerts();
  } catch (e) {
    if (handledAuth(e)) return;
    if (e.status !== 0) toast(`Alerts: ${e.message}`, 'error');
  }
}

/** An alert pushed live: replaces the one with its id, or joins the list. */
function upsertAlert(alert) {
  const i = state.alerts.findIndex((a) => a.id === alert.id);
  if (i >= 0) state.alerts[i] = alert;
  else state.alerts.unshift(alert);
  state.alerts.sort((a, b) => (a.state === 'firing') !== (b.state === 'firing')
    ? (a.state === 'firing' ? -1 : 1)
    : Date.parse(b.startedAt) - Date.parse(a.startedAt));
  state.alerts = state.alerts.slice(0, 20);
  renderAlerts();
}

function renderAlerts() {
  const ol = $('alerts');
  clear(ol);
  const firing = state.alerts.filter((a) => a.state === 'firing').length;
  $('alerts-count').textContent = state.alerts.length ? `${firing} firing` : '';
  $('alerts-empty').hidden = state.alerts.length > 0;
  for (const a of state.alerts) {
    const d = a.details || {};
    ol.append(el('li', { className: `alert-item alert-${a.state}` },
      el('button', {
        className: 'alert-open',
        attrs: { type: 'button', title: 'Show the interactions behind this alert' },
        dataset: { alert: a.id, rule: a.rule, dimension: d.dimension || '', state: a.state },
        on: { click: () => openAlert(a) },
      },
      el('span', { className: `badge badge-${a.state}`, text: a.state === 'firing' ? 'firing' : 'resolved' }),
      el('span', { className: 'alert-summary', text: a.summary }),
      el('span', { className: 'muted small', text: `${fmt.feedTime(a.startedAt)}${a.resolvedAt ? ` – ${fmt.feedTime(a.resolvedAt)}` : ''}` }))));
  }
  if (state.charts) state.charts.trend.markers(state.alerts.map((a) => Date.parse(a.startedAt) / 1000));
}

/** One click from an alert to its interactions: the table filtered to its dimension and window. */
function openAlert(a) {
  const f = (a.details && a.details.filter) || {};
  const next = emptyFilters();
  if (f.channels) next.channels = [f.channels];
  if (f.segments) next.segments = f.segments;
  next.from = f.from || '';
  next.to = f.to || '';
  state.filters = next;
  state.page = 1;
  closeCustomer();
  writeFiltersToForm();
  writeHash();
  loadTable();
  $('table').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

function alertText(data) {
  if (typeof data === 'string') return data;
  const msg = data.summary || data.message || data.title || data.description || data.rule || 'Alert';
  return `${data.state === 'resolved' ? 'Resolved' : 'Alert'}: ${msg}`;
}

function onInteraction(item) {
  if (!item.id) return;
  const known = state.feedRows.has(item.id) || state.feed.some((f) => f.id === item.id);
  if (state.feedLoading) state.feedLoading.liveSince.set(item.id, item);
  if (!known) {
    if (state.feedPaused) {
      if (!state.feedHeld.some((f) => f.id === item.id)) state.feedHeld.unshift(item);
      state.feedHeld.length = Math.min(state.feedHeld.length, FEED_MAX);
      renderPauseButton();
    } else {
      feedPrepend(item);
    }
    // KPIs move at once; the server's figures replace them at the next summary refresh.
    if (state.today && Date.parse(item.timestamp) >= Date.parse(state.today.start)) state.today.interactions += 1;
    if (state.totals) state.totals.interactions += 1;
    renderKpis();
    state.tableNew += 1;
    renderTableNew();
    if (state.cp && state.cp.id === item.customerId) cpLiveInteraction(item);
  }
  refreshSummaries();
}

function onScored(data) {
  const id = data.interactionId;
  const s = data.sentiment || null;
  const patch = (item) => {
    if (item && item.id === id) {
      item.sentiment = s;
      item.processedAt = data.processedAt;
    }
  };
  state.feed.forEach(patch);
  state.feedHeld.forEach(patch);
  const li = state.feedRows.get(id);
  if (li) {
    const slot = li.querySelector('.feed-sent');
    slot.replaceChildren(sentimentChip(s));
    li.classList.remove('flash');
    void li.offsetWidth; // restart the animation
    li.classList.add('flash');
  }
  for (const tr of document.querySelectorAll(`#table tbody tr[data-id="${CSS.escape(id)}"], #cp-history tbody tr[data-id="${CSS.escape(id)}"]`)) {
    tr.querySelector('.cell-sent').replaceChildren(sentimentChip(s));
  }
  if (state.cp && state.cp.id === data.customerId && data.averageSentiment !== undefined) {
    const dd = document.querySelector('#cp-profile [data-fact="averageSentiment"]');
    if (dd) {
      dd.textContent = fmt.score(data.averageSentiment);
      dd.className = `score ${scoreClass(data.averageSentiment)}`;
    }
  }
  refreshSummaries();
}

// ---------------------------------------------------------------- feed

async function loadFeed() {
  const loading = { liveSince: new Map() };
  state.feedLoading = loading;
  try {
    const body = await api(`/api/v1/interactions${qs({ pageSize: FEED_MAX, sort: 'createdAt', order: 'desc' })}`);
    if (state.feedLoading !== loading) return;
    const ids = new Set(body.data.map((i) => i.id));
    // Events that arrived while the request ran may be newer than its answer: keep them on top.
    const live = [...loading.liveSince.values()].filter((i) => !ids.has(i.id)).reverse();
    // Newest arrivals first; a batch shares one createdAt, so its rows go by their own time.
    const rest = body.data.slice().sort((a, b) => (b.createdAt || '').localeCompare(a.createdAt || '')
      || Date.parse(b.timestamp) - Date.parse(a.timestamp));
    const merged = [...live, ...rest].slice(0, FEED_MAX);
    // Keep sentiments that arrived live but are not yet in the REST answer.
    const known = new Map(state.feed.map((i) => [i.id, i]));
    for (const item of merged) {
      const old = known.get(item.id);
      if (!item.sentiment && old && old.sentiment) item.sentiment = old.sentiment;
    }
    state.feed = merged;
    state.feedHeld = [];
    renderPauseButton();
    renderFeed();
  } catch (e) {
    if (handledAuth(e)) return;
    if (e.status !== 0) toast(`Feed: ${e.message}`, 'error');
  } finally {
    if (state.feedLoading === loading) state.feedLoading = null;
  }
}

function feedRow(item) {
  const content = item.content == null || item.content === ''
    ? el('p', { className: 'feed-content muted', text: `(${item.eventType || 'event'} without content)` })
    : el('p', { className: 'feed-content', text: item.content, title: item.content });
  return el('li', { className: 'feed-row', dataset: { id: item.id, channel: item.channel || '' } },
    el('div', { className: 'feed-meta' },
      el('time', { className: 'feed-time', text: fmt.feedTime(item.timestamp), title: fmt.dateTime(item.timestamp) + ' UTC', attrs: { datetime: item.timestamp } }),
      channelBadge(item.channel),
      customerButton(item.customerId),
      el('span', { className: 'feed-event muted', text: item.eventType || '' }),
      el('span', { className: 'spacer' }),
      el('span', { className: 'feed-sent' }, sentimentChip(item.sentiment, Boolean(item.content)))),
    content);
}

function renderFeed() {
  const ol = $('feed');
  state.feedRows.clear();
  const rows = state.feed.map((item) => {
    const li = feedRow(item);
    state.feedRows.set(item.id, li);
    return li;
  });
  ol.replaceChildren(...rows);
  renderFeedCount();
}

function feedPrepend(item) {
  state.feed.unshift(item);
  const li = feedRow(item);
  li.classList.add('new');
  state.feedRows.set(item.id, li);
  $('feed').prepend(li);
  while (state.feed.length > FEED_MAX) {
    const gone = state.feed.pop();
    const node = state.feedRows.get(gone.id);
    if (node) node.remove();
    state.feedRows.delete(gone.id);
  }
  renderFeedCount();
}

function renderFeedCount() {
  $('feed-empty').hidden = state.feed.length > 0;
  $('feed-count').textContent = state.feed.length ? `latest ${state.feed.length}` : '';
}

function renderPauseButton() {
  const b = $('feed-pause');
  b.setAttribute('aria-pressed', String(state.feedPaused));
  b.textContent = state.feedPaused ? `Resume${state.feedHeld.length ? ` (${state.feedHeld.length} new)` : ''}` : 'Pause';
}

function toggleFeedPause() {
  state.feedPaused = !state.feedPaused;
  if (!state.feedPaused) {
    const held = state.feedHeld.slice().reverse();
    state.feedHeld = [];
    for (const item of held) if (!state.feedRows.has(item.id)) feedPrepend(item);
  }
  renderPauseButton();
}

// ---------------------------------------------------------------- shared bits

function channelBadge(channel) {
  const known = CHANNELS.includes(channel) ? channel : 'other';
  return el('span', { className: `badge ch-${known}`, text: channel || '—' });
}

function customerButton(id, name) {
  if (!name && !state.names.has(id)) wantName(id);
  const label = name || state.names.get(id) || fmt.shortId(id);
  return el('button', {
    className: 'linklike cust',
    text: label,
    title: `Customer ${id}`,
    dataset: { customer: id || '' },
    attrs: { type: 'button' },
  });
}

// Customer names for the buttons: looked up lazily (two requests at a time, each customer once), since
// interactions carry only the customer's id. GET /api/v1/customers/{id} is cached by the server.
const names = { queue: [], active: 0, requested: new Set(), scheduled: false };

function wantName(id) {
  if (!id || names.requested.has(id)) return;
  if (names.requested.size > 2000) names.requested.clear();
  names.requested.add(id);
  names.queue.push(id);
  // After the row that asked is in the page (and a burst of rows has settled).
  if (!names.scheduled) {
    names.scheduled = true;
    setTimeout(() => {
      names.scheduled = false;
      pumpNames();
    }, 50);
  }
}

function pumpNames() {
  while (names.active < 2 && names.queue.length && getSession()) {
    const id = names.queue.shift();
    // Rows scroll out of a busy feed quickly: look up only customers still on screen.
    if (!document.querySelector(`button[data-customer="${CSS.escape(id)}"]`)) {
      names.requested.delete(id);
      continue;
    }
    names.active += 1;
    api(`/api/v1/customers/${encodeURIComponent(id)}`)
      .then((c) => setName(id, c.name || c.externalId))
      .catch((e) => {
        if (e.status === 0) names.requested.delete(id);
      })
      .finally(() => {
        names.active -= 1;
        pumpNames();
      });
  }
}

function setName(id, name) {
  if (!name) return;
  if (state.names.size > 2000) state.names.clear();
  state.names.set(id, name);
  for (const b of document.querySelectorAll(`button[data-customer="${CSS.escape(id)}"]`)) b.textContent = name;
}

/**
 * A 401 that ended the session is handled by the 'expired' listener; nothing more to show. A network
 * failure or a 5xx marks the page stale: it reloads when the live connection comes back.
 */
function handledAuth(e) {
  if (e && (e.status === 0 || e.status >= 500)) state.stale = true;
  return e instanceof ApiError && e.status === 401 && !getSession();
}

// ---------------------------------------------------------------- table and filters

function readFiltersFromForm() {
  const f = $('filters');
  return {
    channels: [...f.querySelectorAll('input[name="channel"]:checked')].map((c) => c.value),
    sentimentMin: $('f-smin').value.trim(),
    sentimentMax: $('f-smax').value.trim(),
    segments: $('f-segment').value.trim(),
    q: $('f-q').value.trim(),
    // An alert's window stays as it is unless its day was changed in the form.
    from: keepInstant(state.filters.from, $('f-from').value),
    to: keepInstant(state.filters.to, $('f-to').value),
    customerId: state.filters.customerId,
  };
}

function keepInstant(current, day) {
  return current && current.includes('T') && current.slice(0, 10) === day ? current : day;
}

function writeFiltersToForm() {
  const f = state.filters;
  for (const c of $('filters').querySelectorAll('input[name="channel"]')) c.checked = f.channels.includes(c.value);
  $('f-smin').value = f.sentimentMin;
  $('f-smax').value = f.sentimentMax;
  $('f-segment').value = f.segments;
  $('f-q').value = f.q;
  $('f-from').value = (f.from || '').slice(0, 10);
  $('f-to').value = (f.to || '').slice(0, 10);
  $('page-size').value = String(state.pageSize);
  renderChips();
}

/** The API's filter parameters: dates as UTC midnights, "to" inclusive of its day. */
function filterParams(f = state.filters) {
  // An alert's window is an instant (with a time); a date from the form is a whole UTC day.
  const instant = (v) => typeof v === 'string' && v.includes('T');
  return {
    from: instant(f.from) ? f.from : dateToRfc3339(f.from),
    to: instant(f.to) ? f.to : dateToRfc3339(f.to, 1),
    channels: f.channels,
    sentimentMin: f.sentimentMin,
    sentimentMax: f.sentimentMax,
    segments: f.segments,
    q: f.q,
    customerId: f.customerId,
  };
}

function writeHash() {
  const f = state.filters;
  const h = qs({ ...f, page: state.page > 1 ? state.page : '', pageSize: state.pageSize !== 25 ? state.pageSize : '',
    sort: state.sort !== 'timestamp' ? state.sort : '', order: state.order !== 'desc' ? state.order : '' });
  history.replaceState(null, '', h ? `#${h.slice(1)}` : location.pathname);
}

function readHash() {
  const sp = new URLSearchParams(location.hash.slice(1));
  const f = emptyFilters();
  f.channels = (sp.get('channels') || '').split(',').filter((c) => CHANNELS.includes(c));
  for (const k of ['sentimentMin', 'sentimentMax', 'segments', 'q', 'from', 'to', 'customerId']) f[k] = sp.get(k) || '';
  state.filters = f;
  state.page = Math.max(1, parseInt(sp.get('page') || '1', 10) || 1);
  const ps = parseInt(sp.get('pageSize') || '25', 10);
  state.pageSize = [25, 50, 100].includes(ps) ? ps : 25;
  state.sort = ['timestamp', 'sentiment', 'channel', 'createdAt'].includes(sp.get('sort')) ? sp.get('sort') : 'timestamp';
  state.order = sp.get('order') === 'asc' ? 'asc' : 'desc';
}

function renderChips() {
  const box = $('filter-chips');
  clear(box);
  const f = state.filters;
  if ((f.from && f.from.includes('T')) || (f.to && f.to.includes('T'))) {
    box.append(el('span', { className: 'fchip', dataset: { window: 'alert' } },
      `window ${f.from ? fmt.feedTime(f.from) : '…'} – ${f.to ? fmt.feedTime(f.to) : '…'}`,
      el('button', {
        className: 'fchip-x', text: '✕', attrs: { type: 'button', 'aria-label': 'Remove the time window' },
        on: { click: () => { state.filters.from = ''; state.filters.to = ''; state.page = 1; writeFiltersToForm(); writeHash(); loadTable(); } },
      })));
  }
  if (state.filters.customerId) {
    const id = state.filters.customerId;
    box.append(el('span', { className: 'fchip' },
      `customer ${state.names.get(id) || fmt.shortId(id)}`,
      el('button', {
        className: 'fchip-x', text: '✕', attrs: { type: 'button', 'aria-label': 'Remove customer filter' },
        on: { click: () => { state.filters.customerId = ''; state.page = 1; renderChips(); loadTable(); } },
      })));
  }
}

function showTableError(e, heading) {
  const box = $('table-error');
  clear(box);
  for (const input of $('filters').querySelectorAll('.invalid')) {
    input.classList.remove('invalid');
    input.removeAttribute('aria-invalid');
  }
  if (!e) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const title = heading || (e.status === 400 ? 'The filters were not accepted' : e.status === 403 ? 'Not allowed'
    : e.status === 429 ? `Too many requests${e.retryAfter ? `; retry in ${e.retryAfter} s` : ''}` : 'Could not load interactions');
  box.append(el('strong', { text: `${title}: ` }), el('span', { text: e.message }));
  if (e.details && e.details.length) {
    const ul = el('ul');
    for (const d of e.details) {
      ul.append(el('li', {}, el('code', { text: d.field }), ` ${d.message}`));
      const input = fieldInput(d.field);
      if (input) {
        input.classList.add('invalid');
        input.setAttribute('aria-invalid', 'true');
      }
    }
    box.append(ul);
  }
}

function fieldInput(field) {
  return {
    from: $('f-from'), to: $('f-to'), sentimentMin: $('f-smin'), sentimentMax: $('f-smax'),
    segments: $('f-segment'), q: $('f-q'), channels: $('filters').querySelector('.f-channels'), pageSize: $('page-size'),
  }[field] || null;
}

async function loadTable() {
  if (state.tableAbort) state.tableAbort.abort();
  const abort = new AbortController();
  state.tableAbort = abort;
  const table = $('table');
  table.classList.add('loading');
  try {
    const body = await api(`/api/v1/interactions${qs({ ...filterParams(), page: state.page, pageSize: state.pageSize, sort: state.sort, order: state.order })}`,
      { signal: abort.signal });
    showTableError(null);
    renderTable(body);
    state.tableNew = 0;
    renderTableNew();
  } catch (e) {
    if (e.name === 'AbortError' || handledAuth(e)) return;
    showTableError(e);
    clear(table.tBodies[0]);
    $('table-empty').hidden = true;
    $('table-summary').textContent = '';
    $('page-info').textContent = '';
  } finally {
    if (state.tableAbort === abort) {
      state.tableAbort = null;
      table.classList.remove('loading');
    }
  }
}

function interactionRow(item, { customer = true } = {}) {
  const cells = [
    el('td', { className: 'nowrap mono', text: fmt.dateTime(item.timestamp) }),
    el('td', {}, channelBadge(item.channel)),
    el('td', { className: 'nowrap', text: item.eventType || '' }),
  ];
  if (customer) {
    cells.push(el('td', {}, customerButton(item.customerId)));
    cells.push(el('td', { className: 'muted', text: item.segment || '' }));
  }
  cells.push(el('td', { className: 'col-content', title: item.content || '' },
    el('div', { className: 'clamp', text: item.content == null ? '' : item.content })));
  cells.push(el('td', { className: 'num cell-sent' }, sentimentChip(item.sentiment, Boolean(item.content))));
  return el('tr', { dataset: { id: item.id } }, ...cells);
}

function renderTable(body) {
  const tbody = $('table').tBodies[0];
  tbody.replaceChildren(...body.data.map((i) => interactionRow(i)));
  const p = body.pagination || {};
  $('table-empty').hidden = body.data.length > 0;
  const total = p.total ?? body.data.length;
  // A total the server counted only up to its bound ("totalRelation": "gte") is a lower bound: shown as
  // "10,000+", and the next page is there as long as the server says another follows.
  const atLeast = p.totalRelation === 'gte';
  const totalText = `${fmt.int(total)}${atLeast ? '+' : ''}`;
  const first = total ? ((p.page || 1) - 1) * (p.pageSize || state.pageSize) + 1 : 0;
  const last = first ? first + body.data.length - 1 : 0;
  $('table-summary').textContent = `${totalText} matching`;
  const pages = atLeast ? `${fmt.int(p.totalPages || 1)}+` : fmt.int(p.totalPages || 1);
  $('page-info').textContent = total ? `${fmt.int(first)}–${fmt.int(last)} of ${totalText} · page ${p.page || state.page} of ${pages}` : '';
  $('page-prev').disabled = (p.page || state.page) <= 1;
  $('page-next').disabled = atLeast ? !p.nextCursor : (p.page || state.page) >= (p.totalPages || 1);
  state.totalPages = atLeast && p.nextCursor ? (p.page || state.page) + 1 : p.totalPages || 1;
}

function renderTableNew() {
  const b = $('table-new');
  b.hidden = state.tableNew === 0;
  b.textContent = `${state.tableNew} new · refresh`;
}

function renderSortHeaders() {
  for (const th of document.querySelectorAll('#table th.sortable')) {
    const on = th.dataset.sort === state.sort;
    th.classList.toggle('sort-asc', on && state.order === 'asc');
    th.classList.toggle('sort-desc', on && state.order === 'desc');
    th.setAttribute('aria-sort', on ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none');
  }
}

function applyFilters() {
  state.filters = readFiltersFromForm();
  state.page = 1;
  writeHash();
  renderChips();
  loadTable();
}

// ---------------------------------------------------------------- export

async function exportCsv() {
  const btn = $('export');
  if (btn.disabled) return;
  state.filters = readFiltersFromForm();
  btn.disabled = true;
  const label = btn.textContent;
  btn.textContent = 'Exporting…';
  try {
    const res = await api(`/api/v1/export/interactions${qs({ format: 'csv', ...filterParams(), sort: state.sort, order: state.order })}`,
      { raw: true, accept: 'text/csv, application/json' });
    const blob = await res.blob();
    const cd = res.headers.get('Content-Disposition') || '';
    const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
    const name = m ? decodeURIComponent(m[1]) : `interactions-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}Z.csv`;
    const url = URL.createObjectURL(blob);
    const a = el('a', { attrs: { href: url, download: name } });
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    showTableError(null);
    toast(`Exported ${name} (${fmt.int(blob.size)} bytes)`, 'info', 5000);
  } catch (e) {
    if (handledAuth(e)) return;
    if (e.status === 403) {
      const role = (getSession() && getSession().user && getSession().user.role) || 'this';
      showTableError(e, `Export is not available to the ${role} role`);
    } else {
      showTableError(e);
    }
    toast(`Export failed: ${e.message}`, 'error');
  } finally {
    btn.disabled = false;
    btn.textContent = label;
  }
}

// ---------------------------------------------------------------- customer panel

async function openCustomer(id) {
  if (!id) return;
  state.cp = { id, page: 1, totalPages: 1, profile: null };
  $('panel-backdrop').hidden = false;
  const panel = $('customer-panel');
  panel.hidden = false;
  panel.dataset.customer = id;
  $('cp-title').textContent = state.names.get(id) || 'Customer';
  $('cp-subtitle').textContent = id;
  $('cp-error').hidden = true;
  clear($('cp-profile'));
  clear($('cp-patterns'));
  clear($('cp-attrs'));
  clear($('cp-history').tBodies[0]);
  $('cp-history-count').textContent = '';
  $('cp-close').focus();
  await Promise.all([loadCustomerProfile(id), loadCustomerHistory()]);
}

function closeCustomer() {
  state.cp = null;
  $('customer-panel').hidden = true;
  $('panel-backdrop').hidden = true;
}

async function loadCustomerProfile(id) {
  try {
    const c = await api(`/api/v1/customers/${encodeURIComponent(id)}`);
    if (!state.cp || state.cp.id !== id) return;
    state.cp.profile = c;
    const name = c.name || c.externalId;
    if (name) setName(id, name);
    $('cp-title').textContent = name || 'Customer';
    $('cp-subtitle').textContent = `${c.externalId || ''} · ${id}`;
    const dl = $('cp-profile');
    clear(dl);
    const fact = (label, value, key, cls) => {
      dl.append(el('dt', { text: label }), el('dd', { text: value, className: cls || '', dataset: key ? { fact: key } : undefined }));
    };
    fact('Name', c.name || '—');
    fact('Email', c.email || '—');
    fact('External ID', c.externalId || '—');
    fact('Segment', c.segment || '—');
    fact('Interactions', fmt.int(c.interactionCount), 'interactionCount');
    fact('Avg sentiment', fmt.score(c.averageSentiment), 'averageSentiment', `score ${scoreClass(c.averageSentiment)}`);
    fact('Last seen', c.lastSeenAt ? `${fmt.dateTime(c.lastSeenAt)} UTC` : '—');
    fact('Customer since', c.createdAt ? fmt.dateTime(c.createdAt).slice(0, 10) : '—');
    renderPatterns(c.patterns || []);
    const attrs = c.attributes && typeof c.attributes === 'object' ? Object.entries(c.attributes) : [];
    $('cp-attrs-title').hidden = attrs.length === 0;
    $('cp-attrs').hidden = attrs.length === 0;
    clear($('cp-attrs'));
    for (const [k, v] of attrs) {
      $('cp-attrs').append(el('dt', { text: k }), el('dd', { text: typeof v === 'string' ? v : JSON.stringify(v) }));
    }
  } catch (e) {
    if (handledAuth(e)) return;
    const box = $('cp-error');
    box.hidden = false;
    box.textContent = e.status === 404 ? 'This customer does not exist (or belongs to another organization).' : `Could not load the customer: ${e.message}`;
  }
}

function renderPatterns(patterns) {
  const ul = $('cp-patterns');
  clear(ul);
  $('cp-patterns-empty').hidden = patterns.length > 0;
  const sorted = [...patterns].sort((a, b) => (b.confidence ?? 0) - (a.confidence ?? 0));
  for (const p of sorted) {
    const conf = Math.max(0, Math.min(1, Number(p.confidence) || 0));
    const bar = el('span', { className: 'meter-fill' });
    bar.style.width = `${(conf * 100).toFixed(0)}%`;
    ul.append(el('li', { className: 'pattern' },
      el('div', { className: 'pattern-head' },
        el('strong', { text: fmt.words(p.patternType) }),
        el('span', { className: 'spacer' }),
        p.frequency != null ? el('span', { className: 'muted small', text: `×${p.frequency}` }) : null,
        el('span', { className: 'meter', title: `confidence ${fmt.pct(conf)}` }, bar),
        el('span', { className: 'small mono', text: fmt.pct(conf) })),
      el('p', { className: 'pattern-desc', text: p.description || '' }),
      p.detectedAt ? el('div', { className: 'muted small', text: `detected ${fmt.dateTime(p.detectedAt)} UTC` }) : null));
  }
}

async function loadCustomerHistory() {
  const cp = state.cp;
  if (!cp) return;
  const id = cp.id;
  try {
    const body = await api(`/api/v1/interactions${qs({ customerId: id, page: cp.page, pageSize: HISTORY_PAGE_SIZE, sort: 'timestamp', order: 'desc' })}`);
    if (state.cp !== cp) return;
    const p = body.pagination || {};
    const atLeast = p.totalRelation === 'gte';
    cp.totalPages = atLeast && p.nextCursor ? cp.page + 1 : p.totalPages || 1;
    cp.total = p.total ?? body.data.length;
    cp.atLeast = atLeast;
    $('cp-history').tBodies[0].replaceChildren(...body.data.map((i) => interactionRow(i, { customer: false })));
    $('cp-history-count').textContent = `(${fmt.int(cp.total)}${atLeast ? '+' : ''})`;
    $('cp-page').textContent = `page ${cp.page} of ${fmt.int(p.totalPages || 1)}${atLeast ? '+' : ''}`;
    $('cp-prev').disabled = cp.page <= 1;
    $('cp-next').disabled = cp.page >= cp.totalPages;
  } catch (e) {
    if (handledAuth(e)) return;
    const box = $('cp-error');
    box.hidden = false;
    box.textContent = `Could not load the history: ${e.message}`;
  }
}

function cpLiveInteraction(item) {
  const cp = state.cp;
  const dd = document.querySelector('#cp-profile [data-fact="interactionCount"]');
  if (dd && cp.profile) {
    cp.profile.interactionCount = (cp.profile.interactionCount || 0) + 1;
    dd.textContent = fmt.int(cp.profile.interactionCount);
  }
  if (cp.page !== 1) return;
  const tbody = $('cp-history').tBodies[0];
  if (tbody.querySelector(`tr[data-id="${CSS.escape(item.id)}"]`)) return;
  tbody.prepend(interactionRow(item, { customer: false }));
  while (tbody.rows.length > HISTORY_PAGE_SIZE) tbody.lastElementChild.remove();
  if (!cp.atLeast) cp.total = (cp.total || 0) + 1;
  $('cp-history-count').textContent = `(${fmt.int(cp.total)}${cp.atLeast ? '+' : ''})`;
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const email = $('email').value.trim();
    const password = $('password').value;
    const err = $('login-error');
    if (!email || !password) {
      err.hidden = false;
      err.textContent = 'Enter your email and password.';
      return;
    }
    const btn = $('login-submit');
    btn.disabled = true;
    btn.textContent = 'Signing in…';
    try {
      await login(email, password);
      err.hidden = true;
      $('password').value = '';
      showApp();
    } catch (e) {
      err.hidden = false;
      if (e.status === 401) err.textContent = 'Wrong email or password.';
      else if (e.status === 429) err.textContent = `Too many attempts. Try again${e.retryAfter ? ` in ${e.retryAfter} s` : ' later'}.`;
      else if (e.status === 400) err.textContent = e.describe();
      else err.textContent = e.message;
    } finally {
      btn.disabled = false;
      btn.textContent = 'Sign in';
    }
  });

  $('logout').addEventListener('click', async () => {
    const live = state.live;
    if (live) live.stop();
    await logout();
    teardown();
    showLogin('You have been logged out.');
  });

  sessionEvents.addEventListener('expired', () => {
    teardown();
    showLogin('Your session has ended. Please sign in again.');
  });

  $('connection').addEventListener('click', () => {
    if (state.live) state.live.reconnectNow('click');
  });

  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    applyFilters();
  });
  $('filters-reset').addEventListener('click', () => {
    state.filters = emptyFilters();
    state.page = 1;
    writeFiltersToForm();
    writeHash();
    loadTable();
  });
  $('filters').addEventListener('change', (ev) => {
    if (ev.target.name === 'channel') applyFilters();
  });
  $('export').addEventListener('click', exportCsv);

  $('page-prev').addEventListener('click', () => {
    if (state.page > 1) {
      state.page -= 1;
      writeHash();
      loadTable();
    }
  });
  $('page-next').addEventListener('click', () => {
    if (state.page < (state.totalPages || 1)) {
      state.page += 1;
      writeHash();
      loadTable();
    }
  });
  $('page-size').addEventListener('change', () => {
    state.pageSize = parseInt($('page-size').value, 10) || 25;
    state.page = 1;
    writeHash();
    loadTable();
  });
  $('table-new').addEventListener('click', () => loadTable());

  for (const th of document.querySelectorAll('#table th.sortable')) {
    th.tabIndex = 0;
    const go = () => {
      const key = th.dataset.sort;
      if (state.sort === key) state.order = state.order === 'desc' ? 'asc' : 'desc';
      else {
        state.sort = key;
        state.order = key === 'channel' ? 'asc' : 'desc';
      }
      state.page = 1;
      renderSortHeaders();
      writeHash();
      loadTable();
    };
    th.addEventListener('click', go);
    th.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        go();
      }
    });
  }

  for (const b of document.querySelectorAll('.seg-btn[data-days]')) {
    b.addEventListener('click', () => {
      state.trendDays = parseInt(b.dataset.days, 10) || 30;
      for (const o of document.querySelectorAll('.seg-btn[data-days]')) o.classList.toggle('is-on', o === b);
      loadTrend();
    });
  }

  $('feed-pause').addEventListener('click', toggleFeedPause);

  // Any customer button anywhere opens the drill-down.
  document.addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-customer]');
    if (btn && btn.dataset.customer) openCustomer(btn.dataset.customer);
  });
  $('cp-close').addEventListener('click', closeCustomer);
  $('panel-backdrop').addEventListener('click', closeCustomer);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && state.cp) closeCustomer();
  });
  $('cp-prev').addEventListener('click', () => {
    if (state.cp && state.cp.page > 1) {
      state.cp.page -= 1;
      loadCustomerHistory();
    }
  });
  $('cp-next').addEventListener('click', () => {
    if (state.cp && state.cp.page < state.cp.totalPages) {
      state.cp.page += 1;
      loadCustomerHistory();
    }
  });
  $('cp-filter').addEventListener('click', () => {
    if (!state.cp) return;
    state.filters = { ...readFiltersFromForm(), customerId: state.cp.id };
    state.page = 1;
    closeCustomer();
    writeHash();
    renderChips();
    loadTable();
    $('table').scrollIntoView({ behavior: 'smooth', block: 'start' });
  });

  window.addEventListener('hashchange', () => {
    if (document.body.dataset.view !== 'app') return;
    readHash();
    writeFiltersToForm();
    renderSortHeaders();
    loadTable();
  });
}

wire();
if (getSession()) showApp();
else showLogin();
