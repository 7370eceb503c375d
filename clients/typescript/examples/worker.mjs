import { Worker } from 'tasq-client';

const worker = new Worker({
  url: process.env.TASQ_URL ?? 'http://127.0.0.1:7280',
  queue: 'emails',
  concurrency: 4,
  handlers: {
    'send-email': async (task) => {
      console.log('sending to', task.payload.to);
      return { sent: true };
    },
  },
});
await worker.run();
