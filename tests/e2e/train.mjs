// Fine-tuning in the page, on the tiny model (CPU backend): a dataset made in the Magpie view trains a LoRA adapter
// whose loss series appears in the plot and falls; the adapter shows up in the Adapters panel and changes the reply;
// it exports as a PEFT zip and a GGUF; a run paused after its first step resumes from its checkpoint to the end; the
// Compare view shows per-token KL between the base and the tuned model, and between a teacher model (the tiny
// model's f32 twin) and the loaded student; and a paused run's checkpoint, kept in OPFS, is offered after a reload
// and resumes from the list.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ask, env, setGreedy, suite, tinyPageUrl, waitForModel } from './lib.mjs';

const RUN_TIMEOUT = 5 * 60_000;
const QUESTION = 'Name the three primary colors.';

async function setNumber(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}

const trainState = (page) => page.getByTestId('train-status').getAttribute('data-state');

async function waitForTrainState(page, pattern, timeout = RUN_TIMEOUT) {
  await page.waitForFunction((source) => new RegExp(source).test(
    document.querySelector('[data-testid=train-status]')?.dataset.state ?? ''), pattern.source, { timeout, polling: 100 });
  return trainState(page);
}

const lossSeries = async (page) => JSON.parse(await page.getByTestId('train-loss').getAttribute('data-values'));

async function setRun(page, { name, epochs }) {
  await page.getByTestId('train-name').fill(name);
  await page.getByTestId('train-name').dispatchEvent('change');
  await setNumber(page, 'train-epochs', epochs);
  await setNumber(page, 'train-batch', 2);
  await setNumber(page, 'train-lr', 0.02);
  await setNumber(page, 'train-rank', 4);
  await setNumber(page, 'train-val', 0.25);
  await setNumber(page, 'train-checkpoint-every', 2);
  await setNumber(page, 'train-max-len', 96);
}

