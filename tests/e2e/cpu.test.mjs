// The CPU fallback: Chromium without WebGPU (launched without the flags that give it an adapter) runs the model on
// the engine's CPU backend compiled to wasm, says so and why, answers exactly as the native CLI's CPU backend does,
// and stops a reply mid-stream. Also the adapter panel in both modes, and `?backend=cpu` on a page that has WebGPU.

import { join } from 'node:path';
import { Checks, artifacts, ask, env, expectedText, launch, setGreedy, waitForModel } from './lib.mjs';

const t = new Checks('cpu');
const base = env('AVIARY_URL');
const prompt = env('PROMPT');
const maxTokens = env('MAX_TOKENS', '24');
const expectedCpu = expectedText('EXPECTED_CPU_JSON');

/** Asks the long question and stops it after a few characters; checks it ended early. */
async function checkStop(page, what) {
  await page.getByRole('button', { name: 'New chat' }).click();
  await setGreedy(page, 400);
  const t0 = Date.now();
  const stopped = await ask(page, 'Write a long story about a lighthouse keeper.', { stopAfterChars: 8 });
  const seconds = (Date.now() - t0) / 1000;
  t.check(stopped.stopped && stopped.state === 'stopped', `${what}: Stop ends the reply mid-stream`,
    `state ${stopped.state} after ${seconds.toFixed(1)} s`);
  const meta = await page.getByTestId('message-assistant').last().locator('.meta').textContent();
  const tokens = Number(/(\d+) tokens/.exec(meta)?.[1] ?? NaN);
  t.check(tokens > 0 && tokens < 400, `${what}: the stopped reply has fewer tokens than asked for`, meta);
  t.check(/ready/.test(await page.getByTestId('model-status').textContent()), `${what}: the model is ready after Stop`);
}

// 1. No WebGPU at all: the page's own view of it, then the default model on the CPU.
let browser = await launch({ webgpu: false });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  t.watch(page);
  await page.goto(base);
  const gpu = await page.evaluate(async () => {
    if (!('gpu' in navigator)) return 'navigator.gpu is undefined';
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? 'an adapter' : 'requestAdapter() gives null';
  });
  console.log(`     without the WebGPU flags: ${gpu}`);
  const statusText = await waitForModel(page);
  t.check(/ready/.test(statusText) && /CPU \(wasm\)/.test(statusText), 'the default model loads on the CPU', statusText);
  t.check(/WebGPU unavailable: \S/.test(statusText), 'the status line says why WebGPU is not used', statusText);
  const device = await page.getByTestId('model-device').textContent();
  t.check(/^CPU \(wasm\) — WebGPU unavailable: \S/.test(device), 'the model card says CPU and why', device);
  const panel = page.getByTestId('adapter-panel');
  const panelText = await panel.textContent();
  t.check(/CPU/.test(panelText) && /WebGPU/.test(panelText), 'the adapter panel says the model runs on the CPU and why',
    panelText.replace(/\s+/g, ' '));
  await panel.screenshot({ path: join(artifacts, 'adapter-cpu.png') });
  if (!/ready/.test(statusText)) throw new Error('no model, nothing more to test');

  // The greedy answer equals the native CPU backend's, token for token (the text is the tokens, detokenised).
  await setGreedy(page, maxTokens);
  const t0 = Date.now();
  const greedy = await ask(page, prompt);
  console.log(`     greedy reply in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t.check(greedy.state === 'done', 'the reply finishes', `state ${greedy.state}`);
  t.check(greedy.partials.size > 1, 'the reply streams', `${greedy.partials.size} partial states seen`);
  t.check(greedy.text === expectedCpu, 'the greedy reply equals `aviary generate --backend cpu`',
    `browser: ${JSON.stringify(greedy.text)}\n     cli:     ${JSON.stringify(expectedCpu)}`);
  await page.screenshot({ path: join(artifacts, 'cpu-greedy.png'), fullPage: true });

  // Stop works on the CPU too: the worker yields to its event loop between tokens, so it hears Cancel.
  await checkStop(page, 'CPU');
  await page.screenshot({ path: join(artifacts, 'cpu-stopped.png'), fullPage: true });
} catch (e) {
  t.fail(e);
} finally {
  await browser.close();
}

// 2. With WebGPU: the adapter panel describes the adapter; `?backend=cpu` (and the choice in the panel) picks the CPU.
browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  t.watch(page);
  await page.goto(base);
  const statusText = await waitForModel(page);
  t.check(/ready/.test(statusText) && /WebGPU/.test(statusText), 'with WebGPU the model loads on WebGPU', statusText);
  const panel = page.getByTestId('adapter-panel');
  const panelText = (await panel.textContent()).replace(/\s+/g, ' ');
  t.check(/max storage buffer binding size/.test(panelText) && /Features/.test(panelText),
    'the adapter panel lists the adapter\'s features and limits', panelText);
  const adapterInfo = await page.evaluate(async () => {
    const a = await navigator.gpu.requestAdapter();
    return { binding: a.limits.maxStorageBufferBindingSize, features: [...a.features] };
  });
  const shownBinding = Number(await page.getByTestId('adapter-limit-max_storage_buffer_binding_size').getAttribute('data-value'));
  t.check(shownBinding === adapterInfo.binding, 'the panel\'s max storage binding is the browser\'s own',
    `panel ${shownBinding}, navigator.gpu ${adapterInfo.binding}`);
  const shown = await page.getByTestId('adapter-features').locator('li').allTextContents();
  t.check(shown.includes('shader-f16') === adapterInfo.features.includes('shader-f16'),
    'the panel and the browser agree on shader-f16', `panel: ${shown.join(' ')}\n     browser: ${adapterInfo.features.join(' ')}`);
  t.check(shown.includes('timestamp-query') === adapterInfo.features.includes('timestamp-query'),
    'the panel and the browser agree on timestamp-query');
  const browserOnly = (await page.getByTestId('adapter-browser-only-features').textContent()).split(', ');
  const unaccounted = adapterInfo.features.filter((f) => !shown.includes(f) && !browserOnly.includes(f));
  t.check(unaccounted.length === 0, 'every feature the browser offers is in the panel (mapped by wgpu or not)',
    `missing: ${unaccounted.join(' ')}; only the browser's: ${browserOnly.join(' ')}`);
  await panel.screenshot({ path: join(artifacts, 'adapter-webgpu.png') });

  // The choice in the panel applies to the next Load.
  await page.getByTestId('backend-choice').selectOption('cpu');
  await page.getByTestId('model-load').click();
  await page.waitForFunction(() => !/ready/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''));
  const reloaded = await waitForModel(page);
  t.check(/ready/.test(reloaded) && /CPU \(wasm\)/.test(reloaded), 'choosing CPU and loading again runs on the CPU', reloaded);
  const device = await page.getByTestId('model-device').textContent();
  t.check(/^CPU \(wasm\)/.test(device) && !/unavailable/.test(device), 'a chosen CPU is not called a fallback', device);

  // ?backend=cpu in the page URL.
  const page2 = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  t.watch(page2);
  await page2.goto(`${base}/?backend=cpu`);
  const viaUrl = await waitForModel(page2);
  t.check(/ready/.test(viaUrl) && /CPU \(wasm\)/.test(viaUrl), '?backend=cpu loads on the CPU', viaUrl);
  t.check(await page2.getByTestId('backend-choice').inputValue() === 'cpu', '?backend=cpu shows in the backend choice');
} catch (e) {
  t.fail(e);
} finally {
  await browser.close();
}
t.finish();
