// The chat on WebGPU: the default model loads from the app's own server, a greedy answer streams and equals the
// native CLI's, Stop ends a reply mid-stream. Headless Chromium's WebGPU adapter is SwiftShader where there is no GPU.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Checks, artifacts, ask, env, expectedText, launch, setGreedy, waitForModel } from './lib.mjs';

const t = new Checks('chat');
const base = env('AVIARY_URL');
const prompt = env('PROMPT');
const maxTokens = env('MAX_TOKENS', '24');
const expectedF16 = expectedText('EXPECTED_JSON');
const expectedF32 = expectedText('EXPECTED_F32_JSON');

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  t.watch(page);
  const status = page.getByTestId('model-status');
  const assistant = page.getByTestId('message-assistant');

  // 1. The page loads the default model (served by the same server) on WebGPU.
  const t0 = Date.now();
  await page.goto(base);
  const statusText = await waitForModel(page);
  t.check(/ready/.test(statusText), 'the default model loads', statusText);
  t.check(/WebGPU/.test(statusText), 'it runs on WebGPU', statusText);
  console.log(`     loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await page.screenshot({ path: join(artifacts, 'models-loaded.png'), fullPage: true });
  if (!/ready/.test(statusText)) throw new Error('no model, nothing more to test');
  // The weights stream through the worker tensor by tensor: its wasm memory (whose size after the load is its peak,
  // as wasm memory never shrinks) stays well below the model file's size.
  const wasmBytes = Number(await page.getByTestId('model-wasm-memory').getAttribute('data-bytes'));
  const fileBytes = statSync(env('MODEL_FILE')).size;
  t.check(wasmBytes > 0 && wasmBytes < fileBytes / 2, 'peak worker wasm memory stays below half the model file',
    `${(wasmBytes / 1e6).toFixed(1)} MB of wasm memory for a ${(fileBytes / 1e6).toFixed(1)} MB file`);
  const device = await page.getByTestId('model-device').textContent();
  const f16 = /shader-f16 on/.test(device);
  const expected = f16 ? expectedF16 : expectedF32;
  console.log(`     device: ${device}\n     expecting the CLI's ${f16 ? 'f16' : 'f32 (--gpu-f32)'} answer`);

  // 2. A greedy answer streams and equals the native CLI's.
  await setGreedy(page, maxTokens);
  const greedy = await ask(page, prompt);
  t.check(greedy.state === 'done', 'the reply finishes', `state ${greedy.state}`);
  const partials = [...greedy.partials].filter((p) => p !== greedy.text);
  t.check(partials.length > 0, 'the reply streams (partial text was shown before the end)', `${partials.length} partial states seen`);
  t.check(partials.every((p) => greedy.text.startsWith(p)), 'every partial text is a prefix of the reply');
  t.check(greedy.text === expected, `the greedy reply equals \`aviary generate --backend gpu${f16 ? '' : ' --gpu-f32'}\``,
    `browser: ${JSON.stringify(greedy.text)}\n     cli:     ${JSON.stringify(expected)}` +
    `\n     (cli with ${f16 ? 'f32' : 'f16'}: ${JSON.stringify(f16 ? expectedF32 : expectedF16)})`);
  t.check(/ready/.test(await status.textContent()), 'the model is ready again after the reply');
  const users = await page.getByTestId('message-user').allTextContents();
  t.check(users.length === 1 && users[0] === prompt, 'the user message is shown', JSON.stringify(users));
  await page.screenshot({ path: join(artifacts, 'chat-greedy.png'), fullPage: true });

  // 3. Stop mid-stream: a long reply, stopped after a few characters.
  await page.getByRole('button', { name: 'New chat' }).click();
  await setGreedy(page, 400);
  const stopped = await ask(page, 'Write a long story about a lighthouse keeper.', { stopAfterChars: 8 });
  t.check(stopped.stopped && stopped.state === 'stopped', 'Stop ends the reply mid-stream', `state ${stopped.state}`);
  const meta = await assistant.last().locator('.meta').textContent();
  const tokens = Number(/(\d+) tokens/.exec(meta)?.[1] ?? NaN);
  t.check(tokens > 0 && tokens < 400, 'the stopped reply has fewer tokens than asked for', meta);
  t.check(await page.getByTestId('send').isVisible(), 'Send is back after Stop');
  t.check(/ready/.test(await status.textContent()), 'the model is ready after Stop');
  await page.screenshot({ path: join(artifacts, 'chat-stopped.png'), fullPage: true });
} catch (e) {
  t.fail(e);
} finally {
  await browser.close();
}
t.finish();
