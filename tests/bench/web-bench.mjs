// The browser benchmark (scripts/bench-web.sh sets it up): Aviary's app on WebGPU and on the CPU, and wllama
// (llama.cpp compiled to WebAssembly) beside it, in the same headless Chromium, on the same GGUF, with the same
// greedy question, one after the other. For each: the load time from the navigation to "ready", once in a fresh
// profile (cold) and once more in the same profile (cached: whatever the page keeps, OPFS or Cache Storage, is
// there), then in each of the two sessions one generation: time to first token, prefill and decode tok/s.
//
// Aviary's numbers are its own engine's (the reply's `.meta` data-stats, engine/src/session.rs); wllama's are taken
// around its calls the same way (tests/bench/wllama/bench.mjs). Both sessions generate, and the table shows the
// better of the two for each generation figure (the machine is shared, and one session may have been slowed by
// other work); target/bench-web.json has every session's numbers.
//
// Environment: AVIARY_URL (the served app, with the wllama page at wllama-bench/), MODEL_PATH (the model's path
// under the server, e.g. models/X.gguf), QUESTION, MAX_TOKENS, OUT (the JSON report), ARTIFACTS (screenshots);
// BENCH_ONLY, a comma-separated subset of wllama-cpu, wllama-cpu-mt (all cores), aviary-webgpu, aviary-cpu
// (SIMD128 and relaxed SIMD, on every core: the threaded build), aviary-cpu-1t (the same on one thread),
// aviary-cpu-simd128, aviary-cpu-portable, runs only those.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOAD_TIMEOUT, REPLY_TIMEOUT, artifacts, env, launch, setGreedy } from '../e2e/lib.mjs';

const base = env('AVIARY_URL');
const modelPath = env('MODEL_PATH');
const question = env('QUESTION');
const maxTokens = Number(env('MAX_TOKENS', '32'));
const out = env('OUT');

