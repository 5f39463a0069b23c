import { useEffect, useState } from 'react';

/**
 * Milliseconds since `since`, ticking every `tickMs` while it is set, so an elapsed time moves on
 * screen without the worker sending anything. 0 when `since` is undefined.
 */
export function useElapsed(since: number | undefined, tickMs: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (since === undefined) return;
    const t = setInterval(() => setNow(Date.now()), tickMs);
    return () => clearInterval(t);
  }, [since, tickMs]);
  return since === undefined ? 0 : Math.max(0, now - since);
}
