// A kernel pool worker in Node (worker_threads): tsx compiles the TypeScript core, as in bin/compression-studio.mjs.
import { register } from 'tsx/esm/api';

register();
await import('./kernel-worker-node.ts');
