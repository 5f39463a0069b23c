/** A kernel pool worker on the page: started by the model worker (src/runtime/pool-web.ts), disposable. */
import { serveTasks } from '../src/core/pool/worker-pool.ts';
import { runKernelTask, type KernelTask } from '../src/core/compress/kernel-tasks.ts';
import { setCancelScope } from '../src/core/cancel.ts';

const scope = self as unknown as DedicatedWorkerGlobalScope;
const serve = serveTasks(
  { post: (m, transfer) => scope.postMessage(m, transfer) },
  (payload) => runKernelTask(payload as KernelTask),
  setCancelScope,
);
scope.onmessage = (e: MessageEvent) => serve(e.data);
