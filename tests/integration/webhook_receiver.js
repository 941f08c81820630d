#!/usr/bin/env node
// webhook_receiver.js - a Standard Webhooks receiver for the integration tests, written only
// with node:http and node:crypto: an implementation of the verification independent of imgq's
// C one (src/webhook.c).
//
//   node webhook_receiver.js --selftest
//       verifies the spec's published vector (the reference libraries' test: Go's
//       webhook_test.go) and refuses tampered variants; exit status 0 when all hold.
//   node webhook_receiver.js --port P --log FILE --rules FILE --secret NAME=whsec_... ...
//                            [--trap-host 127.0.0.2 --trap-port Q --trap-log FILE]
//       serves on 127.0.0.1:P.  Every request is verified (webhook-id, webhook-timestamp within
//       5 minutes of now, a "v1," entry of webhook-signature equal to HMAC-SHA256 over
//       "id.timestamp.body" with the base64-decoded key of some secret) and one JSON line is
//       appended to the log: {t, path, id, ts, accepted, dup, valid: {NAME: bool}, why,
//       status, body, concurrent}.  Accepted ids are remembered; "dup" says an accepted id came
//       again (receivers dedupe on webhook-id).  The line is written when the body has been
//       read, before any hold, so a test sees the request arrive.
//       The rules file (JSON, read on every request) shapes the answer of a path prefix (the
//       longest that matches): {"/gone": {"status": 410}, "/busy": {"status": 429,
//       "retry_after": "120"}, "/slow": {"hold_ms": 3000}, "/moved": {"status": 301,
//       "location": "http://..."}, "/abort": {"status": 500, "abort": true}}; default 200.
//       A request whose signature fails gets 401.  With --trap-host, a second listener
//       counts every TCP connection to it (a place nothing may reach) in --trap-log.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');

const TOLERANCE_S = 5 * 60;

function keyOf(secret) {
  if (!secret.startsWith('whsec_')) throw new Error('secret without whsec_ prefix');
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  if (key.length === 0) throw new Error('empty secret');
  return key;
}

function sign(key, id, ts, body) {
  const mac = crypto.createHmac('sha256', key);
  mac.update(`${id}.${ts}.`);
  mac.update(body);
  return mac.digest('base64');
}

// Returns null when the headers verify under 'secret', else the reason.
function verify(secret, id, ts, header, body, nowS) {
  if (!id || !ts || !header) return 'missing header';
  if (!/^[0-9]+$/.test(ts)) return 'malformed timestamp';
  const t = Number(ts);
  if (nowS - t > TOLERANCE_S) return 'timestamp too old';
  if (t - nowS > TOLERANCE_S) return 'timestamp too new';
  const want = Buffer.from(sign(keyOf(secret), id, ts, body));
  for (const entry of header.split(' ')) {
    const comma = entry.indexOf(',');
    if (comma < 0 || entry.slice(0, comma) !== 'v1') continue;
    const got = Buffer.from(entry.slice(comma + 1));
    if (got.length === want.length && crypto.timingSafeEqual(got, want)) return null;
  }
  return 'no matching signature';
}

function selftest() {
  // standard-webhooks libraries' signing vector (Go: webhook_test.go, TestWebhookSign).
  const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
  const id = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
  const ts = '1614265330';
  const body = Buffer.from('{"test": 2432232314}');
  const sig = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
  const now = Number(ts);
  const checks = [
    ['vector signs', 'v1,' + sign(keyOf(secret), id, ts, body) === sig],
    ['vector verifies', verify(secret, id, ts, sig, body, now) === null],
    ['vector among other entries', verify(secret, id, ts, 'v1a,AAAA v1,bad= ' + sig, body, now) === null],
    ['tampered body refused', verify(secret, id, ts, sig, Buffer.from('{"test": 2432232315}'), now) === 'no matching signature'],
    ['other id refused', verify(secret, id + 'x', ts, sig, body, now) === 'no matching signature'],
    ['other secret refused', verify('whsec_' + Buffer.from('another key!').toString('base64'), id, ts, sig, body, now) === 'no matching signature'],
    ['old timestamp refused', verify(secret, id, ts, sig, body, now + TOLERANCE_S + 1) === 'timestamp too old'],
    ['future timestamp refused', verify(secret, id, ts, sig, body, now - TOLERANCE_S - 1) === 'timestamp too new'],
    ['v1a only refused', verify(secret, id, ts, sig.replace('v1,', 'v1a,'), body, now) === 'no matching signature'],
  ];
  let ok = true;
  for (const [name, pass] of checks) {
    console.log(`${pass ? 'ok  ' : 'FAIL'} ${name}`);
    ok = ok && pass;
  }
  process.exit(ok ? 0 : 1);
}

function args() {
  const o = {secrets: {}};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const k = a[i];
    if (k === '--selftest') o.selftest = true;
    else if (k === '--secret') {
      const v = a[++i];
      const eq = v.indexOf('=');
      o.secrets[v.slice(0, eq)] = v.slice(eq + 1);
    } else o[k.replace(/^--/, '').replace(/-/g, '_')] = a[++i];
  }
  return o;
}

function rulesFor(path, file) {
  let rules = {};
  try {
    rules = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    rules = {};
  }
  let best = null;
  for (const prefix of Object.keys(rules))
    if (path.startsWith(prefix) && (!best || prefix.length > best.length)) best = prefix;
  return best ? rules[best] : {};
}

function main() {
  const o = args();
  if (o.selftest) return selftest();
  const seen = new Set();
  let concurrent = 0;
  const server = http.createServer((req, res) => {
    concurrent++;
    let counted = true;
    const done = () => {
      if (counted) concurrent--;
      counted = false;
    };
    res.on('close', done);
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const id = req.headers['webhook-id'];
      const ts = req.headers['webhook-timestamp'];
      const header = req.headers['webhook-signature'];
      const nowS = Math.floor(Date.now() / 1000);
      const valid = {};
      let why = null;
      for (const [name, secret] of Object.entries(o.secrets)) {
        const r = verify(secret, id, ts, header, body, nowS);
        valid[name] = r === null;
        if (r !== null) why = why || r;
      }
      const accepted = Object.values(valid).some((v) => v);
      const dup = accepted && seen.has(id);
      if (accepted) seen.add(id);
      const rule = rulesFor(req.url, o.rules);
      const status = accepted ? rule.status || 200 : 401;
      fs.appendFileSync(o.log, JSON.stringify({
        t: Date.now(), method: req.method, path: req.url, id, ts, accepted, dup, valid,
        why: accepted ? null : why, status, body: body.toString('utf8'),
        content_type: req.headers['content-type'], signatures: (header || '').split(' ').length,
        concurrent,
      }) + '\n');
      const headers = {'content-type': 'text/plain'};
      if (rule.retry_after) headers['retry-after'] = rule.retry_after;
      if (rule.location) headers['location'] = rule.location;
      if (rule.abort) headers['webhook-delivery'] = 'abort-message';
      setTimeout(() => {
        res.writeHead(status, headers);
        res.end(accepted ? 'thanks\n' : `refused: ${why}\n`);
      }, accepted ? rule.hold_ms || 0 : 0);
    });
  });
  server.keepAliveTimeout = 1000;
  server.listen(Number(o.port), '127.0.0.1', () => {
    if (!o.trap_host) return;
    const trap = net.createServer((sock) => {
      fs.appendFileSync(o.trap_log, JSON.stringify({t: Date.now(), from: sock.remoteAddress}) + '\n');
      sock.destroy();
    });
    trap.listen(Number(o.trap_port), o.trap_host);
  });
}

main();
