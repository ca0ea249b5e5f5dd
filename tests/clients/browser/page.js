// The browser side of tests/browser.rs. Query parameters: `proxy` (the
// proxy's ws:// or wss:// URL, e.g. ws://127.0.0.1:7114/mqtt), `token` (the
// JWT, sent as the access_token query parameter: a browser cannot set headers
// on a WebSocket), `topic`, `client` (the client id) and `protocol` (4 or 5).
//
// It connects with MQTT.js's browser bundle, subscribes to `topic` (QoS 1),
// publishes a message there (QoS 1), waits for it to come back, and POSTs
// {ok, stage, detail, elapsed_ms, events} to /report: ok when the message
// made the round trip; otherwise the stage it failed in (connect, subscribe,
// publish, receive) and what it saw (an error, the connection closing, or no
// answer within STEP_MS). It reports once.

const STEP_MS = 15000;
const params = new URLSearchParams(window.location.search);
const proxy = params.get('proxy');
const token = params.get('token');
const topic = params.get('topic') ?? 'browser/round-trip';
const clientId = params.get('client') ?? `browser-${Date.now()}`;
const protocol = Number(params.get('protocol') ?? '5');
const payload = `hello from ${navigator.userAgent.match(/(Headless)?Chrome\/[\d.]+/)?.[0] ?? 'a browser'}`;

const started = performance.now();
const events = [];
let stage = 'connect';
let reported = false;
let client;

function log(event) {
  const line = `${Math.round(performance.now() - started)} ms ${event}`;
  events.push(line);
  document.getElementById('log').textContent += `${line}\n`;
}

async function report(ok, detail) {
  if (reported) return;
  reported = true;
  clearTimeout(timer);
  log(`report ok=${ok}: ${detail}`);
  const body = JSON.stringify({
    ok, stage, detail, elapsed_ms: Math.round(performance.now() - started), events,
  });
  try {
    await fetch('/report', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  } finally {
    client?.end(true);
  }
}

let timer = setTimeout(() => report(false, `no progress within ${STEP_MS} ms`), STEP_MS);
function step(next) {
  stage = next;
  clearTimeout(timer);
  timer = setTimeout(() => report(false, `no progress within ${STEP_MS} ms`), STEP_MS);
}

try {
  if (!proxy || token === null) throw new Error('the page needs ?proxy=ws://...&token=...');
  const lib = window.mqtt?.connect ? window.mqtt : window.mqtt?.default;
  if (!lib?.connect) throw new Error('the MQTT.js browser bundle (/mqtt.min.js) did not load');
  const url = `${proxy}?access_token=${encodeURIComponent(token)}`;
  log(`connecting to ${proxy} as ${clientId} over MQTT ${protocol}`);
  client = lib.connect(url, {
    clientId,
    protocolVersion: protocol,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: STEP_MS,
  });
  client.on('error', (error) => {
    log(`error: ${error?.message ?? error}${error?.code !== undefined ? ` (code ${error.code})` : ''}`);
    report(false, `error: ${error?.message ?? error}`);
  });
  client.on('close', () => {
    log('close');
    report(false, `the connection closed during ${stage}`);
  });
  // The message may come back before the PUBACK does: both are awaited.
  const roundTrip = { received: false, acknowledged: false };
  const completed = () => {
    if (roundTrip.received && roundTrip.acknowledged) {
      report(true, `received its own QoS 1 message on ${topic} through the proxy`);
    }
  };
  client.on('message', (received, message) => {
    log(`message on ${received}: ${message}`);
    if (received === topic && message.toString() === payload) {
      roundTrip.received = true;
      completed();
    }
  });
  client.on('connect', async (connack) => {
    try {
      log(`connected (CONNACK ${connack?.reasonCode ?? connack?.returnCode ?? 0})`);
      step('subscribe');
      const granted = await client.subscribeAsync(topic, { qos: 1 });
      log(`subscribed: ${JSON.stringify(granted)}`);
      if (granted[0]?.qos !== 1) throw new Error(`SUBACK granted ${JSON.stringify(granted)}`);
      step('publish');
      await client.publishAsync(topic, payload, { qos: 1 });
      log(`published: ${payload}`);
      step('receive');
      roundTrip.acknowledged = true;
      completed();
    } catch (error) {
      report(false, `${stage} failed: ${error?.message ?? error}`);
    }
  });
} catch (error) {
  report(false, String(error?.message ?? error));
}
