// The data views: Magpie runs, the dataset table and its storage, export and import, and instruction synthesis. The
// UI's flows run on the tiny model on the CPU backend (`?backend=cpu`), whose rows are the same on any machine; the
// last steps load the real default model, once, check that the Magpie view writes exactly the rows that
// `aviary magpie --backend cpu` wrote with the same model, settings, seed and batch (EXPECTED_MAGPIE_JSONL), and run
// synthesis, whose request to the model (instructions and a chunk) does not fit the tiny model's 256 positions.
//
// A Magpie row depends only on its sample index, the seed and the settings, so a paused and resumed run must end
// with the rows of an uninterrupted one, in the same order.

import { readFileSync, writeFileSync } from 'node:fs';
import { ask, env, pageUrl, suite, tinyPageUrl, versus, waitForModel } from './lib.mjs';

const RUN_TIMEOUT = 5 * 60_000;
// Small, so the tiny model makes the rows in a few seconds; N spans several batches, so a pause falls mid-run.
const TINY_RUN = { n: 12, batch: 3, seed: 5, insMaxTokens: 12, maxTokens: 16 };
// As scripts/e2e-test.sh asks `aviary magpie` for EXPECTED_MAGPIE_JSONL.
const CLI_RUN = { n: 3, batch: 2, seed: 7, insMaxTokens: 24, maxTokens: 32 };

async function setNumber(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}

async function setRun(page, { n, batch, seed, insMaxTokens, maxTokens }) {
  await setNumber(page, 'magpie-n', n);
  await setNumber(page, 'magpie-batch', batch);
  await setNumber(page, 'magpie-seed', seed);
  await setNumber(page, 'magpie-ins-max-tokens', insMaxTokens);
  await setNumber(page, 'magpie-max-tokens', maxTokens);
}

/** The table's rows as the page shows them, in its order. */
const tableRows = (page) => page.getByTestId('magpie-row').evaluateAll((els) => els.map((e) => ({
  id: e.dataset.id,
  index: e.dataset.index,
  instruction: e.querySelector('[data-testid=magpie-row-instruction]').textContent,
  response: e.querySelector('[data-testid=magpie-row-response]').textContent,
})));

const runStatus = (page) => page.getByTestId('magpie-progress').getAttribute('data-status');

/** Waits until the Magpie run is over (done, paused or failed) and returns its status. */
async function waitForRunEnd(page, timeout = RUN_TIMEOUT) {
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid=magpie-progress]')?.dataset.status ?? '';
    return /^(done|paused|failed|idle)/.test(s);
  }, null, { timeout, polling: 100 });
  return runStatus(page);
}

/** The rows as the app keeps them in IndexedDB (app/src/datasets.rs): JSON strings keyed by row id. */
const savedRows = (page) => page.evaluate(() => new Promise((resolve, reject) => {
  const open = indexedDB.open('aviary-datasets', 1);
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const tx = open.result.transaction('rows', 'readonly');
    const all = tx.objectStore('rows').getAll();
    tx.oncomplete = () => {
      open.result.close();
      resolve(all.result.map((r) => JSON.parse(r)));
    };
    tx.onerror = () => reject(tx.error);
  };
}));

const brief = (rows) => rows.map((r) => ({ id: r.id, instruction: r.instruction, response: r.response }));
const same = (a, b) => JSON.stringify(brief(a)) === JSON.stringify(brief(b));

async function clearDataset(page) {
  if (await page.getByTestId('magpie-row').count() === 0) return;
  await page.getByTestId('magpie-clear').click();
  await page.getByTestId('magpie-clear-confirm').click();
  await page.waitForFunction(() => !document.querySelector('[data-testid=magpie-row]'), null, { timeout: 10_000 });
}

/** Clicks Pause as soon as the first row shows, from inside the page, so the pause falls early in the run. */
const pauseAtFirstRow = (page) => page.evaluate(() => new Promise((resolve) => {
  const check = () => {
    if (!document.querySelector('[data-testid=magpie-row]')) return false;
    document.querySelector('[data-testid=magpie-stop]')?.click();
    return true;
  };
  if (check()) return resolve();
  const observer = new MutationObserver(() => {
    if (check()) {
      observer.disconnect();
      resolve();
    }
  });
  observer.observe(document.body, { childList: true, subtree: true });
}));

