#!/usr/bin/env node
// Peer load generator for the comparison with `tasq bench` (bench/peers/run).
//
//   node peer-bench.js SYSTEM WORKLOAD [options]
//
// SYSTEM: bullmq (Redis + BullMQ), rabbitmq (amqplib), nats (nats.js JetStream).
// WORKLOAD, with the same meaning and defaults as `tasq bench`:
//   backlog  add N with P in flight and no worker, then drain with C workers:
//            add_rate, add_p50_ms…, drain_rate.
//   live     C workers already consuming, then add N with P in flight: tasks_per_s from the
//            first add to the last completion; receipt_* = add-call start → worker receipt.
//   latency  adds paced at --rate for --duration (released every millisecond, at most P in
//            flight) with C workers: receipt_p50_ms / _p99_ms / _p99_9_ms after --warmup.
//
// Each payload is a 200-byte JSON object (--payload-bytes) carrying its add call's start
// time (process.hrtime, in this process) and padding. Each workload prints ONE JSON object:
// {"system", "workload", "params", "results", "units"}, with tasq bench's field names where
// the concept matches.
//
// How each system is used (its usual client idioms):
//   bullmq:   Queue.add(name, data) (answered once Redis ran the add script; durability is
//             Redis's: AOF, appendfsync everysec unless run says otherwise); C Worker instances, each with concurrency
//             --window; completion = the Worker's moveToFinished (the 'completed' event).
//   rabbitmq: one connection (TCP_NODELAY); a durable classic queue; producers share one confirm channel
//             and publish persistent messages (an add counts once its confirm arrives);
//             C consumer channels with prefetch --window and manual ack.
//   nats:     JetStream stream with file storage and work-queue retention; js.publish waits
//             for the PubAck; one durable pull consumer (explicit ack) read by C
//             consume() loops with max_messages --window; m.ack().
//
// Everything is bounded: N, --duration, and --timeout (a run that is not done by then fails).

'use strict';

const { hrtime } = process;
const fs = require('fs');

// ---------- options ----------

