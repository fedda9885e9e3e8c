// The browser half of `make bench-train` (scripts/bench-train.sh): the app's Train view on the default model, on
// WebGPU and on the CPU backend (wasm), fine-tuning a LoRA adapter on tests/bench/train-data.jsonl imported through
// the view's "Import JSONL…" input, with the settings `aviary train` gets natively (chat style, no masking, rank 8,
// alpha 16, all seven projections, lr 1e-3, batch 4, the same maximum length, seed 123, validation share 0.1).
//
// The page shows a step's loss (`data-values` of the loss plot) and the run's cumulative tokens/s (the status line);
// a MutationObserver in the page stamps each step's arrival on the page's clock. Steps 2…K are timed (the first holds
// the WebGPU path's pipeline compilation and every first-touch cost); their scored target tokens come from
// NATIVE_METRICS, the metrics.jsonl of `aviary train --backend cpu` with the same settings — the same examples in the
// same order (the split and the epoch's shuffle are the engine's, seeded alike), so the same counts; its losses are
// reported beside the page's as a check that both trained on the same batches. After step K the browser is closed:
// Pause or Cancel would wait for the step in flight.
//
// Memory: the proportional set size (PSS, so shared pages count once) of every Chromium process, summed, sampled
// every second; its peak over the session.
//
// Environment: AVIARY_URL, MODEL_PATH (the model under the server), DATA (the JSONL file), NATIVE_METRICS, STEPS
// (K, default 3), STEPS_GPU (K on WebGPU, default STEPS), MAX_LEN (512), BACKENDS ("gpu,cpu"), OUT (JSON lines
// report), ARTIFACTS.

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { artifacts, env, launch, pageUrl, waitForModel } from '../e2e/lib.mjs';

const backends = env('BACKENDS', 'gpu,cpu').split(',').filter(Boolean);
const stepsFor = (backend) => Number(backend === 'gpu' ? env('STEPS_GPU', env('STEPS', '3')) : env('STEPS', '3'));
const maxLen = env('MAX_LEN', '512');
const data = env('DATA');
const native = readFileSync(env('NATIVE_METRICS'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const stepTokens = native.map((m) => m.tokens);
const RUN_TIMEOUT = 60 * 60_000;

async function setNumber(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}

/** PSS of every Chromium process on the machine, in MiB (the benchmark runs one browser at a time). */
function chromiumPssMb() {
  let kb = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (!/^(chromium|chrome)/.test(readFileSync(`/proc/${pid}/comm`, 'utf8'))) continue;
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (m) kb += Number(m[1]);
    } catch {
      // gone meanwhile
    }
  }
  return kb / 1024;
}

