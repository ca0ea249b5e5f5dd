// One MQTT.js client talking with another client it does not know: it
// subscribes to --receive, publishes --message to --send (QoS 1), and waits
// for --expect on --receive, which the other side sends once it got
// --message. The test runs the other side (e.g. rumqttc over TCP) itself.
// --send and --receive may be the same topic: other messages there (its own
// --message) are skipped while waiting for --expect.
//
//   node exchange.mjs --url ws://127.0.0.1:7114/mqtt?access_token=... --protocol 4|5
//                     --send to/tcp --receive to/ws --message hello --expect hi
//                     [--ca test-ca.pem] [--username 'Bearer ...']
//                     [--client-id id] [--timeout-ms 30000]
//   node exchange.mjs --port 1883 [--host 127.0.0.1] ... (MQTT over TCP)
//
// Prints one JSON line per check (connect, subscribe, publish, receive: {"check",
// "ok", "detail"}) and a last line {"done": true, "ok": ...}; stops at the first
// failing check. Exit code 0 when every check passed, 1 when one failed, 3 on
// the overall timeout.

import { Inbox, connectClient, deadline, options, runChecks, target, within } from './lib.mjs';

const opts = options({
  host: '127.0.0.1',
  port: 0,
  url: '',
  ca: '',
  username: '',
  protocol: 0,
  send: '',
  receive: '',
  message: '',
  expect: '',
  'client-id': `mqttjs-exchange-${process.pid}`,
  'timeout-ms': 30000,
});
const STEP_MS = 10000;
deadline(opts['timeout-ms'], 'the MQTT.js exchange script');

const state = {};
const checks = [
  ['connect', async () => {
    state.client = await connectClient(target(opts), {
      clientId: opts['client-id'],
      protocolVersion: opts.protocol,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 0,
      connectTimeout: STEP_MS,
    }, STEP_MS);
    state.inbox = new Inbox(state.client);
    return `connected to ${target(opts).url.replace(/access_token=[^&]*/, 'access_token=...')} over MQTT ${opts.protocol}`;
  }],
  ['subscribe', async () => {
    const granted = await within(STEP_MS, 'SUBACK', state.client.subscribeAsync(opts.receive, { qos: 1 }));
    if (granted.length !== 1 || granted[0].qos !== 1) throw new Error(`granted ${JSON.stringify(granted)}`);
    return `subscribed to ${opts.receive}`;
  }],
  ['publish', async () => {
    await within(STEP_MS, 'PUBACK', state.client.publishAsync(opts.send, opts.message, { qos: 1 }));
    return `published ${JSON.stringify(opts.message)} to ${opts.send}`;
  }],
  ['receive', async () => {
    const skipped = [];
    const until = Date.now() + STEP_MS;
    for (;;) {
      const message = await state.inbox.next(opts.receive, Math.max(until - Date.now(), 1)).catch((error) => {
        throw new Error(`${error.message}; received only ${JSON.stringify(skipped)}`);
      });
      const payload = message.payload.toString();
      if (payload === opts.expect) {
        await within(STEP_MS, 'the client to disconnect', state.client.endAsync());
        return `received ${JSON.stringify(payload)} on ${opts.receive} at QoS ${message.packet.qos}`
          + (skipped.length ? ` after ${JSON.stringify(skipped)}` : '');
      }
      skipped.push(payload);
    }
  }],
];

const ok = await runChecks(checks);
state.client?.end(true);
process.exit(ok ? 0 : 1);
