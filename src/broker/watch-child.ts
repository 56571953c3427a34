// The broker's watcher process: watches every endpoint the broker made
// (waits for its owner's exit, follows the fd to a new holder, releases it),
// off the broker's event loop. Watching scans holders' fd tables in /proc and
// releasing runs `ip`/`nft`: both take as long as a tenant makes them (many
// fds, many endpoints), so they must not delay anyone's requests.
import { describeError } from '../errors.js';
import type { HostContext } from '../host/context.js';
import { watchEndpoint } from '../lifecycle/watcher.js';

const host = JSON.parse(process.argv[2]!) as HostContext;
const watched = new Set<string>();

process.on('message', (id: string) => {
  if (typeof id !== 'string' || watched.has(id)) return;
  watched.add(id);
  watchEndpoint(id, host)
    .catch((e) => process.stderr.write(`broker: watching endpoint ${id} failed: ${describeError(e).line}\n`))
    .finally(() => watched.delete(id));
});
// The broker gone: a restarted broker adopts the records again.
process.on('disconnect', () => process.exit(0));
