// Shared by the MQTT.js scripts: options, one JSON line per report on stdout,
// deadlines, and an inbox of received messages to wait on.

/** Parses `--name value` pairs; every name in `defaults` may be given. */
export function options(defaults) {
  const parsed = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!(name in defaults) || i + 1 >= argv.length) {
      fail(`usage: ${Object.keys(defaults).map((n) => `--${n} <value>`).join(' ')} (got ${argv[i]})`);
    }
    parsed[name] = typeof defaults[name] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (parsed.port === 0) fail('--port is required');
  if (![4, 5].includes(parsed.protocol)) fail('--protocol is 4 (MQTT 3.1.1) or 5');
  return parsed;
}

/** Writes one JSON line on stdout. */
export function report(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function fail(message) {
  report({ check: 'arguments', ok: false, detail: message });
  process.exit(2);
}

/** Ends the process with exit code 3 if it is still running after `ms`. */
export function deadline(ms, what) {
  const timer = setTimeout(() => {
    report({ check: 'timeout', ok: false, detail: `${what} did not finish within ${ms} ms` });
    process.exit(3);
  }, ms);
  timer.unref();
  return timer;
}

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Collects a client's messages from the moment it is created. */
export class Inbox {
  constructor(client) {
    this.messages = [];
    this.waiters = [];
    client.on('message', (topic, payload, packet) => {
      this.messages.push({ topic, payload, packet });
      this.waiters = this.waiters.filter((waiter) => !waiter());
    });
  }

  /** The first message on `topic` not taken yet. */
  next(topic, ms) {
    const take = () => {
      const index = this.messages.findIndex((m) => m.topic === topic);
      return index < 0 ? undefined : this.messages.splice(index, 1)[0];
    };
    return within(ms, `a message on ${topic}`, new Promise((resolve) => {
      const found = take();
      if (found) {
        resolve(found);
        return;
      }
      this.waiters.push(() => {
        const message = take();
        if (message) resolve(message);
        return message !== undefined;
      });
    }));
  }
}