function parseArgs(argv) {
  const [system, workload, ...rest] = argv;
  const o = {
    system,
    workload,
    host: '127.0.0.1',
    port: 0,
    count: 20000,
    inFlight: 32,
    workers: 8,
    window: 16,
    rate: 1000,
    duration: 10,
    warmup: 1,
    payloadBytes: 200,
    timeout: 300,
    serverPid: 0,
    queue: `bench-${Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0')}`,
  };
  let inFlightSet = false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    const v = () => {
      if (i + 1 >= rest.length) throw new Error(`${a} needs a value`);
      return rest[++i];
    };
    switch (a) {
      case '--host': o.host = v(); break;
      case '--port': o.port = Number(v()); break;
      case '-n': case '--count': o.count = Number(v()); break;
      case '-p': case '--in-flight': o.inFlight = Number(v()); inFlightSet = true; break;
      case '-c': case '--workers': o.workers = Number(v()); break;
      case '--window': o.window = Number(v()); break;
      case '--rate': o.rate = Number(v()); break;
      case '--duration': o.duration = parseSeconds(v()); break;
      case '--warmup': o.warmup = parseSeconds(v()); break;
      case '--payload-bytes': o.payloadBytes = Number(v()); break;
      case '--timeout': o.timeout = parseSeconds(v()); break;
      case '--server-pid': o.serverPid = Number(v()); break;
      case '--queue': o.queue = v(); break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  if (o.workload === 'latency' && !inFlightSet) o.inFlight = 16; // tasq bench latency's -p
  if (!SYSTEMS[o.system]) throw new Error(`SYSTEM must be one of ${Object.keys(SYSTEMS).join(', ')}`);
  if (!['backlog', 'live', 'latency'].includes(o.workload)) throw new Error('WORKLOAD must be backlog, live or latency');
  for (const k of ['port', 'count', 'inFlight', 'workers', 'window', 'rate', 'duration', 'payloadBytes', 'timeout']) {
    if (!(Number.isFinite(o[k]) && o[k] > 0)) throw new Error(`bad --${k}: ${o[k]}`);
  }
  if (o.count > 10_000_000 || o.duration > 600 || o.timeout > 3600) throw new Error('bounds: -n ≤ 10M, --duration ≤ 600 s, --timeout ≤ 3600 s');
  return o;
}

function parseSeconds(s) {
  const m = /^([0-9.]+)(ms|s|m)?$/.exec(String(s));
  if (!m) throw new Error(`bad duration ${s}`);
  const x = Number(m[1]);
  return m[2] === 'ms' ? x / 1000 : m[2] === 'm' ? x * 60 : x;
}

// ---------- clock, payloads, histograms, CPU ----------

const ORIGIN = hrtime.bigint();
const nowNs = () => Number(hrtime.bigint() - ORIGIN);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A JSON object of exactly `bytes` bytes: {"t":<ns>,"i":<index>,"p":"xxx…"}.
function payload(bytes, i, t) {
  const head = `{"t":${t},"i":${i},"p":"`;
  const pad = Math.max(0, bytes - head.length - 2);
  return `${head}${'x'.repeat(pad)}"}`;
}

class Hist {
  constructor() { this.v = new Float64Array(1024); this.n = 0; }
  add(ns) {
    if (this.n === this.v.length) { const w = new Float64Array(this.v.length * 2); w.set(this.v); this.v = w; }
    this.v[this.n++] = ns;
  }
  merge(h) { for (let i = 0; i < h.n; i++) this.add(h.v[i]); }
  // {prefix}_p50_ms, _p90_ms, _p99_ms, _p99_9_ms, _max_ms, _samples (as tasq bench).
  report(r, prefix) {
    if (this.n === 0) return;
    const s = this.v.slice(0, this.n).sort();
    const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
    for (const [label, p] of [['p50', 0.5], ['p90', 0.9], ['p99', 0.99], ['p99_9', 0.999]]) {
      r.metric(`${prefix}_${label}_ms`, q(p) / 1e6, 'ms');
    }
    r.metric(`${prefix}_max_ms`, s[s.length - 1] / 1e6, 'ms');
    r.metric(`${prefix}_samples`, s.length, '');
  }
}

// CPU seconds per wall second of this process and of the server (by pid, from /proc).
function procCpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, USER_HZ = 100
  } catch { return NaN; }
}
class CpuMeter {
  constructor(serverPid) {
    this.pid = serverPid;
    this.t = nowNs();
    this.self = process.cpuUsage();
    this.server = serverPid ? procCpuSeconds(serverPid) : NaN;
  }
  report(r, prefix) {
    const wall = (nowNs() - this.t) / 1e9;
    const u = process.cpuUsage(this.self);
    if (this.pid) {
      const s = procCpuSeconds(this.pid) - this.server;
      if (Number.isFinite(s)) r.metric(`${prefix}server_cpu_cores`, s / wall, 'cores');
    }
    r.metric(`${prefix}bench_cpu_cores`, (u.user + u.system) / 1e6 / wall, 'cores');
  }
}

class Report {
  constructor(system, workload) { this.system = system; this.workload = workload; this.params = {}; this.results = {}; this.units = {}; }
  param(k, v) { this.params[k] = v; return this; }
  metric(k, v, unit) { this.results[k] = Math.round(v * 1000) / 1000; this.units[k] = unit; return this; }
  json() { return JSON.stringify({ system: this.system, workload: this.workload, params: this.params, results: this.results, units: this.units }); }
}

