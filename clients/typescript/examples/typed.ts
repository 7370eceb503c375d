// Compiled by `npm run check` (tsc --noEmit) against src/index.d.ts: the declarations hold.
import { Client, NonRetryable, TasqError, Worker, type Task } from 'tasq-client';

async function main(): Promise<void> {
  const client = new Client({ url: 'http://127.0.0.1:7280', apiKey: 'tq_key' });
  const added = await client.add('emails', 'send-email', { to: 'a@example.com' }, { priority: 2, retry: { max_attempts: 3 } });
  const status = await client.wait('emails', added.taskId, 10_000);
  const state: string = status.state;
  try {
    await client.status({ name: 'emails', type: 'workflow' }, 'nope');
  } catch (e) {
    if (e instanceof TasqError && e.code === 'not_found') console.log(state);
  }
  const worker = new Worker({
    queue: 'emails',
    handlers: {
      'send-email': async (task: Task) => {
        if (task.signal.aborted) throw new NonRetryable('cancelled');
        return { to: task.payload.to as string };
      },
    },
  });
  await worker.run();
}

void main;