export function register({ webgpu }) {
  suite('Magpie and synthesis', { slug: 'magpie', browser: webgpu }, (s) => {
    let uninterrupted;
    let exported;

    s.step('the tiny model loads on the CPU; the Magpie view derives its pre-query template', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ backend: 'cpu' }));
      const status = await waitForModel(page);
      c.must(/ready/.test(status), 'the tiny model loads', status);
      await page.getByTestId('nav-magpie').click();
      c.ok(await page.getByTestId('magpie-panel').isVisible() && !(await page.getByTestId('chat-input').isVisible()),
        'the Magpie tab shows the Magpie view instead of the chat');
      await page.waitForFunction(() => document.querySelector('[data-testid=magpie-template]')?.value.length > 0, null,
        { timeout: 10_000 });
      const template = await page.getByTestId('magpie-template').inputValue();
      c.ok(/user/.test(template), 'the pre-query template is derived from the chat template', JSON.stringify(template));
      c.ok(await page.getByTestId('magpie-row').count() === 0, 'a fresh profile has no rows');
    });

    s.step('a run of N rows, B at a time, makes N well-formed rows in sample order', async (c) => {
      const { page } = s;
      await setRun(page, TINY_RUN);
      const t0 = Date.now();
      await page.getByTestId('magpie-start').click();
      const status = await waitForRunEnd(page);
      c.note(`${TINY_RUN.n} rows in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      c.must(status === 'done', 'the run ends done', status);
      uninterrupted = await tableRows(page);
      c.ok(uninterrupted.length === TINY_RUN.n, `the table has N = ${TINY_RUN.n} rows`, `${uninterrupted.length} rows`);
      c.ok(uninterrupted.every((r, i) => r.index === String(i)), 'the rows are in sample order, 0 to N-1',
        JSON.stringify(uninterrupted.map((r) => r.index)));
      c.ok(new Set(uninterrupted.map((r) => r.id)).size === uninterrupted.length && uninterrupted.every((r) => /^[0-9a-f]{16}$/.test(r.id)),
        'each row has its own 16-hex-digit id', JSON.stringify(uninterrupted.map((r) => r.id)));
      const progress = await page.getByTestId('magpie-progress-text').textContent();
      c.ok(new RegExp(`^${TINY_RUN.n} / ${TINY_RUN.n} rows`).test(progress) && /rows\/min/.test(progress) && /tokens\/s/.test(progress),
        'the progress says N of N rows, rows per minute and tokens per second', progress);
      await page.waitForTimeout(800); // the batched write
      const saved = await savedRows(page);
      const byId = new Map(saved.map((r) => [r.id, r]));
      const wellFormed = uninterrupted.every((r) => {
        const row = byId.get(r.id);
        const cfg = row?.gen_input_configs;
        return row && row.conversations.length === 2 && row.conversations[0].from === 'human' &&
          row.conversations[1].from === 'gpt' && row.conversations[0].value === row.instruction &&
          row.conversations[1].value === row.response && row.instruction === r.instruction &&
          row.response === r.response && cfg?.seed === TINY_RUN.seed && cfg?.sample_index === Number(r.index) &&
          cfg?.pre_query_template.length > 0 && cfg?.engine_version.startsWith('aviary');
      });
      c.ok(saved.length === TINY_RUN.n && wellFormed,
        'the stored rows are well formed: human then gpt turns mirrored in instruction and response, and their configs',
        JSON.stringify(saved[0]));
      c.ok(uninterrupted.some((r) => r.instruction.length > 0 && r.response.length > 0),
        'the rows have instructions and responses', JSON.stringify(brief(uninterrupted).slice(0, 3)));
      await s.shot('run');
    });

    s.step('pause, then resume with the Chat view open: the run completes with the uninterrupted run\'s rows', async (c) => {
      const { page } = s;
      await clearDataset(page);
      await page.getByTestId('magpie-start').click();
      await pauseAtFirstRow(page);
      const status = await waitForRunEnd(page);
      c.must(status === 'paused', 'Pause stops the run (paused)', status);
      await page.waitForTimeout(300); // rows the worker finished before it heard the pause
      const paused = await tableRows(page);
      c.note(`paused with ${paused.length} of ${TINY_RUN.n} rows`);
      c.ok(paused.length > 0 && paused.length < TINY_RUN.n, 'the paused run kept the rows made so far, fewer than N',
        `${paused.length} of ${TINY_RUN.n}`);
      c.ok(await page.getByTestId('magpie-resume').isVisible(), 'Resume is offered');
      await page.getByTestId('magpie-resume').click();
      await page.getByTestId('nav-chat').click();
      c.ok(await page.getByTestId('chat-input').isVisible() && !(await page.getByTestId('magpie-panel').isVisible()),
        'the Chat view is open while the run goes on');
      const end = await waitForRunEnd(page);
      c.ok(end === 'done', 'the resumed run finishes with the Chat view open', end);
      await page.getByTestId('nav-magpie').click();
      const resumed = await tableRows(page);
      c.ok(same(resumed, uninterrupted), 'the paused and resumed run has the uninterrupted run\'s rows, in order',
        versus(brief(resumed), brief(uninterrupted)));
    });

    s.step('a reload keeps the dataset', async (c) => {
      const { page } = s;
      await page.waitForTimeout(800); // the batched write
      await page.reload();
      await waitForModel(page, { timeout: 60_000 });
      await page.getByTestId('nav-magpie').click();
      await page.getByTestId('magpie-row').nth(TINY_RUN.n - 1).waitFor({ timeout: 30_000 });
      const restored = await tableRows(page);
      c.ok(same(restored, uninterrupted), 'after a reload the table has the same rows, in order',
        versus(brief(restored), brief(uninterrupted)));
      c.ok(await runStatus(page) === 'done', 'the finished run is not offered for resuming', await runStatus(page));
    });

    s.step('export ShareGPT, clear, import: the same rows; malformed lines are named', async (c) => {
      const { page } = s;
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('magpie-export').click()]);
      const name = download.suggestedFilename();
      c.ok(/^magpie-\d{4}-\d{2}-\d{2}\.sharegpt\.jsonl$/.test(name), 'the file is named magpie-<date>.sharegpt.jsonl', name);
      exported = s.artifactPath(name);
      await download.saveAs(exported);
      const lines = readFileSync(exported, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      c.ok(lines.length === TINY_RUN.n && lines.every((l) => l.conversations?.[0]?.from === 'human' && l.gen_input_configs),
        'the export has N ShareGPT lines with their configs', `${lines.length} lines`);
      await clearDataset(page);
      await page.getByTestId('magpie-import').setInputFiles(exported);
      await page.getByTestId('magpie-row').nth(TINY_RUN.n - 1).waitFor({ timeout: 10_000 });
      const imported = await tableRows(page);
      c.ok(same(imported, uninterrupted), 'importing the export gives the same rows', versus(brief(imported), brief(uninterrupted)));
      // A file with two good lines and two bad ones (lines 2 and 4).
      const text = readFileSync(exported, 'utf8').split('\n');
      const bad = s.artifactPath('bad.jsonl');
      writeFileSync(bad, [text[0], 'this is not JSON', text[1], '{"neither": "is this"}'].join('\n') + '\n');
      await page.getByTestId('magpie-import').setInputFiles(bad);
      await page.waitForFunction(() => /bad\.jsonl/.test(document.querySelector('[data-testid=magpie-import-message]')?.textContent ?? ''),
        null, { timeout: 10_000 });
      const message = await page.getByTestId('magpie-import-message').textContent();
      c.ok(/2 malformed line\(s\) skipped: 2, 4/.test(message), 'malformed lines are named by number; the rest is imported',
        message);
      c.ok(await page.getByTestId('magpie-row').count() === TINY_RUN.n, 'good lines of known rows replace them (no duplicates)');
    });

    s.step('edit a row in place and delete one', async (c) => {
      const { page } = s;
      await page.getByTestId('magpie-row-open').first().click();
      await page.getByTestId('magpie-edit-instruction').fill('An edited <b>instruction</b>');
      await page.getByTestId('magpie-edit-save').click();
      const first = page.getByTestId('magpie-row').first();
      await page.waitForFunction(() => /edited/.test(document.querySelector('[data-testid=magpie-row-instruction]')?.textContent ?? ''),
        null, { timeout: 5_000 });
      c.ok(await first.getByTestId('magpie-row-instruction').textContent() === 'An edited <b>instruction</b>' &&
        await first.locator('b').count() === 0, 'the edit shows in the table, as text (never HTML)');
      await page.getByTestId('magpie-row-delete').click();
      c.ok(await page.getByTestId('magpie-row').count() === TINY_RUN.n - 1, 'Delete removes the row');
    });

    s.step('sort by a column, search, and a filter preset with what each filter removed', async (c) => {
      const { page } = s;
      await page.getByTestId('magpie-sort-index').click();
      await page.getByTestId('magpie-sort-index').click();
      const descending = (await tableRows(page)).map((r) => Number(r.index));
      c.ok(descending.every((v, i) => i === 0 || descending[i - 1] > v), 'clicking # twice sorts the rows descending',
        JSON.stringify(descending));
      await page.getByTestId('magpie-sort-index').click();
      const unsorted = (await tableRows(page)).map((r) => Number(r.index));
      c.ok(unsorted.every((v, i) => i === 0 || unsorted[i - 1] < v), 'a third click puts back the dataset\'s order',
        JSON.stringify(unsorted));
      // Whole characters (the tiny model writes characters beyond the BMP), from a row the edit left alone.
      const start = (text) => [...text.trim()].slice(0, 3).join('');
      const needle = uninterrupted.slice(1).map((r) => start(r.instruction)).find((t) => [...t].length === 3);
      if (needle) {
        await page.getByTestId('magpie-search').fill(needle);
        const found = await tableRows(page);
        c.ok(found.length >= 1 && found.length < TINY_RUN.n - 1 &&
          found.every((r) => `${r.instruction}\n${r.response}`.toLowerCase().includes(needle.toLowerCase())),
        'the search keeps the rows that contain the text', `${JSON.stringify(needle)}: ${found.length} rows`);
        await page.getByTestId('magpie-search').fill('');
      }
      await page.getByTestId('magpie-filter').selectOption('basic');
      const counts = await page.getByTestId('magpie-filter-count').allTextContents();
      c.ok(counts.length >= 5 && counts.every((t) => /^[a-z -]+: \d+$/.test(t)), 'the preset lists how many rows each filter removed',
        JSON.stringify(counts));
      const removed = counts.reduce((sum, t) => sum + Number(t.split(': ')[1]), 0);
      c.ok(await page.getByTestId('magpie-row').count() === TINY_RUN.n - 1 - removed, 'the table shows the rows the preset keeps',
        `${removed} removed`);
      await page.getByTestId('magpie-filter').selectOption('none');
      c.ok(await page.getByTestId('magpie-row').count() === TINY_RUN.n - 1, 'preset none shows every row');
    });

    s.step('on WebGPU the Magpie view makes well-formed rows', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ backend: 'gpu' }));
      const status = await waitForModel(page);
      c.must(/ready/.test(status) && /WebGPU/.test(status), 'the tiny model loads on WebGPU', status);
      await page.getByTestId('nav-magpie').click();
      await clearDataset(page);
      const run = { n: 4, batch: 2, seed: 9, insMaxTokens: 8, maxTokens: 8 };
      await setRun(page, run);
      const t0 = Date.now();
      await page.getByTestId('magpie-start').click();
      const end = await waitForRunEnd(page);
      c.note(`${run.n} rows in ${((Date.now() - t0) / 1000).toFixed(1)} s on WebGPU`);
      c.must(end === 'done', 'the run ends done', end);
      const rows = await tableRows(page);
      c.ok(rows.length === run.n && rows.every((r, i) => r.index === String(i) && /^[0-9a-f]{16}$/.test(r.id)),
        `N = ${run.n} rows with ids, in sample order`, JSON.stringify(rows));
      await page.waitForTimeout(800); // the batched write
      const saved = await savedRows(page);
      c.ok(saved.length === run.n && saved.every((row) => row.conversations.length === 2 &&
        row.conversations[0].from === 'human' && row.conversations[1].from === 'gpt' &&
        row.gen_input_configs?.seed === run.seed),
        'the stored rows are well formed', JSON.stringify(saved[0]));
      await clearDataset(page);
    });

    s.step('on the real default model (CPU backend) the Magpie view writes the rows `aviary magpie --backend cpu` wrote', async (c) => {
      const { page } = s;
      const expected = readFileSync(env('EXPECTED_MAGPIE_JSONL'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      await page.goto(pageUrl({ backend: 'cpu' }));
      const status = await waitForModel(page);
      c.must(/ready/.test(status), 'the default model loads on the CPU backend', status);
      await page.getByTestId('nav-magpie').click();
      await clearDataset(page);
      await page.waitForFunction(() => /SmolLM2/i.test(document.querySelector('[data-testid=magpie-model]')?.textContent ?? '') &&
        document.querySelector('[data-testid=magpie-template]')?.value.length > 0, null, { timeout: 10_000 });
      await setRun(page, CLI_RUN);
      const t0 = Date.now();
      await page.getByTestId('magpie-start').click();
      // The run takes the model for tens of seconds here: a chat or a load meanwhile is refused, and says why.
      await page.getByTestId('nav-chat').click();
      const reply = await ask(page, 'Hello?');
      const meta = await page.getByTestId('message-assistant').last().locator('.meta').textContent();
      c.ok(reply.state === 'failed' && /a Magpie run is going: pause it first/.test(meta),
        'a chat message during the run is refused, saying why', `${reply.state}: ${meta}`);
      await page.getByTestId('model-load').click();
      const notice = await page.getByTestId('model-notice').textContent();
      c.ok(/a Magpie run is going: pause it first/.test(notice) && /ready/.test(await page.getByTestId('model-status').textContent()),
        'loading a model during the run is refused, saying why; the model stays', notice);
      await page.getByTestId('nav-magpie').click();
      const end = await waitForRunEnd(page, 10 * 60_000);
      c.note(`${CLI_RUN.n} rows in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      c.must(end === 'done', 'the run ends done', end);
      const rows = await tableRows(page);
      c.ok(rows.length === expected.length && same(rows, expected),
        'the rows (ids, instructions, responses, order) equal `aviary magpie --backend cpu`\'s',
        versus(brief(rows), brief(expected)));
    });

    s.step('a synthesis run over a short pasted text shows its chunk\'s row, with its pairs', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-synth').click();
      // One chunk, and a short answer: the real model on the CPU backend prefills the request at a few tokens a second.
      const text = 'The lighthouse stands on a rock at the mouth of the bay. Its lamp turns once every ten seconds.';
      await page.getByTestId('synth-input').fill(text);
      await setNumber(page, 'synth-chunk-tokens', 64);
      await setNumber(page, 'synth-pairs', 1);
      await setNumber(page, 'synth-max-tokens', 20);
      await page.getByTestId('synth-start').click();
      await page.waitForFunction(() => /done|failed|stopped/.test(document.querySelector('[data-testid=synth-status]')?.textContent ?? ''),
        null, { timeout: RUN_TIMEOUT, polling: 100 });
      const status = await page.getByTestId('synth-status').textContent();
      c.ok(status === 'done', 'the synthesis run finishes', status);
      const rows = await page.getByTestId('synth-row').count();
      c.ok(rows === 1, 'the text\'s one chunk has a row', `${rows} rows`);
      const shown = await page.getByTestId('synth-row').evaluateAll((els) =>
        els.map((e) => ({ pairs: Number(e.dataset.pairs), unparsed: Number(e.dataset.unparsed),
          shownPairs: e.querySelectorAll('[data-testid=synth-pair]').length,
          shownUnparsed: e.querySelectorAll('[data-testid=synth-unparsed]').length })));
      c.ok(shown.every((x) => x.pairs === x.shownPairs && x.unparsed === x.shownUnparsed && x.pairs + x.unparsed > 0),
        'each chunk shows its parsed pairs and, visibly, any output that could not be parsed', JSON.stringify(shown));
      await s.shot('synth');
      const pairs = shown.reduce((n, x) => n + x.pairs, 0);
      const before = await page.getByTestId('magpie-row').count();
      await page.getByTestId('synth-add').click();
      const after = await page.getByTestId('magpie-row').count();
      c.ok(after === before + pairs, 'Add pairs to the dataset puts each pair in the Magpie table (kept in IndexedDB)',
        `${before} rows, ${pairs} pairs, then ${after} rows`);
    });
  });
}
