#!/usr/bin/env node
// tests/bench/bullmq/bench.js - the BullMQ side of tests/bench/run.
//
//   node bench.js enqueue CATALOG.jsonl [--chunk N] [--inflight K] [--ids]
//   node bench.js work JOBS CONCURRENCY
//
// Redis comes from REDIS_URL (redis://127.0.0.1:PORT/0); the queue is "bench", BullMQ's
// default prefix "bull", default job and worker options unless said otherwise below.
//
// enqueue: reads the JSONL catalog (the same file `imgq submit` gets), parses every line and
//   adds it as a job's data (name "image") with Queue.addBulk, N jobs per call (default 1000),
//   at most K calls in flight (default 1).  --ids gives each job the catalog line's "id" as its
//   jobId (BullMQ's own deduplication, like imgq's idempotency key); without it BullMQ numbers
//   the jobs itself, which is its fastest way.  Timed from just before the file is read to the
//   reply of the last addBulk: module loading and the connection are not in the figure.
// work: a Worker with a no-op processor (async () => {}) and { concurrency: C }; timed from
//   its construction (connection included) to the JOBS-th 'completed' event.  Then it checks getJobCounts (completed == JOBS, failed == 0) and closes.
//
// Prints one JSON line on stdout: {"jobs":..,"seconds":..,"cpu_user_s":..,"cpu_sys_s":..}
// (cpu of this process over the timed part only).  Exit status 1 on any failure.
'use strict';

const fs = require('node:fs');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const QUEUE = 'bench';

function die(msg) {
  process.stderr.write(`bench.js: ${msg}\n`);
  process.exit(1);
}

function connection() {
  const url = process.env.REDIS_URL;
  if (!url) die('REDIS_URL is not set');
  // maxRetriesPerRequest: null is what BullMQ wants for a Worker's blocking connection.
  return new IORedis(url, { maxRetriesPerRequest: null, enableAutoPipelining: false });
}

function report(jobs, t0, cpu0) {
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(JSON.stringify({
    jobs, seconds, cpu_user_s: cpu.user / 1e6, cpu_sys_s: cpu.system / 1e6,
  }) + '\n');
}

async function enqueue(args) {
  const file = args[0];
  if (!file) die('enqueue needs a catalog file');
  let chunk = 1000, inflight = 1, ids = false;
  for (let i = 1; i < args.length; i++) {
    if (args[i] === '--chunk') chunk = parseInt(args[++i], 10);
    else if (args[i] === '--inflight') inflight = parseInt(args[++i], 10);
    else if (args[i] === '--ids') ids = true;
    else die(`unknown argument ${args[i]}`);
  }
  if (!(chunk > 0) || !(inflight > 0)) die('--chunk and --inflight want positive integers');
  const conn = connection();
  const queue = new Queue(QUEUE, { connection: conn });
  await queue.waitUntilReady();

  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const text = fs.readFileSync(file, 'utf8');
  let jobs = 0, batch = [];
  const pending = new Set();
  const flush = async () => {
    const p = queue.addBulk(batch);
    batch = [];
    pending.add(p);
    p.finally(() => pending.delete(p));
    if (pending.size >= inflight) await Promise.race(pending);
  };
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (end > start) {
      const data = JSON.parse(text.slice(start, end));
      batch.push(ids ? { name: 'image', data, opts: { jobId: data.id } } : { name: 'image', data });
      jobs++;
      if (batch.length >= chunk) await flush();
    }
    start = end + 1;
  }
  if (batch.length) await flush();
  await Promise.all(pending);
  report(jobs, t0, cpu0);

  const counts = await queue.getJobCounts('wait');
  if (counts.wait !== jobs) die(`${counts.wait} jobs waiting after adding ${jobs}`);
  await queue.close();
  conn.disconnect();
}

async function work(args) {
  const jobs = parseInt(args[0], 10), concurrency = parseInt(args[1], 10);
  if (!(jobs > 0) || !(concurrency > 0)) die('work needs JOBS and CONCURRENCY');
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let done = 0, failed = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const conn = connection();
  const worker = new Worker(QUEUE, async () => {}, { connection: conn, concurrency });
  worker.on('completed', () => { if (++done === jobs) finish(); });
  worker.on('failed', () => { failed++; });
  worker.on('error', (err) => die(`worker error: ${err && err.message}`));
  await finished;
  report(jobs, t0, cpu0);

  await worker.close();
  const queue = new Queue(QUEUE, { connection: conn });
  const counts = await queue.getJobCounts('completed', 'failed', 'wait', 'active');
  if (counts.completed !== jobs || counts.failed !== 0 || failed !== 0)
    die(`expected ${jobs} completed, got ${JSON.stringify(counts)} (failed events: ${failed})`);
  await queue.close();
  conn.disconnect();
}

const [mode, ...rest] = process.argv.slice(2);
const run = mode === 'enqueue' ? enqueue : mode === 'work' ? work : null;
if (!run) die('usage: bench.js enqueue CATALOG [--chunk N] [--inflight K] [--ids] | work JOBS CONCURRENCY');
run(rest).then(() => process.exit(0), (err) => die(err && err.stack || String(err)));
