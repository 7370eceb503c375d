// tasq console: a page of plain JavaScript, served by tasq at /ui, that calls the same HTTP API
// as every other client with the API key the user gives (kept in session storage, sent as a
// bearer header; never a cookie). Views are picked by the URL's hash and refresh every 2 s.
'use strict';

const KEY = 'tasq.key';
const REFRESH_MS = 2000;
const HISTORY = 150; // samples kept per chart: five minutes at one every 2 s
const TYPES = ['activity', 'workflow'];
const STATES = ['pending', 'delayed', 'running', 'dead', 'completed', 'cancelled'];

const app = { who: null, view: null, busy: false, history: new Map(), selected: new Set(), cost: 0, last: 0 };

// ---- DOM and API helpers -------------------------------------------------------------------

/** An element with attributes (on* = listeners) and children (strings become text). */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  return fill(el, ...kids);
}

/** Replaces `el`'s children by `kids` (nested arrays flattened; null, undefined, false skipped). */
function fill(el, ...kids) {
  el.replaceChildren();
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

/** Calls the API; a non-2xx answer throws an Error with the contract's code and message. */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = 'Bearer ' + key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || res.statusText);
    err.status = res.status;
    err.code = data && data.error && data.error.code;
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;
const queuePath = (ns, name) => `/api/v1/namespaces/${enc(ns)}/task-queues/${enc(name)}`;
const qPath = (ns, name, type) => `${queuePath(ns, name)}/${enc(type)}`;
const link = (parts) => '#/' + parts.map(enc).join('/');

function banner(message, ok) {
  const b = document.getElementById('banner');
  b.textContent = message || '';
  b.hidden = !message;
  b.className = ok ? 'ok' : '';
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
const fmtRate = (r) => (r === null || r === undefined ? '–' : `${Number(r).toFixed(r < 10 ? 2 : 0)}/s`);
function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}
const json = (v) => JSON.stringify(v, null, 2);
function preview(v, n) {
  const s = JSON.stringify(v);
  return s.length > n ? s.slice(0, n) + '…' : s;
}
const can = (role) => !!app.who && app.who.roles.includes(role);

function crumbs(parts) {
  const nav = document.getElementById('crumbs');
  fill(nav);
  parts.forEach(([label, href], i) => {
    if (i) nav.append(h('span', { class: 'muted', 'aria-hidden': 'true' }, '/'));
    nav.append(href ? h('a', { href }, label) : h('span', { 'aria-current': 'page' }, label));
  });
}

/** A table whose rows come from `rows`; `cols` are [label, cell(row), {num, sort}]. */
function table(cols, rows, opts) {
  const o = opts || {};
  const head = h('tr', {}, cols.map(([label, , c], i) => {
    const cls = c && c.num ? 'num' : null;
    if (!o.onSort || !(c && c.sort)) return h('th', { class: cls, scope: 'col' }, label);
    const dir = o.sortKey === c.sort ? (o.desc ? ' ▼' : ' ▲') : '';
    const aria = o.sortKey === c.sort ? (o.desc ? 'descending' : 'ascending') : null;
    return h('th', { class: cls, scope: 'col', 'aria-sort': aria },
      h('button', { type: 'button', onclick: () => o.onSort(c.sort) }, label + dir));
  }));
  const body = rows.map((r) => h('tr', {}, cols.map(([, cell, c]) =>
    h('td', { class: c && c.num ? 'num' : null }, cell(r)))));
  const empty = rows.length ? null : h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, o.empty || 'Nothing here.'));
  return h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, head), h('tbody', {}, body, empty)));
}

// ---- sign in -------------------------------------------------------------------------------

async function whoami() {
  try {
    app.who = await api('GET', '/api/v1/whoami');
  } catch (e) {
    if (e.status !== 401) throw e;
    app.who = null;
  }
  const who = document.getElementById('who');
  fill(who);
  if (app.who && app.who.auth_enabled) {
    who.append(h('span', {}, `${app.who.name || 'key'} · ${app.who.roles.join(', ')}`),
      h('button', { type: 'button', class: 'secondary', onclick: signOut }, 'Sign out'));
  }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  app.who = null;
  route();
}

