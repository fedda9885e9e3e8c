// The browser half of `make bench-magpie` (scripts/bench-magpie.sh): the app's Magpie view on the default model, on
// WebGPU and on the CPU backend, at each batch size, the same samples each time (a row depends only on its index and
// the seed, so every size generates the same tokens). Numbers are the engine's own (`data-stats` on the progress,
// engine/src/batch.rs BatchStats): samples per minute, overall tokens/s, and the aggregate tokens/s of the batched
// decode steps alone.
//
// Environment: AVIARY_URL, MODEL_PATH (the model under the server), BATCHES ("1,4,8,16"), N, INS_MAX_TOKENS,
// MAX_TOKENS, SEED, BACKENDS ("gpu,cpu"), OUT (a JSON lines report), ARTIFACTS.

import { writeFileSync } from 'node:fs';
import { env, launch, pageUrl, waitForModel } from '../e2e/lib.mjs';

const batches = env('BATCHES', '1,4,8,16').split(',').map(Number);
const backends = env('BACKENDS', 'gpu,cpu').split(',');
const run = { n: env('N', '8'), seed: env('SEED', '1'), ins: env('INS_MAX_TOKENS', '8'), max: env('MAX_TOKENS', '8') };
const RUN_TIMEOUT = 60 * 60_000;

async function setNumber(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}

async function measure(page, batch) {
  if (await page.getByTestId('magpie-row').count() > 0) {
    await page.getByTestId('magpie-clear').click();
    await page.getByTestId('magpie-clear-confirm').click();
  }
  await setNumber(page, 'magpie-n', run.n);
  await setNumber(page, 'magpie-batch', batch);
  await setNumber(page, 'magpie-seed', run.seed);
  await setNumber(page, 'magpie-ins-max-tokens', run.ins);
  await setNumber(page, 'magpie-max-tokens', run.max);
  await page.getByTestId('magpie-start').click();
  await page.waitForFunction(() => /^(done|paused|failed)/.test(
    document.querySelector('[data-testid=magpie-progress]')?.dataset.status ?? ''), null, { timeout: RUN_TIMEOUT, polling: 250 });
  const progress = page.getByTestId('magpie-progress');
  const status = await progress.getAttribute('data-status');
  if (status !== 'done') throw new Error(`the run ended ${status}`);
  return JSON.parse(await progress.getAttribute('data-stats'));
}

const lines = [];
for (const backend of backends) {
  const browser = await launch({ webgpu: backend === 'gpu' });
  try {
    const page = await browser.newPage();
    await page.goto(pageUrl({ model: env('MODEL_PATH'), backend }));
    const status = await waitForModel(page);
    if (!/ready/.test(status)) throw new Error(`the model did not load: ${status}`);
    await page.getByTestId('nav-magpie').click();
    let first;
    for (const batch of batches) {
      const s = await measure(page, batch);
      const decode = s.decode_ms > 0 ? (s.decode_tokens * 1000) / s.decode_ms : 0;
      first ??= decode;
      const line = {
        backend: `browser ${status.replace(/\s+/g, ' ').trim()}`, batch, samples: s.tasks_done,
        samples_per_min: (s.tasks_done * 60000) / s.elapsed_ms, generated_tokens: s.generated_tokens,
        tok_s: (s.generated_tokens * 1000) / s.elapsed_ms, decode_tok_s: decode, decode_speedup_vs_first: decode / first,
        seconds: s.elapsed_ms / 1000,
      };
      console.log(JSON.stringify(line));
      lines.push(line);
    }
  } finally {
    await browser.close();
  }
}
writeFileSync(env('OUT'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
