// MQTT.js against an MQTT server (the proxy, in the tests): connect,
// subscribe, publish and receive at QoS 0/1/2, a retained message for a late
// subscriber, a will published when a client drops without DISCONNECT, user
// properties (MQTT 5 only), and a clean disconnect.
//
//   node conformance.mjs --port 1883 --protocol 4|5 [--host 127.0.0.1]
//                        [--prefix zilla-test] [--timeout-ms 30000]
//   node conformance.mjs --url ws://127.0.0.1:7114/mqtt?access_token=... --protocol 4|5
//                        [--ca test-ca.pem] [--username 'Bearer ...'] [...]
//
// --url connects over WebSocket (ws://, wss://) or TLS (mqtts://) instead of
// TCP to --host:--port; --ca trusts a CA (PEM) for wss:// and mqtts://;
// --username is sent in CONNECT. Prints one JSON line per check ({"check",
// "ok", "detail"}; a failure adds "error", the error's message, and "code",
// its reason or return code when the server refused the CONNECT) and a last
// line {"done": true, "ok": ...}; stops at the first failing check. Exit code
// 0 when every check passed, 1 when one failed, 3 on the overall timeout.

import { Inbox, connectClient, deadline, options, runChecks, target, within } from './lib.mjs';

const opts = options({
  host: '127.0.0.1',
  port: 0,
  url: '',
  ca: '',
  username: '',
  protocol: 0,
  prefix: 'zilla-test',
  'timeout-ms': 30000,
});
const STEP_MS = 10000;
const { prefix } = opts;
const v5 = opts.protocol === 5;
const broker = target(opts);
deadline(opts['timeout-ms'], 'the MQTT.js conformance script');

function connect(clientId, extra = {}) {
  return connectClient(broker, {
    clientId,
    protocolVersion: opts.protocol,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: STEP_MS,
    ...extra,
  }, STEP_MS);
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const clients = {};
const checks = [
  ['connect', async () => {
    clients.sub = await connect(`${prefix}-sub`);
    clients.subInbox = new Inbox(clients.sub);
    clients.pub = await connect(`${prefix}-pub`);
    return `protocol ${opts.protocol}, two clients connected`;
  }],
  ['subscribe', async () => {
    const granted = await within(STEP_MS, 'SUBACK', clients.sub.subscribeAsync(`${prefix}/qos/#`, { qos: 2 }));
    expect(granted.length === 1 && granted[0].qos === 2, `granted ${JSON.stringify(granted)}`);
    return 'granted QoS 2';
  }],
  ...[0, 1, 2].map((qos) => [`publish_qos${qos}`, async () => {
    const topic = `${prefix}/qos/${qos}`;
    const payload = `qos ${qos} from MQTT.js`;
    await within(STEP_MS, `the QoS ${qos} publish to complete`, clients.pub.publishAsync(topic, payload, { qos }));
    const message = await clients.subInbox.next(topic, STEP_MS);
    expect(message.payload.toString() === payload, `payload ${message.payload}`);
    expect(message.packet.qos === qos, `received at QoS ${message.packet.qos}`);
    return `received at QoS ${qos}`;
  }]),
  ['retained', async () => {
    const topic = `${prefix}/retained`;
    await within(STEP_MS, 'the retained publish to complete',
      clients.pub.publishAsync(topic, 'kept', { qos: 1, retain: true }));
    const late = await connect(`${prefix}-late`);
    const inbox = new Inbox(late);
    await within(STEP_MS, 'SUBACK', late.subscribeAsync(topic, { qos: 1 }));
    const message = await inbox.next(topic, STEP_MS);
    expect(message.payload.toString() === 'kept', `payload ${message.payload}`);
    expect(message.packet.retain === true, 'the retain flag is set for a late subscriber');
    await within(STEP_MS, 'the late client to disconnect', late.endAsync());
    // Clear it, so that the broker keeps nothing from this run.
    await within(STEP_MS, 'clearing the retained message', clients.pub.publishAsync(topic, '', { qos: 1, retain: true }));
    return 'a late subscriber got the retained message with the retain flag';
  }],
  ['will', async () => {
    const topic = `${prefix}/will`;
    await within(STEP_MS, 'SUBACK', clients.sub.subscribeAsync(topic, { qos: 1 }));
    const doomed = await connect(`${prefix}-will`, {
      will: { topic, payload: Buffer.from('gone'), qos: 1, retain: false },
    });
    // end(true) destroys the socket without sending DISCONNECT.
    doomed.end(true);
    const message = await clients.subInbox.next(topic, STEP_MS);
    expect(message.payload.toString() === 'gone', `payload ${message.payload}`);
    return 'the will arrived after the socket was destroyed';
  }],
  ...(v5 ? [['user_properties', async () => {
    const topic = `${prefix}/qos/properties`;
    const userProperties = { tenant: 'acme', repeated: ['one', 'two'] };
    await within(STEP_MS, 'the publish with properties to complete', clients.pub.publishAsync(topic, 'with properties', {
      qos: 1,
      properties: { userProperties, contentType: 'text/plain' },
    }));
    const message = await clients.subInbox.next(topic, STEP_MS);
    const got = message.packet.properties ?? {};
    expect(JSON.stringify(got.userProperties) === JSON.stringify(userProperties),
      `user properties ${JSON.stringify(got.userProperties)}`);
    expect(got.contentType === 'text/plain', `content type ${got.contentType}`);
    return 'user properties (one repeated) and content type arrived in order';
  }]] : []),
  ['disconnect', async () => {
    await within(STEP_MS, 'the subscriber to disconnect', clients.sub.endAsync());
    await within(STEP_MS, 'the publisher to disconnect', clients.pub.endAsync());
    return 'both clients sent DISCONNECT';
  }],
];

const ok = await runChecks(checks);
for (const client of [clients.sub, clients.pub]) client?.end(true);
process.exit(ok ? 0 : 1);
