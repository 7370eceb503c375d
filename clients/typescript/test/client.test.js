// The Node.js client against a real tasq (TASQ_BIN, default target/debug/tasq): every Client
// method, errors as TasqError with the API's code, the Worker (results, retries, dead letters,
// concurrency as credit, cancellation, reconnection, graceful stop) and the README's examples
// run as written.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtempSync, openSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';

import { Client, NonRetryable, TasqError, Worker } from '../src/index.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const PKG = join(HERE, '..');
const BIN = process.env.TASQ_BIN ?? join(PKG, '..', '..', 'target', 'debug', 'tasq');

let server;
let url;
let work;
let bind;

async function freeAddress() {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  await once(s, 'close');
  return `127.0.0.1:${port}`;
}

async function startServer() {
  // The server's log goes to a file beside its data (shown if it does not start).
  const log = openSync(join(work, 'stderr.log'), 'a');
  server = spawn(BIN, ['serve', '--config', join(work, 'tasq.toml'), '--bind', bind, '--data-dir', join(work, 'data')], {
    stdio: ['ignore', 'pipe', log],
  });
  let out = '';
  await new Promise((resolve, reject) => {
    const fail = (why) => reject(new Error(`${why}: ${out}\n${readFileSync(join(work, 'stderr.log'), 'utf8')}`));
    const timer = setTimeout(() => fail('tasq did not start'), 30_000);
    server.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/tasq listening on (\S+)/);
      if (m) { clearTimeout(timer); url = m[1]; resolve(); }
    });
    server.on('exit', (code) => fail(`tasq exited ${code}`));
  });
}

async function killServer() {
  server.kill('SIGKILL');
  await once(server, 'exit');
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'tasq-ts-'));
  writeFileSync(join(work, 'tasq.toml'), '');
  bind = await freeAddress();
  await startServer();
});

after(async () => {
  server.kill('SIGTERM');
  await once(server, 'exit');
  rmSync(work, { recursive: true, force: true });
});

