// Shared by the MQTT.js scripts: options, where to connect (TCP, TLS or
// WebSocket), one JSON line per report on stdout, deadlines, and an inbox of
// received messages to wait on.

import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';

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
  if (parsed.port === 0 && !parsed.url) fail('--port (or --url) is required');
  if (![4, 5].includes(parsed.protocol)) fail('--protocol is 4 (MQTT 3.1.1) or 5');
  return parsed;
}

/**
 * The broker URL and the connect options that go with it: `--url` when given
 * (`ws://`, `wss://`, `mqtt://` or `mqtts://`, a WebSocket URL with its path
 * and query, e.g. `/mqtt?access_token=...`), else `mqtt://<host>:<port>`;
 * `--ca <file>` trusts that CA (PEM) for `wss://` and `mqtts://`;
 * `--cert <file>` and `--key <file>` (PEM) are the client certificate and
 * its key presented to a TLS server that asks for one;
 * `--username` is sent in CONNECT (e.g. `Bearer <token>`).
 */
export function target(opts) {
  const url = opts.url || `mqtt://${opts.host}:${opts.port}`;
  const extra = {};
  if (opts.ca) extra.ca = readFileSync(opts.ca);
  if (opts.cert) extra.cert = readFileSync(opts.cert);
  if (opts.key) extra.key = readFileSync(opts.key);
  if (opts.username) extra.username = opts.username;
  return { url, extra };
}

/**
 * Connects to `broker` (from `target`) with MQTT.js `options`; resolves with
 * the client once it has its CONNACK (kept as `client.connack`). Rejects within `ms` with the refusal
 * (its `code` is the reason or return code), or with what ended the
 * transport first: MQTT.js does not surface a WebSocket handshake failure
 * (such as `Unexpected server response: 401`) on the client, so it is taken
 * from the client's stream.
 */
export function connectClient(broker, options, ms) {
  const client = mqtt.connect(broker.url, { ...broker.extra, ...options });
  let transportError;
  client.stream?.on('error', (error) => { transportError ??= error; });
  const connected = new Promise((resolve, reject) => {
    const settle = (outcome) => {
      client.off('connect', onConnect);
      client.off('error', onError);
      client.off('close', onClose);
      outcome();
    };
    const onConnect = (connack) => settle(() => {
      client.connack = connack;
      resolve(client);
    });
    const onError = (error) => settle(() => reject(error));
    const onClose = () => settle(() => reject(transportError ?? new Error('the connection closed before CONNACK')));
    client.on('connect', onConnect);
    client.on('error', onError);
    client.on('close', onClose);
  });
  return within(ms, `CONNACK for ${options.clientId}`, connected).catch((error) => {
    client.end(true);
    throw error;
  });
}

/** Writes one JSON line on stdout. */
export function report(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// Runs `checks` ([name, async fn] pairs) in order, reporting each; stops at
// the first failure. Reports {done, ok} last and returns ok.
export async function runChecks(checks) {
  let ok = true;
  for (const [check, run] of checks) {
    try {
      report({ check, ok: true, detail: await run() });
    } catch (error) {
      report({ check, ok: false, detail: String(error?.stack ?? error), error: String(error?.message ?? error), code: error?.code });
      ok = false;
      break;
    }
  }
  report({ done: true, ok });
  return ok;
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
