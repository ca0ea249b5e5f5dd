// MQTT.js as a device with a client certificate (examples/mqtt.proxy.x509):
// its client id is the certificate's CN (--identity) and it may use only
// devices/<identity>/#. Checks, over MQTT/TLS or secure WebSocket:
//
//   connect        MQTT 5: an empty client id is assigned the identity
//                  (CONNACK Assigned Client Identifier); 3.1.1: the identity
//   subscribe      devices/<identity>/# is granted QoS 1
//   subscribe_other  devices/<other>/# is refused: 0x87 (3.1.1: 0x80)
//   publish        QoS 1 to devices/<identity>/telemetry, acknowledged and
//                  received back on the subscription
//   publish_other  QoS 1 to devices/<other>/telemetry: MQTT 5 PUBACK 0x87;
//                  3.1.1 has no code: acknowledged (and dropped by the
//                  proxy, which the test checks with a subscriber of its own)
//   marker         QoS 1 to devices/<identity>/marker, received back: sent
//                  after the refused publish, so a subscriber of devices/#
//                  that gets it would have got that one first
//   client_id      another connection with the certificate and client id
//                  <other> is refused: 0x85 (3.1.1: return code 2)
//   disconnect     a clean DISCONNECT
//
//   node device.mjs --url mqtts://localhost:8883 --protocol 4|5 --ca ca.pem
//                   --cert device.pem --key device.key
//                   --identity device-1 --other device-2 [--timeout-ms 30000]
//   node device.mjs --url wss://localhost:7143/mqtt ... (secure WebSocket)
//
// Prints one JSON line per check ({"check", "ok", "detail"}; a failure adds
// "error" and "code") and a last line {"done": true, "ok": ...}; stops at the
// first failing check. Exit code 0 when every check passed, 1 when one failed,
// 3 on the overall timeout.

import { Inbox, connectClient, deadline, options, runChecks, target, within } from './lib.mjs';

const opts = options({
  host: '127.0.0.1',
  port: 0,
  url: '',
  ca: '',
  cert: '',
  key: '',
  username: '',
  protocol: 0,
  identity: '',
  other: '',
  'timeout-ms': 30000,
});
const STEP_MS = 10000;
const v5 = opts.protocol === 5;
const broker = target(opts);
const { identity, other } = opts;
deadline(opts['timeout-ms'], 'the MQTT.js device script');

function connect(clientId) {
  return connectClient(broker, {
    clientId,
    protocolVersion: opts.protocol,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: STEP_MS,
  }, STEP_MS);
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/**
 * The reason or return code `promise` is refused with: an error's `code`
 * (CONNACK, PUBACK), or a refused SUBACK's code (MQTT.js rejects with the
 * SUBACK as `packet`); fails if it resolves or fails otherwise.
 */
async function refusal(promise, what) {
  let value;
  try {
    value = await promise;
  } catch (error) {
    const code = error.code ?? error.packet?.granted?.[0];
    if (code === undefined) throw error;
    return code;
  }
  throw new Error(`${what} was accepted: ${JSON.stringify(value)}`);
}

const state = {};
const checks = [
  ['connect', async () => {
    state.client = await connect(v5 ? '' : identity);
    state.inbox = new Inbox(state.client);
    if (v5) {
      const assigned = state.client.connack.properties?.assignedClientIdentifier;
      expect(assigned === identity, `assigned client id ${JSON.stringify(assigned)}, not ${identity}`);
      return `empty client id assigned ${JSON.stringify(assigned)} over ${broker.url}`;
    }
    return `connected as ${identity} over ${broker.url}`;
  }],
  ['subscribe', async () => {
    const granted = await within(STEP_MS, 'SUBACK',
      state.client.subscribeAsync(`devices/${identity}/#`, { qos: 1 }));
    expect(granted.length === 1 && granted[0].qos === 1, `granted ${JSON.stringify(granted)}`);
    return `devices/${identity}/# granted QoS 1`;
  }],
  ['subscribe_other', async () => {
    const code = await refusal(within(STEP_MS, 'SUBACK',
      state.client.subscribeAsync(`devices/${other}/#`, { qos: 1 })), `devices/${other}/#`);
    const expected = v5 ? 0x87 : 0x80;
    expect(code === expected, `SUBACK ${code}, not ${expected}`);
    return `devices/${other}/# refused with SUBACK ${code}`;
  }],
  ['publish', async () => {
    const topic = `devices/${identity}/telemetry`;
    await within(STEP_MS, 'PUBACK', state.client.publishAsync(topic, '21.5', { qos: 1 }));
    const message = await state.inbox.next(topic, STEP_MS);
    expect(message.payload.toString() === '21.5', `received ${message.payload}`);
    return `published to ${topic} and received it back`;
  }],
  ['publish_other', async () => {
    const topic = `devices/${other}/telemetry`;
    const publish = within(STEP_MS, 'PUBACK', state.client.publishAsync(topic, 'forged', { qos: 1 }));
    if (v5) {
      const code = await refusal(publish, `the publish to ${topic}`);
      expect(code === 0x87, `PUBACK ${code}, not 135`);
      return `PUBACK ${code} for ${topic}`;
    }
    await publish;
    return `PUBACK (3.1.1 has no reason code) for ${topic}`;
  }],
  ['marker', async () => {
    const topic = `devices/${identity}/marker`;
    await within(STEP_MS, 'PUBACK', state.client.publishAsync(topic, 'marker', { qos: 1 }));
    await state.inbox.next(topic, STEP_MS);
    return `published to ${topic} and received it back`;
  }],
  ['client_id', async () => {
    const code = await refusal(connect(other), `client id ${other}`);
    const expected = v5 ? 0x85 : 2;
    expect(code === expected, `CONNACK ${code}, not ${expected}`);
    return `client id ${other} refused with CONNACK ${code}`;
  }],
  ['disconnect', async () => {
    await within(STEP_MS, 'the client to disconnect', state.client.endAsync());
    return 'disconnected';
  }],
];

const ok = await runChecks(checks);
state.client?.end(true);
process.exit(ok ? 0 : 1);
