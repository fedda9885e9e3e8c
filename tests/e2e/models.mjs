// The model manager, on the tiny model: a model loaded by URL is kept in the browser's storage (OPFS), which the
// storage panel lists with its size and deletes (after which, with the network blocked, it cannot load, nothing is
// left behind, and the model loaded before stays loaded); a .gguf picked from disk loads and answers as the CLI does;
// a model folder without config.json or tokenizer.json is refused with a message naming the missing file. (The default model's one-request download and
// its load from storage with the network blocked are in default-model.mjs.)

import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  LOAD_TIMEOUT, ask, env, expectedFor, loadAnew, setGreedy, suite, tinyPageUrl, versus, waitForModel, waitForText,
} from './lib.mjs';

const prompt = env('PROMPT');
const tinyFile = env('TINY_MODEL_FILE');
const tinyName = basename(env('TINY_MODEL_URL'));
const tinyBytes = statSync(tinyFile).size;

/** Runs `start`, which begins a load that must fail, and returns the failure's message once the page shows it. */
async function failedLoad(page, start) {
  await start();
  await page.getByTestId('load-error').waitFor({ timeout: LOAD_TIMEOUT });
  await waitForModel(page);
  return page.getByTestId('load-error').textContent();
}

export function register({ webgpu }) {
  suite('stored models on the tiny model', { slug: 'storage', browser: webgpu }, (s) => {
    const blocked = [];
    const storedEntry = () => s.page.locator(`[data-testid=storage-entry][data-url$="/models/${tinyName}"]`);

    s.step('a model loaded by URL is kept in OPFS and listed with its size', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl());
      const status = await waitForModel(page);
      c.must(/ready/.test(status), 'the tiny model loads by URL', status);
      const origin = await page.getByTestId('model-origin').textContent();
      c.ok(/downloaded, now kept in .*OPFS/.test(origin), 'the card says it was downloaded into OPFS', origin);
      await storedEntry().waitFor({ timeout: 30_000 });
      const [listed, complete] = [await storedEntry().getAttribute('data-bytes'), await storedEntry().getAttribute('data-complete')];
      c.ok(Number(listed) === tinyBytes && complete === 'true', 'the storage panel lists it, complete, with the file\'s size',
        `${listed} bytes listed (complete: ${complete}), file has ${tinyBytes}`);
      const detail = await storedEntry().getByTestId('storage-entry-detail').textContent();
      c.ok(/\d kB/.test(detail), 'its size is shown', detail);
      const quota = await waitForText(page, 'storage-quota', /used of/).catch(() => page.getByTestId('storage-quota').textContent());
      c.ok(/used of/.test(quota), 'the panel shows the storage quota in use', quota);
    });

    s.step('Delete removes it; then, with the network blocked, it cannot load and nothing is left', async (c) => {
      const { page } = s;
      await s.context.route('**/*.gguf', (route) => {
        blocked.push(route.request().url());
        return route.abort();
      });
      await storedEntry().getByTestId('storage-delete').click();
      await storedEntry().waitFor({ state: 'detached', timeout: 30_000 });
      c.ok(await storedEntry().count() === 0, 'Delete removes it from the storage panel');
      await page.getByTestId('storage-empty').waitFor({ timeout: 10_000 });
      c.ok(await page.getByTestId('storage-empty').isVisible(), 'the panel says nothing is stored');
      const message = await failedLoad(page, () => page.getByTestId('model-load').click());
      const status = await page.getByTestId('model-status').textContent();
      // This also shows that the route intercepts the worker's fetches: the download was refused.
      c.ok(blocked.some((u) => u.endsWith(`/${tinyName}`)), 'once deleted, loading it tries the network, which the test blocks',
        `blocked: ${JSON.stringify(blocked)}; ${message}`);
      c.ok(/could not be downloaded/.test(message) && /ready/.test(status),
        'the failed download is reported, and the model loaded before stays loaded', `${message}; ${status}`);
      await page.waitForTimeout(1000);
      c.ok(await storedEntry().count() === 0, 'the failed download leaves nothing in storage');
      await s.shot('deleted');
    });
  });

  suite('local files on the tiny model', { slug: 'files', browser: webgpu }, (s) => {
    // On the CPU backend, whose answers equal the CLI's on any machine (see chat.mjs).
    s.step('a .gguf picked with the file picker loads and answers as the CLI does', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ autoload: 0, backend: 'cpu' }));
      await waitForText(page, 'model-status', /no model loaded/);
      const status = await loadAnew(page, () => page.getByTestId('model-file-input').setInputFiles(tinyFile));
      c.must(/ready/.test(status), 'a .gguf picked with the file picker loads', status);
      const origin = await page.getByTestId('model-origin').textContent();
      c.ok(/your files/.test(origin), 'the card says it came from the user\'s files', origin);
      const expected = await expectedFor(page, 'EXPECTED_TINY');
      await setGreedy(page);
      const reply = await ask(page, prompt);
      c.ok(reply.state === 'done' && reply.text === expected.answer.text,
        `picked from disk: the greedy reply equals ${expected.cli}`, `${versus(reply.text, expected.answer.text)} (${reply.state})`);
    });

    s.step('a model folder without config.json or tokenizer.json is refused, naming the missing file', async (c) => {
      const { page } = s;
      const tiny = 'tests/fixtures/tiny/llama';
      const folders = mkdtempSync(join(tmpdir(), 'aviary-folders-'));
      try {
        const noConfig = join(folders, 'no-config');
        const noTokenizer = join(folders, 'no-tokenizer');
        for (const dir of [noConfig, noTokenizer]) mkdirSync(dir);
        copyFileSync(join(tiny, 'model.safetensors'), join(noConfig, 'model.safetensors'));
        copyFileSync('tests/fixtures/tokenizer/bpe/tokenizer.json', join(noConfig, 'tokenizer.json'));
        copyFileSync(join(tiny, 'model.safetensors'), join(noTokenizer, 'model.safetensors'));
        copyFileSync(join(tiny, 'config.json'), join(noTokenizer, 'config.json'));
        for (const [dir, missing] of [[noConfig, 'config.json'], [noTokenizer, 'tokenizer.json']]) {
          const message = await failedLoad(page, () => page.getByTestId('model-folder-input').setInputFiles(dir));
          const status = await page.getByTestId('model-status').textContent();
          c.ok(message.includes(`no ${missing}`) && /ready/.test(status),
            `a folder without ${missing} is refused, naming it, and the model loaded before stays`, `${message}; ${status}`);
        }
      } finally {
        rmSync(folders, { recursive: true, force: true });
      }
      await s.shot('folder-error');
    });
  });
}
