#!/usr/bin/env node
// `npm run bench`: runs tools/bench/run.ts through tsx, like the CLI.
import { register } from 'tsx/esm/api';

register();
await import('../tools/bench/run.ts');
