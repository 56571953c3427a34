// Reads newline-delimited JSON from a socket (QMP, the switch's control
// socket as a client sees it): each complete line parsed and handed on, blank
// lines skipped, and the end of the connection reported once.
import type { Socket } from 'node:net';

export function readJsonLines(sock: Socket, onMessage: (msg: Record<string, unknown>) => void, onClose: () => void = () => undefined): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  });
  sock.once('close', onClose);
}