function loginView(main, message) {
  crumbs([['Sign in']]);
  const input = h('input', { type: 'password', id: 'api-key', autocomplete: 'off', required: true, placeholder: 'tq_…' });
  const form = h('form', { class: 'panel login', onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    await whoami().catch(() => {});
    if (!app.who) {
      sessionStorage.removeItem(KEY);
      banner('That API key is not valid.');
      return;
    }
    banner('');
    route();
  } },
  h('h1', {}, 'Sign in'),
  h('p', { class: 'muted' }, 'This server requires an API key. The console acts with the key’s roles: a viewer key sees everything and changes nothing.'),
  h('p', {}, h('label', { for: 'api-key' }, 'API key', input)),
  h('button', { type: 'submit' }, 'Sign in'));
  fill(main, form);
  if (message) banner(message);
  input.focus();
  return null;
}

// ---- queues of every namespace -------------------------------------------------------------

async function allPages(path, field, max) {
  let out = [];
  let token = '';
  for (let i = 0; i < max; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', `${path}${sep}limit=1000${token ? '&page_token=' + enc(token) : ''}`);
    out = out.concat(page[field]);
    token = page.next_page_token;
    if (!token) break;
  }
  return out;
}

function homeView(main) {
  crumbs([['Task queues']]);
  const sort = { key: 'backlog_count', desc: true };
  const filter = h('input', { type: 'search', id: 'queue-filter', placeholder: 'Filter by namespace or name', 'aria-label': 'Filter queues' });
  const nsInput = h('input', { id: 'open-ns', value: 'default', required: true, 'aria-label': 'Namespace' });
  const nameInput = h('input', { id: 'open-name', required: true, placeholder: 'queue name', 'aria-label': 'Queue name' });
  const out = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  let rows = [];
  const draw = () => {
    const f = filter.value.trim().toLowerCase();
    const shown = rows.filter((r) => !f || `${r.namespace}/${r.name}`.toLowerCase().includes(f));
    shown.sort((a, b) => {
      const x = a[sort.key]; const y = b[sort.key];
      const c = typeof x === 'string' ? x.localeCompare(y) : x - y;
      return sort.desc ? -c : c;
    });
    const cols = [
      ['Namespace', (r) => r.namespace, { sort: 'namespace' }],
      ['Queue', (r) => h('a', { href: link(['q', r.namespace, r.name]) }, r.name), { sort: 'name' }],
      ['Type', (r) => r.type, { sort: 'type' }],
      ['Backlog', (r) => r.backlog_count, { num: true, sort: 'backlog_count' }],
      ['Age', (r) => fmtMs(r.backlog_age_ms), { num: true, sort: 'backlog_age_ms' }],
      ['In flight', (r) => r.in_flight_count, { num: true, sort: 'in_flight_count' }],
      ['Delayed', (r) => r.delayed_count, { num: true, sort: 'delayed_count' }],
      ['Dead letters', (r) => (r.dead_letter_count
        ? h('a', { href: link(['dl', r.namespace, r.name, r.type]), class: 'bad' }, r.dead_letter_count) : 0),
      { num: true, sort: 'dead_letter_count' }],
      ['Pollers', (r) => r.pollers, { num: true, sort: 'pollers' }],
    ];
    fill(out, table(cols, shown, {
      sortKey: sort.key, desc: sort.desc, empty: 'No queue holds tasks yet.',
      // Names sort A→Z first, numbers largest first.
      onSort: (k) => { sort.desc = sort.key === k ? !sort.desc : typeof (rows[0] || {})[k] === 'number'; sort.key = k; draw(); },
    }), h('p', { class: 'muted' }, `${shown.length} of ${rows.length} queues`));
  };
  filter.addEventListener('input', draw);
  fill(main,
    h('h1', {}, 'Task queues'),
    h('div', { class: 'row' }, filter,
      h('form', { class: 'row', onsubmit: (ev) => {
        ev.preventDefault();
        location.hash = link(['q', nsInput.value.trim(), nameInput.value.trim()]);
      } }, nsInput, nameInput, h('button', { type: 'submit', class: 'secondary' }, 'Open queue'))),
    out);
  return async () => {
    const namespaces = app.who && app.who.namespaces
      ? app.who.namespaces : await allPages('/api/v1/namespaces', 'namespaces', 10);
    const next = [];
    for (const ns of namespaces) {
      const queues = await allPages(`/api/v1/namespaces/${enc(ns)}/task-queues`, 'task_queues', 10);
      for (const q of queues) next.push({ namespace: ns, ...q });
    }
    rows = next;
    draw();
  };
}

