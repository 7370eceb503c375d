import { Client } from 'tasq-client';

const client = new Client({ url: process.env.TASQ_URL ?? 'http://127.0.0.1:7280' });
const { taskId } = await client.add('emails', 'send-email', { to: 'ada@example.com' });
const status = await client.wait('emails', taskId, 30_000);
console.log(taskId, status.state, JSON.stringify(status.result));
