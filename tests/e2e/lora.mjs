// LoRA adapters in the chat, on the real default model (SmolLM2-135M) with a real adapter for it
// (tests/fixtures/lora/smollm2/adapter.gguf, which changes its greedy answers a lot), on the CPU backend, whose
// answers equal the CLI's bit for bit: an adapter loaded by URL is listed in the Adapters panel and in storage; a
// greedy reply with it equals `aviary generate --lora`; switched off, the reply is the base model's; at scale 0.5 it
// is `--lora PATH:0.5`'s, with nothing reloaded; each reply names the adapters it was made with; a broken adapter is
// refused in plain words while the model and the loaded adapter go on answering; loading the model again loads the
// adapter again for it, as it was set; an adapter picked from disk loads too, and Remove drops it.
//
// Environment (scripts/e2e-test.sh): LORA_FILE (the adapter), LORA_URL (it, relative to the page), LORA_DIR (the
// served folder it is in, where this suite writes a broken one), AVIARY_BIN (the CLI, for the expected answers),
// MODEL_FILE, PROMPT, SERVE_LOG.

import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { ask, env, loadAnew, pageUrl, setGreedy, suite, versus, waitForModel } from './lib.mjs';

const prompt = env('PROMPT');
const TOKENS = 16;
const loraFile = env('LORA_FILE');
const loraName = basename(loraFile);
const brokenName = 'truncated-adapter.gguf';

/** `aviary generate --backend cpu` on the default model, greedy, with `extra` arguments: its reply's text. */
async function cli(extra = []) {
  const args = ['generate', '--backend', 'cpu', '--model', env('MODEL_FILE'), '--prompt', prompt,
    '--max-tokens', String(TOKENS), '--temperature', '0', '--repeat-penalty', '1', '--json', ...extra];
  const { stdout } = await promisify(execFile)(env('AVIARY_BIN'), args, { maxBuffer: 1 << 20 });
  return JSON.parse(stdout).text;
}

const adapterRequests = () =>
  readFileSync(env('SERVE_LOG'), 'utf8').split('\n').filter((l) => l.includes(`/lora/${loraName}`));

