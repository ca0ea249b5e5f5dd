// A burst as MQTT.js users write it: `count` QoS 1 or 2 publishes in a loop,
// none awaited, then one QoS 1 publish of "end" once every one of them was
// acknowledged (so that a subscriber knows that nothing follows).
//
//   node burst.mjs --port 1883 --protocol 4|5 --qos 1|2 --count 10000
//                  --topic burst/x [--host 127.0.0.1] [--client-id id]
//                  [--timeout-ms 30000]
//
// The payloads are "0" .. "<count - 1>". Prints {"event": "connected"} and a
// last line {"done": true, "ok", "count", "acked", "error_count", "errors",
// "closed_early", "disconnect", "elapsed_ms"}. ok means: every publish and the
// end marker acknowledged without error, and the connection never closed
// before the client ended it. Exit code 0 when ok, 1 otherwise (a timeout
// included).

import mqtt from 'mqtt';
import { options, report, within } from './lib.mjs';

const opts = options({
  host: '127.0.0.1',
  port: 0,
  protocol: 0,
  qos: 1,
  count: 10000,
  topic: 'burst',
  'client-id': `mqttjs-burst-${process.pid}`,
  'timeout-ms': 30000,
});
const STEP_MS = 10000;

const state = {
  acked: 0,
  errors: [],
  errorCount: 0,
  closedEarly: false,
  disconnect: null,
  ending: false,
};
const started = Date.now();
// The overall deadline reports what was acknowledged so far.
const timer = setTimeout(() => {
  error(`timed out after ${opts['timeout-ms']} ms with ${state.acked} of ${opts.count} acknowledged`);
  finish(false);
}, opts['timeout-ms']);

function finish(ok, extra = {}) {
  clearTimeout(timer);
  report({
    done: true,
    ok,
    count: opts.count,
    acked: state.acked,
    error_count: state.errorCount,
    errors: state.errors,
    closed_early: state.closedEarly,
    disconnect: state.disconnect,
    elapsed_ms: Date.now() - started,
    ...extra,
  });
  process.exit(ok ? 0 : 1);
}

function error(message) {
  state.errorCount += 1;
  if (state.errors.length < 5) state.errors.push(message);
}

let client;
try {
  client = await within(STEP_MS, 'CONNACK', mqtt.connectAsync(`mqtt://${opts.host}:${opts.port}`, {
    clientId: opts['client-id'],
    protocolVersion: opts.protocol,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: STEP_MS,
  }, false));
} catch (e) {
  error(`connect: ${e}`);
  finish(false);
}
report({ event: 'connected' });

client.on('disconnect', (packet) => {
  state.disconnect = packet.reasonCode ?? 0;
});
client.on('error', (e) => error(`client error: ${e.message ?? e}`));
client.on('close', () => {
  if (!state.ending) {
    state.closedEarly = true;
    error(`the connection closed after ${state.acked} of ${opts.count} acknowledgements`);
    finish(false);
  }
});

let resolveAll;
const allAcked = new Promise((resolve) => {
  resolveAll = resolve;
});
for (let i = 0; i < opts.count; i += 1) {
  client.publish(opts.topic, String(i), { qos: opts.qos }, (e) => {
    if (e) {
      error(`publish ${i}: ${e.message ?? e}`);
    } else {
      state.acked += 1;
    }
    if (state.acked + state.errorCount >= opts.count) resolveAll();
  });
}
await allAcked;
if (state.errorCount > 0) finish(false);
try {
  await within(STEP_MS, 'the end marker to be acknowledged', client.publishAsync(opts.topic, 'end', { qos: 1 }));
  state.ending = true;
  await within(STEP_MS, 'DISCONNECT to be sent', client.endAsync());
} catch (e) {
  error(String(e));
  finish(false);
}
finish(true);