// ---- one queue: both types -----------------------------------------------------------------

function sample(key, stats) {
  const list = app.history.get(key) || [];
  list.push({ add: stats.add_rate, dispatch: stats.dispatch_rate, backlog: stats.backlog_count, age: stats.backlog_age_ms });
  while (list.length > HISTORY) list.shift();
  app.history.set(key, list);
  return list;
}

function chart(title, values, fmt) {
  const max = Math.max(1e-9, ...values);
  const n = values.length;
  const points = values.map((v, i) => `${n > 1 ? (i / (n - 1)) * 100 : 0},${40 - (v / max) * 38}`).join(' ');
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 100 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${title}, last ${n} samples, now ${fmt(values[n - 1] || 0)}`);
  const axis = document.createElementNS(svg.namespaceURI, 'line');
  for (const [k, v] of Object.entries({ x1: 0, y1: 40, x2: 100, y2: 40, class: 'axis' })) axis.setAttribute(k, v);
  const line = document.createElementNS(svg.namespaceURI, 'polyline');
  line.setAttribute('points', points);
  svg.append(axis, line);
  return h('div', { class: 'chart panel' },
    h('div', { class: 'caption' }, h('span', {}, title), h('b', {}, fmt(values[n - 1] || 0))),
    svg,
    h('div', { class: 'caption' }, h('span', {}, n > 1 ? `last ${fmtMs((n - 1) * REFRESH_MS)}` : 'collecting…'), h('span', {}, `max ${fmt(max < 1e-6 ? 0 : max)}`)));
}

/** Pollers that declare different task types, in words; '' when they agree. */
function mismatchWords(pollers) {
  const groups = new Map();
  for (const p of pollers) {
    const types = (p.task_types || []).slice().sort().join(', ') || 'any type';
    const g = groups.get(types) || [];
    g.push(`${p.identity}${p.build_id ? ' (build ' + p.build_id + ')' : ''}`);
    groups.set(types, g);
  }
  if (groups.size < 2) return '';
  return 'Pollers declare different task types: ' + [...groups].map(([t, who]) => `${who.join(', ')} run [${t}]`).join('; ') +
    '. A task goes only to a poller that declares its type.';
}

async function untakenTypes(ns, name, type, pollers) {
  const declared = new Set(pollers.flatMap((p) => p.task_types || []));
  if (pollers.some((p) => !(p.task_types || []).length)) return [];
  const page = await api('GET', `${qPath(ns, name, type)}/tasks?state=pending&limit=200`);
  return [...new Set(page.tasks.map((t) => t.task_type))].filter((t) => !declared.has(t));
}

function rateControls(ns, name, type, rl, refresh) {
  if (!can('admin')) return null;
  const set = async (body, done) => {
    try {
      await api('PUT', `${qPath(ns, name, type)}/config`, body);
      banner(done, true);
      await refresh();
    } catch (e) { banner(e.message); }
  };
  const rate = h('input', { type: 'number', min: '0', step: 'any', value: rl.max_tasks_per_second ?? '', 'aria-label': `${type} max tasks per second`, class: 'rate-input' });
  const burst = h('input', { type: 'number', min: '1', step: '1', value: rl.burst ?? '', 'aria-label': `${type} burst`, class: 'burst-input' });
  const paused = rl.max_tasks_per_second === 0;
  return h('div', { class: 'row' },
    paused
      ? h('button', { type: 'button', class: 'resume', onclick: () => set({ max_tasks_per_second: null }, `Dispatch of ${type} resumed.`) }, 'Resume')
      : h('button', { type: 'button', class: 'danger pause', onclick: () => set({ max_tasks_per_second: 0 }, `Dispatch of ${type} paused.`) }, 'Pause'),
    h('form', { class: 'row', onsubmit: (ev) => {
      ev.preventDefault();
      const body = { max_tasks_per_second: rate.value === '' ? null : Number(rate.value) };
      if (burst.value !== '') body.burst = Number(burst.value);
      set(body, `Rate limit of ${type} saved.`);
    } },
    h('label', {}, 'tasks/s (empty: none)', rate), h('label', {}, 'burst', burst),
    h('button', { type: 'submit', class: 'secondary' }, 'Save limit')));
}

function queueView(main, [ns, name]) {
  crumbs([['Task queues', '#/'], [ns], [name]]);
  const parts = Object.fromEntries(TYPES.map((t) => [t, h('section', { class: 'panel', 'aria-label': t })]));
  fill(main, h('h1', {}, `${ns} / ${name}`), ...TYPES.map((t) => parts[t]));
  const refresh = async () => {
    const d = await api('GET', queuePath(ns, name));
    for (const type of TYPES) {
      const s = d.types[type];
      const hist = sample(`${ns}\u0000${name}\u0000${type}`, s);
      const rl = s.rate_limit;
      const limit = rl.max_tasks_per_second === null ? 'no limit'
        : rl.max_tasks_per_second === 0 ? 'paused' : `${rl.max_tasks_per_second}/s, burst ${rl.burst}`;
      let mismatch = '';
      if (s.registration_mismatch) {
        mismatch = mismatchWords(s.pollers);
        if (!mismatch) {
          const orphans = await untakenTypes(ns, name, type, s.pollers).catch(() => []);
          mismatch = orphans.length
            ? `Ready tasks of type ${orphans.join(', ')} have no live poller that declares their type.`
            : 'Live pollers and ready tasks disagree on task types.';
        }
      }
      fill(parts[type],
        h('h2', {}, type),
        h('div', { class: 'tabs' },
          h('a', { href: link(['t', ns, name, type, 'pending']) }, 'Tasks'),
          h('a', { href: link(['dl', ns, name, type]) }, `Dead letters (${s.dead_letter_count})`)),
        h('div', { class: 'stats' },
          [['backlog', s.backlog_count], ['oldest ready', fmtMs(s.backlog_age_ms)], ['delayed', s.delayed_count],
            ['in flight', s.in_flight_count], ['dead letters', s.dead_letter_count], ['added', fmtRate(s.add_rate)],
            ['dispatched', fmtRate(s.dispatch_rate)], ['parked polls', s.parked_polls ?? 0]]
            .map(([k, v]) => h('div', { class: 'stat' }, h('b', {}, v), h('span', {}, k)))),
        h('p', {}, h('b', {}, 'Dispatch limit: '), h('span', { class: `limit ${rl.max_tasks_per_second === 0 ? 'warn' : ''}` }, limit),
          h('span', { class: 'muted' }, ` (set by ${rl.source})`)),
        rateControls(ns, name, type, rl, refresh),
        h('div', { class: 'grid' },
          chart('add rate', hist.map((x) => x.add), fmtRate),
          chart('dispatch rate', hist.map((x) => x.dispatch), fmtRate),
          chart('backlog', hist.map((x) => x.backlog), String),
          chart('oldest ready', hist.map((x) => x.age), fmtMs)),
        mismatch ? h('p', { class: 'warn mismatch', role: 'status' }, '⚠ ', mismatch) : null,
        h('h2', {}, `Pollers (${s.pollers.length})`),
        table([
          ['Identity', (p) => p.identity],
          ['Task types', (p) => ((p.task_types || []).length ? p.task_types.map((t) => h('span', { class: 'chip' }, t)) : h('span', { class: 'muted' }, 'any'))],
          ['Build', (p) => p.build_id || '–'],
          ['Last seen', (p) => fmtTime(p.last_access_time)],
          ['Limit', (p) => fmtRate(p.max_tasks_per_second)],
        ], s.pollers, { empty: 'No poller in the last 5 minutes.' }));
    }
  };
  return refresh;
}

// ---- tasks of a queue ----------------------------------------------------------------------

function tasksView(main, [ns, name, type, state]) {
  const st = STATES.includes(state) ? state : 'pending';
  crumbs([['Task queues', '#/'], [ns], [name, link(['q', ns, name])], [type], [`${st} tasks`]]);
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const fType = h('input', { name: 'task_type', value: params.get('task_type') || '', 'aria-label': 'Task type' });
  const fKey = h('input', { name: 'fairness_key', value: params.get('fairness_key') || '', 'aria-label': 'Fairness key' });
  const fPrio = h('select', { name: 'priority', 'aria-label': 'Priority' },
    h('option', { value: '' }, 'any'), [1, 2, 3, 4, 5].map((p) => h('option', { value: p, selected: params.get('priority') === String(p) }, p)));
  const out = h('div', {});
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  let tasks = [];
  let token = null;
  const query = () => {
    const q = new URLSearchParams({ state: st });
    if (fType.value.trim()) q.set('task_type', fType.value.trim());
    if (fKey.value.trim()) q.set('fairness_key', fKey.value.trim());
    if (fPrio.value) q.set('priority', fPrio.value);
    return q;
  };
  const draw = () => {
    const cols = [
      ['Task', (t) => h('a', { href: link(['task', ns, name, type, t.task_id]) }, t.task_id)],
      ['Type', (t) => t.task_type],
      ['Attempt', (t) => t.attempt, { num: true }],
      ['Priority', (t) => t.priority, { num: true }],
      ['Fairness key', (t) => t.fairness_key || '–'],
      [st === 'running' ? 'Worker' : st === 'delayed' ? 'Due' : 'Added',
        (t) => (st === 'running' ? `${t.identity} until ${fmtTime(t.lease_expires_at)}` : st === 'delayed' ? fmtTime(t.due_at) : fmtTime(t.added_at))],
      ['Payload', (t) => h('code', {}, preview(t.payload, 80))],
    ];
    fill(out, table(cols, tasks, { empty: `No ${st} task${fType.value || fKey.value || fPrio.value ? ' matches' : ''}.` }),
      h('p', { class: 'muted' }, st === 'pending' ? 'In dispatch order.' : 'Newest first.'));
    more.hidden = !token;
  };
  const load = async (append) => {
    const q = query();
    q.set('limit', append ? '100' : String(Math.max(100, tasks.length)));
    if (append && token) q.set('page_token', token);
    const page = await api('GET', `${qPath(ns, name, type)}/tasks?${q}`);
    tasks = append ? tasks.concat(page.tasks) : page.tasks;
    token = page.next_page_token;
    draw();
  };
  more.addEventListener('click', () => load(true).catch((e) => banner(e.message)));
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    const q = query(); q.delete('state');
    location.hash = link(['t', ns, name, type, st]) + (q.toString() ? '?' + q : '');
  } }, h('label', {}, 'task type', fType), h('label', {}, 'fairness key', fKey), h('label', {}, 'priority', fPrio),
  h('button', { type: 'submit' }, 'Filter'));
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Task state' }, STATES.map((s) =>
    h('a', { href: link(['t', ns, name, type, s]), 'aria-current': s === st ? 'page' : null }, s)));
  fill(main, h('h1', {}, `${name} · ${type} · ${st}`), tabs, form, out, more);
  return () => load(false);
}

// ---- one task ------------------------------------------------------------------------------

function taskView(main, [ns, name, type, id]) {
  crumbs([['Task queues', '#/'], [ns], [name, link(['q', ns, name])], [type, link(['t', ns, name, type, 'pending'])], [id]]);
  const why = h('section', { class: 'panel', 'aria-label': 'Why' });
  const detail = h('section', { class: 'panel', 'aria-label': 'Task' });
  fill(main, h('h1', {}, `Task ${id}`), why, detail);
  const path = `${qPath(ns, name, type)}/tasks/${enc(id)}`;
  const refresh = async () => {
    const [t, ex] = await Promise.all([api('GET', `${path}?view=full`), api('GET', `${path}/explain`)]);
    fill(why, h('h2', {}, `State: ${t.state}`),
      h('ul', { class: 'reasons' }, ex.reasons.map((r) => h('li', { 'data-code': r.code }, h('code', {}, r.code), ' ', r.message))));
    const cancellable = can('producer') && (t.state === 'pending' || (t.state === 'running' && !t.cancel_requested));
    const kv = [['type', t.task_type], ['attempt', `${t.attempt}${t.retry.max_attempts ? ' of ' + t.retry.max_attempts : ''}`],
      ['priority', t.priority], ['fairness key', t.fairness_key ? `${t.fairness_key} (weight ${t.fairness_weight})` : '–'],
      ['added', fmtTime(t.added_at)], ['updated', fmtTime(t.updated_at)], ['due', fmtTime(t.due_at)],
      ['worker', t.identity ? `${t.identity}, lease until ${fmtTime(t.lease_expires_at)}` : '–'],
      ['lease length', fmtMs(t.start_to_close_timeout_ms)], ['heartbeat timeout', fmtMs(t.heartbeat_timeout_ms)],
      ['schedule-to-start', fmtMs(t.schedule_to_start_timeout_ms)],
      ['routed to', t.route_to ? `${t.route_to.identity}${t.route_to.fallback_after_ms === null ? '' : ', fallback after ' + fmtMs(t.route_to.fallback_after_ms)}` : '–'],
      ['cancel requested', t.cancel_requested ? 'yes' : 'no']];
    fill(detail,
      cancellable ? h('p', {}, h('button', { type: 'button', class: 'danger cancel', onclick: async () => {
        try { await api('DELETE', path); banner(`Task ${id} cancelled.`, true); await refresh(); } catch (e) { banner(e.message); }
      } }, 'Cancel task')) : null,
      h('dl', { class: 'kv' }, kv.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('h2', {}, 'Payload'), h('pre', { class: 'payload' }, json(t.payload)),
      Object.keys(t.headers).length ? [h('h2', {}, 'Headers'), h('pre', {}, json(t.headers))] : null,
      t.last_error ? [h('h2', { class: 'bad' }, 'Last error'), h('pre', { class: 'last-error' }, json(t.last_error))] : null,
      t.result !== null ? [h('h2', {}, 'Result'), h('pre', {}, json(t.result))] : null,
      t.heartbeat_details !== null ? [h('h2', {}, 'Last heartbeat details'), h('pre', {}, json(t.heartbeat_details))] : null);
  };
  return refresh;
}

// ---- dead letters --------------------------------------------------------------------------

function deadView(main, [ns, name, type]) {
  crumbs([['Task queues', '#/'], [ns], [name, link(['q', ns, name])], [type], ['dead letters']]);
  const path = `${qPath(ns, name, type)}/dead-letters`;
  const sel = app.selected;
  sel.clear();
  let rows = [];
  const out = h('div', {});
  const count = h('span', { class: 'muted' });
  const redriveSel = h('button', { type: 'button', class: 'redrive-selected', disabled: true }, 'Redrive selected');
  const redriveAll = h('button', { type: 'button', class: 'secondary redrive-all' }, 'Redrive all');
  let armed = false;
  const redrive = async (body, what) => {
    try {
      const r = await api('POST', `${path}/redrive`, body);
      banner(`${r.redriven} ${what} redriven: back in the queue as pending.`, true);
      sel.clear();
      await refresh();
    } catch (e) { banner(e.message); }
  };
  redriveSel.addEventListener('click', () => redrive({ task_ids: [...sel] }, 'selected dead letters'));
  redriveAll.addEventListener('click', () => {
    if (!armed) { armed = true; redriveAll.textContent = `Confirm: redrive all ${rows.length}${rows.length >= 1000 ? '+' : ''}`; return; }
    armed = false; redriveAll.textContent = 'Redrive all';
    redrive({ all: true }, 'dead letters');
  });
  const sync = () => {
    redriveSel.disabled = sel.size === 0;
    redriveSel.textContent = `Redrive selected (${sel.size})`;
    count.textContent = `${rows.length} dead letter${rows.length === 1 ? '' : 's'} shown`;
  };
  const admin = can('admin');
  const draw = () => {
    for (const id of [...sel]) if (!rows.some((r) => r.task_id === id)) sel.delete(id);
    const all = h('input', { type: 'checkbox', 'aria-label': 'Select all', class: 'select-all', checked: rows.length > 0 && sel.size === rows.length, onchange: (ev) => {
      for (const r of rows) { if (ev.target.checked) sel.add(r.task_id); else sel.delete(r.task_id); }
      draw();
    } });
    const cols = [
      ['Task', (r) => h('a', { href: link(['task', ns, name, type, r.task_id]) }, r.task_id)],
      ['Type', (r) => r.task_type],
      ['State', (r) => r.state],
      ['Attempts', (r) => r.attempt, { num: true }],
      ['Error', (r) => (r.last_error ? h('span', { class: 'bad' }, r.last_error.message) : '–')],
      ['Died', (r) => fmtTime(r.updated_at)],
    ];
    if (admin) {
      cols.unshift([all, (r) => h('input', { type: 'checkbox', 'aria-label': `Select ${r.task_id}`, checked: sel.has(r.task_id), onchange: (ev) => {
        if (ev.target.checked) sel.add(r.task_id); else sel.delete(r.task_id);
        draw();
      } })]);
    }
    fill(out, table(cols, rows, { empty: 'No dead letters.' }));
    sync();
  };
  const refresh = async () => {
    rows = (await api('GET', `${path}?limit=1000`)).dead_letters;
    draw();
  };
  fill(main, h('h1', {}, `${name} · ${type} · dead letters`),
    admin ? h('div', { class: 'row' }, redriveSel, redriveAll, count) : h('p', {}, count), out);
  return refresh;
}

// ---- routing and live refresh --------------------------------------------------------------

const VIEWS = { '': homeView, q: queueView, t: tasksView, task: taskView, dl: deadView };

async function route() {
  const main = document.getElementById('main');
  banner('');
  const [path] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...args] = path.split('/').map(decodeURIComponent);
  try {
    await whoami();
  } catch (e) {
    fill(main, h('p', { class: 'bad' }, `The server did not answer: ${e.message}`));
    app.view = null;
    return;
  }
  if (!app.who) {
    app.view = loginView(main);
    return;
  }
  const view = VIEWS[name] || homeView;
  app.view = view(main, args);
  await refresh();
}

/** What identifies a focused control across a re-render: its tag and link, label or text. */
function focusKey(el) {
  if (!el || el === document.body || !document.getElementById('main').contains(el)) return null;
  return [el.tagName, el.getAttribute('href'), el.getAttribute('aria-label'), el.id, el.textContent].join('\u0000');
}

/** Puts the keyboard focus back where it was when a refresh redrew the element that held it. */
function restoreFocus(key) {
  if (!key || focusKey(document.activeElement) === key) return;
  const tag = key.split('\u0000')[0].toLowerCase();
  const same = [...document.getElementById('main').querySelectorAll(tag)].find((el) => focusKey(el) === key);
  if (same) same.focus({ preventScroll: true });
}

async function refresh() {
  if (!app.view || app.busy) return;
  app.busy = true;
  const focused = focusKey(document.activeElement);
  const started = Date.now();
  try {
    await app.view();
    restoreFocus(focused);
    app.cost = Date.now() - started;
  } catch (e) {
    if (e.status === 401) { sessionStorage.removeItem(KEY); app.who = null; loginView(document.getElementById('main'), 'The API key is no longer valid.'); app.view = null; } else banner(e.message);
  } finally {
    app.busy = false;
  }
}

window.addEventListener('hashchange', route);
// A view that takes long to read (thousands of queues) is read less often: at most a fifth
// of the time goes to refreshing.
setInterval(() => {
  if (document.visibilityState !== 'visible') return;
  if (Date.now() - (app.last || 0) < 5 * (app.cost || 0)) return;
  app.last = Date.now();
  refresh();
}, REFRESH_MS);
route();