// Shared counters of a run: completions, receipts, and when the last completion happened.
class Shared {
  constructor(target) {
    this.target = target; this.completed = 0; this.received = 0; this.lastCompleteNs = 0;
    this.receipts = new Hist(); this.recordFrom = 0; this.done = null;
    this.donePromise = new Promise((r) => { this.done = r; });
  }
  receipt(t) {
    const now = nowNs();
    this.received++;
    if (t >= this.recordFrom) this.receipts.add(now - t);
  }
  complete() {
    this.completed++;
    this.lastCompleteNs = nowNs();
    if (this.completed >= this.target) this.done();
  }
  setTarget(n) { this.target = n; if (this.completed >= n) this.done(); }
  async wait(timeoutS, what) {
    let timer;
    const to = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`${what}: timed out after ${timeoutS} s with ${this.completed}/${this.target} completed`)), timeoutS * 1000); });
    try { await Promise.race([this.donePromise, to]); } finally { clearTimeout(timer); }
  }
}

// ---------- systems ----------

// Each system: connect(o) → { setup(), add(body) → Promise (resolves when the system
// acknowledged the add durably as configured), startWorkers(c, window, shared) → Promise<stop>,
// close() }. Worker handlers call shared.receipt(t) on receipt and shared.complete() once
// the task is acknowledged/completed.

const SYSTEMS = {
  async bullmq(o) {
    const { Queue, Worker } = require('bullmq');
    const connection = { host: o.host, port: o.port, maxRetriesPerRequest: null };
    const queue = new Queue(o.queue, { connection });
    const opts = { removeOnComplete: true, removeOnFail: true };
    const workers = [];
    return {
      durability: `Redis AOF, appendfsync ${process.env.REDIS_APPENDFSYNC || 'everysec'}; removeOnComplete`,
      async setup() { await queue.waitUntilReady(); },
      add(body) { return queue.add('t', body, opts); },
      async startWorkers(c, window, shared) {
        for (let k = 0; k < c; k++) {
          const w = new Worker(o.queue, async (job) => { shared.receipt(job.data.t); }, {
            connection, concurrency: window, autorun: true,
            removeOnComplete: { count: 0 }, removeOnFail: { count: 0 },
          });
          w.on('completed', () => shared.complete());
          w.on('error', (e) => console.error(`bullmq worker: ${e.message}`));
          workers.push(w);
        }
        await Promise.all(workers.map((w) => w.waitUntilReady()));
        await sleep(300); // let every worker reach its blocking fetch
      },
      async close() {
        await Promise.all(workers.map((w) => w.close(true).catch(() => {})));
        await queue.obliterate({ force: true }).catch(() => {});
        await queue.close();
      },
      // Payloads are objects for BullMQ (it serializes job data as JSON itself).
      body(i, t) { return JSON.parse(payload(o.payloadBytes, i, t)); },
    };
  },

  async rabbitmq(o) {
    const amqp = require('amqplib');
    // TCP_NODELAY (amqplib leaves Nagle on by default; with it, confirms and acks wait ~40 ms
    // for delayed ACKs, which no tuned deployment accepts).
    const conn = await amqp.connect(`amqp://guest:guest@${o.host}:${o.port}/`, { noDelay: true });
    const pub = await conn.createConfirmChannel();
    const chans = [];
    return {
      durability: 'durable classic queue, persistent messages, publisher confirms, manual acks',
      async setup() { await pub.assertQueue(o.queue, { durable: true }); },
      add(body) {
        return new Promise((resolve, reject) => {
          pub.sendToQueue(o.queue, body, { persistent: true, contentType: 'application/json' }, (err) => (err ? reject(err) : resolve()));
        });
      },
      async startWorkers(c, window, shared) {
        for (let k = 0; k < c; k++) {
          const ch = await conn.createChannel();
          await ch.prefetch(window);
          await ch.consume(o.queue, (m) => {
            if (!m) return;
            const d = JSON.parse(m.content.toString());
            shared.receipt(d.t);
            ch.ack(m);
            shared.complete();
          }, { noAck: false });
          chans.push(ch);
        }
      },
      async close() {
        for (const ch of chans) await ch.close().catch(() => {});
        await pub.deleteQueue(o.queue).catch(() => {});
        await pub.close().catch(() => {});
        await conn.close().catch(() => {});
      },
      body(i, t) { return Buffer.from(payload(o.payloadBytes, i, t)); },
    };
  },

  async nats(o) {
    const { connect, AckPolicy, RetentionPolicy, StorageType } = require('nats');
    const nc = await connect({ servers: `${o.host}:${o.port}` });
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    const stream = o.queue;
    const subject = `${o.queue}.tasks`;
    const durable = 'workers';
    const loops = [];
    const iters = [];
    return {
      durability: 'JetStream file storage (server\'s periodic sync), work-queue retention, durable pull consumer, explicit ack',
      async setup() {
        await jsm.streams.add({ name: stream, subjects: [subject], storage: StorageType.File, retention: RetentionPolicy.Workqueue });
        await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, max_ack_pending: 100000 });
      },
      add(body) { return js.publish(subject, body); },
      async startWorkers(c, window, shared) {
        for (let k = 0; k < c; k++) {
          const consumer = await js.consumers.get(stream, durable);
          const it = await consumer.consume({ max_messages: window });
          iters.push(it);
          loops.push((async () => {
            for await (const m of it) {
              const d = JSON.parse(Buffer.from(m.data).toString());
              shared.receipt(d.t);
              m.ack();
              shared.complete();
            }
          })());
        }
        await sleep(300); // let every consume() send its first pull request
      },
      async close() {
        for (const it of iters) it.stop();
        await Promise.allSettled(loops);
        await jsm.streams.delete(stream).catch(() => {});
        await nc.drain().catch(() => {});
      },
      body(i, t) { return Buffer.from(payload(o.payloadBytes, i, t)); },
    };
  },
};