export function register({ webgpu }) {
  suite('LoRA adapters on the default model', { slug: 'lora', browser: webgpu }, (s) => {
    const expected = {};
    const items = () => s.page.getByTestId('lora-item');
    const lastMeta = () => s.page.getByTestId('message-assistant').last().locator('.meta').textContent();
    /** A greedy reply to PROMPT in a new chat (so the conversation is PROMPT alone, as the CLI's). */
    const askAnew = async () => {
      await s.page.getByTestId('new-chat').click();
      return ask(s.page, prompt);
    };
    let itemId;

    s.step('an adapter loaded by URL is listed with its kind and rank, and kept in storage as an adapter', async (c) => {
      const { page } = s;
      const answers = Promise.all([cli(), cli(['--lora', loraFile]), cli(['--lora', `${loraFile}:0.5`])]);
      await page.goto(pageUrl({ backend: 'cpu' }));
      const status = await waitForModel(page);
      c.must(/ready/.test(status) && /CPU/.test(status), 'the default model loads on the CPU backend', status);
      [expected.base, expected.full, expected.half] = await answers;
      c.note(`cli: base ${JSON.stringify(expected.base)}, --lora ${JSON.stringify(expected.full)}, ` +
        `:0.5 ${JSON.stringify(expected.half)}`);
      c.must(new Set(Object.values(expected)).size === 3, 'the CLI\'s three answers differ (the test can tell them apart)');
      await page.getByTestId('lora-url-input').fill(env('LORA_URL'));
      await page.getByTestId('lora-load').click();
      await items().first().waitFor({ timeout: 60_000 });
      itemId = await items().first().getAttribute('data-id');
      const detail = await items().first().getByTestId('lora-detail').textContent();
      c.ok(await items().count() === 1 && await items().first().getAttribute('data-name') === loraName,
        'one lora-item, named after the file', `${await items().count()} items: ${detail}`);
      c.ok(/GGUF/.test(detail) && /rank 8/.test(detail), 'its kind and rank are shown', detail);
      c.ok(await items().first().getByTestId('lora-toggle').isChecked(), 'it is switched on');
      c.ok(await items().first().getByTestId('lora-scale-value').textContent() === '×1.00', 'at scale 1');
      const stored = page.locator(`[data-testid=storage-entry][data-url$="/lora/${loraName}"]`);
      await stored.waitFor({ timeout: 30_000 }).catch(() => {});
      c.ok(await stored.getAttribute('data-adapter').catch(() => null) === 'true' &&
        /LoRA adapter/.test(await stored.getByTestId('storage-entry-detail').textContent().catch(() => '')),
      'the storage panel lists its file, marked as an adapter');
      await s.shot('loaded');
    });

    s.step('a greedy reply with the adapter equals `aviary generate --lora` and names it', async (c) => {
      await setGreedy(s.page, TOKENS);
      const reply = await askAnew();
      c.ok(reply.state === 'done' && reply.text === expected.full, 'the reply equals `aviary generate --backend cpu --lora`',
        `${versus(reply.text, expected.full)} (${reply.state})`);
      const meta = await lastMeta();
      c.ok(meta.includes(`LoRA: ${loraName} ×1.00`), 'its stats line names the adapter and scale', meta);
      const card = await s.page.getByTestId('model-lora').textContent();
      c.ok(card === `${loraName} ×1.00`, 'the model card names the adapter and scale', card);
    });

    s.step('switched off, the reply is the base model\'s (`aviary generate` without --lora)', async (c) => {
      await items().first().getByTestId('lora-toggle').uncheck();
      const reply = await askAnew();
      c.ok(reply.state === 'done' && reply.text === expected.base, 'the reply equals `aviary generate --backend cpu`',
        `${versus(reply.text, expected.base)} (${reply.state})`);
      const meta = await lastMeta();
      c.ok(!/LoRA/.test(meta), 'its stats line names no adapter', meta);
      c.ok(await s.page.getByTestId('model-lora').textContent() === 'none', 'the model card says none');
    });

    s.step('on again at scale 0.5: the reply equals `--lora PATH:0.5`, with nothing reloaded', async (c) => {
      const { page } = s;
      const requestsBefore = adapterRequests().length;
      await items().first().getByTestId('lora-toggle').check();
      await items().first().getByTestId('lora-scale').evaluate((el) => {
        el.value = '0.5';
        el.dispatchEvent(new Event('input', { bubbles: true }));
      });
      c.ok(await items().first().getByTestId('lora-scale-value').textContent() === '×0.50', 'the slider shows 0.50');
      const reply = await askAnew();
      c.ok(reply.state === 'done' && reply.text === expected.half, 'the reply equals `aviary generate --backend cpu --lora PATH:0.5`',
        `${versus(reply.text, expected.half)} (${reply.state})`);
      c.ok((await lastMeta()).includes(`LoRA: ${loraName} ×0.50`), 'its stats line says ×0.50', await lastMeta());
      c.ok(await items().first().getAttribute('data-id') === itemId && adapterRequests().length === requestsBefore,
        'the adapter was not loaded again (same id, no request for its file)',
        `id ${itemId} → ${await items().first().getAttribute('data-id')}; ` +
        `${adapterRequests().length - requestsBefore} new requests`);
      // The first conversation's reply keeps the label it was made with.
      await page.getByTestId('conversation-item').last().locator('.conversation-open').click();
      await page.waitForFunction((label) =>
        document.querySelector('[data-testid=message-assistant] .meta')?.textContent.includes(label),
      `×1.00`, { timeout: 10_000 }).catch(() => {});
      const first = await lastMeta();
      c.ok(first.includes(`LoRA: ${loraName} ×1.00`), 'an older reply keeps the adapter and scale it was made with', first);
      await s.shot('half');
    });

    s.step('a broken adapter is refused in plain words; the model and the loaded adapter still answer', async (c) => {
      const { page } = s;
      // The real adapter cut short: a valid header whose tensors run past the end of the file.
      writeFileSync(join(env('LORA_DIR'), brokenName), readFileSync(loraFile).subarray(0, 64 * 1024));
      await page.getByTestId('lora-url-input').fill(env('LORA_URL').replace(loraName, brokenName));
      await page.getByTestId('lora-load').click();
      const error = page.getByTestId('lora-error');
      await error.waitFor({ timeout: 60_000 });
      const text = await error.textContent();
      c.ok(text.includes(brokenName) && /truncated/.test(text), 'the panel names the file and the problem', text);
      c.ok(await items().count() === 1, 'the loaded adapter stays listed', `${await items().count()} items`);
      c.ok(/ready/.test(await page.getByTestId('model-status').textContent()), 'the model is still ready');
      const reply = await askAnew();
      c.ok(reply.state === 'done' && reply.text === expected.half, 'the chat still answers, with the adapter at 0.5',
        `${versus(reply.text, expected.half)} (${reply.state})`);
      await s.shot('broken');
    });

    s.step('a model loaded anew gets the adapter loaded again for it, switch and scale kept', async (c) => {
      const { page } = s;
      const status = await loadAnew(page, () => page.getByTestId('model-load').click());
      c.must(/ready/.test(status), 'the model loads again', status);
      await page.waitForFunction((old) => {
        const item = document.querySelector('[data-testid=lora-item]');
        return item && item.dataset.status === 'ready' && item.dataset.id !== old;
      }, itemId, { timeout: 60_000 });
      c.ok(await items().count() === 1 && await items().first().getByTestId('lora-toggle').isChecked() &&
        await items().first().getByTestId('lora-scale-value').textContent() === '×0.50',
      'the adapter is listed again, fitted to the new model (a new id), still on at ×0.50');
      const reply = await askAnew();
      c.ok(reply.state === 'done' && reply.text === expected.half, 'the reply applies it: `--lora PATH:0.5`\'s again',
        `${versus(reply.text, expected.half)} (${reply.state})`);
    });

    s.step('an adapter picked from disk loads beside it, switched on at scale 1; Remove drops it', async (c) => {
      const { page } = s;
      await page.getByTestId('lora-file-input').setInputFiles(loraFile);
      await items().nth(1).waitFor({ timeout: 60_000 });
      const picked = items().nth(1);
      c.ok(await picked.getAttribute('data-name') === loraName && await picked.getByTestId('lora-toggle').isChecked() &&
        await picked.getByTestId('lora-scale-value').textContent() === '×1.00', 'the picked adapter is listed, on, at ×1.00');
      c.ok((await page.getByTestId('model-lora').textContent()).includes(`${loraName} ×1.00`),
        'the model card names both adapters', await page.getByTestId('model-lora').textContent());
      await picked.getByTestId('lora-remove').click();
      await page.waitForFunction(() => document.querySelectorAll('[data-testid=lora-item]').length === 1, null,
        { timeout: 10_000 }).catch(() => {});
      c.ok(await items().count() === 1 && await page.getByTestId('model-lora').textContent() === `${loraName} ×0.50`,
        'Remove drops it (the first adapter stays, at ×0.50)', await page.getByTestId('model-lora').textContent());
    });
  });
}
