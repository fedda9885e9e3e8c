// The real default model (SmolLM2-135M Q4_1), as a visitor gets it: on WebGPU, it downloads into the browser's
// storage (OPFS) in one request, stops a reply mid-stream, keeps a reply that a reload cut short, loads from storage
// on the next visit with the network to it blocked, and streams a greedy answer equal to the native CLI's, token for
// token; without WebGPU, it runs on the engine's CPU backend compiled to wasm, says so and why, answers as the CLI's
// CPU backend does, and stops too (the worker yields between tokens). On SwiftShader a load takes seconds and a
// greedy answer tens of them, so each browser loads the model as few times, and answers as few questions, as the
// checks allow: the reload that the storage check needs is also the one that cuts a reply short, and the answer
// after it is the one compared with the CLI.

import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import {
  LONG_QUESTION, LONG_TOKENS, REPLY_TIMEOUT, ask, checkStop, checkTokenView, cliAnswer, env, expectedFor, pageUrl,
  savedConversations, setGreedy, suite, versus, waitForModel, waitForText,
} from './lib.mjs';

const prompt = env('PROMPT');
const modelFile = env('MODEL_FILE');
const modelName = basename(modelFile);
const fileBytes = statSync(modelFile).size;

/** The server's log lines (one per request) that fetched the model file. */
const modelRequestsInServerLog = () =>
  readFileSync(env('SERVE_LOG'), 'utf8').split('\n').filter((l) => l.includes(modelName));

/**
 * Peak worker wasm memory: wasm memory never shrinks, so its size after the load is its peak. A load that held the
 * file whole would need more than the file; streaming a tensor at a time peaks at the largest tensor (the 30 MB Q8_0
 * embedding) above the tokenizer and the code: 49.2 MB for this 98.4 MB file (2026-12-04), so the bound is 60 % of
 * the file, with room for the code to grow.
 */
async function checkWasmMemory(c, page, what) {
  const wasmBytes = Number(await page.getByTestId('model-wasm-memory').getAttribute('data-bytes'));
  c.note(`${what}: ${wasmBytes} bytes of worker wasm memory for a ${fileBytes}-byte model file`);
  c.ok(wasmBytes > 0 && wasmBytes < fileBytes * 0.6,
    `${what}: peak worker wasm memory stays below 60% of the model file (the weights stream through a tensor at a time)`,
    `${(wasmBytes / 1e6).toFixed(1)} MB of wasm memory for a ${(fileBytes / 1e6).toFixed(1)} MB file`);
}

const storedEntry = (page) => page.locator(`[data-testid=storage-entry][data-url$="/models/${modelName}"]`);