// ---------- workloads ----------

// Adds tasks 0..n-1 with `inFlight` adds outstanding; returns the add-call latency histogram.
async function addAll(sys, n, inFlight) {
  const lat = new Hist();
  let next = 0;
  async function lane() {
    while (next < n) {
      const i = next++;
      const t = nowNs();
      await sys.add(sys.body(i, t));
      lat.add(nowNs() - t);
    }
  }
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
  return lat;
}

function params(r, o, extra) {
  r.param('queue', o.queue).param('payload_bytes', o.payloadBytes).param('workers', o.workers).param('window', o.window);
  for (const [k, v] of Object.entries(extra)) r.param(k, v);
}

async function backlog(sys, o) {
  const r = new Report(o.system, 'backlog');
  const n = o.count;
  const addCpu = new CpuMeter(o.serverPid);
  const t0 = nowNs();
  const addLat = await addAll(sys, n, o.inFlight);
  const addNs = nowNs() - t0;
  const cpu = new Report();
  addCpu.report(cpu, 'add_');

  const shared = new Shared(n);
  const drainCpu = new CpuMeter(o.serverPid);
  const t1 = nowNs();
  await sys.startWorkers(o.workers, o.window, shared);
  await shared.wait(o.timeout, 'drain');
  const drainNs = shared.lastCompleteNs - t1;
  drainCpu.report(cpu, 'drain_');

  params(r, o, { count: n, in_flight: o.inFlight });
  r.metric('add_rate', n / (addNs / 1e9), 'tasks/s').metric('add_seconds', addNs / 1e9, 's');
  addLat.report(r, 'add');
  r.metric('drain_rate', n / (drainNs / 1e9), 'tasks/s').metric('drain_seconds', drainNs / 1e9, 's')
    .metric('completed', shared.completed, 'tasks');
  Object.assign(r.results, cpu.results); Object.assign(r.units, cpu.units);
  return r;
}

