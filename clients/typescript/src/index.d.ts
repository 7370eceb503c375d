// Types of tasq's Node.js client (src/index.js).

/** A queue: its name (type `activity`), or its name and type. */
export type Queue = string | { name: string; type?: 'activity' | 'workflow' };

/** States after which a task changes no more. */
export declare const TERMINAL: readonly ['completed', 'failed', 'timed_out', 'cancelled'];

export type TaskState = 'pending' | 'running' | 'completed' | 'failed' | 'timed_out' | 'cancelled';

export interface ClientOptions {
  /** The server, `http://127.0.0.1:7280` by default. */
  url?: string;
  /** The bearer key when auth is on. */
  apiKey?: string;
  namespace?: string;
  /** PEM text of the authority that signed the server's certificate (a private CA). */
  caCert?: string | Buffer;
  timeoutMs?: number;
}

/** The add body's fields besides the type and payload, as the API names them. */
export interface AddOptions {
  task_id?: string;
  priority?: number;
  fairness_key?: string;
  fairness_weight?: number;
  delay_ms?: number;
  schedule_to_start_timeout_ms?: number | null;
  start_to_close_timeout_ms?: number;
  heartbeat_timeout_ms?: number | null;
  retry?: { max_attempts?: number; initial_interval_ms?: number; backoff_coefficient?: number; maximum_interval_ms?: number };
  route_to?: { identity: string; fallback_after_ms?: number | null };
  headers?: Record<string, string>;
}

export interface AddResult { taskId: string; duplicate: boolean }

export interface TaskStatus {
  task_id: string;
  task_type: string;
  state: TaskState;
  attempt: number;
  added_at: string;
  updated_at: string;
  result: unknown;
  last_error: { message: string; type?: string } | null;
}

/** A task as a poll gives it. */
export interface PolledTask {
  task_id: string;
  task_type: string;
  payload: unknown;
  headers: Record<string, string>;
  attempt: number;
  priority: number;
  fairness_key: string | null;
  lease: string;
  added_at: string;
  dispatched_at: string;
  lease_expires_at: string;
  start_to_close_timeout_ms: number;
  heartbeat_timeout_ms: number | null;
}

export interface FailOptions { type?: string; nonRetryable?: boolean; retryAfterMs?: number }

/** An error the server answered, with the API's `code` (`not_found`, `lease_lost`, …). */
export declare class TasqError extends Error {
  readonly code: string;
  readonly status?: number;
  readonly retryAfter?: number;
  readonly detail: string;
}

/** Throw from a handler to fail the task for good. */
export declare class NonRetryable extends Error {
  constructor(message: string);
}

export declare class Client {
  constructor(options?: ClientOptions);
  add(queue: Queue, taskType: string, payload?: unknown, options?: AddOptions): Promise<AddResult>;
  addMany(queue: Queue, tasks: Array<AddOptions & { task_type: string; payload?: unknown }>): Promise<AddResult[]>;
  status(queue: Queue, taskId: string): Promise<TaskStatus>;
  wait(queue: Queue, taskId: string, timeoutMs?: number): Promise<TaskStatus>;
  cancel(queue: Queue, taskId: string): Promise<TaskStatus>;
  explain(queue: Queue, taskId: string): Promise<{ task_id: string; state: TaskState; reasons: Array<{ code: string; message: string; [k: string]: unknown }> }>;
  describe(name: string): Promise<{ namespace: string; name: string; types: Record<'activity' | 'workflow', Record<string, unknown>> }>;
  listTasks(queue: Queue, state?: string, filters?: { task_type?: string; fairness_key?: string; priority?: number; limit?: number; page_token?: string }): Promise<{ tasks: Array<Record<string, unknown>>; next_page_token: string | null }>;
  deadLetters(queue: Queue, limit?: number, pageToken?: string): Promise<{ dead_letters: Array<Record<string, unknown>>; next_page_token: string | null }>;
  redrive(queue: Queue, taskIds?: string[]): Promise<number>;
  setConfig(queue: Queue, maxTasksPerSecond: number | null, burst?: number): Promise<{ max_tasks_per_second: number | null; burst: number | null }>;
  poll(queue: Queue, identity: string, options?: { max_tasks?: number; wait_ms?: number; task_types?: string[]; build_id?: string }): Promise<PolledTask[]>;
  complete(lease: string, result?: unknown): Promise<{ task_id: string; state: TaskState }>;
  fail(lease: string, message: string, options?: FailOptions): Promise<{ task_id: string; state: TaskState; next_attempt_at: string | null }>;
  heartbeat(lease: string, details?: unknown): Promise<{ lease_expires_at: string; cancel_requested: boolean }>;
  close(): Promise<void> | undefined;
}

/** A task given to a handler. */
export interface Task {
  taskId: string;
  taskType: string;
  payload: any;
  headers: Record<string, string>;
  attempt: number;
  lease: string;
  raw: PolledTask;
  /** Aborted when the task is cancelled while it runs (or the connection is lost). */
  signal: AbortSignal;
}

export type Handler = (task: Task) => unknown | Promise<unknown>;

export interface WorkerOptions extends ClientOptions {
  queue: Queue;
  handlers: Record<string, Handler>;
  /** Tasks run at once (its credit), 1–1000; 1 by default. */
  concurrency?: number;
  identity?: string;
  buildId?: string;
  /** How long a graceful stop waits for running handlers. */
  shutdownTimeoutMs?: number;
  /** Stop gracefully on SIGTERM and SIGINT (true by default). */
  installSignals?: boolean;
}

export declare class Worker {
  constructor(options: WorkerOptions);
  readonly identity: string;
  /** Runs until `stop()` or a signal; resolves after a graceful shutdown. */
  run(): Promise<void>;
  stop(): void;
}
