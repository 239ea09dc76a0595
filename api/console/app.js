/* sqlvigil console: plain JavaScript, no framework, no build step.
 *
 * Talks to the sqlvigil API of the same origin with the bearer token the user signs in
 * with (kept in sessionStorage only). Views: fleet (#/), instance (#/instance/NAME),
 * anomaly (#/anomaly/ID) and the anomaly list (#/anomalies). Live updates come from
 * GET /api/v1/stream, read with fetch() (EventSource cannot send the Authorization
 * header) and parsed here; a dropped stream reconnects with Last-Event-ID.
 *
 * Every piece of text from the API is put in the page with textContent (the h() helper
 * below never parses HTML), so nothing the API returns can inject markup.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'sqlvigil.token';
  const RANGES = { '15m': 15 * 60e3, '1h': 60 * 60e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3 };
  const WAIT_WINDOW = { '15m': '30s', '1h': '1m', '6h': '5m', '24h': '15m' };
  const WAIT_METRIC = 'sqlserver.os.wait.duration.per_second';
  const PALETTE = ['#2458d6', '#d9480f', '#2f9e44', '#9c36b5', '#0c8599', '#e8590c', '#c2255c', '#5c940d', '#1864ab', '#862e9c'];
  const SEV_RANK = { critical: 3, warning: 2, info: 1 };
  const SEV_FILL = { critical: 'rgba(192,38,45,0.13)', warning: 'rgba(224,147,43,0.17)', info: 'rgba(31,95,174,0.12)' };
  const SEV_EDGE = { critical: 'rgba(192,38,45,0.85)', warning: 'rgba(196,120,20,0.9)', info: 'rgba(31,95,174,0.8)' };

  /** The chart slots of the fleet cards and the instance page, each with the series it
   * prefers first. A Windows perf-counter instance has no CPU series: the CPU slot falls
   * back to the next thing it has that says how loaded it is. */
  const SLOTS = [
    { key: 'cpu', title: 'CPU', candidates: ['sqlserver.cpu.utilization', /(^|[._])(cpu|processor)([._]|$)/i, 'sqlserver.processes.blocked', 'sqlserver.lock.wait_time.avg', 'sqlserver.user.connection.count'] },
    { key: 'batch', title: 'Batch requests', candidates: ['sqlserver.batch.request.rate.per_second', 'sqlserver.batch.request.rate'] },
    { key: 'ple', title: 'Page life expectancy', candidates: ['sqlserver.page.life_expectancy'] },
  ];
  const EXTRA_SLOTS = [
    { key: 'blocked', title: 'Blocked processes', candidates: ['sqlserver.processes.blocked'] },
    { key: 'lockwait', title: 'Lock wait time (avg)', candidates: ['sqlserver.lock.wait_time.avg'] },
    { key: 'connections', title: 'User connections', candidates: ['sqlserver.user.connection.count'] },
  ];
  const METRIC_TITLES = {
    'sqlserver.cpu.utilization': 'CPU',
    'sqlserver.batch.request.rate': 'Batch requests',
    'sqlserver.batch.request.rate.per_second': 'Batch requests',
    'sqlserver.page.life_expectancy': 'Page life expectancy',
    'sqlserver.processes.blocked': 'Blocked processes',
    'sqlserver.lock.wait_time.avg': 'Lock wait time (avg)',
    'sqlserver.user.connection.count': 'User connections',
    'sqlserver.os.wait.duration.per_second': 'Wait time',
    'sqlserver.deadlock.rate.per_second': 'Deadlocks',
    'sqlserver.transaction_log.usage': 'Log used',
    'sqlserver.database.tempdb.space': 'tempdb space',
    'sqlserver.database.latency.per_operation': 'I/O latency per operation',
    'sqlserver.page.buffer_cache.hit_ratio': 'Buffer cache hit ratio',
  };

  // ------------------------------------------------------------------ state
  const S = {
    token: null,
    me: null,
    routeGen: 0,
    charts: [],          // {u, el, dynamic}
    timers: [],          // interval ids of the current view
    live: [],            // callbacks of the current view, called on stream events
    anomalies: new Map(), // id -> anomaly (what the views show, kept current by the stream)
    touched: new Map(),  // id -> S.version when it was last set
    version: 0,
    fresh: new Map(),    // id -> when it arrived live
    flashed: new Set(),  // ids whose arrival animation has played
    liveIds: new Set(),  // ids that arrived through the stream
    insights: [],
    series: null,        // {at, list}
    coverage: null,      // {at, list}
    ready: null,         // last /ready answer {ok, body}
    readyListeners: [],
    stream: null,        // {ctrl}
    streamLastId: null,
    streamState: 'off',
  };

  // ------------------------------------------------------------------ DOM helpers
  const $ = (id) => document.getElementById(id);

  /** An element: h('a', {href, class, 'data-x': 1, onclick}, 'text', child, [more]).
   * Children that are not nodes become text nodes: never parsed as HTML. */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    append(el, kids);
    return el;
  }
  /** Replace the children of `el` (null and false children are skipped). */
  function fill(el, ...kids) {
    el.replaceChildren();
    return append(el, kids);
  }
  function append(el, kids) {
    for (const kid of kids) {
      if (kid == null || kid === false) continue;
      if (Array.isArray(kid)) append(el, kid);
      else el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const enc = encodeURIComponent;
  const anomalyHref = (id) => '#/anomaly/' + enc(id);
  const instanceHref = (name, range) => '#/instance/' + enc(name) + (range ? '?range=' + enc(range) : '');

  // ------------------------------------------------------------------ formatting
  const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const nfSig = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });
  const nfCompact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
  const nfPct = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 0 });
  const dtfFull = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' });
  const dtfMed = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dtfTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'long' });
  const TZ = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (e) { return ''; } })();

  /** RFC 3339 (nanoseconds and all) → epoch milliseconds, NaN if unreadable. */
  function parseTime(iso) {
    if (iso == null) return NaN;
    if (typeof iso === 'number') return iso;
    return Date.parse(String(iso).replace(/(\.\d{3})\d+/, '$1'));
  }
  const fmtFull = (ms) => (isFinite(ms) ? dtfFull.format(ms) : '–');
  function fmtWhen(ms) {
    if (!isFinite(ms)) return '–';
    const sameDay = new Date(ms).toDateString() === new Date().toDateString();
    return sameDay ? dtfTime.format(ms) : dtfMed.format(ms);
  }
  function fmtRel(ms) {
    if (!isFinite(ms)) return '';
    const s = Math.round((ms - Date.now()) / 1000);
    const a = Math.abs(s);
    if (a < 10) return 'just now';
    if (a < 45) return rtf.format(s, 'second');
    if (a < 2700) return rtf.format(Math.round(s / 60), 'minute');
    if (a < 64800) return rtf.format(Math.round(s / 3600), 'hour');
    return rtf.format(Math.round(s / 86400), 'day');
  }
  /** A <time> with the local time and how long ago; kept current by the ticker. */
  function timeEl(iso, mode) {
    const ms = parseTime(iso);
    if (!isFinite(ms)) return h('span', { class: 'muted' }, '–');
    const el = h('time', { datetime: new Date(ms).toISOString(), title: fmtFull(ms), 'data-rel': ms, 'data-mode': mode || 'both' });
    el.textContent = timeText(ms, mode || 'both');
    return el;
  }
  function timeText(ms, mode) {
    if (mode === 'rel') return fmtRel(ms);
    if (mode === 'abs') return fmtWhen(ms);
    return fmtWhen(ms) + ' · ' + fmtRel(ms);
  }
  function tickTimes() {
    for (const el of document.querySelectorAll('time[data-rel]')) {
      el.textContent = timeText(Number(el.getAttribute('data-rel')), el.getAttribute('data-mode'));
    }
  }
  function fmtDur(seconds) {
    if (!isFinite(seconds) || seconds < 0) return '–';
    const s = Math.round(seconds);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min' + (s % 60 && m < 10 ? ' ' + (s % 60) + ' s' : '');
    const hh = Math.floor(m / 60);
    if (hh < 48) return hh + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
    return Math.floor(hh / 24) + ' d' + (hh % 24 ? ' ' + (hh % 24) + ' h' : '');
  }
  /** `{requests}/s` → `/s`, `{processes}` → ``: the receiver's annotations dropped. */
  function unitText(unit) {
    return String(unit || '').replace(/\{[^}]*\}/g, '').trim();
  }
  function fmtNum(v, unit, compact) {
    if (v == null || typeof v !== 'number' || !isFinite(v)) return '–';
    const a = Math.abs(v);
    let s;
    if (compact && a >= 10000) s = nfCompact.format(v);
    else if (a >= 100) s = nf0.format(v);
    else if (a >= 10) s = nf1.format(v);
    else if (a >= 1) s = nf2.format(v);
    else if (a === 0) s = '0';
    else s = nfSig.format(v);
    const u = unitText(unit);
    if (!u) return s;
    return u === '%' ? s + ' %' : s + ' ' + u;
  }
  const fmtMs = (ms) => (!isFinite(ms) ? '–' : ms < 1000 ? fmtNum(ms, 'ms') : ms < 60e3 ? fmtNum(ms / 1000, 's') : fmtDur(ms / 1000));
  const metricTitle = (m) => METRIC_TITLES[m] || m;
  const unitOfSeries = (id) => {
    const s = S.series && S.series.list.find((x) => x.id === id);
    return s ? s.unit : '';
  };
  const sevRank = (s) => SEV_RANK[s] || 0;
  const pastTense = { acknowledge: 'acknowledged', resolve: 'resolved', silence: 'silenced' };

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId || null;
    }
  }
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v != null && v !== '') p.set(k, String(v));
    const s = p.toString();
    return s ? '?' + s : '';
  }
  async function errorOf(r) {
    let body = null;
    try { body = JSON.parse(await r.text()); } catch (e) { /* not JSON */ }
    const err = (body && body.error) || {};
    return new ApiError(r.status, err.code || 'http_' + r.status, err.message || r.statusText || 'HTTP ' + r.status, err.request_id || r.headers.get('x-request-id'));
  }
  /** GET or POST /api/v1/<path> with the token; JSON back, ApiError on failure. A 401
   * ends the session (the token was revoked or expired) unless `noLogout`. */
  async function api(path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json', Authorization: 'Bearer ' + (opts.token || S.token || '') };
    let body;
    if (opts.body !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(opts.body); }
    let r;
    try {
      r = await fetch('/api/v1/' + path, { method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', 'sqlvigil is not answering (' + (e && e.message ? e.message : 'network error') + ')');
    }
    if (r.status === 429 && !opts.retried) {
      // Over the token's rate limit: wait as told (briefly) and try once more.
      const wait = Math.min(5, Number(r.headers.get('retry-after')) || 1);
      await new Promise((res) => setTimeout(res, wait * 1000));
      return api(path, Object.assign({}, opts, { retried: true }));
    }
    if (!r.ok) {
      const e = await errorOf(r);
      if (r.status === 401 && !opts.noLogout && S.token) sessionEnded(e);
      throw e;
    }
    const text = await r.text();
    return text ? JSON.parse(text) : null;
  }
  const isoAt = (ms) => new Date(ms).toISOString();

  const BASELINE_PREFIX = 'sqlvigil.baseline.';
  async function loadSeries(force) {
    if (!force && S.series && Date.now() - S.series.at < 60e3) return S.series.list;
    const d = await api('series');
    const all = d.series || [];
    // The deviation rules' baselines are series too (sqlvigil.baseline.*, naming the
    // judged series in sqlvigil.series_id): which series have a band is known up front.
    const judged = new Set();
    let bands = 0;
    for (const s of all) {
      if (s.metric.startsWith(BASELINE_PREFIX)) {
        bands++;
        if (s.attributes && s.attributes['sqlvigil.series_id']) judged.add(s.attributes['sqlvigil.series_id']);
      }
    }
    S.series = { at: Date.now(), list: all.filter((s) => !s.metric.startsWith(BASELINE_PREFIX)), judged: bands ? judged : null };
    return S.series.list;
  }
  /** Whether asking /baselines for a series can give anything (unknown: yes). */
  function mayHaveBaseline(id) {
    return !S.series || !S.series.judged || S.series.judged.has(id);
  }
  async function loadCoverage(force) {
    if (!force && S.coverage && Date.now() - S.coverage.at < 60e3) return S.coverage.list;
    const d = await api('coverage');
    S.coverage = { at: Date.now(), list: d.instances || [] };
    return S.coverage.list;
  }
  /** The series of `list` that best fills a slot: its candidates in order, the series
   * with most points first. */
  function pickSeries(list, candidates, exclude) {
    for (const c of candidates) {
      const found = list.filter((s) => (typeof c === 'string' ? s.metric === c : c.test(s.metric)) && !(exclude && exclude.has(s.id)));
      if (found.length) return found.sort((a, b) => (b.points || 0) - (a.points || 0))[0];
    }
    return null;
  }
  /** Points of one series in [from, to], oldest first (the newest 10,000 if more). */
  async function fetchPoints(seriesId, from, to, signal) {
    const d = await api('metrics' + qs({ series: seriesId, from: isoAt(from), to: isoAt(to), order: 'newest', limit: 10000 }), { signal });
    const pts = (d.points || []).map((p) => [parseTime(p.time) / 1000, p.value]).filter((p) => isFinite(p[0]));
    pts.reverse();
    return { points: pts, truncated: !!d.truncated, resolution: d.resolution, unit: d.points && d.points[0] ? d.points[0].unit : '' };
  }
  /** Points of one series for a chart: raw up to two hours, else the average per
   * window (1 min up to 6 h, 5 min beyond) from /aggregates. */
  async function fetchChartPoints(s, from, to) {
    const span = to - from;
    if (span <= 2 * 3600e3) return fetchPoints(s.id, from, to);
    const window = span <= 6 * 3600e3 ? 60 : 300;
    const d = await api('aggregates' + qs({ metric: s.metric, series: s.id, group_by: 'series', window: window + 's', from: isoAt(from), to: isoAt(to) }));
    const pts = (d.aggregates || []).map((r) => [parseTime(r.window_start) / 1000 + window / 2, r.avg]).filter((p) => isFinite(p[0])).sort((a, b) => a[0] - b[0]);
    return { points: pts, truncated: false, resolution: 'avg per ' + (window / 60) + ' min', unit: s.unit };
  }
  /** The expected value and band of a series; [] when it has none (or the API has no
   * baselines to give). */
  async function fetchBaseline(seriesId, from, to) {
    if (!mayHaveBaseline(seriesId)) return [];
    try {
      const d = await api('baselines' + qs({ series: seriesId, from: isoAt(from), to: isoAt(to) }));
      const num = (v) => (typeof v === 'number' && isFinite(v) ? v : null);
      return (d && d.points ? d.points : []).map((p) => ({ t: parseTime(p.time) / 1000, expected: num(p.expected), low: num(p.low), high: num(p.high) }))
        .filter((p) => isFinite(p.t) && (p.expected != null || p.low != null || p.high != null));
    } catch (e) {
      if (e.status === 401) throw e;
      return [];
    }
  }

  // ------------------------------------------------------------------ anomalies store
  /** Keep `a` as the current state of its anomaly. A rule's later update carries no
   * handling: what people did (acknowledged, resolved by hand, silenced) stays. */
  function upsertAnomaly(a, authoritative) {
    if (!a || !a.id || a.folded_into) return null;
    const prev = S.anomalies.get(a.id);
    const next = Object.assign({}, a);
    if (!authoritative && prev && prev.handling && !next.handling) next.handling = prev.handling;
    if (!authoritative && prev && prev.handling && next.handling && prev.handling !== next.handling) {
      next.handling = Object.assign({}, prev.handling, next.handling);
    }
    const hr = next.handling && next.handling.resolved;
    if (hr && next.state === 'open') { next.state = 'resolved'; next.resolved_at = hr.at; }
    S.anomalies.set(a.id, next);
    S.touched.set(a.id, ++S.version);
    return next;
  }
  async function refreshAnomalies() {
    const since = S.version;
    const [open, recent] = await Promise.all([api('anomalies' + qs({ state: 'open', limit: 1000 })), api('anomalies' + qs({ limit: 100 }))]);
    // What the stream told while these were being read is newer than they are.
    const stale = (id) => (S.touched.get(id) || 0) <= since;
    // Anything the map thought open but the server does not: take the server's word.
    const openIds = new Set(open.anomalies.map((a) => a.id));
    for (const [id, a] of S.anomalies) if (a.state === 'open' && !openIds.has(id) && stale(id)) S.anomalies.delete(id);
    for (const a of recent.anomalies) if (stale(a.id)) upsertAnomaly(a, true);
    for (const a of open.anomalies) if (stale(a.id)) upsertAnomaly(a, true);
    updateTitle();
  }
  const allAnomalies = () => [...S.anomalies.values()];
  const byOpenedDesc = (a, b) => parseTime(b.opened_at) - parseTime(a.opened_at) || (a.id < b.id ? 1 : -1);
  function openCounts(instance) {
    const c = { critical: 0, warning: 0, info: 0, total: 0 };
    for (const a of S.anomalies.values()) {
      if (a.state !== 'open' || (instance && a.series.instance !== instance)) continue;
      c[a.severity] = (c[a.severity] || 0) + 1;
      c.total++;
    }
    return c;
  }
  function updateTitle() {
    const n = openCounts().total;
    document.title = (n ? '(' + n + ') ' : '') + 'sqlvigil console';
  }
  const canOperate = () => !!S.me && (S.me.role === 'operator' || S.me.role === 'admin');
  const silencedNow = (a) => !!(a.handling && a.handling.silenced && parseTime(a.handling.silenced.until) > Date.now());

  // ------------------------------------------------------------------ badges & rows
  const sevBadge = (sev) => h('span', { class: 'badge sev-' + sev, 'data-testid': 'severity' }, sev);
  function stateBadges(a) {
    const out = [h('span', { class: 'badge state-' + a.state, 'data-testid': 'state-badge' }, a.state)];
    const hd = a.handling || {};
    if (hd.resolved) out.push(h('span', { class: 'badge state-resolved', title: 'resolved by ' + hd.resolved.by }, 'by hand'));
    if (hd.acknowledged) out.push(h('span', { class: 'badge badge-ack', title: 'acknowledged by ' + hd.acknowledged.by + ' at ' + fmtFull(parseTime(hd.acknowledged.at)) }, 'acknowledged'));
    if (silencedNow(a)) out.push(h('span', { class: 'badge badge-silenced', title: 'silenced until ' + fmtFull(parseTime(hd.silenced.until)) }, 'silenced'));
    return out;
  }
  function healthBadges(c) {
    if (!c.total) return [h('span', { class: 'badge badge-ok' }, 'healthy')];
    return ['critical', 'warning', 'info'].filter((s) => c[s]).map((s) => h('span', { class: 'badge sev-' + s }, c[s] + ' ' + s));
  }
  function anomalyRow(a) {
    const fresh = S.fresh.has(a.id) && Date.now() - S.fresh.get(a.id) < 20e3;
    let cls = 'arow';
    if (fresh) {
      cls += ' fresh';
      if (!S.flashed.has(a.id)) { cls += ' flash'; S.flashed.add(a.id); }
    }
    const opened = parseTime(a.opened_at);
    const ended = a.resolved_at ? parseTime(a.resolved_at) : Date.now();
    return h('li', null, h('a', {
      class: cls, href: anomalyHref(a.id), 'data-testid': 'anomaly-row', 'data-anomaly-id': a.id, 'data-state': a.state,
      'data-severity': a.severity, 'data-live': S.liveIds.has(a.id) ? 'true' : null,
    },
    h('div', null, sevBadge(a.severity)),
    h('div', { style: { minWidth: '0' } },
      h('div', { class: 'title' }, a.rule, stateBadges(a), fresh ? h('span', { class: 'badge badge-live' }, 'new') : null),
      h('div', { class: 'meta', title: a.condition }, a.series.instance + ' · ' + metricTitle(a.series.metric) + ' · ' + a.condition +
        ' · observed ' + fmtNum(a.observed) + (a.expected != null ? ' (expected ' + fmtNum(a.expected) + ')' : '') +
        (a.folded ? ' · stands for ' + a.folded + ' anomalies' : ''))),
    h('div', { class: 'when' }, h('b', null, timeEl(a.opened_at, 'rel')), a.state === 'open' ? 'open ' + fmtDur((Date.now() - opened) / 1000) : 'lasted ' + fmtDur((ended - opened) / 1000))));
  }
  /** A list of anomalies from the store, re-rendered on every stream event. */
  function liveAnomalyList(filter, opts) {
    const ul = h('ul', { class: 'alist', 'data-testid': opts.testid, 'data-loaded': 'false' });
    const render = () => {
      const items = allAnomalies().filter(filter).sort(byOpenedDesc);
      const shown = items.slice(0, opts.limit || 50);
      fill(ul, ...(shown.length ? shown.map(anomalyRow) : [h('li', { class: 'empty-state', 'data-testid': 'empty' }, opts.empty)]));
      ul.setAttribute('data-count', String(shown.length));
      ul.setAttribute('data-loaded', 'true');
      if (opts.onRender) opts.onRender(items);
    };
    S.live.push(render);
    return { el: ul, render };
  }

  // ------------------------------------------------------------------ charts (uPlot)
  function yRange(min, max, from0) {
    if (min == null || max == null || !isFinite(min) || !isFinite(max)) return [0, 1];
    const span = max - min;
    const pad = span > 0 ? span * 0.08 : Math.abs(max) * 0.1 || 1;
    const lo = from0 && min >= 0 ? 0 : min - pad;
    return [lo, max + pad];
  }
  /** Shaded spans (anomalies) and vertical markers, under the series. */
  function drawOverlays(u, spans, markers) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const px = window.devicePixelRatio || 1;
    ctx.save();
    for (const s of (typeof spans === 'function' ? spans() : spans) || []) {
      let x0 = u.valToPos(s.from, 'x', true);
      let x1 = u.valToPos(s.to, 'x', true);
      if (!isFinite(x0) || !isFinite(x1) || x1 < left || x0 > left + width) continue;
      x0 = Math.max(left, x0);
      x1 = Math.min(left + width, Math.max(x1, x0 + 2 * px));
      ctx.fillStyle = s.fill;
      ctx.fillRect(x0, top, x1 - x0, height);
      if (s.edgeAt != null) {
        const xe = u.valToPos(s.edgeAt, 'x', true);
        if (xe >= left && xe <= left + width) {
          ctx.fillStyle = s.edge;
          ctx.fillRect(xe - px * 0.75, top, px * 1.5, height);
        }
      }
    }
    for (const m of (typeof markers === 'function' ? markers() : markers) || []) {
      const x = u.valToPos(m.at, 'x', true);
      if (!isFinite(x) || x < left || x > left + width) continue;
      ctx.strokeStyle = m.color;
      ctx.lineWidth = px;
      ctx.setLineDash([4 * px, 3 * px]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
    }
    ctx.restore();
  }
  const dtfHm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dtfHms = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dtfDay = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
  /** Time-axis labels in the viewer's locale and time zone; the date under the first
   * tick and wherever the day changes. */
  function timeTicks(u, splits, axisIdx, space, incr) {
    let prevDay = null;
    return splits.map((v) => {
      if (v == null) return '';
      const ms = v * 1000;
      const day = new Date(ms).toDateString();
      const t = incr < 60 ? dtfHms.format(ms) : dtfHm.format(ms);
      const label = prevDay !== day ? t + '\n' + dtfDay.format(ms) : t;
      prevDay = day;
      return label;
    });
  }
  /** A time-series chart in `el` (which must be in the page already). */
  function tsChart(el, cfg) {
    const spark = !!cfg.spark;
    const yFmt = cfg.yFmt || ((v) => fmtNum(v, cfg.unit));
    const width = Math.max(120, Math.floor(el.clientWidth || el.getBoundingClientRect().width || 320));
    const axisFont = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    const opts = {
      width,
      height: cfg.height || 200,
      padding: spark ? [3, 2, 3, 2] : [10, 28, 0, 2],
      legend: { show: !spark },
      scales: {
        x: { time: true, range: cfg.xRange ? () => cfg.xRange : undefined },
        y: { range: cfg.yFixed ? () => cfg.yFixed : (u, min, max) => yRange(min, max, cfg.from0 !== false) },
      },
      axes: spark ? [{ show: false }, { show: false }] : [
        { stroke: '#5d6778', font: axisFont, grid: { stroke: '#eceff4', width: 1 }, ticks: { stroke: '#dfe3ea', width: 1, size: 4 }, space: 80, values: timeTicks },
        { stroke: '#5d6778', font: axisFont, size: 62, grid: { stroke: '#eceff4', width: 1 }, ticks: { show: false }, values: (u, vals) => vals.map((v) => fmtNum(v, cfg.axisUnit != null ? cfg.axisUnit : cfg.unit, true)) },
      ],
      series: [{ value: (u, v) => (v == null ? '–' : fmtFull(v * 1000)) }].concat(cfg.series.map((d) => ({
        label: d.label,
        stroke: d.color,
        width: d.width != null ? d.width : (spark ? 1.5 : 1.75),
        dash: d.dash,
        fill: d.fill,
        spanGaps: d.spanGaps != null ? d.spanGaps : true,
        points: { show: !!d.points, size: 5, fill: d.color, stroke: d.color },
        value: (u, v) => (v == null ? '–' : (d.fmt || yFmt)(v)),
      }))),
      hooks: { drawClear: [(u) => drawOverlays(u, cfg.spans, cfg.markers)] },
    };
    if (!cfg.xRange) delete opts.scales.x.range;
    if (cfg.bands) opts.bands = cfg.bands;
    if (spark) {
      opts.cursor = { show: false };
      opts.select = { show: false };
    } else {
      opts.cursor = { drag: { x: true, y: false }, points: { size: 7 } };
      if (cfg.sync) opts.cursor.sync = { key: cfg.sync };
    }
    fill(el);
    const u = new uPlot(opts, cfg.data, el);
    el.setAttribute('data-rendered', 'true');
    if (cfg.label) {
      const cv = el.querySelector('canvas');
      if (cv) { cv.setAttribute('role', 'img'); cv.setAttribute('aria-label', cfg.label); }
    }
    const entry = { u, el, dynamic: typeof cfg.spans === 'function' || typeof cfg.markers === 'function' };
    S.charts = S.charts.filter((c) => c.el !== el || (c.u.destroy(), false));
    S.charts.push(entry);
    if (chartResizer) chartResizer.observe(el);
    return u;
  }
  /** Columns [[t, v]…] (each oldest first) → uPlot data: one x axis, nulls where a
   * column has no point. */
  function joinColumns(cols) {
    const idx = new Map();
    for (const col of cols) for (const [t] of col) idx.set(t, true);
    const xs = [...idx.keys()].sort((a, b) => a - b);
    const pos = new Map(xs.map((t, i) => [t, i]));
    const ys = cols.map((col) => {
      const y = new Array(xs.length).fill(null);
      for (const [t, v] of col) y[pos.get(t)] = v;
      return y;
    });
    return [xs].concat(ys);
  }
  // Charts follow their box (a scroll bar appearing narrows it, not only the window).
  const chartResizer = typeof ResizeObserver === 'function' ? new ResizeObserver(() => {
    clearTimeout(chartResizer.t);
    chartResizer.t = setTimeout(resizeCharts, 60);
  }) : null;
  function resizeCharts() {
    for (const c of S.charts) {
      const w = Math.floor(c.el.clientWidth);
      if (w > 0 && Math.abs(w - c.u.width) > 1) c.u.setSize({ width: w, height: c.u.height });
    }
  }
  function redrawDynamicCharts() {
    for (const c of S.charts) if (c.dynamic) c.u.redraw(false);
  }
  /** Anomalies of `instance` overlapping [from, to] (ms) as chart spans: strong for the
   * chart's own series, none for others (they get a marker). */
  function anomalySpans(instance, seriesId, light) {
    return () => allAnomalies()
      .filter((a) => a.series.instance === instance && (!seriesId || a.series_id === seriesId))
      .map((a) => {
        const opened = parseTime(a.opened_at) / 1000;
        const ev = a.evidence && a.evidence.length ? parseTime(a.evidence[0].time) / 1000 : opened;
        const end = a.resolved_at ? parseTime(a.resolved_at) / 1000 : Date.now() / 1000;
        const fill = SEV_FILL[a.severity] || SEV_FILL.info;
        return { from: Math.min(ev, opened), to: end, fill: light ? fill.replace(/[\d.]+\)$/, '0.05)') : fill, edge: SEV_EDGE[a.severity] || SEV_EDGE.info, edgeAt: opened };
      });
  }
  function anomalyMarkers(instance, exceptSeries) {
    return () => allAnomalies()
      .filter((a) => a.series.instance === instance && a.series_id !== exceptSeries)
      .map((a) => ({ at: parseTime(a.opened_at) / 1000, color: SEV_EDGE[a.severity] || SEV_EDGE.info }));
  }
  function keyItem(color, label, kind) {
    const style = kind === 'line' ? { background: 'none', borderTop: '2px dashed ' + color, height: '0' } : { background: color };
    return h('span', { class: 'key' }, h('i', { style }), label);
  }
  /** The series, expected band and anomalies of one series as a chart. */
  async function seriesChart(el, noteEl, s, from, to, opts) {
    opts = opts || {};
    const [pts, base] = await Promise.all([opts.points ? Promise.resolve(opts.points) : fetchChartPoints(s, from, to), opts.spark ? Promise.resolve([]) : fetchBaseline(s.id, from, to)]);
    if (!el.isConnected) return null;
    if (!pts.points.length) {
      fill(el, h('div', { class: 'chart-msg' }, 'No points in this range.'));
      el.setAttribute('data-rendered', 'empty');
      return null;
    }
    const unit = s.unit || pts.unit;
    const cols = [pts.points];
    const defs = [{ label: metricTitle(s.metric), color: opts.color || PALETTE[0], fill: opts.spark ? 'rgba(36,88,214,0.07)' : 'rgba(36,88,214,0.05)' }];
    let bands;
    if (base.length) {
      cols.push(base.map((p) => [p.t, p.high]), base.map((p) => [p.t, p.low]), base.map((p) => [p.t, p.expected]));
      defs.push({ label: 'band high', color: 'rgba(47,158,68,0.35)', width: 1 }, { label: 'band low', color: 'rgba(47,158,68,0.35)', width: 1 }, { label: 'expected', color: '#2f9e44', width: 1.25, dash: [5, 4] });
      bands = [{ series: [2, 3], fill: 'rgba(47,158,68,0.12)' }];
    }
    const data = joinColumns(cols);
    const pct = unitText(unit) === '%' && /cpu/.test(s.metric);
    tsChart(el, {
      spark: opts.spark, height: opts.height || 190, data, series: defs, bands, unit,
      yFixed: pct ? [0, 100] : null,
      from0: opts.spark ? false : true,
      xRange: [from / 1000, to / 1000],
      spans: anomalySpans(s.instance, s.id),
      markers: opts.spark ? null : anomalyMarkers(s.instance, s.id),
      sync: opts.sync, label: (opts.label || metricTitle(s.metric)) + ' chart',
    });
    if (noteEl) {
      const inRange = (x) => x >= from / 1000 && x <= to / 1000;
      const own = anomalySpans(s.instance, s.id)().filter((sp) => sp.to >= from / 1000 && sp.from <= to / 1000);
      const others = anomalyMarkers(s.instance, s.id)().filter((m) => inRange(m.at));
      fill(noteEl,
        own.length ? keyItem('rgba(192,38,45,0.35)', own.length === 1 ? 'anomaly on this series' : own.length + ' anomalies on this series') : null,
        others.length ? keyItem(SEV_EDGE.warning, (others.length === 1 ? 'another anomaly' : others.length + ' other anomalies') + ' on ' + s.instance + ' opened', 'line') : null,
        base.length ? keyItem('rgba(47,158,68,0.3)', 'expected band (' + (S.series && S.series.judged ? 'deviation rule baseline' : 'baseline') + ')') : null,
        pts.resolution && pts.resolution !== 'raw' ? h('span', null, 'resolution ' + pts.resolution) : null,
        pts.truncated ? h('span', null, 'newest 10,000 points') : null);
    }
    return { last: pts.points[pts.points.length - 1], unit, baseline: base.length > 0 };
  }

  // ------------------------------------------------------------------ toasts
  function toast(t) {
    const box = $('toasts');
    const el = h('div', { class: 'toast ' + (t.cls || ''), 'data-testid': 'toast', 'data-kind': t.kind || null, 'data-anomaly-id': t.anomalyId || null },
      h('div', { class: 't-title' }, t.title),
      h('button', { type: 'button', class: 't-close', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'),
      h('div', { class: 't-body' }, t.body || '', t.href ? [' ', h('a', { href: t.href, 'data-testid': 'toast-link', onclick: () => el.remove() }, t.linkText || 'Open')] : null));
    box.append(el);
    while (box.children.length > 4) box.firstElementChild.remove();
    setTimeout(() => el.remove(), t.timeout || 15000);
  }

  // ------------------------------------------------------------------ live stream
  function setStreamState(state) {
    S.streamState = state;
    const pill = $('stream-pill');
    pill.setAttribute('data-state', state);
    pill.querySelector('.pill-text').textContent = { live: 'live', connecting: 'connecting…', down: 'reconnecting…', off: 'live off' }[state] || state;
    pill.title = state === 'live' ? 'Receiving live updates (GET /api/v1/stream)' : 'Live updates: ' + state;
  }
  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
  function startStream() {
    stopStream();
    const ctrl = new AbortController();
    S.stream = { ctrl };
    streamLoop(ctrl);
  }
  function stopStream() {
    if (S.stream) S.stream.ctrl.abort();
    S.stream = null;
    setStreamState('off');
  }
  async function streamLoop(ctrl) {
    let failures = 0;
    let first = true;
    while (!ctrl.signal.aborted) {
      setStreamState(first ? 'connecting' : 'down');
      try {
        const headers = { Accept: 'text/event-stream', Authorization: 'Bearer ' + S.token };
        if (S.streamLastId != null) headers['Last-Event-ID'] = String(S.streamLastId);
        const r = await fetch('/api/v1/stream', { headers, signal: ctrl.signal, cache: 'no-store', credentials: 'omit' });
        if (r.status === 401) { sessionEnded(await errorOf(r)); return; }
        if (!r.ok || !r.body) throw await errorOf(r);
        setStreamState('live');
        failures = 0;
        // Whatever happened before the stream was listening (or while it was down
        // without an id to resume from) is fetched once.
        if (first || S.streamLastId == null) refreshAnomalies().then(notifyLive).catch(() => {});
        first = false;
        await readSse(r.body, (ev) => onStreamEvent(ev));
      } catch (e) {
        if (ctrl.signal.aborted) return;
      }
      if (ctrl.signal.aborted) return;
      setStreamState('down');
      failures++;
      await sleep(Math.min(15000, 1000 * Math.pow(2, Math.min(failures - 1, 4))), ctrl.signal);
    }
  }
  /** Server-Sent Events from a byte stream (the text/event-stream format). */
  async function readSse(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let data = [];
    let event = '';
    let id = null;
    const line = (l) => {
      if (l === '') {
        if (data.length) onEvent({ event: event || 'message', id, data: data.join('\n') });
        data = [];
        event = '';
        return;
      }
      if (l[0] === ':') return;
      const c = l.indexOf(':');
      const field = c < 0 ? l : l.slice(0, c);
      let value = c < 0 ? '' : l.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id' && value.indexOf('\0') < 0) id = value;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        for (;;) {
          const i = buf.search(/[\r\n]/);
          if (i < 0) break;
          if (buf[i] === '\r' && i === buf.length - 1) break; // maybe \r\n split across chunks
          const skip = buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1;
          line(buf.slice(0, i));
          buf = buf.slice(i + skip);
        }
      }
    } finally {
      try { reader.releaseLock(); } catch (e) { /* already released */ }
    }
  }
  function onStreamEvent(ev) {
    if (ev.id != null && ev.id !== '') S.streamLastId = ev.id;
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    const kind = msg.kind || ev.event;
    const d = msg.data || {};
    if (kind && kind.indexOf('anomaly.') === 0 && d.anomaly) {
      const wasKnown = S.anomalies.has(d.anomaly.id);
      const a = upsertAnomaly(d.anomaly, kind === 'anomaly.handled');
      if (!a) return;
      if (kind === 'anomaly.open' && !wasKnown) {
        S.fresh.set(a.id, Date.now());
        S.liveIds.add(a.id);
        toast({
          kind, anomalyId: a.id, cls: 'sev-' + a.severity,
          title: 'New ' + a.severity + ' anomaly on ' + a.series.instance,
          body: a.rule + ': ' + a.condition + ' (observed ' + fmtNum(a.observed) + ')',
          href: anomalyHref(a.id), linkText: 'Open anomaly',
        });
      } else if (kind === 'anomaly.resolve') {
        toast({ kind, anomalyId: a.id, cls: 'ok', title: 'Resolved: ' + a.rule + ' on ' + a.series.instance, body: 'after ' + fmtDur((parseTime(a.resolved_at) - parseTime(a.opened_at)) / 1000), href: anomalyHref(a.id), timeout: 8000 });
      } else if (kind === 'anomaly.handled' && d.action && !(S.me && S.me.id && d.action.token_id === S.me.id)) {
        // Someone else's action (one's own is confirmed where it was done).
        const act = d.action;
        toast({ kind, anomalyId: a.id, title: (act.by || 'someone') + ' ' + (pastTense[act.action] || act.action) + ' ' + a.rule, body: 'on ' + a.series.instance + (act.note ? ' — “' + act.note + '”' : ''), href: anomalyHref(a.id), timeout: 8000 });
      }
    } else if (kind === 'insight' && d.insight) {
      S.insights = [d.insight].concat(S.insights.filter((i) => i.id !== d.insight.id)).slice(0, 50);
    }
    updateTitle();
    notifyLive(Object.assign({ kind }, msg));
  }
  let liveQueued = null;
  function notifyLive(msg) {
    // Several events in one burst re-render once.
    liveQueued = liveQueued || [];
    if (msg) liveQueued.push(msg);
    if (liveQueued.scheduled) return;
    liveQueued.scheduled = true;
    requestAnimationFrame(() => {
      const msgs = liveQueued || [];
      liveQueued = null;
      for (const fn of S.live.slice()) {
        try { fn(msgs); } catch (e) { setTimeout(() => { throw e; }); }
      }
      redrawDynamicCharts();
    });
  }

  // ------------------------------------------------------------------ pipeline readiness
  async function pollReady() {
    let ok = false;
    let body = null;
    try {
      const r = await fetch('/ready', { cache: 'no-store', credentials: 'omit' });
      ok = r.ok;
      body = await r.json().catch(() => null);
    } catch (e) {
      body = { status: 'unreachable', problems: ['sqlvigil is not answering: ' + e.message], components: [] };
    }
    S.ready = { ok, body, at: Date.now() };
    const pill = $('pipeline-pill');
    const problems = (body && body.problems) || [];
    pill.setAttribute('data-state', ok ? 'ready' : 'not-ready');
    pill.querySelector('.pill-text').textContent = ok ? 'pipeline ready' : 'pipeline ' + ((body && body.status) || 'not ready');
    pill.title = ok ? 'All pipeline parts are running (GET /ready)' : problems.join('\n') || 'not ready';
    for (const fn of S.readyListeners.slice()) fn(S.ready);
  }
  function pipelinePanel() {
    const body = h('div', { class: 'body flush' }, h('div', { class: 'loading' }, 'Loading'));
    const status = h('span', { class: 'hint' });
    const panel = h('section', { class: 'panel', 'data-testid': 'pipeline-panel', 'aria-labelledby': 'pipeline-h' },
      h('header', null, h('h2', { id: 'pipeline-h' }, 'Pipeline'), status), body);
    const render = (ready) => {
      const b = (ready && ready.body) || {};
      fill(status, h('span', { class: 'badge ' + (ready.ok ? 'badge-ok' : 'sev-critical'), 'data-testid': 'pipeline-state' }, ready.ok ? 'ready' : b.status || 'not ready'), ' ', timeEl(isoAt(ready.at), 'rel'));
      const comps = b.components || [];
      fill(body, 
        (b.problems || []).length ? h('div', { class: 'body' }, h('ul', { class: 'problems' }, b.problems.map((p) => h('li', null, p)))) : null,
        comps.length ? h('div', { class: 'table-wrap' }, h('table', null,
          h('thead', null, h('tr', null, h('th', null, 'Part'), h('th', null, 'State'), h('th', { class: 'num' }, 'Backlog'), h('th', { class: 'num' }, 'Last progress'), h('th', { class: 'num' }, 'Restarts'))),
          h('tbody', null, comps.map((c) => {
            const good = c.up !== false && c.state === 'running' && !c.stalled && !c.over_limit;
            return h('tr', null,
              h('td', null, c.name),
              h('td', null, h('span', { class: 'comp-state ' + (good ? 'ok' : 'bad') }, c.stalled ? 'stalled' : c.over_limit ? 'over backlog limit' : c.state), c.reason ? h('div', { class: 'muted small' }, c.reason) : null),
              h('td', { class: 'num' }, fmtNum(c.backlog || 0) + (c.backlog_limit ? ' / ' + fmtNum(c.backlog_limit, '', true) : '')),
              h('td', { class: 'num' }, c.seconds_since_progress != null ? fmtDur(c.seconds_since_progress) + ' ago' : '–'),
              h('td', { class: 'num' }, String(c.restarts || 0)));
          })))) : h('div', { class: 'empty-state' }, 'No pipeline parts reported.'));
    };
    S.readyListeners.push(render);
    if (S.ready) render(S.ready);
    return panel;
  }

  // ------------------------------------------------------------------ session
  function showLogin(message, kind) {
    $('view').hidden = true;
    $('mainnav').hidden = true;
    $('whoami').hidden = true;
    $('logout').hidden = true;
    $('stream-pill').hidden = true;
    $('login-view').hidden = false;
    const err = $('login-error');
    const info = $('login-info');
    err.hidden = info.hidden = true;
    if (message) {
      const el = kind === 'info' ? info : err;
      el.textContent = message;
      el.hidden = false;
    }
    const input = $('token-input');
    input.value = '';
    setTimeout(() => input.focus(), 0);
  }
  function showApp() {
    $('login-view').hidden = true;
    $('view').hidden = false;
    $('mainnav').hidden = false;
    $('logout').hidden = false;
    $('stream-pill').hidden = false;
    const who = $('whoami');
    const me = S.me;
    fill(who, 
      h('span', { class: 'who-name', 'data-testid': 'whoami-name' }, me.name || 'unknown'),
      h('span', { class: 'role role-' + me.role, 'data-testid': 'whoami-role' }, me.role),
      me.instances ? h('span', { class: 'muted small', title: 'This token only sees these instances' }, 'scope: ' + me.instances.join(', ')) : null);
    who.setAttribute('data-role', me.role);
    who.title = 'Signed in with token ' + (me.id ? me.id + ' ' : '') + '(' + (me.name || '?') + ', ' + me.role + ')' +
      (me.expires_at ? ', expires ' + fmtFull(parseTime(me.expires_at)) : '');
    who.hidden = false;
  }
  function describeLoginError(e) {
    if (e.status === 401) return 'That token was refused: ' + e.message + '. Check it was copied whole, and that it is not expired or revoked.';
    if (e.status === 403) return 'That token may not use the console: ' + e.message;
    if (e.status === 0) return e.message;
    return 'Sign-in failed (' + e.status + '): ' + e.message + (e.requestId ? ' — request ' + e.requestId : '');
  }
  async function signIn(token) {
    let me;
    try {
      me = await api('whoami', { token, noLogout: true });
    } catch (e) {
      // An older sqlvigil without /whoami: check the token another way; no role known.
      if (e.status !== 404) throw e;
      await api('coverage', { token, noLogout: true });
      me = { name: 'unknown', role: 'unknown', instances: null };
    }
    S.token = token;
    S.me = me;
    sessionStorage.setItem(TOKEN_KEY, token);
    S.anomalies.clear();
    S.touched.clear();
    S.fresh.clear();
    S.liveIds.clear();
    S.series = S.coverage = null;
    S.streamLastId = null;
    showApp();
    startStream();
    route();
  }
  function resetSession() {
    stopStream();
    teardownView();
    S.token = null;
    S.me = null;
    S.anomalies.clear();
    S.touched.clear();
    S.fresh.clear();
    S.liveIds.clear();
    S.insights = [];
    S.series = S.coverage = null;
    S.streamLastId = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage unavailable */ }
    $('view').replaceChildren();
    $('toasts').replaceChildren();
    document.title = 'sqlvigil console';
  }
  function signOut() {
    resetSession();
    showLogin('Signed out. The token was removed from this tab.', 'info');
  }
  function sessionEnded(e) {
    if (!S.token) return;
    resetSession();
    showLogin('Your session ended: ' + e.message + '. Sign in again with a valid token.');
  }

  // ------------------------------------------------------------------ routing
  function parseRoute() {
    const raw = location.hash.replace(/^#\/?/, '');
    const qi = raw.indexOf('?');
    const path = qi >= 0 ? raw.slice(0, qi) : raw;
    const params = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
    let parts;
    try { parts = path.split('/').filter(Boolean).map(decodeURIComponent); } catch (e) { parts = ['?']; }
    return { parts, params };
  }
  function teardownView() {
    if (chartResizer) chartResizer.disconnect();
    for (const c of S.charts) { try { c.u.destroy(); } catch (e) { /* gone */ } }
    S.charts = [];
    for (const t of S.timers) clearInterval(t);
    S.timers = [];
    S.live = [];
    S.readyListeners = [];
    const dlg = $('silence-dialog');
    if (dlg.open) dlg.close();
  }
  async function route() {
    if (!S.token || !S.me) return;
    const gen = ++S.routeGen;
    teardownView();
    const { parts, params } = parseRoute();
    const root = $('view');
    fill(root);
    const ctx = { alive: () => gen === S.routeGen && !!S.token, params };
    let nav = 'fleet';
    let view;
    if (parts.length === 0 || parts[0] === 'fleet') view = () => viewFleet(root, ctx);
    else if (parts[0] === 'instance' && parts[1]) { view = () => viewInstance(root, ctx, parts[1]); nav = ''; }
    else if (parts[0] === 'anomaly' && parts[1]) { view = () => viewAnomaly(root, ctx, parts[1]); nav = ''; }
    else if (parts[0] === 'anomalies') { view = () => viewAnomalies(root, ctx); nav = 'anomalies'; }
    else view = async () => { root.append(errorBox(new ApiError(404, 'not_found', 'There is no page ' + location.hash + '.'))); };
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.getAttribute('data-nav') === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    window.scrollTo(0, 0);
    try {
      await view();
    } catch (e) {
      if (!ctx.alive() || (e && e.name === 'AbortError')) return;
      if (e && e.status === 401) return;
      root.append(errorBox(e));
    }
  }
  function errorBox(e) {
    return h('div', { class: 'alert', role: 'alert', 'data-testid': 'error' },
      h('strong', null, e.status === 404 ? 'Not found. ' : e.status === 403 ? 'Not allowed. ' : 'Something went wrong. '),
      e.message || String(e),
      e.requestId ? h('div', { class: 'rid' }, 'request id ' + e.requestId) : null);
  }
  function inlineError(e) {
    return h('div', { class: 'chart-msg', role: 'alert' }, 'Could not load: ' + (e.message || e) + (e.requestId ? ' (request ' + e.requestId + ')' : ''));
  }
  function panel(title, opts, ...body) {
    opts = opts || {};
    const hid = 'h-' + Math.random().toString(36).slice(2, 9);
    return h('section', { class: 'panel ' + (opts.cls || ''), 'data-testid': opts.testid || null, 'aria-labelledby': hid },
      h('header', null, h('h2', { id: hid }, title), opts.hint ? h('span', { class: 'hint' }, opts.hint) : null),
      h('div', { class: 'body' + (opts.flush ? ' flush' : '') }, body));
  }
  function every(ms, fn) { S.timers.push(setInterval(fn, ms)); }

  // ------------------------------------------------------------------ fleet view
  async function viewFleet(root, ctx) {
    const page = h('div', { 'data-testid': 'fleet', 'data-loaded': 'false' });
    const cards = h('div', { class: 'fleet-cards', 'data-testid': 'instance-cards' }, h('div', { class: 'loading' }, 'Loading instances'));
    const openCount = h('span', { class: 'hint', 'data-testid': 'open-count' });
    const openList = liveAnomalyList((a) => a.state === 'open', {
      testid: 'open-anomalies', empty: 'No open anomalies — all quiet.', limit: 30,
      onRender: (items) => { openCount.textContent = items.length + ' open'; },
    });
    const recentList = liveAnomalyList((a) => a.state === 'resolved', { testid: 'recent-anomalies', empty: 'Nothing resolved yet.', limit: 8 });
    const insightsBody = h('div', { 'data-testid': 'latest-insights' }, h('div', { class: 'loading' }, 'Loading'));
    page.append(
      h('div', { class: 'page-head' },
        h('div', null, h('h1', null, 'Fleet'), h('div', { class: 'sub' }, 'SQL Server instances over the last hour · times in ' + (TZ || 'your time zone'))),
        h('a', { class: 'btn', href: '#/anomalies' }, 'All anomalies')),
      cards,
      h('div', { class: 'grid grid-2' },
        h('section', { class: 'panel', 'aria-labelledby': 'open-h' }, h('header', null, h('h2', { id: 'open-h' }, 'Open anomalies'), openCount), h('div', { class: 'body flush' }, openList.el)),
        h('div', null,
          pipelinePanel(),
          panel('Recently resolved', { flush: true }, recentList.el))),
      panel('Latest insights', { testid: 'insights-panel' }, insightsBody));
    root.append(page);

    const [coverage, series] = await Promise.all([loadCoverage(true), loadSeries(true), refreshAnomalies()]);
    if (!ctx.alive()) return;
    openList.render();
    recentList.render();
    const instances = [...new Set(coverage.map((c) => c.instance).concat(series.map((s) => s.instance)))].sort();
    const byInstance = new Map(coverage.map((c) => [c.instance, c]));
    const healthEls = new Map();
    fill(cards, ...(instances.length ? [] : [h('div', { class: 'empty-state' }, 'No instance has sent telemetry yet.')]));
    const sparkJobs = [];
    for (const name of instances) {
      const mine = series.filter((s) => s.instance === name);
      const cov = byInstance.get(name) || {};
      const health = h('span', { class: 'health', 'data-testid': 'instance-health' });
      healthEls.set(name, health);
      const card = h('a', { class: 'icard', href: instanceHref(name), 'data-testid': 'instance-card', 'data-instance': name, 'aria-label': 'Instance ' + name },
        h('div', { class: 'icard-head' },
          h('h2', null, name),
          cov.receiver_mode ? h('span', { class: 'badge badge-mode', title: 'Receiver mode, from the metrics it sends (GET /api/v1/coverage)', 'data-testid': 'receiver-mode' }, cov.receiver_mode === 'windows' ? 'Windows perf counters' : cov.receiver_mode) : null,
          health));
      const used = new Set();
      for (const slot of SLOTS) {
        const s = pickSeries(mine, slot.candidates, used);
        if (s) used.add(s.id);
        const value = h('b', { 'data-testid': 'spark-value' }, '–');
        const fallback = s && slot.key === 'cpu' && s.metric !== slot.candidates[0];
        const label = h('div', { class: 'spark-label', title: s ? s.metric : null }, value, s ? (fallback ? metricTitle(s.metric) : slot.title) : slot.title, fallback ? h('span', { class: 'small', style: { display: 'block' } }, 'in place of CPU') : null);
        const box = h('div', { class: 'spark', 'data-testid': 'spark-' + slot.key });
        card.append(h('div', { class: 'spark-row' }, label, box));
        if (!s) { box.append(h('div', { class: 'empty' }, slot.key === 'cpu' ? 'not reported in this receiver mode' : 'not reported')); continue; }
        sparkJobs.push({ s, box, value });
      }
      const gaps = (cov.rules_that_cannot_fire || []).length;
      card.append(h('div', { class: 'icard-foot' }, mine.length + ' series' + (gaps ? ' · ' + gaps + ' rule' + (gaps > 1 ? 's' : '') + ' cannot fire in this mode' : '')));
      cards.append(card);
    }
    const renderHealth = () => {
      for (const [name, el] of healthEls) {
        const c = openCounts(name);
        fill(el, ...healthBadges(c));
        const top = ['critical', 'warning', 'info'].find((s) => c[s]);
        el.closest('.icard').setAttribute('data-health', top || 'ok');
      }
    };
    renderHealth();
    S.live.push(renderHealth);
    // One request per metric for every instance's sparkline of it.
    const drawSparks = async () => {
      const to = Date.now();
      const from = to - RANGES['1h'];
      const metrics = [...new Set(sparkJobs.map((j) => j.s.metric))];
      await Promise.all(metrics.map(async (metric) => {
        const jobs = sparkJobs.filter((j) => j.s.metric === metric);
        let bySeries = new Map();
        try {
          const d = await api('metrics' + qs({ metric, from: isoAt(from), to: isoAt(to), order: 'newest', limit: 20000 }));
          for (const p of d.points || []) {
            if (!bySeries.has(p.series_id)) bySeries.set(p.series_id, []);
            bySeries.get(p.series_id).push([parseTime(p.time) / 1000, p.value]);
          }
        } catch (e) {
          if (e.status === 401) return;
          for (const j of jobs) fill(j.box, h('div', { class: 'empty', title: e.message }, 'unavailable'));
          return;
        }
        for (const j of jobs) {
          const pts = (bySeries.get(j.s.id) || []).reverse();
          const r = await seriesChart(j.box, null, j.s, from, to, { spark: true, height: 38, points: { points: pts, unit: j.s.unit } });
          if (r && r.last) j.value.textContent = fmtNum(r.last[1], r.unit, true);
        }
      }));
    };
    const insightsLoad = loadInsights();
    await drawSparks();
    if (!ctx.alive()) return;
    page.setAttribute('data-loaded', 'true');
    every(30e3, () => { if (ctx.alive()) drawSparks(); });
    every(60e3, () => { if (ctx.alive()) refreshAnomalies().then(() => notifyLive()).catch(() => {}); });

    await insightsLoad;

    async function loadInsights() {
      const renderInsights = () => {
        const list = S.insights.slice(0, 4);
        fill(insightsBody, ...(list.length ? list.map((i) => insightCard(i, true)) : [h('div', { class: 'empty-state' }, 'No insights yet.')]));
      };
      try {
        const d = await api('insights' + qs({ limit: 10 }));
        if (!ctx.alive()) return;
        S.insights = (d.insights || []).slice().sort((a, b) => parseTime(b.generated_at) - parseTime(a.generated_at));
        renderInsights();
        S.live.push((msgs) => { if (msgs.some((m) => m.kind === 'insight')) renderInsights(); });
      } catch (e) {
        if (e.status !== 401) fill(insightsBody, inlineError(e));
      }
    }
  }

  function insightCard(i, compact) {
    const acts = i.recommended_actions || [];
    const actList = acts.length ? h('ol', null, acts.map((x) => h('li', null, x))) : null;
    return h('article', { class: 'insight' + (compact === true ? ' compact' : ''), 'data-testid': 'insight' },
      h('div', { class: 'row' },
        h('strong', null, i.instance),
        h('span', { class: 'badge badge-mode' }, i.model === 'rules' ? 'rules analyzer' : i.model),
        i.trigger && i.trigger !== 'anomaly' ? h('span', { class: 'badge badge-mode' }, i.trigger.replace('_', ' ')) : null,
        h('span', { class: 'spacer' }),
        h('span', { class: 'muted small' }, timeEl(i.generated_at))),
      h('p', { title: compact === true ? i.summary : null }, i.summary),
      compact === true && actList ? h('details', null, h('summary', null, acts.length + ' recommended action' + (acts.length > 1 ? 's' : '')), actList) : actList,
      i.note ? h('p', { class: 'muted small' }, i.note) : null,
      (i.anomaly_ids || []).length ? h('div', { class: 'small' }, 'About ', i.anomaly_ids.map((id, k) => [k ? ', ' : '', h('a', { href: anomalyHref(id) }, id.split(':')[0])])) : null);
  }

  // ------------------------------------------------------------------ instance view
  async function viewInstance(root, ctx, name) {
    const range = RANGES[ctx.params.get('range')] ? ctx.params.get('range') : '1h';
    const span = RANGES[range];
    const to = Date.now();
    const from = to - span;
    const health = h('span', { class: 'handling', 'data-testid': 'instance-health' });
    const modeEl = h('span');
    const picker = h('div', { class: 'range-picker', role: 'group', 'aria-label': 'Time range' },
      Object.keys(RANGES).map((r) => h('button', { type: 'button', 'aria-pressed': r === range ? 'true' : 'false', 'data-testid': 'range-' + r, onclick: () => { location.hash = instanceHref(name, r); } }, r)));
    const notices = h('div');
    const chartsGrid = h('div', { class: 'grid grid-2' });
    const waitsBody = h('div', null, h('div', { class: 'loading' }, 'Loading waits'));
    const tqBody = h('div', { class: 'table-wrap' }, h('div', { class: 'loading' }, 'Loading top queries'));
    const blockBody = h('div', null, h('div', { class: 'loading' }, 'Loading blocking'));
    const list = liveAnomalyList((a) => a.series.instance === name && (a.state === 'open' || !a.resolved_at || parseTime(a.resolved_at) >= from), { testid: 'instance-anomalies', empty: 'No anomalies in this range.', limit: 20 });
    const page = h('div', { 'data-testid': 'instance-page', 'data-instance': name, 'data-range': range, 'data-loaded': 'false' },
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Fleet'), ' › ', name),
      h('div', { class: 'page-head' },
        h('div', null, h('h1', null, name), h('div', { class: 'sub' }, modeEl, health, h('span', null, fmtWhen(from) + ' – ' + fmtWhen(to) + (TZ ? ' (' + TZ + ')' : '')))),
        picker),
      notices,
      chartsGrid,
      h('section', { class: 'panel', 'data-testid': 'waits-panel', 'aria-labelledby': 'waits-h' },
        h('header', null, h('h2', { id: 'waits-h' }, 'Waits by category'), h('span', { class: 'hint' }, 'seconds waited per second, averaged per ' + WAIT_WINDOW[range])),
        h('div', { class: 'body' }, waitsBody)),
      h('section', { class: 'panel', 'data-testid': 'top-queries', 'aria-labelledby': 'tq-h' },
        h('header', null, h('h2', { id: 'tq-h' }, 'Top queries by CPU'), h('span', { class: 'hint' }, 'summed over the range')),
        h('div', { class: 'body flush' }, tqBody)),
      h('div', { class: 'grid grid-2' },
        h('section', { class: 'panel', 'data-testid': 'blocking-tree', 'aria-labelledby': 'blk-h' },
          h('header', null, h('h2', { id: 'blk-h' }, 'Blocking'), h('span', { class: 'hint' }, 'head blockers and who waits behind them')),
          h('div', { class: 'body' }, blockBody)),
        panel('Anomalies on ' + name, { flush: true }, list.el)));
    root.append(page);

    const [series, coverage] = await Promise.all([loadSeries(), loadCoverage(), refreshAnomalies()]);
    if (!ctx.alive()) return;
    const mine = series.filter((s) => s.instance === name);
    const cov = coverage.find((c) => c.instance === name) || {};
    if (!mine.length && !cov.instance) {
      notices.append(h('div', { class: 'notice' }, 'No telemetry from an instance named ', h('code', null, name), ' (or it is outside this token\'s scope).'));
    }
    fill(modeEl, cov.receiver_mode ? h('span', { class: 'badge badge-mode', 'data-testid': 'receiver-mode' }, cov.receiver_mode === 'windows' ? 'Windows perf counters' : 'direct connection') : null);
    const renderHealth = () => fill(health, ...healthBadges(openCounts(name)));
    renderHealth();
    S.live.push(renderHealth);
    list.render();
    const gaps = cov.rules_that_cannot_fire || [];
    if (gaps.length) {
      notices.append(h('details', { class: 'gaps notice' },
        h('summary', null, gaps.length + ' rule' + (gaps.length > 1 ? 's' : '') + ' cannot fire for this instance in ' + (cov.receiver_mode || 'its') + ' mode'),
        h('ul', null, gaps.map((g) => h('li', null, h('code', null, g.rule), ': ', g.reason)))));
    }

    // Charts: the three main slots, a few extras this instance has, and every other
    // series with an anomaly in the range.
    const used = new Set();
    const chartJobs = [];
    const addChart = (title, s, testid, subtitle) => {
      used.add(s.id);
      const el = h('div', { class: 'chart', 'data-testid': 'chart' }, h('div', { class: 'chart-msg loading' }, 'Loading'));
      const note = h('div', { class: 'chart-note' });
      const current = h('span', { class: 'hint', 'data-testid': 'chart-current' });
      chartsGrid.append(h('section', { class: 'panel chart-panel', 'data-testid': testid, 'data-series-id': s.id, 'aria-label': title },
        h('header', null, h('div', null, h('h2', null, title), h('div', { class: 'muted small' }, subtitle || s.metric + (unitText(s.unit) ? ' · ' + unitText(s.unit) : ''))), current),
        h('div', { class: 'body' }, el, note)));
      chartJobs.push({ el, note, s, current, title });
    };
    for (const slot of SLOTS) {
      const s = pickSeries(mine, slot.candidates, used);
      if (!s) {
        if (slot.key === 'cpu') notices.append(h('div', { class: 'notice' }, 'This instance reports no CPU series' + (cov.receiver_mode === 'windows' ? ' (Windows performance counters carry none)' : '') + '.'));
        continue;
      }
      const fallback = slot.key === 'cpu' && s.metric !== slot.candidates[0];
      addChart(fallback ? metricTitle(s.metric) : slot.title, s, 'chart-' + slot.key, fallback ? 'in place of CPU, which this instance does not report · ' + s.metric : null);
    }
    for (const slot of EXTRA_SLOTS) {
      const s = pickSeries(mine, slot.candidates, used);
      if (s) addChart(slot.title, s, 'chart-' + slot.key);
    }
    const anomalousIds = new Set(allAnomalies().filter((a) => a.series.instance === name && (a.state === 'open' || parseTime(a.resolved_at) >= from)).map((a) => a.series_id));
    for (const s of mine) {
      if (anomalousIds.has(s.id) && !used.has(s.id) && chartJobs.length < 10) {
        const attrs = Object.entries(s.attributes || {}).filter(([k]) => k !== 'service.instance.id' && !k.startsWith('sqlvigil.')).map(([k, v]) => k + '=' + v).join(', ');
        addChart(metricTitle(s.metric) + (attrs ? ' · ' + attrs : ''), s, 'chart-anomalous', s.metric + (s.database ? ' · ' + s.database : ''));
      }
    }
    if (!chartJobs.length) chartsGrid.append(h('div', { class: 'empty-state' }, 'No series to chart.'));
    const drawCharts = () => Promise.all(chartJobs.map(async (j) => {
      try {
        const r = await seriesChart(j.el, j.note, j.s, from, to, { sync: 'instance-' + name, height: 190, label: j.title + ' over ' + range });
        if (r && r.last) j.current.textContent = 'now ' + fmtNum(r.last[1], r.unit);
      } catch (e) {
        if (e.status !== 401) fill(j.el, inlineError(e));
      }
    }));

    await Promise.all([
      drawCharts(),
      drawWaits(waitsBody, name, from, to, range, mine).catch((e) => { if (e.status !== 401) fill(waitsBody, inlineError(e)); }),
      drawTopQueries(tqBody, name, from, to).catch((e) => { if (e.status !== 401) fill(tqBody, inlineError(e)); }),
      drawBlocking(blockBody, name, from, to).catch((e) => { if (e.status !== 401) fill(blockBody, inlineError(e)); }),
    ]);
    if (!ctx.alive()) return;
    page.setAttribute('data-loaded', 'true');
  }

  async function drawWaits(body, name, from, to, range, mine) {
    if (!mine.some((s) => s.metric === WAIT_METRIC)) {
      fill(body, h('div', { class: 'chart-msg' }, 'This instance sends no wait statistics (' + WAIT_METRIC + ')' + '.'));
      return;
    }
    const d = await api('aggregates' + qs({ metric: WAIT_METRIC, instance: name, window: WAIT_WINDOW[range], group_by: 'wait_category', from: isoAt(from), to: isoAt(to) }));
    const rows = d.aggregates || [];
    if (!rows.length) { fill(body, h('div', { class: 'chart-msg' }, 'No waits in this range.')); return; }
    const groups = new Map();
    for (const r of rows) {
      const g = r.group || '(none)';
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push([parseTime(r.window_start) / 1000, r.avg, r.max]);
    }
    const stats = [...groups.entries()].map(([g, pts]) => ({
      g, pts: pts.sort((a, b) => a[0] - b[0]),
      mean: pts.reduce((s, p) => s + p[1], 0) / pts.length,
      peak: Math.max(...pts.map((p) => p[2])),
      last: pts[pts.length - 1][1],
    })).sort((a, b) => b.mean - a.mean);
    stats.forEach((s, i) => { s.color = PALETTE[i % PALETTE.length]; });
    const top = stats.slice(0, 8);
    const chartEl = h('div', { class: 'chart', 'data-testid': 'waits-chart' });
    const maxMean = Math.max(...stats.map((s) => s.mean)) || 1;
    fill(body, 
      chartEl,
      h('div', { class: 'table-wrap', style: { marginTop: '.6rem' } }, h('table', { 'data-testid': 'waits-table' },
        h('thead', null, h('tr', null, h('th', null, 'Category'), h('th', null, 'Share of waiting'), h('th', { class: 'num' }, 'Average'), h('th', { class: 'num' }, 'Peak'), h('th', { class: 'num' }, 'Latest'))),
        h('tbody', null, stats.map((s) => h('tr', null,
          h('td', null, h('span', { class: 'swatch', style: { background: s.color } }), s.g),
          h('td', null, h('div', { class: 'bar' }, h('i', { style: { width: Math.max(2, (s.mean / maxMean) * 100) + '%', background: s.color } }))),
          h('td', { class: 'num' }, fmtNum(s.mean, 's/s')),
          h('td', { class: 'num' }, fmtNum(s.peak, 's/s')),
          h('td', { class: 'num' }, fmtNum(s.last, 's/s'))))))));
    tsChart(chartEl, {
      height: 220, data: joinColumns(top.map((s) => s.pts.map((p) => [p[0], p[1]]))),
      series: top.map((s) => ({ label: s.g, color: s.color, width: 1.6 })), unit: 's/s',
      xRange: [from / 1000, to / 1000], spans: anomalySpans(name, null, true), sync: 'instance-' + name, label: 'Waits by category over ' + range,
    });
  }

  async function drawTopQueries(body, name, from, to) {
    const d = await api('top-queries' + qs({ instance: name, from: isoAt(from), to: isoAt(to), limit: 10 }));
    const rows = (d.top_queries && d.top_queries.rows) || [];
    if (!rows.length) { fill(body, h('div', { class: 'empty-state' }, 'No top-query events in this range.')); return; }
    const totalCpu = rows.reduce((s, q) => s + (q.total_cpu_ms || 0), 0) || 1;
    fill(body, h('table', { 'data-testid': 'top-queries-table' },
      h('thead', null, h('tr', null, h('th', null, 'Query'), h('th', null, 'Database'), h('th', { class: 'num' }, 'CPU'), h('th', null, 'Share'), h('th', { class: 'num' }, 'Executions'), h('th', { class: 'num' }, 'CPU / exec'), h('th', { class: 'num' }, 'Elapsed'), h('th', { class: 'num' }, 'Logical reads'))),
      h('tbody', null, rows.map((q) => h('tr', { 'data-testid': 'top-query' },
        h('td', null, h('code', null, q.query_hash), h('span', { class: 'stmt', title: q.statement }, q.statement || '(no text)')),
        h('td', null, q.database || '–'),
        h('td', { class: 'num' }, fmtMs(q.total_cpu_ms)),
        h('td', null, h('div', { class: 'bar', title: nfPct.format(q.total_cpu_ms / totalCpu) }, h('i', { style: { width: Math.max(2, (q.total_cpu_ms / totalCpu) * 100) + '%' } }))),
        h('td', { class: 'num' }, fmtNum(q.executions, '', true)),
        h('td', { class: 'num' }, q.executions ? fmtMs(q.total_cpu_ms / q.executions) : '–'),
        h('td', { class: 'num' }, fmtMs(q.total_elapsed_ms)),
        h('td', { class: 'num' }, fmtNum(q.total_logical_reads, '', true)))))));
  }

  function chainView(c) {
    const kids = new Map();
    for (const s of c.sessions || []) {
      if (!kids.has(s.blocked_by)) kids.set(s.blocked_by, []);
      kids.get(s.blocked_by).push(s);
    }
    const seen = new Set();
    const subtree = (sid) => {
      const list = (kids.get(sid) || []).filter((s) => !seen.has(s.session_id));
      if (!list.length) return null;
      return h('ul', null, list.map((s) => {
        seen.add(s.session_id);
        return h('li', null,
          h('div', { class: 'node' },
            h('span', { class: 'sid' }, 'session ' + s.session_id),
            h('span', { class: 'badge badge-mode' }, s.wait_type || 'waiting'),
            h('span', null, 'waiting ' + fmtMs(s.wait_time_ms)),
            s.database ? h('span', { class: 'muted' }, s.database) : null,
            h('span', { class: 'stmt', title: (s.statement || '') + (s.wait_resource ? '\n' + s.wait_resource : '') }, s.statement || '')),
          subtree(s.session_id));
      }));
    };
    return h('div', { class: 'chain', 'data-testid': 'blocking-chain', 'data-head': c.head_session_id },
      h('div', { class: 'chain-head' },
        h('span', { class: 'sid' }, 'head blocker: session ' + c.head_session_id),
        h('span', null, c.victims + ' blocked' + (c.depth > 1 ? ', ' + c.depth + ' deep' : '')),
        h('span', { class: 'muted' }, 'total wait ' + fmtMs(c.total_wait_ms) + (c.longest_wait_ms ? ', longest ' + fmtMs(c.longest_wait_ms) : '')),
        c.head_open_transactions ? h('span', { class: 'muted' }, c.head_open_transactions + ' open transaction(s)') : null,
        h('span', { class: 'muted small' }, 'seen ', timeEl(c.last_seen, 'rel'))),
      c.head_statement ? h('div', { class: 'stmt', title: c.head_statement }, c.head_statement) : h('div', { class: 'muted small' }, 'The head was idle when sampled (likely an open transaction holding locks).'),
      h('div', { class: 'tree', tabindex: (c.sessions || []).length > 12 ? '0' : null, 'aria-label': 'Sessions blocked behind session ' + c.head_session_id }, subtree(c.head_session_id)));
  }

  async function drawBlocking(body, name, from, to) {
    const d = await api('blocking' + qs({ instance: name, from: isoAt(from), to: isoAt(to), limit: 2000 }));
    const chains = d.chains || [];
    if (!chains.length) { fill(body, h('div', { class: 'empty-state' }, 'No blocked sessions sampled in this range.')); return; }
    fill(body, ...chains.slice(0, 5).map(chainView), chains.length > 5 ? h('div', { class: 'muted small' }, (chains.length - 5) + ' smaller chains not shown.') : null);
  }

  // ------------------------------------------------------------------ anomaly view
  async function viewAnomaly(root, ctx, id) {
    const page = h('div', { 'data-testid': 'anomaly-page', 'data-anomaly-id': id, 'data-loaded': 'false' }, h('div', { class: 'loading' }, 'Loading anomaly'));
    root.append(page);
    let detail = await api('anomalies/' + enc(id));
    if (!ctx.alive()) return;
    upsertAnomaly(detail.anomaly, true);
    const current = () => S.anomalies.get(id) || detail.anomaly;
    const a0 = current();

    const headEl = h('div', { class: 'page-head' });
    const factsEl = h('dl', { class: 'facts', 'data-testid': 'anomaly-facts' });
    const evidenceEl = h('div', { class: 'chart', 'data-testid': 'evidence-chart' }, h('div', { class: 'chart-msg loading' }, 'Loading'));
    const evidenceNote = h('div', { class: 'chart-note' });
    const rcBody = h('div', { 'data-testid': 'root-cause', 'data-loaded': 'false' }, h('div', { class: 'loading' }, 'Tracing the root cause'));
    const insightsBody = h('div', { 'data-testid': 'insights' });
    const auditBody = h('div', { 'data-testid': 'audit' });
    const actionMsg = h('div', { 'data-testid': 'action-message', 'aria-live': 'polite' });

    fill(page, 
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Fleet'), ' › ', h('a', { href: instanceHref(a0.series.instance), 'data-testid': 'instance-link' }, a0.series.instance), ' › ', 'anomaly'),
      headEl,
      actionMsg,
      h('section', { class: 'panel' }, h('div', { class: 'body' }, factsEl)),
      h('section', { class: 'panel chart-panel', 'aria-labelledby': 'ev-h' },
        h('header', null, h('h2', { id: 'ev-h' }, 'Evidence'), h('span', { class: 'hint' }, metricTitle(a0.series.metric) + ' around the anomaly; the window that crossed the rule in red')),
        h('div', { class: 'body' }, evidenceEl, evidenceNote)),
      h('section', { class: 'panel', 'aria-labelledby': 'rc-h' },
        h('header', null, h('h2', { id: 'rc-h' }, 'Root cause'), h('span', { class: 'hint' }, 'waits → queries → blocking → related')),
        h('div', { class: 'body' }, rcBody)),
      h('div', { class: 'grid grid-2' },
        panel('Insights', { testid: 'insights-panel' }, insightsBody),
        panel('Audit', { testid: 'audit-panel', hint: 'what people did' }, auditBody)));

    const renderHead = () => {
      const a = current();
      const hd = a.handling || {};
      const handling = [];
      if (hd.acknowledged) handling.push(h('span', { class: 'badge badge-ack' }, 'Acknowledged by ' + hd.acknowledged.by), h('span', { class: 'muted small' }, timeEl(hd.acknowledged.at)));
      if (hd.resolved) handling.push(h('span', { class: 'badge state-resolved' }, 'Resolved by hand by ' + hd.resolved.by), h('span', { class: 'muted small' }, timeEl(hd.resolved.at)));
      if (hd.silenced) {
        const active = parseTime(hd.silenced.until) > Date.now();
        handling.push(h('span', { class: 'badge badge-silenced' }, (active ? 'Silenced until ' : 'Silence ended ') + fmtWhen(parseTime(hd.silenced.until)) + ' by ' + hd.silenced.by + (hd.silenced.note ? ' — ' + hd.silenced.note : '')));
      }
      fill(headEl, 
        h('div', { style: { minWidth: '0' } },
          h('h1', { class: 'row' }, h('span', null, a.rule), sevBadge(a.severity), h('span', { class: 'badge state-' + a.state, 'data-testid': 'anomaly-state', 'data-state': a.state }, a.state)),
          h('div', { class: 'sub' },
            h('a', { href: instanceHref(a.series.instance) }, a.series.instance),
            h('span', null, '·'), h('span', null, metricTitle(a.series.metric)),
            h('span', null, '·'), h('code', null, a.condition),
            a.folded ? h('span', { class: 'badge badge-mode' }, 'storm: stands for ' + a.folded + ' anomalies') : null),
          h('div', { class: 'sub handling', 'data-testid': 'anomaly-handling' }, handling.length ? handling : h('span', { class: 'muted small' }, a.state === 'open' ? 'Not acknowledged yet.' : ''))),
        actionsBar(a));
      const opened = parseTime(a.opened_at);
      const end = a.resolved_at ? parseTime(a.resolved_at) : Date.now();
      const fact = (k, ...v) => h('div', null, h('dt', null, k), h('dd', null, v));
      fill(factsEl, 
        fact('Observed', fmtNum(a.observed, unitOf(a))),
        fact('Expected', a.expected != null ? fmtNum(a.expected, unitOf(a)) : '–'),
        fact('Score', fmtNum(a.score) + (a.expected != null ? '×' : '')),
        fact('Opened', timeEl(a.opened_at)),
        fact(a.resolved_at ? 'Resolved' : 'Open for', a.resolved_at ? timeEl(a.resolved_at) : fmtDur((end - opened) / 1000)),
        fact('Duration', fmtDur((end - opened) / 1000)),
        fact('Last update', timeEl(a.updated_at, 'rel')),
        fact('Series', h('code', { title: JSON.stringify(a.series.attributes || {}) }, a.series_id)));
    };
    const unitOf = (a) => unitOfSeries(a.series_id);

    const actionsBar = (a) => {
      if (!canOperate()) return null;
      const hd = a.handling || {};
      const resolved = a.state === 'resolved';
      const note = h('input', { type: 'text', placeholder: 'Note (optional)', 'aria-label': 'Note for the action', 'data-testid': 'action-note', maxlength: '500' });
      const run = async (kind, bodyFn) => {
        const btns = bar.querySelectorAll('button');
        btns.forEach((b) => { b.disabled = true; });
        fill(actionMsg);
        try {
          const body = bodyFn ? bodyFn() : (note.value.trim() ? { note: note.value.trim() } : {});
          const r = await api('anomalies/' + enc(id) + '/' + kind, { method: 'POST', body });
          upsertAnomaly(r.anomaly, true);
          renderHead();
          notifyLive();
          refreshDetail();
          toast({ kind: 'action', anomalyId: id, cls: 'ok', title: 'Anomaly ' + pastTense[kind], body: a.rule + ' on ' + a.series.instance, timeout: 5000 });
          return true;
        } catch (e) {
          if (e.status === 401) return false;
          fill(actionMsg, h('div', { class: 'alert', role: 'alert', 'data-testid': 'action-error' }, 'Could not ' + kind + ': ' + e.message, e.requestId ? h('div', { class: 'rid' }, 'request id ' + e.requestId) : null));
          if (bar.isConnected) renderHead();
          return false;
        }
      };
      const bar = h('div', { class: 'actions-bar', 'data-testid': 'anomaly-actions', role: 'group', 'aria-label': 'Act on this anomaly' },
        note,
        h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'btn-acknowledge', disabled: resolved || !!hd.acknowledged, title: hd.acknowledged ? 'Already acknowledged' : resolved ? 'Resolved anomalies cannot be acknowledged' : 'Acknowledge: someone is on it', onclick: () => run('acknowledge') }, hd.acknowledged ? 'Acknowledged' : 'Acknowledge'),
        h('button', { type: 'button', class: 'btn', 'data-testid': 'btn-resolve', disabled: resolved, title: resolved ? 'Already resolved' : 'Resolve by hand: closes this occurrence', onclick: () => run('resolve') }, 'Resolve'),
        h('button', { type: 'button', class: 'btn', 'data-testid': 'btn-silence', title: 'Suppress notifications for a while', onclick: () => openSilence((duration, reason) => run('silence', () => ({ duration, reason }))) }, silencedNow(a) ? 'Extend silence…' : 'Silence…'));
      return bar;
    };

    const renderDetail = () => {
      const ins = (detail.insights || []).slice().sort((x, y) => parseTime(y.generated_at) - parseTime(x.generated_at));
      fill(insightsBody, ...(ins.length ? ins.map(insightCard) : [h('div', { class: 'empty-state' }, 'No insight yet — the analyzer writes one shortly after an anomaly opens.')]));
      const acts = (detail.actions || []).slice().sort((x, y) => parseTime(y.at) - parseTime(x.at));
      fill(auditBody, acts.length ? h('table', { 'data-testid': 'audit-table' },
        h('thead', null, h('tr', null, h('th', null, 'When'), h('th', null, 'Who'), h('th', null, 'Action'), h('th', null, 'Note'))),
        h('tbody', null, acts.map((x) => h('tr', { 'data-testid': 'audit-row', 'data-action': x.action },
          h('td', null, timeEl(x.at)), h('td', null, x.by), h('td', null, pastTense[x.action] || x.action, x.until ? h('div', { class: 'muted small' }, 'until ' + fmtWhen(parseTime(x.until))) : null), h('td', null, x.note || '–')))))
        : h('div', { class: 'empty-state' }, 'Nobody has acted on this anomaly yet.'));
    };
    const refreshDetail = async () => {
      try {
        const d = await api('anomalies/' + enc(id));
        if (!ctx.alive()) return;
        detail = d;
        upsertAnomaly(d.anomaly, true);
        renderHead();
        renderDetail();
      } catch (e) { /* keep what is shown */ }
    };
    loadSeries().then(() => { if (ctx.alive()) renderHead(); }).catch(() => {});
    renderHead();
    renderDetail();
    S.live.push((msgs) => {
      const mine = msgs.filter((m) => (m.data && m.data.anomaly && m.data.anomaly.id === id) || (m.kind === 'insight' && m.data && m.data.insight && (m.data.insight.anomaly_ids || []).includes(id)));
      if (!mine.length) return;
      renderHead();
      if (mine.some((m) => m.kind === 'anomaly.handled' || m.kind === 'insight')) refreshDetail();
    });
    every(30e3, () => { if (ctx.alive() && current().state === 'open') renderHead(); });

    await Promise.all([
      drawEvidence(evidenceEl, evidenceNote, current()).catch((e) => { if (e.status !== 401) fill(evidenceEl, inlineError(e)); }),
      drawRootCause(rcBody, id, ctx).catch((e) => {
        if (e.status === 401) return;
        fill(rcBody, inlineError(e));
        rcBody.setAttribute('data-loaded', 'error');
      }),
    ]);
    if (!ctx.alive()) return;
    page.setAttribute('data-loaded', 'true');
  }

  async function drawEvidence(el, noteEl, a) {
    const ev = (a.evidence || []).map((p) => [parseTime(p.time) / 1000, p.value]).filter((p) => isFinite(p[0]));
    const opened = parseTime(a.opened_at) / 1000;
    // The evidence is the latest window that crossed (bounded): it may start after the
    // opening. The anomaly spans from the first of the two to its end.
    const evFrom = Math.min(ev.length ? ev[0][0] : opened, opened);
    const end = a.resolved_at ? parseTime(a.resolved_at) / 1000 : Date.now() / 1000;
    const lead = Math.min(6 * 3600, Math.max(15 * 60, (end - evFrom) * 0.5));
    const from = (evFrom - lead) * 1000;
    const to = Math.min(Date.now(), (end + 10 * 60) * 1000);
    // The evidence alone at once; the series around it and its band when they come.
    if (ev.length) drawEvidenceChart(el, noteEl, a, ev, [], [], evFrom, opened, 'loading the series around it…');
    let context = [];
    let base = [];
    let note = null;
    try {
      const [pts, b] = await Promise.all([fetchPoints(a.series_id, from, to), fetchBaseline(a.series_id, from, to)]);
      context = pts.points;
      base = b;
    } catch (e) {
      if (e.status === 401) throw e;
      note = 'The series around it could not be read (' + e.message + '); showing the evidence alone.';
    }
    if (!el.isConnected) return;
    if (!ev.length && !context.length) { fill(el, h('div', { class: 'chart-msg' }, 'No evidence points recorded.')); return; }
    drawEvidenceChart(el, noteEl, a, ev, context, base, evFrom, opened, note);
  }

  function drawEvidenceChart(el, noteEl, a, ev, context, base, evFrom, opened, note) {
    const cols = [context, ev];
    const defs = [
      { label: metricTitle(a.series.metric), color: '#6b7a99', width: 1.5 },
      { label: 'evidence', color: '#c0262d', width: 2.2, points: ev.length < 80 },
    ];
    let bands;
    if (base.length) {
      cols.push(base.map((p) => [p.t, p.high]), base.map((p) => [p.t, p.low]), base.map((p) => [p.t, p.expected]));
      defs.push({ label: 'band high', color: 'rgba(47,158,68,0.35)', width: 1 }, { label: 'band low', color: 'rgba(47,158,68,0.35)', width: 1 }, { label: 'baseline', color: '#2f9e44', width: 1.25, dash: [5, 4] });
      bands = [{ series: [3, 4], fill: 'rgba(47,158,68,0.12)' }];
    }
    const data = joinColumns(cols);
    if (a.expected != null && !base.length) {
      data.push(data[0].map(() => a.expected));
      defs.push({ label: 'threshold / expected', color: '#a35a00', width: 1.25, dash: [6, 4] });
    }
    const unit = unitOfSeries(a.series_id);
    tsChart(el, {
      height: 260, data, series: defs, bands, unit,
      spans: () => [{ from: evFrom, to: (S.anomalies.get(a.id) || a).resolved_at ? parseTime((S.anomalies.get(a.id) || a).resolved_at) / 1000 : Date.now() / 1000, fill: SEV_FILL[a.severity] || SEV_FILL.info, edge: SEV_EDGE[a.severity] || SEV_EDGE.info, edgeAt: opened }],
      label: 'Evidence chart of ' + a.rule + ' on ' + a.series.instance,
    });
    fill(noteEl, 
      keyItem(SEV_FILL[a.severity] || SEV_FILL.info, 'anomaly (line: opened)'),
      a.expected != null && !base.length ? keyItem('#a35a00', 'threshold / expected ' + fmtNum(a.expected), 'line') : null,
      base.length ? keyItem('rgba(47,158,68,0.3)', 'baseline band') : h('span', null, 'no baseline band for this series'),
      note ? h('span', null, note) : null);
  }

  async function drawRootCause(body, id, ctx) {
    const d = await api('anomalies/' + enc(id) + '/root-cause');
    if (!ctx.alive()) return;
    const rc = d.root_cause || {};
    const a = rc.anomaly || S.anomalies.get(id);
    const steps = h('ol', { class: 'chainsteps' });
    // 1. waits
    const waits = rc.waits || [];
    const waitChart = h('div', { class: 'chart', 'data-testid': 'rc-waits-chart' }, h('div', { class: 'chart-msg loading' }, 'Loading the wait types'));
    steps.append(h('li', { 'data-testid': 'rc-waits' },
      h('h3', null, 'Waits that moved against the hour before'),
      waits.length ? h('div', { class: 'table-wrap' }, h('table', null,
        h('thead', null, h('tr', null, h('th', null, 'Category'), h('th', null, 'Wait types'), h('th', { class: 'num' }, 'In the window'), h('th', { class: 'num' }, 'Before'), h('th', { class: 'num' }, 'Change'))),
        h('tbody', null, waits.map((w, i) => h('tr', { 'data-testid': 'rc-wait' },
          h('td', null, h('strong', null, w.wait_category)),
          h('td', null, (w.wait_types || []).map((t, k) => [k ? ', ' : '', h('code', null, t)])),
          h('td', { class: 'num' }, fmtNum(w.window, 's/s')),
          h('td', { class: 'num' }, fmtNum(w.baseline, 's/s')),
          h('td', { class: 'num' }, w.ratio != null ? h('span', { class: i === 0 ? 'badge sev-critical' : 'badge sev-warning' }, fmtNum(w.ratio) + '×') : '+' + fmtNum(w.increase, 's/s'))))))) : h('p', { class: 'muted' }, 'No wait category moved (or this instance sends no wait statistics).'),
      waits.length && waits[0].chart ? waitChart : null));
    // 2. queries
    const tq = rc.top_queries || [];
    const resourceName = { cpu: 'CPU', reads: 'logical reads', duration: 'elapsed time' }[rc.resource] || rc.resource || 'CPU';
    steps.append(h('li', { 'data-testid': 'rc-top-queries' },
      h('h3', null, 'Top queries of the window by ' + resourceName),
      tq.length ? h('div', { class: 'table-wrap' }, h('table', null,
        h('thead', null, h('tr', null, h('th', null, 'Query'), h('th', null, 'Share of ' + resourceName), h('th', { class: 'num' }, 'Executions'), h('th', { class: 'num' }, 'CPU'), h('th', { class: 'num' }, 'Reads'))),
        h('tbody', null, tq.map((x) => h('tr', null,
          h('td', null, h('code', null, x.query.query_hash), x.query.database ? h('span', { class: 'muted small' }, ' · ' + x.query.database) : null, h('span', { class: 'stmt', title: x.query.statement }, x.query.statement || '')),
          h('td', null, h('div', { class: 'row' }, h('div', { class: 'bar' + (x.share > 0.5 ? ' hot' : ''), style: { flex: '1' } }, h('i', { style: { width: Math.max(2, x.share * 100) + '%' } })), h('span', { class: 'small' }, nfPct.format(x.share)))),
          h('td', { class: 'num' }, fmtNum(x.query.executions, '', true)),
          h('td', { class: 'num' }, fmtMs(x.query.total_cpu_ms)),
          h('td', { class: 'num' }, fmtNum(x.query.total_logical_reads, '', true))))))) : h('p', { class: 'muted' }, 'No top-query events in the window.')));
    // 3. blocking
    steps.append(h('li', { 'data-testid': 'rc-blocking' },
      h('h3', null, 'Blocking head'),
      rc.blocking_head ? chainView(rc.blocking_head) : h('p', { class: 'muted' }, 'No blocking chain in the window.')));
    // 4. related
    const related = rc.related || [];
    for (const r of related) if (!S.anomalies.has(r.id)) upsertAnomaly(r, true);
    steps.append(h('li', { 'data-testid': 'rc-related' },
      h('h3', null, 'Related anomalies on ' + (a ? a.series.instance : 'the instance')),
      related.length ? h('ul', { class: 'alist', style: { border: '1px solid var(--line-2)', borderRadius: '7px' } }, related.map(anomalyRow)) : h('p', { class: 'muted' }, 'None around the window.')));
    const win = rc.window || [];
    const base = rc.baseline || [];
    fill(body, 
      h('p', { class: 'summary-line', 'data-testid': 'rc-summary' }, rc.summary || 'No summary.'),
      steps,
      h('div', { class: 'muted small', 'data-testid': 'rc-sources' },
        win.length === 2 ? 'Window ' + fmtWhen(parseTime(win[0])) + ' – ' + fmtWhen(parseTime(win[1])) : '',
        base.length === 2 ? ', against ' + fmtWhen(parseTime(base[0])) + ' – ' + fmtWhen(parseTime(base[1])) : '',
        (rc.sources || []).length ? ' · sources: ' + rc.sources.join('; ') : ''));
    body.setAttribute('data-loaded', 'true');
    if (waits.length && waits[0].chart && waitChart.isConnected) {
      drawWaitShift(waitChart, waits[0], a).catch((e) => { if (e.status !== 401) fill(waitChart, inlineError(e)); });
    }
  }

  /** The wait types of the top moving category over the chain's chart window. */
  async function drawWaitShift(el, w, a) {
    const c = w.chart;
    const groupBy = { 'wait.type': 'wait_type', 'wait.category': 'wait_category' }[c.group_by] || 'wait_type';
    const from = parseTime(c.from);
    const to = parseTime(c.to);
    const spanS = (to - from) / 1000;
    const window = spanS > 6 * 3600 ? '5m' : spanS > 2 * 3600 ? '2m' : '1m';
    const d = await api('aggregates' + qs({ metric: c.metric, instance: c.instance, group_by: groupBy, window, from: c.from, to: c.to }));
    const wanted = new Set(w.wait_types || []);
    const groups = new Map();
    for (const r of d.aggregates || []) {
      if (wanted.size && groupBy === 'wait_type' && !wanted.has(r.group)) continue;
      if (!groups.has(r.group)) groups.set(r.group, []);
      groups.get(r.group).push([parseTime(r.window_start) / 1000, r.avg]);
    }
    if (!groups.size || !el.isConnected) { fill(el); return; }
    const names = [...groups.keys()].slice(0, 5);
    const opened = a ? parseTime(a.opened_at) / 1000 : null;
    const evFrom = a && a.evidence && a.evidence.length ? Math.min(opened, parseTime(a.evidence[0].time) / 1000) : opened;
    const end = a && a.resolved_at ? parseTime(a.resolved_at) / 1000 : Date.now() / 1000;
    tsChart(el, {
      height: 170, data: joinColumns(names.map((n) => groups.get(n).sort((x, y) => x[0] - y[0]))),
      series: names.map((n, i) => ({ label: n, color: PALETTE[(i + 1) % PALETTE.length] })), unit: 's/s',
      xRange: [from / 1000, to / 1000],
      spans: a ? [{ from: evFrom, to: end, fill: SEV_FILL[a.severity] || SEV_FILL.info, edge: SEV_EDGE[a.severity], edgeAt: opened }] : null,
      label: w.wait_category + ' waits before and during the anomaly',
    });
  }

  // ------------------------------------------------------------------ anomalies list view
  async function viewAnomalies(root, ctx) {
    const p = ctx.params;
    const state = p.get('state') || '';
    const severity = p.get('severity') || '';
    const instance = p.get('instance') || '';
    const total = h('span', { class: 'hint', 'data-testid': 'anomalies-total' });
    const setFilter = (k, v) => {
      const next = new URLSearchParams(p);
      if (v) next.set(k, v); else next.delete(k);
      const s = next.toString();
      location.hash = '#/anomalies' + (s ? '?' + s : '');
    };
    const select = (label, key, value, options) => {
      const sid = 'f-' + key;
      return h('div', null, h('label', { for: sid }, label),
        h('select', { id: sid, 'data-testid': 'filter-' + key, onchange: (e) => setFilter(key, e.target.value) },
          options.map(([v, t]) => h('option', { value: v, selected: v === value }, t))));
    };
    const instSelect = h('div');
    const list = liveAnomalyList((a) => (!state || a.state === state) && (!severity || a.severity === severity) && (!instance || a.series.instance === instance), { testid: 'anomaly-list', empty: 'No anomalies match.', limit: 200 });
    root.append(h('div', { 'data-testid': 'anomalies-page' },
      h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Anomalies'), h('div', { class: 'sub' }, 'newest first · updates live'))),
      h('div', { class: 'panel' }, h('div', { class: 'body filters' },
        select('State', 'state', state, [['', 'any'], ['open', 'open'], ['resolved', 'resolved']]),
        select('Severity', 'severity', severity, [['', 'any'], ['critical', 'critical'], ['warning', 'warning'], ['info', 'info']]),
        instSelect)),
      h('section', { class: 'panel', 'aria-labelledby': 'al-h' }, h('header', null, h('h2', { id: 'al-h' }, 'Matching anomalies'), total), h('div', { class: 'body flush' }, list.el))));
    const [d, coverage] = await Promise.all([
      api('anomalies' + qs({ state, severity, instance, limit: 200 })),
      loadCoverage(),
      refreshAnomalies(),
    ]);
    if (!ctx.alive()) return;
    for (const a of d.anomalies || []) upsertAnomaly(a, true);
    total.textContent = d.total + ' in all' + (d.next_cursor ? ', newest 200 shown' : '');
    fill(instSelect, select('Instance', 'instance', instance, [['', 'any']].concat(coverage.map((c) => [c.instance, c.instance]))));
    list.render();
  }

  // ------------------------------------------------------------------ silence dialog
  let silenceDone = null;
  function openSilence(onSubmit) {
    const dlg = $('silence-dialog');
    $('silence-error').hidden = true;
    $('silence-reason').value = '';
    $('silence-duration').value = '2h';
    silenceDone = onSubmit;
    dlg.showModal();
    $('silence-reason').focus();
  }
  function wireSilenceDialog() {
    const dlg = $('silence-dialog');
    const err = (m) => { const e = $('silence-error'); e.textContent = m; e.hidden = false; };
    $('silence-cancel').addEventListener('click', () => dlg.close());
    $('silence-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const duration = $('silence-duration').value.trim().replace(/\s+/g, '');
      const reason = $('silence-reason').value.trim();
      if (!/^\d+(s|m|h|d|w)$/.test(duration)) return err('Give a duration such as 30m, 2h or 1d.');
      if (!reason) return err('Say why it is silenced: the reason is kept in the audit.');
      const btn = $('silence-submit');
      btn.disabled = true;
      try {
        const ok = silenceDone ? await silenceDone(duration, reason) : false;
        if (ok) dlg.close();
        else err('The silence was not recorded; see the message on the page.');
      } finally {
        btn.disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ boot
  function boot() {
    wireSilenceDialog();
    $('login-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = $('token-input').value.trim();
      const err = $('login-error');
      $('login-info').hidden = true;
      if (!token) { err.textContent = 'Paste a token first.'; err.hidden = false; return; }
      const btn = $('login-submit');
      btn.disabled = true;
      btn.textContent = 'Signing in…';
      try {
        await signIn(token);
      } catch (ex) {
        err.textContent = describeLoginError(ex);
        err.hidden = false;
        $('token-input').select();
      } finally {
        btn.disabled = false;
        btn.textContent = 'Sign in';
      }
    });
    $('logout').addEventListener('click', signOut);
    window.addEventListener('hashchange', route);
    let rt = null;
    window.addEventListener('resize', () => { clearTimeout(rt); rt = setTimeout(resizeCharts, 120); });
    setInterval(tickTimes, 20e3);
    pollReady();
    setInterval(pollReady, 15e3);
    let saved = null;
    try { saved = sessionStorage.getItem(TOKEN_KEY); } catch (e) { saved = null; }
    if (saved) {
      signIn(saved).catch((e) => {
        try { sessionStorage.removeItem(TOKEN_KEY); } catch (x) { /* ignore */ }
        showLogin(describeLoginError(e));
      });
    } else {
      showLogin();
    }
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