const unique = (p) => `${p}-${Math.random().toString(16).slice(2, 10)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function rejects(promise, code) {
  await assert.rejects(promise, (e) => e instanceof TasqError && e.code === code);
}

test('client operations and errors', async () => {
  const c = new Client({ url });
  const q = unique('ops');
  const a = await c.add(q, 'resize', { w: 10 }, { task_id: 'img-1', priority: 2, headers: { trace: 't' } });
  assert.deepEqual(a, { taskId: 'img-1', duplicate: false });
  assert.equal((await c.add(q, 'resize', null, { task_id: 'img-1' })).duplicate, true);
  const many = await c.addMany(q, [0, 1, 2].map((i) => ({ task_type: 'resize', payload: i })));
  assert.equal(many.length, 3);
  assert.equal((await c.status(q, 'img-1')).state, 'pending');
  const listed = await c.listTasks(q, 'pending', { priority: 2 });
  assert.deepEqual(listed.tasks.map((t) => t.task_id), ['img-1']);
  assert.equal((await c.explain(q, 'img-1')).reasons[0].code, 'no_poller');
  assert.equal((await c.describe(q)).types.activity.backlog_count, 4);

  await c.setConfig(q, 0);
  assert.deepEqual(await c.poll(q, 'w1', { wait_ms: 0 }), []);
  await c.setConfig(q, null);
  const tasks = await c.poll(q, 'w1', { max_tasks: 2, wait_ms: 1000 });
  assert.equal(tasks[0].task_id, 'img-1');
  assert.deepEqual(tasks[0].headers, { trace: 't' });
  assert.equal((await c.heartbeat(tasks[0].lease, { p: 1 })).cancel_requested, false);
  assert.equal((await c.complete(tasks[0].lease, { ok: true })).state, 'completed');
  assert.deepEqual((await c.wait(q, 'img-1', 1000)).result, { ok: true });
  assert.equal((await c.fail(tasks[1].lease, 'no disk', { type: 'IOError', nonRetryable: true })).state, 'failed');
  assert.deepEqual((await c.deadLetters(q)).dead_letters.map((d) => d.last_error.message), ['no disk']);
  assert.equal(await c.redrive(q), 1);
  assert.equal((await c.cancel(q, tasks[1].task_id)).state, 'cancelled');
  assert.equal((await c.add({ name: q, type: 'workflow' }, 'flow')).duplicate, false);

  await rejects(c.status(q, 'nope'), 'not_found');
  await rejects(c.add(q, 't', null, { priority: 9 }), 'invalid_argument');
  await rejects(c.complete('garbage'), 'lease_lost');
  await rejects(new Client({ url: 'http://127.0.0.1:9', timeoutMs: 2000 }).status(q, 'x'), 'unavailable');
});

test('worker: results, retries, dead letters', async () => {
  const q = unique('work');
  const worker = new Worker({
    url, queue: q, concurrency: 4, installSignals: false,
    handlers: {
      flaky: async (task) => { if (task.attempt === 1) throw new Error('first attempt fails'); return { attempt: task.attempt }; },
      poison: async () => { throw new NonRetryable('bad input'); },
      plain: (task) => task.payload * 2,
    },
  });
  const running = worker.run();
  const c = new Client({ url });
  const f = await c.add(q, 'flaky', null, { retry: { initial_interval_ms: 1, maximum_interval_ms: 1 } });
  const p = await c.add(q, 'poison');
  const d = await c.add(q, 'plain', 21);
  const done = await c.wait(q, f.taskId, 30_000);
  assert.deepEqual([done.state, done.result], ['completed', { attempt: 2 }]);
  const dead = await c.wait(q, p.taskId, 30_000);
  assert.equal(dead.state, 'failed');
  assert.deepEqual(dead.last_error, { message: 'bad input', type: 'NonRetryable' });
  assert.equal((await c.wait(q, d.taskId, 30_000)).result, 42);
  worker.stop();
  await running;
});

test('worker: concurrency is its credit, a cancel aborts the handler', async () => {
  const q = unique('conc');
  let now = 0;
  let max = 0;
  let release;
  const released = new Promise((r) => { release = r; });
  const worker = new Worker({
    url, queue: q, concurrency: 3, installSignals: false,
    handlers: {
      slow: async (task) => {
        now += 1; max = Math.max(max, now);
        try {
          await Promise.race([released, new Promise((_, reject) => task.signal.addEventListener('abort', () => reject(task.signal.reason)))]);
        } finally { now -= 1; }
        return 'ok';
      },
    },
  });
  const running = worker.run();
  const c = new Client({ url });
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await c.add(q, 'slow', null, { heartbeat_timeout_ms: 600 })).taskId);
  for (let t = 0; max < 3; t++) { assert.ok(t < 400, 'three tasks never ran at once'); await sleep(50); }
  await sleep(500);
  assert.equal(max, 3, 'never more tasks than the credit given');
  const runningIds = (await c.listTasks(q, 'running')).tasks.map((t) => t.task_id);
  assert.equal(runningIds.length, 3);
  await c.cancel(q, runningIds[0]);
  assert.equal((await c.wait(q, runningIds[0], 20_000)).state, 'cancelled');
  release();
  for (const id of ids.filter((i) => i !== runningIds[0])) assert.equal((await c.wait(q, id, 30_000)).state, 'completed');
  worker.stop();
  await running;
});

test('worker: reconnects after a restart and stops gracefully', async () => {
  const q = unique('recon');
  let started;
  const worker = new Worker({
    url, queue: q, installSignals: false,
    handlers: { work: async (task) => { started?.(); await sleep(1000); return task.payload; } },
  });
  const running = worker.run();
  const c = new Client({ url });
  assert.equal((await c.wait(q, (await c.add(q, 'work', 1)).taskId, 30_000)).result, 1);
  await killServer();
  await startServer();
  assert.equal((await c.wait(q, (await c.add(q, 'work', 2)).taskId, 60_000)).result, 2);
  const began = new Promise((r) => { started = r; });
  const t = await c.add(q, 'work', 3);
  await began;
  worker.stop();
  await running;
  assert.equal((await c.status(q, t.taskId)).state, 'completed', 'a stop lets the running task finish');
});

test('the README examples run as written', async () => {
  const readme = readFileSync(join(PKG, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
  const producer = readFileSync(join(PKG, 'examples', 'producer.mjs'), 'utf8');
  const workerSrc = readFileSync(join(PKG, 'examples', 'worker.mjs'), 'utf8');
  assert.deepEqual(blocks, [producer, workerSrc]);
  assert.ok(producer.split('\n').length < 20 && workerSrc.split('\n').length < 20);
  const env = { ...process.env, TASQ_URL: url };
  const w = spawn(process.execPath, [join(PKG, 'examples', 'worker.mjs')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let printed = '';
  w.stdout.on('data', (c) => { printed += c; });
  const p = spawn(process.execPath, [join(PKG, 'examples', 'producer.mjs')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (c) => { out += c; });
  const [code] = await once(p, 'exit');
  assert.equal(code, 0);
  assert.deepEqual(out.trim().split(' ').slice(1), ['completed', '{"sent":true}']);
  w.kill('SIGTERM');
  const [wcode] = await once(w, 'exit');
  assert.equal(wcode, 0, printed);
  assert.match(printed, /sending to ada@example.com/);
});
