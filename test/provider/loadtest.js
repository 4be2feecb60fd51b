#!/usr/bin/env node
// Load generator for the provider emulator (built-in modules only).
//
//   node loadtest.js --url BASE --provider leadlex|slintel --concurrency C --seconds S [--h2]
//                    [--ca ca.pem] [--inputs N] [--key KEY] [--latency-ms L]
//
// BASE is the emulator's root, e.g. http://127.0.0.1:PORT or https://127.0.0.1:PORT.
// Keeps C requests in flight over kept-alive connections (an http(s).Agent with
// keepAlive, or ONE HTTP/2 session with --h2), with a valid key, after POSTing
// /_control to set a huge balance, no rate limit and latency 0 (or --latency-ms L).
// Prints: requests=N seconds=S rate=R/s errors=E
'use strict';

const http = require('http');
const https = require('https');
const http2 = require('http2');
const fs = require('fs');

function usage(msg) {
  if (msg) process.stderr.write('loadtest: ' + msg + '\n');
  process.stderr.write('usage: node loadtest.js --url BASE --provider leadlex|slintel --concurrency C --seconds S [--h2] [--ca FILE] [--inputs N] [--key KEY] [--latency-ms L]\n');
  process.exit(2);
}

const o = { url: null, provider: null, concurrency: 16, seconds: 10, h2: false, ca: null, inputs: 1000, key: null, latency: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const next = () => { if (i + 1 >= argv.length) usage('missing value for ' + a); return argv[++i]; };
  switch (a) {
    case '--url': o.url = next().replace(/\/+$/, ''); break;
    case '--provider': o.provider = next(); break;
    case '--concurrency': o.concurrency = +next(); break;
    case '--seconds': o.seconds = +next(); break;
    case '--h2': o.h2 = true; break;
    case '--ca': o.ca = fs.readFileSync(next()); break;
    case '--inputs': o.inputs = +next(); break;
    case '--key': o.key = next(); break;
    case '--latency-ms': o.latency = +next(); break;
    default: usage('unknown option ' + a);
  }
}
if (!o.url || (o.provider !== 'leadlex' && o.provider !== 'slintel')) usage();
if (!(o.concurrency >= 1) || !(o.seconds > 0) || !(o.inputs >= 1)) usage('bad numbers');
const base = new URL(o.url);
const secure = base.protocol === 'https:';
if (o.h2 && !secure) usage('--h2 needs an https:// URL');
const tlsOpts = o.ca ? { ca: o.ca } : { rejectUnauthorized: false };
const LL = o.provider === 'leadlex';
const key = o.key || (LL ? 'wbk_test_key' : 'sl_test_key');

// Pre-built requests: a rotating set of inputs (synthetic data, always a match).
const LL_PATH = '/functions/v1/api-gateway/v1/enrich/company';
const bodies = [];
const paths = [];
for (let i = 0; i < o.inputs; i++) {
  if (LL) bodies.push(Buffer.from(JSON.stringify({ domain: i === 0 ? 'acme.com' : 'company-' + i + '.com' })));
  else paths.push('/v2.0/lead/enrich?linkedin_url=' +
    encodeURIComponent('https://www.linkedin.com/in/' + (i === 0 ? 'deepak-anchala-0043707' : 'lead-person-' + i)));
}

function control(body) {
  return new Promise((resolve, reject) => {
    const mod = secure ? https : http;
    const data = Buffer.from(JSON.stringify(body));
    const req = mod.request({
      host: base.hostname, port: base.port, path: '/_control', method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Content-Length': data.length }, ...tlsOpts,
    }, (res) => {
      let t = '';
      res.on('data', (c) => { t += c; });
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error('control ' + res.statusCode + ' ' + t))));
    });
    req.on('error', reject);
    req.end(data);
  });
}

let done = 0;
let errors = 0;
let seq = 0;
let stopping = false;
let t0 = 0;
let t1 = 0;
let inFlight = 0;
let finishResolve;
const finished = new Promise((r) => { finishResolve = r; });

function completed(ok) {
  inFlight--;
  if (!stopping) { done++; if (!ok) errors++; }
  if (stopping) { if (inFlight === 0) finishResolve(); return; }
  fire();
}

// ---- HTTP/1.1 (plain or TLS) with a keep-alive agent
const agent = secure
  ? new https.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency, ...tlsOpts })
  : new http.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency });
const mod1 = secure ? https : http;
const h1Headers = LL
  ? { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' }
  : { 'x-api-key': key };

function fireH1() {
  const i = seq++ % o.inputs;
  const opts = {
    agent, host: base.hostname, port: base.port,
    method: LL ? 'POST' : 'GET', path: LL ? LL_PATH : paths[i], headers: h1Headers,
  };
  if (LL) opts.headers = { ...h1Headers, 'Content-Length': bodies[i].length };
  const req = mod1.request(opts, (res) => {
    const ok = res.statusCode === 200;
    res.on('data', () => {});
    res.on('end', () => completed(ok));
    res.on('error', () => completed(false));
  });
  req.on('error', () => completed(false));
  req.end(LL ? bodies[i] : undefined);
}

// ---- HTTP/2: one session, C concurrent streams
let session = null;
function fireH2() {
  const i = seq++ % o.inputs;
  const h = LL
    ? { ':method': 'POST', ':path': LL_PATH, authorization: 'Bearer ' + key, 'content-type': 'application/json' }
    : { ':method': 'GET', ':path': paths[i], 'x-api-key': key };
  const s = session.request(h, { endStream: !LL });
  let status = 0;
  s.on('response', (hd) => { status = hd[':status']; });
  s.on('data', () => {});
  s.on('end', () => completed(status === 200));
  s.on('error', () => completed(false));
  if (LL) s.end(bodies[i]);
}

const fire = () => {
  if (stopping) return;
  inFlight++;
  if (o.h2) fireH2(); else fireH1();
};

async function main() {
  await control({ balance: { [key]: 1e15 }, rate_limit: null, latency_ms: { [o.provider]: o.latency }, latency_jitter_ms: 0,
    daily_quota: { [o.provider]: 1e15 } });
  if (o.h2) {
    session = http2.connect(o.url, { ...tlsOpts, settings: { initialWindowSize: 1 << 24 } });
    session.on('error', (e) => { process.stderr.write('loadtest: session error ' + e.message + '\n'); });
    await new Promise((res, rej) => { session.once('connect', res); session.once('error', rej); });
  }
  // warm-up: 0.5 s not counted
  stopping = false;
  for (let i = 0; i < o.concurrency; i++) fire();
  await new Promise((r) => setTimeout(r, 500));
  done = 0; errors = 0;
  t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, o.seconds * 1000));
  t1 = process.hrtime.bigint();
  const n = done;
  const e = errors;
  stopping = true;
  const secs = Number(t1 - t0) / 1e9;
  if (inFlight > 0) await Promise.race([finished, new Promise((r) => setTimeout(r, 5000))]);
  if (session) session.close();
  agent.destroy();
  process.stdout.write('requests=' + n + ' seconds=' + secs.toFixed(2) + ' rate=' + Math.round(n / secs) +
    '/s errors=' + e + '\n');
}

main().catch((e) => { process.stderr.write('loadtest: ' + (e && e.stack || e) + '\n'); process.exit(1); });