export function register({ webgpu }) {
  suite('fine-tuning and comparing on the tiny model', { slug: 'train', browser: webgpu }, (s) => {
    let base;

    s.step('a dataset made in the Magpie view', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ backend: 'cpu' }));
      c.must(/ready/.test(await waitForModel(page)), 'the tiny model loads');
      await setGreedy(page, 12);
      base = await ask(page, QUESTION);
      await page.getByTestId('nav-magpie').click();
      for (const [id, v] of [['magpie-n', 8], ['magpie-batch', 4], ['magpie-seed', 3], ['magpie-ins-max-tokens', 10], ['magpie-max-tokens', 14]]) {
        await setNumber(page, id, v);
      }
      await page.getByTestId('magpie-start').click();
      await page.waitForFunction(() => /^done/.test(document.querySelector('[data-testid=magpie-progress]')?.dataset.status ?? ''),
        null, { timeout: RUN_TIMEOUT, polling: 100 });
      c.must(await page.getByTestId('magpie-row').count() === 8, 'the Magpie run makes 8 rows');
    });

    s.step('an imported file with bad lines: they are named, and the user skips them or drops the file', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-train').click();
      const good = (i) => JSON.stringify({ instruction: `Say hello number ${i}.`, input: '', output: `Hello ${i}.` });
      const file = { name: 'mixed.jsonl', mimeType: 'application/json',
        buffer: Buffer.from([good(1), '{"instruction": "cut off', good(2), 'not json at all'].join('\n')) };
      await page.getByTestId('train-import').setInputFiles(file);
      await page.getByTestId('train-import-bad').waitFor({ timeout: 10_000 });
      const said = await page.getByTestId('train-import-bad').textContent();
      c.ok(/2 line\(s\)/.test(said) && /line 2/.test(said) && /line 4/.test(said), 'the bad lines are counted and named', said);
      await page.getByTestId('train-import-stop').click();
      c.must(await page.getByTestId('train-dataset').inputValue() === 'magpie', 'dropped: the Magpie dataset stays chosen');
      await page.getByTestId('train-import').setInputFiles(file);
      await page.getByTestId('train-import-skip').click();
      c.must(await page.getByTestId('train-dataset').inputValue() === 'imported', 'skipped: the good rows are chosen');
      const label = await page.locator('[data-testid=train-dataset] option[value=imported]').textContent();
      c.ok(/mixed\.jsonl \(2 rows\)/.test(label), 'the two good rows are kept', label);
      await page.getByTestId('train-dataset').selectOption('magpie');
    });

    s.step('training on it: the loss series appears and falls; the adapter joins the Adapters panel', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-train').click();
      c.ok(/Magpie dataset \(8 rows\)/.test(await page.getByTestId('train-dataset').textContent()), 'the Magpie dataset is offered');
      await setRun(page, { name: 'tiny-adapter', epochs: 3 });
      const t0 = Date.now();
      await page.getByTestId('train-start').click();
      const state = await waitForTrainState(page, /^(done|failed)/);
      c.note(`trained in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      c.must(state === 'done', 'the run ends done', `${state}: ${await page.getByTestId('train-status').textContent()}`);
      const { train, val } = await lossSeries(page);
      // 8 rows: 2 held out, 6 in batches of 2 → 3 steps an epoch, 9 in all.
      c.ok(train.length === 9 && train.every(([step], i) => step === i + 1), 'the plot has a loss for each of the 9 steps',
        JSON.stringify(train));
      const mean = (xs) => xs.reduce((a, [, l]) => a + l, 0) / xs.length;
      c.ok(mean(train.slice(6)) < mean(train.slice(0, 3)), 'the last epoch\'s losses are below the first\'s (the same examples)',
        JSON.stringify(train.map(([, l]) => l.toFixed(3))));
      c.ok(val.length >= 4, 'validation losses at the checkpoints', JSON.stringify(val));
      c.ok(/tiny-adapter/.test(await page.getByTestId('train-done').textContent()), 'the page says where the adapter is');
      const item = page.locator('[data-testid=lora-item][data-name=tiny-adapter]');
      await item.waitFor({ timeout: 10_000 });
      c.ok(await item.getByTestId('lora-toggle').isChecked(), 'the adapter is in the Adapters panel, switched on');
    });

    s.step('the tuned model answers differently; switched off it is the base again', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-chat').click();
      // Each question in a chat of its own: a reply depends on the conversation before it.
      await page.getByTestId('new-chat').click();
      const tuned = await ask(page, QUESTION);
      c.ok(tuned.state === 'done' && tuned.text !== base.text, 'the reply with the adapter differs from the base\'s',
        `base: ${JSON.stringify(base.text)}\n     tuned: ${JSON.stringify(tuned.text)}`);
      await page.locator('[data-testid=lora-item][data-name=tiny-adapter]').getByTestId('lora-toggle').uncheck();
      await page.getByTestId('new-chat').click();
      const off = await ask(page, QUESTION);
      c.ok(off.text === base.text, 'switched off, the reply is the base\'s again', `${JSON.stringify(off.text)} vs ${JSON.stringify(base.text)}`);
      await page.locator('[data-testid=lora-item][data-name=tiny-adapter]').getByTestId('lora-toggle').check();
    });

    s.step('the adapter exports as a PEFT zip and as a GGUF', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-train').click();
      const [zip] = await Promise.all([page.waitForEvent('download'), page.getByTestId('train-export-peft').click()]);
      const zipBytes = readFileSync(await zip.path());
      c.ok(zip.suggestedFilename() === 'tiny-adapter-peft.zip' && zipBytes.subarray(0, 2).toString() === 'PK'
        && zipBytes.includes('adapter_config.json') && zipBytes.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'),
      'a zip with the PEFT folder', `${zip.suggestedFilename()}, ${zipBytes.length} bytes`);
      const [gguf] = await Promise.all([page.waitForEvent('download'), page.getByTestId('train-export-gguf').click()]);
      const ggufBytes = readFileSync(await gguf.path());
      c.ok(ggufBytes.subarray(0, 4).toString() === 'GGUF' && ggufBytes.includes('blk.0.attn_q.weight.lora_a'),
        'a GGUF LoRA', `${gguf.suggestedFilename()}, ${ggufBytes.length} bytes`);
    });

    s.step('Pause after the first step keeps a checkpoint; Resume runs to the end', async (c) => {
      const { page } = s;
      await setRun(page, { name: 'paused-run', epochs: 4 });
      await page.getByTestId('train-start').click();
      // Pause from inside the page as soon as the first step is plotted, so the pause falls early.
      await page.evaluate(() => new Promise((resolve) => {
        const check = () => {
          const values = JSON.parse(document.querySelector('[data-testid=train-loss]')?.dataset.values ?? '{"train":[]}');
          if (!values.train.length) return false;
          document.querySelector('[data-testid=train-pause]')?.click();
          return true;
        };
        if (check()) return resolve();
        const observer = new MutationObserver(() => check() && (observer.disconnect(), resolve()));
        observer.observe(document.body, { childList: true, subtree: true, attributes: true });
      }));
      c.must(await waitForTrainState(page, /^(paused|done|failed)/) === 'paused', 'the run pauses');
      const before = (await lossSeries(page)).train.length;
      c.ok(before >= 1 && before < 12, 'it stopped early', `${before} steps`);
      const checkpoint = page.locator('[data-testid=train-checkpoint][data-name=paused-run]');
      await checkpoint.waitFor({ timeout: 10_000 });
      c.ok(Number(await checkpoint.getAttribute('data-step')) === before, 'its checkpoint is listed at the step it stopped',
        `${await checkpoint.getAttribute('data-step')} vs ${before}`);
      await page.getByTestId('train-resume').click();
      c.must(await waitForTrainState(page, /^(done|failed)/) === 'done', 'the resumed run ends done');
      const { train } = await lossSeries(page);
      c.ok(train.length === 12 && train.every(([step], i) => step === i + 1), 'the curve runs on from where it stopped to step 12',
        JSON.stringify(train.map(([s]) => s)));
    });

    s.step('Compare shows per-token KL between the base and the tuned model', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-compare').click();
      const adapterId = await page.locator('[data-testid=lora-item][data-name=tiny-adapter]').getAttribute('data-id');
      await page.getByTestId('compare-side-1').selectOption(adapterId);
      await page.getByTestId('compare-instructions').fill(QUESTION);
      await setNumber(page, 'compare-max-tokens', 8);
      await page.getByTestId('compare-run').click();
      await page.waitForFunction(() => document.querySelectorAll('[data-testid=compare-answer]').length === 2,
        null, { timeout: 60_000, polling: 100 });
      await page.waitForFunction(() => document.querySelector('[data-testid=compare-kl]')?.dataset.value, null, { timeout: 10_000 });
      const kl = Number(await page.getByTestId('compare-kl').getAttribute('data-value'));
      c.ok(kl > 0 && Number.isFinite(kl), 'the mean KL between base and tuned is positive', String(kl));
      const kls = await page.getByTestId('compare-token').evaluateAll((els) => els.map((e) => Number(e.dataset.kl)));
      c.ok(kls.length > 0 && kls.every((k) => k >= 0), 'every token carries its KL', JSON.stringify(kls));
      await page.getByTestId('compare-token').first().click();
      c.ok(/KL/.test(await page.getByTestId('compare-detail').textContent()), 'a token opens both sides\' candidates');
    });

    s.step('a teacher model beside the student: it answers as the CLI does, KL per token, it judges; a missing one is named', async (c) => {
      const { page } = s;
      await page.getByTestId('compare-side-0').selectOption('teacher');
      await page.getByTestId('compare-teacher').fill(env('TINY_TEACHER_URL'));
      await page.getByTestId('compare-teacher').dispatchEvent('change');
      await page.getByTestId('compare-side-1').selectOption('base');
      await page.getByTestId('compare-judge').selectOption('teacher');
      await page.getByTestId('compare-run').click();
      await page.waitForFunction(() => document.querySelectorAll('[data-testid=compare-answer]').length === 2
        && document.querySelectorAll('[data-testid=compare-score]').length === 2
        && document.querySelector('[data-testid=compare-kl]')?.dataset.value, null, { timeout: 60_000, polling: 100 });
      const judged = await page.getByTestId('compare-scores').textContent();
      c.ok(/2 answers judged/.test(judged), 'the teacher judged both answers (ch. 7\'s 0–100 prompt)', judged);
      const teacherTokens = await page.locator('[data-testid=compare-answer][data-side=A] [data-testid=compare-token]')
        .evaluateAll((els) => els.map((e) => Number(e.dataset.token)));
      const args = ['generate', '--backend', 'cpu', '--model', env('TINY_TEACHER_FILE'), '--prompt', QUESTION,
        '--max-tokens', '8', '--temperature', '0', '--repeat-penalty', '1', '--json'];
      const expected = JSON.parse(execFileSync(env('AVIARY_BIN'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).tokens;
      c.must(JSON.stringify(teacherTokens) === JSON.stringify(expected), 'side A is the teacher: its greedy answer is the CLI\'s',
        `${JSON.stringify(teacherTokens)} vs ${JSON.stringify(expected)}`);
      const kl = Number(await page.getByTestId('compare-kl').getAttribute('data-value'));
      c.ok(kl > 0 && Number.isFinite(kl), 'an f32 teacher and its Q8_0 student part a little (KL > 0)', String(kl));

      await page.getByTestId('compare-teacher').fill('models/no-such-teacher.gguf');
      await page.getByTestId('compare-teacher').dispatchEvent('change');
      await page.getByTestId('compare-run').click();
      await page.waitForFunction(() => document.querySelector('.compare [role=alert]'), null, { timeout: 30_000, polling: 100 });
      const error = await page.locator('.compare [role=alert]').textContent();
      c.ok(/404|not found/i.test(error), 'a teacher that is not there is named as such', error);
      c.must(await page.getByTestId('compare-run').isEnabled(), 'the student stays loaded and ready');
      await page.getByTestId('compare-judge').selectOption('none');
      await page.getByTestId('compare-side-0').selectOption('base');
    });

    s.step('a checkpoint survives a reload and resumes from the list', async (c) => {
      const { page } = s;
      await page.getByTestId('nav-train').click();
      await setRun(page, { name: 'reload-run', epochs: 4 });
      await page.getByTestId('train-start').click();
      await page.waitForFunction(() => JSON.parse(document.querySelector('[data-testid=train-loss]')?.dataset.values
        ?? '{"train":[]}').train.length >= 2, null, { timeout: RUN_TIMEOUT, polling: 50 });
      await page.getByTestId('train-pause').click();
      c.must(await waitForTrainState(page, /^(paused|done|failed)/) === 'paused', 'the run pauses');
      await page.reload();
      c.must(/ready/.test(await waitForModel(page)), 'the model loads again after the reload');
      await page.getByTestId('nav-train').click();
      const entry = page.locator('[data-testid=train-checkpoint][data-name=reload-run]');
      await entry.waitFor({ timeout: 10_000 });
      const step = Number(await entry.getAttribute('data-step'));
      c.ok(step >= 2 && step < 12, 'the stored checkpoint is offered after the reload', String(step));
      await entry.getByTestId('train-checkpoint-resume').click();
      c.must(await waitForTrainState(page, /^(done|failed)/) === 'done', 'resumed from the list, the run ends done');
      const { train } = await lossSeries(page);
      c.ok(train.length === 12 && train[train.length - 1][0] === 12, 'the curve, restored from the checkpoint, runs to step 12',
        JSON.stringify(train.map(([s]) => s)));
      c.ok(await page.locator('[data-testid=lora-item][data-name=reload-run]').count() === 1, 'its adapter joins the panel');
    });
  });
}
