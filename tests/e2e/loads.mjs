// Loads that fail keep what works, on the tiny model and the CPU backend: with the tiny model loaded and answering,
// loading the app's own index.html as a model, a URL the server has no file at, and a .gguf cut short each fail
// before the loaded model is released. Each shows a plain message with the technical text behind "Details", the
// model loaded before answers as it did (greedy, as the CLI does), and Stored models lists nothing new.

import { readFileSync } from 'node:fs';
import { LOAD_TIMEOUT, ask, env, expectedFor, pageUrl, setGreedy, suite, tinyPageUrl, versus, waitForModel } from './lib.mjs';

const prompt = env('PROMPT');
const tinyFile = env('TINY_MODEL_FILE');

/** 1234567 → "1,234,567", as the page writes byte counts. */
const grouped = (n) => n.toLocaleString('en-US');

export function register({ webgpu }) {
  suite('failed loads keep the loaded model', { slug: 'loads', browser: webgpu }, (s) => {
    let before; // the greedy reply before any failure
    const stored = () => s.page.getByTestId('storage-entry').evaluateAll((els) => els.map((e) => e.dataset.url).sort());
    let storedBefore;

    /**
     * Runs `start` (which begins a load) and waits for that load's failure message; returns the message, the
     * detail, the status line and the stored entries' URLs once the page has listed them again.
     */
    const failedLoad = async (start) => {
      const { page } = s;
      await start();
      // The load ends with its message shown, or (as when a failed load dropped the model) with an error status.
      await page.waitForFunction(() => document.querySelector('[data-testid=load-error]')
        || /error/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''),
      null, { timeout: LOAD_TIMEOUT, polling: 100 });
      const status = await waitForModel(page);
      const message = page.getByTestId('load-error');
      const detailBox = page.getByTestId('load-error-detail');
      const hasDetail = await detailBox.count() === 1;
      const detail = hasDetail ? await detailBox.locator('pre').textContent() : null;
      const isDetails = hasDetail && await detailBox.evaluate((e) => e.tagName === 'DETAILS' && !e.open);
      // The page asks for the list again after a failed load; give the answer a moment to come.
      await page.waitForTimeout(500);
      const text = await message.count() ? await message.textContent() : null;
      return { message: text, detail, isDetails, status, stored: await stored() };
    };

    /** The checks every failure gets: the model loaded before is still loaded, answers the same, nothing stored. */
    const keptWhatWorks = async (c, what, outcome) => {
      const ready = c.ok(/^ready: /.test(outcome.status), `${what}: the model loaded before is still ready`, outcome.status);
      c.ok(outcome.isDetails, `${what}: the technical text sits in a closed Details disclosure`);
      c.ok(JSON.stringify(outcome.stored) === JSON.stringify(storedBefore), `${what}: Stored models lists nothing new`,
        `before ${JSON.stringify(storedBefore)}, after ${JSON.stringify(outcome.stored)}`);
      if (!ready) return;
      await s.page.getByTestId('new-chat').click();
      const reply = await ask(s.page, prompt);
      c.ok(reply.state === 'done' && reply.text === before, `${what}: the model still gives the same greedy reply`,
        `${versus(reply.text, before)} (${reply.state})`);
    };

    const loadUrl = async (url) => {
      await s.page.getByTestId('model-url-input').fill(url);
      await s.page.getByTestId('model-load').click();
    };

    s.step('the tiny model loads by URL and answers as the CLI does', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ backend: 'cpu' }));
      const status = await waitForModel(page);
      c.must(/ready/.test(status), 'the tiny model loads', status);
      await page.getByTestId('storage-entry').first().waitFor({ timeout: 30_000 });
      storedBefore = await stored();
      c.must(storedBefore.length === 1, 'Stored models lists the tiny model', JSON.stringify(storedBefore));
      const expected = await expectedFor(page, 'EXPECTED_TINY');
      await setGreedy(page);
      const reply = await ask(page, prompt);
      before = reply.text;
      c.must(reply.state === 'done' && reply.text === expected.answer.text, `the greedy reply equals ${expected.cli}`,
        `${versus(reply.text, expected.answer.text)} (${reply.state})`);
    });

    s.step("the app's own index.html is not a model: said so, and the tiny model stays", async (c) => {
      const outcome = await failedLoad(() => loadUrl(new URL('index.html', pageUrl()).href));
      c.ok(outcome.message === 'This file is not a GGUF model (it looks like an HTML page)',
        'the message says it is an HTML page, not a GGUF', outcome.message);
      c.ok(/bad magic \[3c, 21/.test(outcome.detail ?? ''), 'the detail has the technical text (the bytes it starts with)',
        outcome.detail);
      await keptWhatWorks(c, 'index.html', outcome);
      await s.shot('not-a-model');
    });

    s.step('a URL the server has no file at: said so, and the tiny model stays', async (c) => {
      const outcome = await failedLoad(() => loadUrl('models/no-such-model.gguf'));
      c.ok(outcome.message === 'The server has no file at this address (HTTP 404 Not Found)',
        'the message says the server has no such file', outcome.message);
      c.ok(/no-such-model\.gguf: HTTP 404/.test(outcome.detail ?? ''), 'the detail names the URL and the status',
        outcome.detail);
      await keptWhatWorks(c, '404', outcome);
    });

    s.step('a .gguf cut short: said so (how much is there, how much it needs), and the tiny model stays', async (c) => {
      const whole = readFileSync(tinyFile);
      const cut = Math.floor(whole.length * 0.6);
      const outcome = await failedLoad(() => s.page.getByTestId('model-file-input').setInputFiles({
        name: 'truncated.gguf', mimeType: 'application/octet-stream', buffer: whole.subarray(0, cut),
      }));
      const words = /^This file is incomplete: it ends at ([\d,]+) of the ([\d,]+) bytes its tensor index needs — download it again$/
        .exec(outcome.message ?? '');
      const [at, needs] = words ? [words[1], Number(words[2].replaceAll(',', ''))] : [];
      c.ok(words && at === grouped(cut) && needs > cut && needs <= whole.length,
        `the message says it ends at ${grouped(cut)} bytes of the more its tensor index needs`, outcome.message);
      c.ok(/GGUF file is incomplete/.test(outcome.detail ?? ''), 'the detail has the technical text', outcome.detail);
      await keptWhatWorks(c, 'truncated', outcome);
      await s.shot('truncated');
    });
  });
}
