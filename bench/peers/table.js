#!/usr/bin/env node
// Prints the side-by-side table (markdown) of one bench/peers/run sitting, and the issue's
// target ratios, from the results directory it wrote:
//   RESULTS/<column>-<workload>.json   one JSON object each (tasq bench --json, peer-bench.js)
//   RESULTS/wrk.txt                    wrk's output against plain actix-web
//   RESULTS/meta.json                  machine, versions, load averages
//
//   node table.js RESULTS

'use strict';

const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
if (!dir) { console.error('usage: node table.js RESULTS_DIR'); process.exit(2); }

function load(name) {
  try {
    const text = fs.readFileSync(path.join(dir, `${name}.json`), 'utf8').trim();
    const line = text.split('\n').filter((l) => l.startsWith('{')).pop();
    return line ? JSON.parse(line) : null;
  } catch { return null; }
}
const meta = load('meta') || {};

// Columns: tasq over HTTP (one task per poll), tasq over WebSocket (credit 16), then peers.
const COLS = [
  { key: 'tasq-http', title: 'tasq HTTP (1/poll)', tasq: true },
  { key: 'tasq-ws', title: 'tasq WebSocket', tasq: true },
  { key: 'tasq-http-next', title: 'tasq HTTP, settle with next', tasq: true },
  { key: 'tasq-http-batch', title: 'tasq HTTP, 100/poll, settle many', tasq: true },
  { key: 'tasq-pg-http', title: 'tasq on PostgreSQL, HTTP', tasq: true },
  { key: 'tasq-pg-ws', title: 'tasq on PostgreSQL, WebSocket', tasq: true },
  { key: 'bullmq', title: 'BullMQ (Redis)', peer: true },
  { key: 'rabbitmq', title: 'RabbitMQ', peer: true },
  { key: 'nats', title: 'NATS JetStream', peer: true },
];
const R = {};
for (const c of COLS) for (const w of ['backlog', 'live', 'latency']) R[`${c.key}-${w}`] = load(`${c.key}-${w}`);
const get = (col, w, f) => { const r = R[`${col}-${w}`]; return r && r.results && r.results[f] != null ? r.results[f] : null; };
const busy = (col, w) => { try { const v = Number(fs.readFileSync(path.join(dir, `${col}-${w}.busy`), 'utf8')); return Number.isFinite(v) ? v : null; } catch { return null; } };
const failed = (col, w) => { try { return fs.readFileSync(path.join(dir, `${col}-${w}.err`), 'utf8').trim(); } catch { return null; } };

const int = (v) => (v == null ? '–' : Math.round(v).toLocaleString('en-US'));
const ms = (v) => (v == null ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(1));
const cores = (v) => (v == null ? '–' : v.toFixed(2));

const ROWS = [
  ['backlog: add rate (tasks/s)', 'backlog', (c) => int(get(c, 'backlog', 'add_rate'))],
  ['backlog: add call p50 / p99 (ms)', 'backlog', (c) => `${ms(get(c, 'backlog', 'add_p50_ms'))} / ${ms(get(c, 'backlog', 'add_p99_ms'))}`],
  ['backlog: drain rate (tasks/s)', 'backlog', (c) => int(get(c, 'backlog', 'drain_rate'))],
  ['backlog: server / client CPU while draining (cores)', 'backlog', (c) => `${cores(get(c, 'backlog', 'drain_server_cpu_cores'))} / ${cores(get(c, 'backlog', 'drain_bench_cpu_cores'))}`],
  ['live: tasks/s (first add → last completion)', 'live', (c) => int(get(c, 'live', 'tasks_per_s'))],
  ['live: receipt p50 / p99 (ms)', 'live', (c) => `${ms(get(c, 'live', 'receipt_p50_ms'))} / ${ms(get(c, 'live', 'receipt_p99_ms'))}`],
  ['live: server / client CPU (cores)', 'live', (c) => `${cores(get(c, 'live', 'server_cpu_cores'))} / ${cores(get(c, 'live', 'bench_cpu_cores'))}`],
  ['machine busy during backlog / live / latency (cores, all processes)', 'live', (c) => ['backlog', 'live', 'latency'].map((w) => cores(busy(c, w))).join(' / ')],
  ['other processes during live / latency (cores: machine − server − client)', 'live', (c) => ['live', 'latency'].map((w) => { const b = busy(c, w); const sv = get(c, w, 'server_cpu_cores'); const cl = get(c, w, 'bench_cpu_cores'); return b == null || sv == null || cl == null ? '–' : cores(Math.max(0, b - sv - cl)); }).join(' / ')],
  ['latency @ rate: receipt p50 (ms)', 'latency', (c) => ms(get(c, 'latency', 'receipt_p50_ms'))],
  ['latency @ rate: receipt p99 / p99.9 (ms)', 'latency', (c) => `${ms(get(c, 'latency', 'receipt_p99_ms'))} / ${ms(get(c, 'latency', 'receipt_p99_9_ms'))}`],
  ['latency @ rate: add call p50 / p99 (ms)', 'latency', (c) => `${ms(get(c, 'latency', 'add_p50_ms'))} / ${ms(get(c, 'latency', 'add_p99_ms'))}`],
];

const out = [];
const cols = COLS.filter((c) => ['backlog', 'live', 'latency'].some((w) => R[`${c.key}-${w}`] || failed(c.key, w)));
out.push(`| figure | ${cols.map((c) => c.title).join(' | ')} |`);
out.push(`| --- | ${cols.map(() => '---:').join(' | ')} |`);
for (const [label, w, f] of ROWS) {
  out.push(`| ${label} | ${cols.map((c) => (R[`${c.key}-${w}`] ? f(c.key) : failed(c.key, w) ? 'failed' : '–')).join(' | ')} |`);
}