async function live(sys, o) {
  const r = new Report(o.system, 'live');
  const n = o.count;
  const shared = new Shared(n);
  await sys.startWorkers(o.workers, o.window, shared);
  const cpu = new CpuMeter(o.serverPid);
  const first = nowNs();
  const [addLat] = await Promise.all([
    addAll(sys, n, o.inFlight).then((h) => { shared.addsDone = nowNs(); return h; }),
    shared.wait(o.timeout, 'live'),
  ]);
  const e2e = shared.lastCompleteNs - first;
  params(r, o, { count: n, in_flight: o.inFlight });
  r.metric('tasks_per_s', n / (e2e / 1e9), 'tasks/s').metric('seconds', e2e / 1e9, 's')
    .metric('add_rate', n / ((shared.addsDone - first) / 1e9), 'tasks/s');
  addLat.report(r, 'add');
  shared.receipts.report(r, 'receipt');
  r.metric('completed', shared.completed, 'tasks');
  cpu.report(r, '');
  return r;
}

async function latency(sys, o) {
  const r = new Report(o.system, 'latency');
  const total = Math.round(o.rate * o.duration);
  const shared = new Shared(Infinity);
  await sys.startWorkers(o.workers, o.window, shared);

  const addLat = new Hist();
  const lag = new Hist();
  const queue = []; // due adds waiting for a free slot: [index, dueNs]
  let inFlight = 0;
  let failed = null;
  const start = (i, due) => {
    inFlight++;
    const t = nowNs();
    lag.add(Math.max(0, t - due));
    sys.add(sys.body(i, t)).then(() => {
      addLat.add(nowNs() - t);
      inFlight--;
      if (queue.length) { const [j, d] = queue.shift(); start(j, d); }
    }, (e) => { failed = failed || e; inFlight--; });
  };

  const cpu = new CpuMeter(o.serverPid);
  const origin = nowNs();
  shared.recordFrom = origin + o.warmup * 1e9;
  const perNs = o.rate / 1e9;
  let issued = 0;
  const deadline = origin + (o.duration + 30) * 1e9;
  while (issued < total && !failed) {
    await sleep(1);
    const now = nowNs();
    if (now > deadline) throw new Error('latency: could not issue the adds in time');
    const due = Math.min(total, Math.floor((now - origin) * perNs) + 1);
    while (issued < due) {
      const dueNs = origin + issued / perNs;
      if (inFlight < o.inFlight) start(issued, dueNs); else queue.push([issued, dueNs]);
      issued++;
    }
  }
  const addsEnd = nowNs();
  const drainBy = nowNs() + 60e9;
  while ((inFlight > 0 || queue.length) && !failed && nowNs() < drainBy) await sleep(1);
  if (failed) throw failed;
  shared.setTarget(issued);
  await shared.wait(60, 'latency');

  params(r, o, { rate: o.rate, duration_s: o.duration, warmup_s: o.warmup, in_flight: o.inFlight });
  r.metric('achieved_rate', issued / ((addsEnd - origin) / 1e9), 'tasks/s');
  shared.receipts.report(r, 'receipt');
  addLat.report(r, 'add');
  const lagR = new Report(); lag.report(lagR, 'lag');
  r.metric('pacing_lag_p99_ms', lagR.results.lag_p99_ms ?? 0, 'ms').metric('completed', shared.completed, 'tasks');
  cpu.report(r, '');
  return r;
}

// ---------- main ----------

async function main() {
  const o = parseArgs(process.argv.slice(2));
  // A hard stop, whatever happens: the run may never outlive its bounds.
  const hard = setTimeout(() => { console.error('peer-bench: hard time limit reached'); process.exit(3); },
    (o.timeout + o.duration + 120) * 1000);
  hard.unref();
  const sys = await SYSTEMS[o.system](o);
  let report;
  try {
    await sys.setup();
    const run = { backlog, live, latency }[o.workload];
    report = await run(sys, o);
    report.param('durability', sys.durability);
  } finally {
    await Promise.race([sys.close(), sleep(5000)]);
  }
  process.stdout.write(`${report.json()}\n`);
  process.exit(0);
}

main().catch((e) => { console.error(`peer-bench: ${e && e.stack ? e.stack : e}`); process.exit(1); });