const lines = [];
let failed = 0;
for (const backend of backends) {
  const label = backend === 'gpu' ? 'webgpu' : 'cpu';
  const steps = stepsFor(backend);
  if (steps < 2 || stepTokens.length < steps) throw new Error(`${steps} steps: at least 2, and no more than the native run's ${stepTokens.length}`);
  let peakPss = 0;
  const sampler = setInterval(() => { peakPss = Math.max(peakPss, chromiumPssMb()); }, 1000);
  const browser = await launch({ webgpu: backend === 'gpu' });
  const log = [];
  try {
    const page = await browser.newPage();
    page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
    page.on('worker', (w) => w.on('console', (m) => log.push(`[worker ${m.type()}] ${m.text()}`)));
    await page.goto(pageUrl({ model: env('MODEL_PATH'), backend }));
    const status = (await waitForModel(page)).replace(/\s+/g, ' ').trim();
    if (!/ready/.test(status)) throw new Error(`the model did not load: ${status}`);
    if (!(backend === 'gpu' ? /WebGPU/ : /CPU/).test(status)) throw new Error(`expected the ${label} backend: ${status}`);
    const loadedPss = chromiumPssMb();
    await page.getByTestId('nav-train').click();
    await page.getByTestId('train-import').setInputFiles(data);
    const name = basename(data);
    await page.waitForFunction((n) => [...document.querySelectorAll('[data-testid=train-dataset] option')]
      .some((o) => o.textContent.startsWith(n)), name, { timeout: 30_000 });
    await page.getByTestId('train-dataset').selectOption('imported');
    const dataset = await page.locator('[data-testid=train-dataset] option:checked').textContent();
    await page.getByTestId('train-name').fill(`bench-${label}`);
    await page.getByTestId('train-name').dispatchEvent('change');
    await page.getByTestId('train-style').selectOption('chat');
    if (await page.getByTestId('train-mask').isChecked()) await page.getByTestId('train-mask').uncheck();
    for (const [id, v] of [['train-rank', 8], ['train-alpha', 16], ['train-lr', 0.001], ['train-epochs', 1], ['train-batch', 4],
      ['train-max-len', maxLen], ['train-seed', 123], ['train-val', 0.1], ['train-checkpoint-every', 1000]]) {
      await setNumber(page, id, v);
    }
    for (const t of ['q', 'k', 'v', 'o', 'gate', 'up', 'down']) await page.getByTestId(`train-target-${t}`).check();

    // Each step's arrival on the page's clock, with the status line at that moment.
    await page.evaluate(() => {
      window.__steps = [];
      const plot = () => document.querySelector('[data-testid=train-loss]');
      const seen = () => {
        const v = JSON.parse(plot()?.dataset.values ?? '{"train":[]}');
        while (window.__steps.length < v.train.length) {
          const [step, loss] = v.train[window.__steps.length];
          window.__steps.push({ step, loss, atMs: performance.now(),
            status: document.querySelector('[data-testid=train-status]')?.textContent ?? '' });
        }
      };
      new MutationObserver(seen).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    });
    const startMs = await page.evaluate(() => performance.now());
    await page.getByTestId('train-start').click();
    console.log(`${label}: training ${steps} steps on ${dataset}…`);
    await page.waitForFunction((k) => window.__steps.length >= k
      || /^failed/.test(document.querySelector('[data-testid=train-status]')?.dataset.state ?? ''),
    steps, { timeout: RUN_TIMEOUT, polling: 1000 });
    const seen = await page.evaluate(() => window.__steps);
    await page.screenshot({ path: join(artifacts, `train-${label}.png`), fullPage: true });
    if (seen.length < steps) {
      throw new Error(`the run failed: ${await page.getByTestId('train-status').textContent()} ${await page.getByTestId('train-error').textContent().catch(() => '')}`);
    }
    const timedMs = seen[steps - 1].atMs - seen[0].atMs;
    const timedTokens = stepTokens.slice(1, steps).reduce((a, b) => a + b, 0);
    const line = {
      engine: `browser ${label === 'webgpu' ? 'WebGPU' : 'CPU (wasm)'}`, status, dataset, steps,
      timed_steps: steps - 1, first_step_s: (seen[0].atMs - startMs) / 1000, s_per_step: timedMs / 1000 / (steps - 1),
      tok_s: (timedTokens * 1000) / timedMs, step_tokens: stepTokens.slice(0, steps),
      losses: seen.map((s) => s.loss), native_losses: native.slice(0, steps).map((m) => m.train_loss), page_status: seen[steps - 1].status,
      pss_after_load_mb: loadedPss, peak_pss_mb: Math.max(peakPss, chromiumPssMb()),
    };
    console.log(JSON.stringify(line));
    lines.push(line);
  } catch (err) {
    failed++;
    console.log(`FAIL ${label}: ${err.stack ?? err}`);
    lines.push({ engine: `browser ${label}`, error: String(err.message ?? err) });
  } finally {
    clearInterval(sampler);
    writeFileSync(join(artifacts, `train-${label}.browser.log`), log.join('\n') + '\n');
    await browser.close();
  }
}
writeFileSync(env('OUT'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
process.exit(failed ? 1 : 0);
