// End-to-end test of the browser app: headless Chromium (WebGPU on SwiftShader where there is no GPU), driven by
// playwright-core, against the app served by `aviary serve`. Run by scripts/e2e-test.sh, which builds the app,
// starts the server and computes the expected answer with the native CLI.
//
// Environment: AVIARY_URL (the served app), PROMPT, MAX_TOKENS, EXPECTED_JSON and EXPECTED_F32_JSON (the CLI's
// `generate --json` output on the GPU with f16 arithmetic where the adapter has it, and with f32 only: the browser's
// answer is compared with the one whose arithmetic its adapter uses), ARTIFACTS (a directory for screenshots and the
// browser log), MODEL_FILE (the model's path, for its size), CHROMIUM (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const base = env('AVIARY_URL');
const prompt = env('PROMPT');
const maxTokens = env('MAX_TOKENS', '24');
const expectedF16 = JSON.parse(readFileSync(env('EXPECTED_JSON'), 'utf8')).text;
const expectedF32 = JSON.parse(readFileSync(env('EXPECTED_F32_JSON'), 'utf8')).text;
const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

// The flags that give headless Chromium a WebGPU adapter (SwiftShader's Vulkan on machines without a GPU).
const WEBGPU_FLAGS = [
  '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-webgpu-adapter=swiftshader',
];

const LOAD_TIMEOUT = 10 * 60_000;
const REPLY_TIMEOUT = 10 * 60_000;

const log = [];
let failures = 0;
function check(ok, what, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `\n     ${detail}` : ''}`);
  if (!ok) failures++;
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: WEBGPU_FLAGS,
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => log.push(`[worker ${m.type()}] ${m.text()}`)));

  const status = page.getByTestId('model-status');
  const assistant = page.getByTestId('message-assistant');
  const lastState = () => assistant.last().getAttribute('data-state');

  // Sends a message and records the reply's text as it streams, until it ends.
  async function ask(text, { stopAfterChars } = {}) {
    const before = await assistant.count();
    await page.getByTestId('chat-input').fill(text);
    await page.getByTestId('chat-input').press('Enter');
    await assistant.nth(before).waitFor();
    const reply = assistant.nth(before);
    const seen = new Set();
    const t0 = Date.now();
    let stopped = false;
    for (;;) {
      const [state, body] = await Promise.all([reply.getAttribute('data-state'), reply.locator('.text').textContent()]);
      if (state !== 'streaming') return { state, text: body, partials: seen, stopped };
      if (body) seen.add(body);
      if (stopAfterChars !== undefined && !stopped && body.length >= stopAfterChars) {
        await page.getByTestId('stop').click();
        stopped = true;
      }
      if (Date.now() - t0 > REPLY_TIMEOUT) throw new Error(`no end to the reply after ${REPLY_TIMEOUT / 1000} s`);
      await page.waitForTimeout(50);
    }
  }

  // 1. The page loads the default model (served by the same server) on WebGPU.
  const t0 = Date.now();
  await page.goto(base);
  await page.waitForFunction(
    () => /ready|error/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''),
    null,
    { timeout: LOAD_TIMEOUT, polling: 250 },
  );
  const statusText = await status.textContent();
  check(/ready/.test(statusText), 'the default model loads', statusText);
  check(/WebGPU/.test(statusText), 'it runs on WebGPU', statusText);
  console.log(`     loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await page.screenshot({ path: join(artifacts, 'models-loaded.png'), fullPage: true });
  if (!/ready/.test(statusText)) throw new Error('no model, nothing more to test');
  // The weights stream through the worker tensor by tensor: its wasm memory (whose size after the load is its peak,
  // as wasm memory never shrinks) stays well below the model file's size.
  const wasmBytes = Number(await page.getByTestId('model-wasm-memory').getAttribute('data-bytes'));
  const fileBytes = statSync(env('MODEL_FILE')).size;
  check(wasmBytes > 0 && wasmBytes < fileBytes / 2, 'peak worker wasm memory stays below half the model file',
    `${(wasmBytes / 1e6).toFixed(1)} MB of wasm memory for a ${(fileBytes / 1e6).toFixed(1)} MB file`);
  const device = await page.getByTestId('model-device').textContent();
  const f16 = /shader-f16 on/.test(device);
  const expected = f16 ? expectedF16 : expectedF32;
  console.log(`     device: ${device}\n     expecting the CLI's ${f16 ? 'f16' : 'f32 (--gpu-f32)'} answer`);

  // 2. A greedy answer streams and equals the native CLI's.
  await page.getByTestId('settings-temperature').fill('0');
  await page.getByTestId('settings-temperature').dispatchEvent('change');
  await page.getByTestId('settings-seed').fill('0');
  await page.getByTestId('settings-seed').dispatchEvent('change');
  await page.getByTestId('settings-max-tokens').fill(maxTokens);
  await page.getByTestId('settings-max-tokens').dispatchEvent('change');
  const greedy = await ask(prompt);
  check(greedy.state === 'done', 'the reply finishes', `state ${greedy.state}`);
  const partials = [...greedy.partials].filter((p) => p !== greedy.text);
  check(partials.length > 0, 'the reply streams (partial text was shown before the end)', `${partials.length} partial states seen`);
  check(partials.every((p) => greedy.text.startsWith(p)), 'every partial text is a prefix of the reply');
  check(greedy.text === expected, `the greedy reply equals \`aviary generate --backend gpu${f16 ? '' : ' --gpu-f32'}\``,
    `browser: ${JSON.stringify(greedy.text)}\n     cli:     ${JSON.stringify(expected)}` +
    `\n     (cli with ${f16 ? 'f32' : 'f16'}: ${JSON.stringify(f16 ? expectedF32 : expectedF16)})`);
  check(/ready/.test(await status.textContent()), 'the model is ready again after the reply');
  const users = await page.getByTestId('message-user').allTextContents();
  check(users.length === 1 && users[0] === prompt, 'the user message is shown', JSON.stringify(users));
  await page.screenshot({ path: join(artifacts, 'chat-greedy.png'), fullPage: true });

  // 3. Stop mid-stream: a long reply, stopped after a few characters.
  await page.getByRole('button', { name: 'New chat' }).click();
  await page.getByTestId('settings-max-tokens').fill('400');
  await page.getByTestId('settings-max-tokens').dispatchEvent('change');
  const stopped = await ask('Write a long story about a lighthouse keeper.', { stopAfterChars: 8 });
  check(stopped.stopped && stopped.state === 'stopped', 'Stop ends the reply mid-stream', `state ${stopped.state}`);
  const meta = await assistant.last().locator('.meta').textContent();
  const tokens = Number(/(\d+) tokens/.exec(meta)?.[1] ?? NaN);
  check(tokens > 0 && tokens < 400, 'the stopped reply has fewer tokens than asked for', meta);
  check(await page.getByTestId('send').isVisible(), 'Send is back after Stop');
  check(/ready/.test(await status.textContent()), 'the model is ready after Stop');
  await page.screenshot({ path: join(artifacts, 'chat-stopped.png'), fullPage: true });
} catch (e) {
  failures++;
  console.log(`FAIL ${e.stack ?? e}`);
} finally {
  writeFileSync(join(artifacts, 'browser.log'), log.join('\n') + '\n');
  await browser.close();
}
console.log(failures ? `${failures} check(s) failed (browser log: ${join(artifacts, 'browser.log')})` : 'all checks passed');
process.exit(failures ? 1 : 0);
