// tasq's client for Node.js (ESM; types in index.d.ts): `Client` for the HTTP API, `Worker` to
// run handlers for a queue's tasks over the WebSocket. HTTP goes through undici (Node's own
// HTTP client, here for its CA option), the WebSocket through `ws`.
import os from 'node:os';
import { Agent, fetch } from 'undici';
import WebSocket from 'ws';

/** States after which a task changes no more. */
export const TERMINAL = ['completed', 'failed', 'timed_out', 'cancelled'];

/** An error the server answered (or the connection to it), with the API's `code`. */
export class TasqError extends Error {
  constructor(code, message, status = undefined, retryAfter = undefined) {
    super(`${code}: ${message}`);
    this.name = 'TasqError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
    this.detail = message;
  }
}

/** Throw from a handler to fail the task for good (a dead letter at once). */
export class NonRetryable extends Error {
  constructor(message) {
    super(message);
    this.name = 'NonRetryable';
  }
}

const enc = encodeURIComponent;

function queuePath(namespace, queue) {
  const { name, type } = typeof queue === 'string' ? { name: queue, type: 'activity' } : queue;
  return `/api/v1/namespaces/${enc(namespace)}/task-queues/${enc(name)}/${type ?? 'activity'}`;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

function failBody(message, options = {}) {
  const error = { message };
  if (options.type) error.type = options.type;
  return { error, non_retryable: !!options.nonRetryable, retry_after_ms: options.retryAfterMs ?? null };
}

/** tasq's HTTP API: one method per operation. */
export class Client {
  constructor(options = {}) {
    this.url = (options.url ?? 'http://127.0.0.1:7280').replace(/\/+$/, '');
    this.namespace = options.namespace ?? 'default';
    this.headers = { 'content-type': 'application/json' };
    if (options.apiKey) this.headers.authorization = `Bearer ${options.apiKey}`;
    this.timeoutMs = options.timeoutMs ?? 90_000;
    this.dispatcher = options.caCert ? new Agent({ connect: { ca: options.caCert } }) : undefined;
  }

  async request(method, path, body) {
    let res;
    try {
      res = await fetch(this.url + path, {
        method,
        headers: this.headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: this.dispatcher,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new TasqError('unavailable', `cannot reach tasq: ${e.cause?.message ?? e.message}`);
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!res.ok) {
      const err = data && typeof data === 'object' ? data.error : undefined;
      const after = res.headers.get('retry-after');
      if (err && err.code) throw new TasqError(err.code, err.message ?? '', res.status, after ? Number(after) : undefined);
      throw new TasqError('http_error', `HTTP ${res.status} from something that is not tasq`, res.status);
    }
    return data;
  }

  q(queue) { return queuePath(this.namespace, queue); }

  /** Adds a task; `options` are the add body's other fields (snake_case, as the API has them). */
  async add(queue, taskType, payload = null, options = {}) {
    const r = await this.request('POST', `${this.q(queue)}/tasks`, { task_type: taskType, payload, ...options });
    return { taskId: r.task_id, duplicate: r.duplicate };
  }

  /** Adds 1–1000 tasks (add bodies), all or nothing. */
  async addMany(queue, tasks) {
    const r = await this.request('POST', `${this.q(queue)}/tasks/batch`, { tasks });
    return r.results.map((x) => ({ taskId: x.task_id, duplicate: x.duplicate }));
  }

  status(queue, taskId) { return this.request('GET', `${this.q(queue)}/tasks/${enc(taskId)}`); }

  /** The status once terminal, or when `timeoutMs` (≤ 60000) passed. */
  wait(queue, taskId, timeoutMs = 60_000) {
    const waitMs = Math.max(0, Math.min(60_000, Math.floor(timeoutMs)));
    return this.request('GET', `${this.q(queue)}/tasks/${enc(taskId)}${query({ wait_ms: waitMs })}`);
  }

  cancel(queue, taskId) { return this.request('DELETE', `${this.q(queue)}/tasks/${enc(taskId)}`); }

  explain(queue, taskId) { return this.request('GET', `${this.q(queue)}/tasks/${enc(taskId)}/explain`); }

  describe(name) {
    return this.request('GET', `/api/v1/namespaces/${enc(this.namespace)}/task-queues/${enc(name)}`);
  }

  /** One page of tasks by state; filters: task_type, fairness_key, priority, limit, page_token. */
  listTasks(queue, state = 'pending', filters = {}) {
    return this.request('GET', `${this.q(queue)}/tasks${query({ state, ...filters })}`);
  }

  deadLetters(queue, limit = 100, pageToken = undefined) {
    return this.request('GET', `${this.q(queue)}/dead-letters${query({ limit, page_token: pageToken })}`);
  }

  /** Puts dead letters back (no ids: all of them); resolves to how many. */
  async redrive(queue, taskIds = undefined) {
    const body = taskIds ? { task_ids: taskIds } : { all: true };
    return (await this.request('POST', `${this.q(queue)}/dead-letters/redrive`, body)).redriven;
  }

  /** The dispatch limit: 0 pauses, null removes it. */
  setConfig(queue, maxTasksPerSecond, burst = undefined) {
    const body = { max_tasks_per_second: maxTasksPerSecond };
    if (burst !== undefined) body.burst = burst;
    return this.request('PUT', `${this.q(queue)}/config`, body);
  }

  /** A long poll; options: max_tasks, wait_ms, task_types, build_id. */
  async poll(queue, identity, options = {}) {
    return (await this.request('POST', `${this.q(queue)}/poll`, { identity, ...options })).tasks;
  }

  complete(lease, result = null) { return this.request('POST', `/api/v1/leases/${enc(lease)}/complete`, { result }); }

  fail(lease, message, options = {}) {
    return this.request('POST', `/api/v1/leases/${enc(lease)}/fail`, failBody(message, options));
  }

  heartbeat(lease, details = null) { return this.request('POST', `/api/v1/leases/${enc(lease)}/heartbeat`, { details }); }

  close() { return this.dispatcher?.close(); }
}

/**
 * Runs handlers (task type → function) for the tasks of one queue, `concurrency` at a time,
 * streamed over the WebSocket: its concurrency is the credit it gives the server. A handler's
 * return value is the result; a throw fails the attempt (retried per the task's policy),
 * `NonRetryable` fails it for good. While a handler runs its lease is heartbeated; a cancelled
 * task's handler sees its `signal` aborted. A lost connection is opened again with backoff;
 * SIGTERM / SIGINT (or `stop()`) take no new task and let the running ones finish.
 */
export class Worker {
  constructor(options) {
    const { url = 'http://127.0.0.1:7280', queue, handlers, concurrency = 1 } = options;
    if (!handlers || Object.keys(handlers).length === 0) throw new Error('a worker needs at least one handler');
    if (!(concurrency >= 1 && concurrency <= 1000)) throw new Error('concurrency must be 1–1000');
    this.handlers = handlers;
    this.concurrency = concurrency;
    this.identity = options.identity ?? `${os.hostname()}@${process.pid}`;
    this.shutdownTimeoutMs = options.shutdownTimeoutMs ?? 30_000;
    this.installSignals = options.installSignals ?? true;
    const base = url.replace(/\/+$/, '').replace(/^http/, 'ws');
    const params = { identity: this.identity, task_types: Object.keys(handlers).sort().join(','), build_id: options.buildId };
    this.wsUrl = `${base}${queuePath(options.namespace ?? 'default', queue)}/connect${query(params)}`;
    this.wsOptions = { headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {} };
    if (options.caCert) this.wsOptions.ca = options.caCert;
    this.running = new Map();
    this.stopping = false;
    this.ws = null;
  }

  /** Asks the worker to shut down gracefully; `run()` resolves once it has. */
  stop() {
    if (this.stopping) return;
    this.stopping = true;
    this.wake?.();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ op: 'drain' }));
      this.finishThenClose(this.ws);
    }
  }

  /** Runs until `stop()` or a signal; resolves after a graceful shutdown. */
  async run() {
    const onSignal = () => this.stop();
    if (this.installSignals) {
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    }
    let backoff = 100;
    try {
      while (!this.stopping) {
        const opened = await this.session();
        if (this.stopping) break;
        if (opened) backoff = 100;
        const delay = backoff * (1 + Math.random());
        backoff = Math.min(backoff * 2, 10_000);
        await new Promise((resolve) => { this.wake = resolve; setTimeout(resolve, delay); });
      }
    } finally {
      if (this.installSignals) {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
      }
    }
  }

  /** One connection, until it closes; resolves whether it opened. */
  session() {
    return new Promise((resolve) => {
      let opened = false;
      const ws = new WebSocket(this.wsUrl, this.wsOptions);
      this.ws = ws;
      ws.on('open', () => {
        opened = true;
        ws.send(JSON.stringify({ op: 'credit', n: this.concurrency }));
      });
      ws.on('message', (data) => this.frame(JSON.parse(String(data))));
      ws.on('error', () => {});
      ws.on('close', () => {
        // The server put this socket's unsettled tasks back in the queue.
        for (const r of this.running.values()) r.controller.abort(new Error('connection lost'));
        this.running.clear();
        this.ws = null;
        resolve(opened);
      });
    });
  }

  async finishThenClose(ws) {
    const pending = [...this.running.values()].map((r) => r.done);
    const timeout = new Promise((resolve) => setTimeout(resolve, this.shutdownTimeoutMs).unref());
    await Promise.race([Promise.allSettled(pending), timeout]);
    ws.close();
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  frame(f) {
    if (f.op === 'task') {
      const controller = new AbortController();
      const entry = { controller, cancelled: false };
      this.running.set(f.task.lease, entry);
      entry.done = this.runTask(f.task, entry);
    } else if (f.op === 'heartbeat' && f.cancel_requested) {
      const entry = this.running.get(f.lease);
      if (entry && !entry.cancelled) {
        entry.cancelled = true;
        entry.controller.abort(new Error('cancelled'));
      }
    }
  }

  async runTask(raw, entry) {
    const task = {
      taskId: raw.task_id, taskType: raw.task_type, payload: raw.payload, headers: raw.headers ?? {},
      attempt: raw.attempt, lease: raw.lease, raw, signal: entry.controller.signal,
    };
    const every = Math.max(200, Math.min(10_000, (raw.heartbeat_timeout_ms ?? raw.start_to_close_timeout_ms ?? 30_000) / 3));
    const beat = setInterval(() => this.send({ op: 'heartbeat', lease: raw.lease, details: null }), every);
    const fail = (message, type, nonRetryable) => this.send({ op: 'fail', lease: raw.lease, ...failBody(message, { type, nonRetryable }) });
    try {
      const handler = this.handlers[raw.task_type];
      if (!handler) throw new NonRetryable(`no handler for task type ${JSON.stringify(raw.task_type)}`);
      const cancelled = new Promise((_, reject) => entry.controller.signal.addEventListener('abort', () => reject(entry.controller.signal.reason)));
      cancelled.catch(() => {});
      const result = await Promise.race([Promise.resolve().then(() => handler(task)), cancelled]);
      this.send({ op: 'complete', lease: raw.lease, result: result === undefined ? null : result });
    } catch (e) {
      if (entry.cancelled) fail('cancelled while running', 'Cancelled', true);
      else if (entry.controller.signal.aborted) { /* connection lost: the task went back */ }
      else if (e instanceof NonRetryable) fail(e.message, 'NonRetryable', true);
      else fail(e?.message || String(e), e?.name ?? 'Error', false);
    } finally {
      clearInterval(beat);
      this.running.delete(raw.lease);
    }
  }
}