export function register({ webgpu, cpu }) {
  suite('default model on WebGPU', { slug: 'webgpu', browser: webgpu }, (s) => {
    const blocked = [];
    const blockedModel = () => blocked.filter((u) => u.endsWith(`/${modelName}`));
    const cutQuestion = 'Write a long story about a sailor.';
    let streamed;

    s.step('it downloads into OPFS in one request and loads on WebGPU', async (c) => {
      const { page } = s;
      const before = modelRequestsInServerLog().length;
      const t0 = Date.now();
      // WebGPU by name: on a software adapter (SwiftShader here) Auto runs the CPU (device.mjs checks that).
      await page.goto(pageUrl({ backend: 'gpu' }));
      const status = await waitForModel(page);
      c.note(`loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      c.must(/ready/.test(status), 'the default model loads (served by the app\'s own server)', status);
      c.ok(/WebGPU/.test(status), 'it runs on WebGPU', status);
      const origin = await page.getByTestId('model-origin').textContent();
      c.ok(/downloaded, now kept in .*OPFS/.test(origin), 'the card says it was downloaded into OPFS', origin);
      const requests = modelRequestsInServerLog().slice(before);
      c.ok(requests.length === 1 && / → 200 /.test(requests[0]),
        'the model file was fetched whole, in one request (no Range requests)', requests.join('\n     '));
      await checkWasmMemory(c, page, 'downloaded');
      const entry = storedEntry(page);
      await entry.waitFor({ timeout: 30_000 });
      const [listed, complete] = [await entry.getAttribute('data-bytes'), await entry.getAttribute('data-complete')];
      c.ok(Number(listed) === fileBytes && complete === 'true', 'the storage panel lists it, complete, with the file\'s size',
        `${listed} bytes listed (complete: ${complete}), file has ${fileBytes}`);
      const detail = await entry.getByTestId('storage-entry-detail').textContent();
      c.ok(/MB/.test(detail), 'its size is shown', detail);
      const quota = await waitForText(page, 'storage-quota', /used of/).catch(() => page.getByTestId('storage-quota').textContent());
      c.ok(/used of/.test(quota), 'the panel shows the storage quota in use', quota);
      const inCatalog = page.locator(`[data-testid=catalog-entry][data-url="models/${modelName}"]`);
      c.ok(await inCatalog.getByTestId('catalog-cached').isVisible(), 'the catalog marks the default model as stored');
      await s.shot('loaded');
    });

    s.step('Stop ends a reply mid-stream', async (c) => {
      await checkStop(c, s.page, 'WebGPU');
      await s.shot('stopped');
    });

    s.step('a reload mid-reply, with every model request blocked: the model loads from storage', async (c) => {
      const { page } = s;
      await page.getByTestId('new-chat').click();
      await setGreedy(page, LONG_TOKENS);
      await page.getByTestId('chat-input').fill(cutQuestion);
      await page.getByTestId('chat-input').press('Enter');
      // Reload once the conversation has been saved mid-reply with some of it (the app saves shortly after each
      // change): what was saved is what the reload must keep.
      const t0 = Date.now();
      for (;;) {
        const reply = (await savedConversations(page)).find((x) => x.title === cutQuestion)?.messages[1];
        if (reply && reply.stop == null && reply.text.length >= 10) {
          streamed = reply.text;
          break;
        }
        const state = await page.getByTestId('message-assistant').last().getAttribute('data-state');
        c.must(state === 'streaming', 'the long reply is still streaming when the test reloads', `it is ${state}`);
        if (Date.now() - t0 > REPLY_TIMEOUT) throw new Error('the reply was never saved mid-stream');
        await page.waitForTimeout(100);
      }
      await s.context.route('**/*.gguf', (route) => {
        blocked.push(route.request().url());
        return route.abort();
      });
      const logBefore = modelRequestsInServerLog().length;
      const t1 = Date.now();
      await page.reload();
      const status = await waitForModel(page);
      c.note(`loaded from storage in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
      c.must(/ready/.test(status), 'with the network to the model blocked, the model loads', status);
      const origin = await page.getByTestId('model-origin').textContent();
      c.ok(/loaded from cache/.test(origin), 'the card says it was loaded from the cache', origin);
      // (The catalog's HEAD probe for the optional Gemma model is blocked too, where that model is served.)
      c.ok(blockedModel().length === 0 && modelRequestsInServerLog().length === logBefore,
        'no request for the model was made (none blocked, none reached the server)',
        `blocked: ${JSON.stringify(blocked)}; server: ${modelRequestsInServerLog().slice(logBefore).join(' | ')}`);
      await checkWasmMemory(c, page, 'loaded from storage');
    });

    s.step('the reply the reload cut short keeps what streamed', async (c) => {
      const { page } = s;
      const items = page.getByTestId('conversation-item');
      await items.nth(1).waitFor({ timeout: 30_000 });
      const titles = await items.locator('.conversation-title').allTextContents();
      c.ok(JSON.stringify(titles) === JSON.stringify([cutQuestion, LONG_QUESTION]),
        'both conversations are listed, the interrupted one first', JSON.stringify(titles));
      await items.first().locator('.conversation-open').click();
      const assistant = page.getByTestId('message-assistant');
      await assistant.first().waitFor();
      const cut = await assistant.first().locator('.text').getAttribute('data-raw');
      c.ok(cut.length >= streamed.length && cut.startsWith(streamed), 'the reply interrupted by the reload keeps what streamed',
        `${streamed.length} chars saved mid-stream, ${cut.length} restored: ${JSON.stringify(cut)}`);
      c.ok(await assistant.first().getAttribute('data-state') === 'stopped', 'it is marked stopped');
    });

    s.step('a greedy answer streams and equals the CLI\'s', async (c) => {
      const { page } = s;
      await page.getByTestId('new-chat').click();
      const expected = await expectedFor(page, 'EXPECTED');
      c.note(`device: ${expected.device}; expecting ${expected.cli}`);
      await setGreedy(page);
      const greedy = await ask(page, prompt);
      c.note(`greedy reply in ${greedy.seconds.toFixed(1)} s`);
      c.ok(greedy.state === 'done', 'the reply finishes', `state ${greedy.state}`);
      const partials = [...greedy.partials].filter((p) => p !== greedy.text);
      c.ok(partials.length > 0, 'the reply streams (partial text was shown before the end)',
        `${partials.length} partial states seen`);
      c.ok(partials.every((p) => greedy.text.startsWith(p)), 'every partial text is a prefix of the reply');
      c.ok(greedy.text === expected.answer.text, `the greedy reply equals ${expected.cli}`,
        versus(greedy.text, expected.answer.text));
      c.ok(/ready/.test(await page.getByTestId('model-status').textContent()), 'the model is ready again after the reply');
      const users = await page.getByTestId('message-user').allTextContents();
      c.ok(users.length === 1 && users[0] === prompt, 'the user message is shown', JSON.stringify(users));
      await s.shot('greedy');
    });

    s.step('its token chips are the CLI\'s tokens; a chip\'s candidates are the GPU\'s top-k', async (c) => {
      const expected = await expectedFor(s.page, 'EXPECTED');
      const chipIds = await checkTokenView(c, s.page, () => s.shot('token-popup'));
      c.ok(JSON.stringify(chipIds) === JSON.stringify(expected.answer.tokens), 'the token chips are the CLI\'s generated tokens',
        `chips: ${JSON.stringify(chipIds)}\n     cli:   ${JSON.stringify(expected.answer.tokens)}`);
    });
  });

  suite('default model on the CPU (a browser without WebGPU)', { slug: 'cpu', browser: cpu }, (s) => {
    s.step('it loads on the CPU and says why WebGPU is not used', async (c) => {
      const { page } = s;
      const t0 = Date.now();
      await page.goto(pageUrl());
      const gpu = await page.evaluate(async () => {
        if (!('gpu' in navigator)) return 'navigator.gpu is undefined';
        const adapter = await navigator.gpu.requestAdapter();
        return adapter ? 'an adapter' : 'requestAdapter() gives null';
      });
      c.note(`without the WebGPU flags: ${gpu}`);
      const status = await waitForModel(page);
      c.note(`loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      c.must(/ready/.test(status) && /CPU \(wasm\)/.test(status), 'the default model loads on the CPU', status);
      c.ok(/WebGPU unavailable: \S/.test(status), 'the status line says why WebGPU is not used', status);
      const device = await page.getByTestId('model-device').textContent();
      // Chromium runs wasm SIMD128 and relaxed SIMD, so the page starts the worker built with both; V8 fuses relaxed
      // multiply-adds where the CPU has FMA (x86-64 with FMA3, every ARM64), and the card says so.
      const fma = process.arch === 'arm64' || /\bfma\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
      const build = fma ? / · SIMD128 · FMA/ : / · SIMD128/;
      // The page is cross-origin isolated (aviary serve's COOP/COEP), so on more than one core it starts the threaded
      // build, whose kernels run on every core.
      const threads = await page.evaluate(() => (self.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency, 8) : 1));
      const threadsPart = threads > 1 ? ` · ${threads} threads` : '';
      c.ok(new RegExp(`^CPU \\(wasm\\)${build.source}${threadsPart} — WebGPU unavailable: \\S`).test(device),
        `the model card says CPU (the SIMD128 build${fma ? ' with fused relaxed multiply-adds' : ''}${threadsPart}) and why`,
        device);
      const panel = page.getByTestId('adapter-panel');
      const panelText = (await panel.textContent()).replace(/\s+/g, ' ');
      c.ok(/CPU/.test(panelText) && /WebGPU/.test(panelText), 'the adapter panel says the model runs on the CPU and why',
        panelText);
      await panel.screenshot({ path: s.artifactPath('adapter.png') });
    });

    s.step('the greedy answer streams and equals the CLI\'s CPU backend\'s', async (c) => {
      const { page } = s;
      const expected = cliAnswer('EXPECTED_CPU_JSON');
      await setGreedy(page);
      const greedy = await ask(page, prompt);
      c.note(`greedy reply in ${greedy.seconds.toFixed(1)} s`);
      c.ok(greedy.state === 'done', 'the reply finishes', `state ${greedy.state}`);
      c.ok(greedy.partials.size > 1, 'the reply streams', `${greedy.partials.size} partial states seen`);
      c.ok(greedy.text === expected.text, 'the greedy reply equals `aviary generate --backend cpu`',
        versus(greedy.text, expected.text));
      await s.shot('greedy');
    });

    // The worker yields to its event loop between tokens, so it hears Cancel (the GPU path awaits the GPU instead).
    s.step('Stop ends a reply mid-stream on the CPU too', async (c) => {
      await checkStop(c, s.page, 'CPU');
      await s.shot('stopped');
    });
  });
}
