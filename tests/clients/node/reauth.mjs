// MQTT.js refreshing its token inside its session (MQTT 5 enhanced
// authentication, issue 27): CONNECT with the Authentication Method `jwt`
// and a token as Authentication Data, then AUTH 0x19 with a fresh token
// before the last one expires. Tokens are signed here with the seed's key.
//
//   connect    CONNACK 0x00 naming the method `jwt`
//   subscribe  data/<prefix>/down, QoS 1
//   refresh_N  AUTH 0x19 answered with AUTH 0x00 (method `jwt`); then a
//              QoS 1 publish up and a message down through the session
//   expiry     without a refresh, DISCONNECT 0xA0 at the last token's exp
//
//   node reauth.mjs --port <port> --key private.pem --sub device1
//                   --lifetime 3 --every 2 --rounds 6 --prefix mqttjs
//
// MQTT.js has no public re-authentication call: the AUTH packet is made
// with its own packet writer (`mqtt-packet`, which it depends on, pinned by
// the lockfile) and written to the client's stream. MQTT.js 5 passes the
// server's AUTH to `client.handleAuth` (the default accepts a success) and
// emits it as `packetreceive`, which is how the answer is awaited.
//
// Prints one JSON line per check and a last {"done": true, "ok": ...}, as
// lib.mjs does. The timers between refreshes are the refresh schedule the
// test is about, not waits for the proxy.

import { createSign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqttPacket from 'mqtt-packet';
import { Inbox, connectClient, deadline, options, runChecks, target, within } from './lib.mjs';

const opts = options({
  host: '127.0.0.1',
  port: 0,
  url: '',
  ca: '',
  cert: '',
  key: '',
  username: '',
  protocol: 5,
  sub: 'device1',
  lifetime: 3,
  every: 2,
  rounds: 6,
  prefix: 'mqttjs',
  'timeout-ms': 60000,
});
const STEP_MS = 10000;
const signingKey = readFileSync(opts.key);
// The CONNECT uses no client certificate: `--key` is the token signing key.
const broker = target({ ...opts, key: '', cert: '' });
deadline(opts['timeout-ms'], 'the MQTT.js re-authentication script');

const b64url = (value) => Buffer.from(value).toString('base64url');

/** An RS256 token of the seed's issuer for `sub`, living `lifetime` s. */
function token() {
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: 'example' }));
  const claims = b64url(JSON.stringify({
    iss: 'https://auth.example.com',
    aud: 'https://api.example.com',
    sub: opts.sub,
    scope: 'sub pub',
    exp: Math.floor(Date.now() / 1000) + opts.lifetime,
  }));
  const signer = createSign('RSA-SHA256');
  signer.update(`${header}.${claims}`);
  return `${header}.${claims}.${b64url(signer.sign(signingKey))}`;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

let client;
let inbox;
const down = `data/${opts.prefix}/down`;
const up = `data/${opts.prefix}/up`;

/** The next packet of kind `cmd` the client receives. */
function received(cmd, what) {
  return within(STEP_MS, what, new Promise((resolve) => {
    const on = (packet) => {
      if (packet.cmd !== cmd) return;
      client.off('packetreceive', on);
      resolve(packet);
    };
    client.on('packetreceive', on);
  }));
}

// Each refresh is due `every` seconds after the last, from the start.
let started;

const checks = [
  ['connect', async () => {
    // A token's `exp` is in whole seconds: starting just after a second's
    // boundary gives each token its full lifetime.
    await sleep(1000 - (Date.now() % 1000) + 20);
    started = Date.now();
    client = await connectClient(broker, {
      clientId: `${opts.prefix}-refresher`,
      protocolVersion: 5,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 0,
      connectTimeout: STEP_MS,
      properties: {
        authenticationMethod: 'jwt',
        authenticationData: Buffer.from(token()),
      },
    }, STEP_MS);
    inbox = new Inbox(client);
    const method = client.connack.properties?.authenticationMethod;
    if (method !== 'jwt') throw new Error(`the CONNACK names method ${method}`);
    return { method };
  }],
  ['subscribe', async () => {
    const granted = await within(STEP_MS, 'SUBACK', client.subscribeAsync(down, { qos: 1 }));
    if (granted[0]?.qos !== 1) throw new Error(`subscription ${JSON.stringify(granted)}`);
    return granted;
  }],
];
for (let round = 1; round <= opts.rounds; round += 1) {
  checks.push([`refresh_${round}`, async () => {
    await sleep(started + round * opts.every * 1000 - Date.now());
    const answer = received('auth', 'AUTH 0x00');
    client.stream.write(mqttPacket.generate({
      cmd: 'auth',
      reasonCode: 0x19,
      properties: { authenticationMethod: 'jwt', authenticationData: Buffer.from(token()) },
    }, { protocolVersion: 5 }));
    const auth = await answer;
    if (auth.reasonCode !== 0 || auth.properties?.authenticationMethod !== 'jwt') {
      throw new Error(`answered ${JSON.stringify(auth)}`);
    }
    await within(STEP_MS, 'PUBACK', client.publishAsync(up, `up ${round}`, { qos: 1 }));
    await within(STEP_MS, 'PUBACK', client.publishAsync(down, `down ${round}`, { qos: 1 }));
    const message = await inbox.next(down, STEP_MS);
    return { round, down: String(message.payload) };
  }]);
}
checks.push(['expiry', async () => {
  const disconnect = await within((opts.lifetime + 5) * 1000, 'DISCONNECT at exp', new Promise((resolve) => {
    client.on('disconnect', resolve);
  }));
  client.end(true);
  if (disconnect.reasonCode !== 0xA0) throw new Error(`DISCONNECT 0x${disconnect.reasonCode.toString(16)}`);
  return { reasonCode: disconnect.reasonCode };
}]);

const ok = await runChecks(checks);
client?.end(true);
process.exit(ok ? 0 : 1);