// wrk against plain actix-web.
let wrkRps = null;
try {
  const m = /Requests\/sec:\s*([0-9.]+)/.exec(fs.readFileSync(path.join(dir, 'wrk.txt'), 'utf8'));
  if (m) wrkRps = Number(m[1]);
} catch { /* not run */ }

// Targets (the performance issue, second round), as ratios in this sitting.
const peers = COLS.filter((c) => c.peer);
function fastest(w, f) {
  let best = null;
  for (const c of peers) { const v = get(c.key, w, f); if (v != null && (best == null || v > best.v)) best = { v, title: c.title }; }
  return best;
}
const targets = [];
function ratio(label, mine, best, need) {
  if (mine == null || best == null) { targets.push(`| ${label} | – | ≥ ${need}x | not measured |`); return; }
  const x = mine / best.v;
  targets.push(`| ${label} | ${int(mine)} / ${int(best.v)} (${best.title}) = **${x.toFixed(2)}x** | ≥ ${need}x | ${x >= need ? 'met' : '**not met**'} |`);
}
ratio('live, WebSocket vs fastest peer', get('tasq-ws', 'live', 'tasks_per_s'), fastest('live', 'tasks_per_s'), 2);
ratio('backlog drain, WebSocket vs fastest peer', get('tasq-ws', 'backlog', 'drain_rate'), fastest('backlog', 'drain_rate'), 1.5);
ratio('live, HTTP settling with next vs fastest peer', get('tasq-http-next', 'live', 'tasks_per_s'), fastest('live', 'tasks_per_s'), 1);
ratio('backlog drain, HTTP 100/poll + settle many vs fastest peer', get('tasq-http-batch', 'backlog', 'drain_rate'), fastest('backlog', 'drain_rate'), 1.5);
ratio('backlog add rate (single adds) vs fastest peer', get('tasq-http', 'backlog', 'add_rate'), fastest('backlog', 'add_rate'), 1.5);
// Targets of the PostgreSQL store (issue 22): against tasq on sled in the same sitting.
function versus(label, mine, base, need) {
  if (mine == null || base == null) { targets.push(`| ${label} | – | ≥ ${need}x | not measured |`); return; }
  const x = mine / base;
  targets.push(`| ${label} | ${int(mine)} / ${int(base)} = **${x.toFixed(2)}x** | ≥ ${need}x | ${x >= need ? 'met' : '**not met**'} |`);
}
versus('PostgreSQL live, WebSocket vs sled', get('tasq-pg-ws', 'live', 'tasks_per_s'), get('tasq-ws', 'live', 'tasks_per_s'), 0.5);
versus('PostgreSQL backlog add rate vs sled', get('tasq-pg-http', 'backlog', 'add_rate'), get('tasq-http', 'backlog', 'add_rate'), 0.5);
const pgDrain = get('tasq-pg-ws', 'backlog', 'drain_rate');
targets.push(`| PostgreSQL backlog drain, WebSocket | ${int(pgDrain)} tasks/s | ≥ 15,000 | ${pgDrain == null ? 'not measured' : pgDrain >= 15000 ? 'met' : '**not met**'} |`);
for (const [col, name] of [['tasq-http', 'HTTP'], ['tasq-ws', 'WebSocket']]) {
  const p50 = get(col, 'latency', 'receipt_p50_ms');
  const p99 = get(col, 'latency', 'receipt_p99_ms');
  targets.push(`| latency ${name}, receipt p50 | ${ms(p50)} ms | ≤ 0.3 ms | ${p50 == null ? 'not measured' : p50 <= 0.3 ? 'met' : '**not met**'} |`);
  targets.push(`| latency ${name}, receipt p99 | ${ms(p99)} ms | ≤ 1 ms | ${p99 == null ? 'not measured' : p99 <= 1 ? 'met' : '**not met**'} |`);
}
const live = get('tasq-http', 'live', 'tasks_per_s');
if (live != null && wrkRps != null) {
  const ceiling = wrkRps / 3;
  const x = live / ceiling;
  targets.push(`| classic live HTTP (1/poll, complete) vs plain actix-web (wrk req/s ÷ 3) | ${int(live)} / (${int(wrkRps)} ÷ 3 = ${int(ceiling)}) = **${(100 * x).toFixed(1)}%** | ≥ 35% | ${x >= 0.35 ? 'met' : '**not met**'} |`);
} else {
  targets.push('| classic live HTTP (1/poll, complete) vs plain actix-web (wrk req/s ÷ 3) | – | ≥ 35% | not measured |');
}

const lines = [];
if (meta.date) lines.push(`Sitting: ${meta.date}; ${meta.machine || ''}`);
if (meta.load) lines.push(`Load average: ${meta.load}`);
if (meta.params) lines.push(`Parameters: ${meta.params}`);
lines.push('');
lines.push(...out);
lines.push('');
lines.push(`Plain actix-web \`POST /echo\` (2 workers), \`wrk -t2 -c32 -d${meta.wrk_seconds || '?'}s\`: ${wrkRps == null ? 'not measured' : `${int(wrkRps)} requests/s`}`);
lines.push('');
lines.push('| target | measured | needed | |');
lines.push('| --- | --- | --- | --- |');
lines.push(...targets);
const fails = [];
for (const c of COLS) for (const w of ['backlog', 'live', 'latency']) { const e = failed(c.key, w); if (e) fails.push(`- ${c.title} ${w}: ${e.split('\n').slice(-3).join(' ')}`); }
if (fails.length) { lines.push(''); lines.push('Failed runs:'); lines.push(...fails); }
console.log(lines.join('\n'));