const log = [];
function watch(page, label) {
  page.on('console', (m) => log.push(`[${label} ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[${label} pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => log.push(`[${label} worker ${m.type()}] ${m.text()}`)));
}

/** One launch of a persistent profile: the context's first page, closed with the context. */
async function session(profile, webgpu, label, fn) {
  const context = await launch({ webgpu, userDataDir: profile });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    watch(page, label);
    return await fn(page);
  } finally {
    await context.close();
  }
}

async function wllamaSession(page, threads) {
  const extra = threads ? `&n_threads=${threads}` : '';
  await page.goto(new URL(`wllama-bench/?model=${encodeURIComponent(`/${modelPath}`)}${extra}`, base).href);
  const loaded = await page.evaluate(() => window.benchLoaded);
  if (loaded.error) throw new Error(`wllama could not load the model: ${loaded.error}`);
  const g = await page.evaluate(([q, n]) => window.benchGenerate(q, n), [question, maxTokens]);
  return {
    loadMs: loaded.readyAtMs,
    modelLoadMs: loaded.modelLoadMs,
    info: { multithread: loaded.multithread, threads: loaded.threads, crossOriginIsolated: loaded.crossOriginIsolated, libllama: loaded.libllama },
    generation: g,
    userAgent: await page.evaluate(() => navigator.userAgent),
  };
}

async function aviarySession(page, label, { query = '', expect } = {}) {
  // The moment the status line first says ready (or error), on the page's clock (0 = the navigation's start).
  await page.addInitScript(() => {
    const seen = () => {
      const text = document.querySelector('[data-testid=model-status]')?.textContent ?? '';
      if (window.__benchReady === undefined && /ready|error/.test(text)) window.__benchReady = { atMs: performance.now(), text };
    };
    new MutationObserver(seen).observe(document, { subtree: true, childList: true, characterData: true });
  });
  await page.goto(new URL(query, base).href);
  await page.waitForFunction(() => window.__benchReady, null, { timeout: LOAD_TIMEOUT, polling: 250 });
  const ready = await page.evaluate(() => window.__benchReady);
  if (!/ready/.test(ready.text)) throw new Error(`the app did not load the model: ${ready.text}`);
  // Numbers under the wrong heading would be worse than none (a failed adapter falls back to the CPU).
  if (expect && !expect.test(ready.text)) throw new Error(`expected the model on ${expect.source}: ${ready.text}`);
  const device = await page.getByTestId('model-device').textContent().catch(() => null);
  const adapter = await page.evaluate(async () => {
    const a = await navigator.gpu?.requestAdapter();
    return a ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description } : null;
  });

  await setGreedy(page, maxTokens);
  const assistant = page.getByTestId('message-assistant');
  const before = await assistant.count();
  await page.getByTestId('chat-input').fill(question);
  await page.getByTestId('chat-input').press('Enter');
  // Slow polling: the page shares two cores with the engine it is measuring.
  await page.waitForFunction(
    (n) => {
      const m = document.querySelectorAll('[data-testid=message-assistant]')[n];
      return m && m.dataset.state !== 'streaming';
    },
    before,
    { timeout: REPLY_TIMEOUT, polling: 500 },
  );
  const reply = assistant.nth(before);
  const state = await reply.getAttribute('data-state');
  const raw = await reply.locator('.meta').getAttribute('data-stats');
  if (!raw) throw new Error(`the reply has no data-stats (state ${state}): ${await reply.locator('.meta').textContent()}`);
  const s = JSON.parse(raw);
  await page.screenshot({ path: join(artifacts, `${label}.png`), fullPage: true });
  return {
    loadMs: ready.atMs,
    status: ready.text,
    device,
    adapter,
    generation: {
      promptTokens: s.prompt_tokens,
      prefilledTokens: s.prefilled_tokens,
      generatedTokens: s.generated_tokens,
      prefillMs: s.prefill_ms,
      firstTokenMs: s.time_to_first_token_ms,
      decodeMs: s.decode_ms,
      stop: state,
      text: await reply.locator('.text').textContent(),
    },
    userAgent: await page.evaluate(() => navigator.userAgent),
  };
}

const engines = [
  { name: 'wllama', path: 'CPU wasm', webgpu: false, run: (page) => wllamaSession(page) },
  // Its multi-thread build on every core (the page is cross-origin isolated: `aviary serve` sends COOP/COEP).
  { name: 'wllama', path: 'CPU wasm, all cores', key: 'cpu-mt', webgpu: false, run: (page) => wllamaSession(page, cpus().length) },
  // WebGPU by name: on a software adapter (SwiftShader) Auto would run the CPU backend.
  { name: 'aviary', path: 'WebGPU', webgpu: true, run: (page, l) => aviarySession(page, l, { query: '?backend=gpu', expect: /WebGPU/ }) },
  // Without the WebGPU flags the page has no adapter and runs the engine's CPU backend in the worker; `?backend=cpu`
  // asks for it explicitly where the app reads that parameter.
  // The page starts the worker built with wasm SIMD128 and relaxed SIMD where the browser has both (its fused
  // multiply-adds one instruction where the CPU has FMA), with threads on every core where the page is cross-origin
  // isolated (it is here); `?threads=1` that build on one thread, `?simd=128` the SIMD128-only build, `?simd=0` the
  // portable one.
  {
    name: 'aviary', path: 'CPU wasm SIMD128 + relaxed, all cores', key: 'cpu', webgpu: false,
    run: (page, l) => aviarySession(page, l, { query: '?backend=cpu', expect: new RegExp(`CPU \\(wasm\\) · SIMD128 · FMA${cpus().length > 1 ? ` · ${Math.min(cpus().length, 8)} threads` : ''}`) }),
  },
  {
    name: 'aviary', path: 'CPU wasm SIMD128 + relaxed, one thread', key: 'cpu-1t', webgpu: false,
    run: (page, l) => aviarySession(page, l, { query: '?backend=cpu&threads=1', expect: /CPU \(wasm\) · SIMD128 · FMA(?! · \d+ threads)/ }),
  },
  {
    name: 'aviary', path: 'CPU wasm SIMD128', key: 'cpu-simd128', webgpu: false,
    run: (page, l) => aviarySession(page, l, { query: '?backend=cpu&simd=128', expect: /CPU \(wasm\) · SIMD128(?! · FMA)/ }),
  },
  {
    name: 'aviary', path: 'CPU wasm portable', key: 'cpu-portable', webgpu: false,
    run: (page, l) => aviarySession(page, l, { query: '?backend=cpu&simd=0', expect: /CPU \(wasm\)(?! · SIMD128)/ }),
  },
];

const report = {
  date: new Date().toISOString(),
  url: base,
  model: modelPath,
  question,
  maxTokens,
  browser: (() => {
    try {
      return execFileSync(env('CHROMIUM', '/usr/bin/chromium'), ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      return null;
    }
  })(),
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model, loadavgStart: loadavg(), buildProcessesAtStart: Number(process.env.BUSY ?? NaN) },
  results: [],
};
let failed = 0;
const only = process.env.BENCH_ONLY?.split(',').filter(Boolean);
const label = (e) => `${e.name}-${e.path === 'WebGPU' ? 'webgpu' : (e.key ?? 'cpu')}`;
const chosen = engines
  .filter((e) => !only || only.includes(label(e)))
  .map((e) => ({ ...e, label: label(e), profile: mkdtempSync(join(tmpdir(), `bench-web-${label(e)}-`)), r: { engine: e.name, path: e.path, runs: {} } }));
// Phase by phase, engine by engine: other work on the machine then slows the engines alike rather than one of them.
for (const phase of ['cold', 'cached']) {
  for (const e of chosen) {
    if (e.r.error) continue;
    console.log(`${e.label}: ${phase} load and one generation…`);
    try {
      e.r.runs[phase] = await session(e.profile, e.webgpu, `${e.label}-${phase}`, (page) => e.run(page, `${e.label}-${phase}`));
      const g = e.r.runs[phase].generation;
      console.log(`  load ${(e.r.runs[phase].loadMs / 1000).toFixed(2)} s; ${g.promptTokens} prompt tokens, ${g.generatedTokens} generated`);
    } catch (err) {
      failed++;
      e.r.error = String(err.stack ?? err);
      console.log(`FAIL ${e.label}: ${e.r.error}`);
    }
  }
}
for (const e of chosen) {
  rmSync(e.profile, { recursive: true, force: true });
  report.results.push(e.r);
}
report.machine.loadavgEnd = loadavg();

const rate = (n, ms) => (ms > 0 ? (n * 1000) / ms : 0);
for (const r of report.results) {
  const gs = [r.runs.cold?.generation, r.runs.cached?.generation];
  if (!gs.every(Boolean)) continue;
  r.summary = {
    loadColdS: r.runs.cold.loadMs / 1000,
    loadCachedS: r.runs.cached.loadMs / 1000,
    firstTokenMs: Math.min(...gs.map((g) => g.firstTokenMs)),
    prefillTokS: Math.max(...gs.map((g) => rate(g.prefilledTokens ?? g.promptTokens, g.prefillMs))),
    decodeTokS: Math.max(...gs.map((g) => rate(g.generatedTokens - 1, g.decodeMs))),
    promptTokens: gs[1].promptTokens,
    generatedTokens: gs[1].generatedTokens,
  };
}
const peer = report.results.find((r) => r.engine === 'wllama')?.summary;
for (const r of report.results) {
  if (r.summary && peer && r.engine !== 'wllama') {
    r.summary.decodeVsWllama = r.summary.decodeTokS / peer.decodeTokS;
    r.summary.prefillVsWllama = r.summary.prefillTokS / peer.prefillTokS;
  }
}
writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
writeFileSync(join(artifacts, 'browser.log'), log.join('\n') + '\n');

const fmt = (v, d = 1) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(d));
console.log(`\n${question}\n(${maxTokens} greedy tokens; each generation figure the better of the two sessions)\n`);
console.log('| engine | path | load cold s | load cached s | first token ms | prefill tok/s | decode tok/s | prompt tok | generated | prefill / decode vs wllama |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of report.results) {
  const s = r.summary ?? {};
  console.log(`| ${r.engine} | ${r.path} | ${fmt(s.loadColdS, 2)} | ${fmt(s.loadCachedS, 2)} | ${fmt(s.firstTokenMs, 0)} | ${fmt(s.prefillTokS)} | ${fmt(s.decodeTokS)} | ${s.promptTokens ?? '—'} | ${s.generatedTokens ?? '—'} | ${s.decodeVsWllama === undefined ? '' : `${fmt(s.prefillVsWllama, 2)}× / ${fmt(s.decodeVsWllama, 2)}×`} |`);
}
const w = report.results.find((r) => r.engine === 'wllama')?.runs.cached;
for (const r of report.results) {
  const c = r.runs.cached;
  if (!c) continue;
  const extra = r.engine === 'wllama' ? `, ${c.info.multithread ? `multi-thread (${c.info.threads})` : 'single-thread'} build, libllama ${c.info.libllama}` : `, ${c.device ?? ''}`;
  console.log(`\n${r.engine} ${r.path}${extra}\n  ${JSON.stringify(c.generation.text)}`);
  if (w && r.engine !== 'wllama' && c.generation.promptTokens !== w.generation.promptTokens) {
    console.log(`  NOTE: ${c.generation.promptTokens} prompt tokens here, ${w.generation.promptTokens} for wllama`);
  }
}
const ua = report.results.map((r) => r.runs.cached?.userAgent).find(Boolean);
const adapter = report.results.map((r) => r.runs.cached?.adapter).find(Boolean);
console.log(`\nbrowser: ${report.browser} (${ua})\nadapter: ${JSON.stringify(adapter)}\nbuild processes at the start: ${report.machine.buildProcessesAtStart}; load average: ${report.machine.loadavgStart.map((v) => v.toFixed(2)).join(' ')} → ${report.machine.loadavgEnd.map((v) => v.toFixed(2)).join(' ')}\nJSON: ${out}`);
process.exit(failed ? 1 : 0);
