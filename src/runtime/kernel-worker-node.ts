/** The worker_threads side of the CLI's kernel pool (pool-node.ts). */
import { parentPort } from 'node:worker_threads';
import { serveTasks } from '../core/pool/worker-pool.ts';
import { runKernelTask, type KernelTask } from '../core/compress/kernel-tasks.ts';
import { setCancelScope } from '../core/cancel.ts';
import { threadClock } from './thread-clock-node.ts';

const port = parentPort!;
const serve = serveTasks(
  { post: (m, transfer) => port.postMessage(m, transfer as never) },
  (payload) => runKernelTask(payload as KernelTask),
  setCancelScope,
  threadClock(),
);
port.on('message', serve);
