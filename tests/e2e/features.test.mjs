// The chat's features in the browser: a greedy answer equal to the CLI's, Regenerate (the same greedy reply again),
// the token view (each chip's candidates, the first being the token itself, the chips being the CLI's tokens), editing
// the last question, Markdown replies, conversations that survive reloads (and a reply cut short by one), deleting a
// conversation, and settings that survive reloads.

import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Checks, artifacts, ask, env, expectedText, launch, setGreedy, waitForModel } from './lib.mjs';

const t = new Checks('features');
const base = env('AVIARY_URL');
const prompt = env('PROMPT');
const maxTokens = env('MAX_TOKENS', '24');
const cli = (variable) => JSON.parse(readFileSync(env(variable), 'utf8'));

const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  t.watch(page);
  const assistant = page.getByTestId('message-assistant');
  const user = page.getByTestId('message-user');
  const items = page.getByTestId('conversation-item');
  const shot = (name) => page.screenshot({ path: join(artifacts, `features-${name}.png`), fullPage: true });

  await page.goto(base);
  const statusText = await waitForModel(page);
  if (!t.check(/ready/.test(statusText), 'the default model loads', statusText)) throw new Error('no model');
  const f16 = /shader-f16 on/.test(await page.getByTestId('model-device').textContent());
  const expected = cli(f16 ? 'EXPECTED_JSON' : 'EXPECTED_F32_JSON');
  t.check(await items.count() === 0, 'a fresh profile lists no conversations');

  // 1. The greedy answer equals the CLI's.
  await setGreedy(page, maxTokens);
  const first = await ask(page, prompt);
  t.check(first.state === 'done' && first.text === expected.text, 'the greedy reply equals `aviary generate`',
    `browser: ${JSON.stringify(first.text)}\n     cli:     ${JSON.stringify(expected.text)}`);
  t.check(await assistant.first().locator('.text.markdown').count() === 1, 'the reply is rendered as Markdown');

  // 2. Regenerate replaces the reply with the same greedy one.
  const again = await ask(page, null, { send: () => page.getByTestId('regenerate').click() });
  t.check(again.state === 'done' && again.text === first.text, 'Regenerate gives the identical greedy reply',
    JSON.stringify(again.text));
  t.check(await assistant.count() === 1 && await user.count() === 1, 'Regenerate replaced the reply (one question, one reply)');

  // 3. The token view: chips are the CLI's tokens; a chip's popup lists its candidates, itself first.
  await assistant.last().locator('xpath=..').getByTestId('show-tokens').click();
  const chips = assistant.last().getByTestId('token');
  const chipIds = (await chips.evaluateAll((els) => els.map((e) => Number(e.dataset.token))));
  t.check(JSON.stringify(chipIds) === JSON.stringify(expected.tokens), 'the token chips are the CLI\'s generated tokens',
    `chips: ${JSON.stringify(chipIds)}\n     cli:   ${JSON.stringify(expected.tokens)}`);
  await chips.first().click();
  const popup = page.getByTestId('token-candidates');
  await popup.waitFor();
  const candidates = await popup.getByTestId('token-candidate').evaluateAll((els) =>
    els.map((e) => ({ token: Number(e.dataset.token), p: Number(e.dataset.p), text: e.textContent })));
  t.check(candidates.length >= 2, 'the popup lists several candidates', JSON.stringify(candidates));
  t.check(candidates[0]?.token === chipIds[0], 'the first candidate is the token chosen (greedy)',
    `${candidates[0]?.token} vs ${chipIds[0]}`);
  t.check(candidates.every((c) => c.p > 0 && c.p <= 1), 'probabilities are in (0, 1]');
  t.check(candidates.every((c, i) => i === 0 || candidates[i - 1].p >= c.p), 'probabilities descend');
  t.check(/Probabilities/.test(await popup.textContent()), 'the popup says what the probabilities are over');
  await shot('token-popup');
  await assistant.last().locator('xpath=..').getByTestId('show-tokens').click();
  t.check(await assistant.last().locator('.text.markdown').count() === 1, 'the toggle goes back to the text');

  // 4. Edit the last question: the edited text is sent and its reply replaces the old one.
  const edited = 'Name three animals that live in the sea.';
  await page.getByTestId('edit-last').click();
  await page.getByTestId('edit-input').fill(edited);
  const afterEdit = await ask(page, null, { send: () => page.getByTestId('edit-send').click() });
  const users = await user.allTextContents();
  t.check(afterEdit.state === 'done' && afterEdit.text.length > 0 && afterEdit.text !== first.text,
    'the edited question gets a new reply', JSON.stringify(afterEdit.text));
  t.check(users.length === 1 && users[0] === edited && await assistant.count() === 1,
    'the question is replaced and so is its reply', JSON.stringify(users));

  // 5. A reply with Markdown, in a new conversation.
  await page.getByTestId('new-chat').click();
  await setGreedy(page, 80);
  const md = await ask(page, 'Show a Python hello world program in a code block.');
  t.check(md.state !== 'failed', 'a second conversation gets a reply', md.state);
  const hasCode = await assistant.last().locator('.markdown pre code').count();
  console.log(`     (markdown reply has ${hasCode} code block(s): ${JSON.stringify(md.text.slice(0, 120))})`);
  if (/```/.test(md.text)) t.check(hasCode > 0, 'a fenced code block renders as <pre><code>');
  await shot('markdown');

  // 6. A reply cut short by a reload keeps what streamed.
  await page.getByTestId('new-chat').click();
  await setGreedy(page, 400);
  await page.getByTestId('chat-input').fill('Write a long story about a lighthouse keeper.');
  await page.getByTestId('chat-input').press('Enter');
  await page.waitForFunction(() => {
    const all = document.querySelectorAll('[data-testid=message-assistant] .text');
    return (all[all.length - 1]?.dataset.raw ?? '').length >= 40;
  }, null, { timeout: 300_000, polling: 100 });
  const streamed = await assistant.last().locator('.text').getAttribute('data-raw');
  await page.waitForTimeout(800);
  await page.reload();
  await items.first().waitFor({ timeout: 30_000 });
  const titles = await items.locator('.conversation-title').allTextContents();
  t.check(titles.length === 3, 'after a reload all three conversations are listed', JSON.stringify(titles));
  t.check(titles[0] === 'Write a long story about a lighthouse keeper.' && titles[2] === edited,
    'titles are the first questions, the latest conversation first', JSON.stringify(titles));
  await items.first().locator('.conversation-open').click();
  await assistant.first().waitFor();
  const cut = await assistant.first().locator('.text').getAttribute('data-raw');
  t.check(cut.length >= streamed.length && cut.startsWith(streamed),
    'the reply interrupted by the reload keeps what streamed', `${streamed.length} chars streamed, ${cut.length} restored`);
  t.check(await assistant.first().getAttribute('data-state') === 'stopped', 'it is marked stopped');

  // 7. The first conversation restores, Markdown and tokens with it.
  await items.last().locator('.conversation-open').click();
  await page.waitForFunction((q) => document.querySelector('[data-testid=message-user]')?.textContent === q, edited,
    { timeout: 10_000 });
  t.check(JSON.stringify(await user.allTextContents()) === JSON.stringify([edited]), 'the conversation\'s question is restored');
  t.check(await assistant.first().locator('.text').getAttribute('data-raw') === afterEdit.text,
    'its reply is restored exactly');
  t.check(await assistant.first().getAttribute('data-state') === 'done', 'the restored reply is done');
  await assistant.first().locator('xpath=..').getByTestId('show-tokens').click();
  t.check(await assistant.first().getByTestId('token').count() > 0, 'its token chips are restored');
  await assistant.first().locator('xpath=..').getByTestId('show-tokens').click();
  await shot('conversations');

  // 8. Delete: gone now and after another reload.
  const victim = await items.last().getAttribute('data-id');
  await items.last().getByTestId('conversation-delete').click();
  t.check(await page.locator(`[data-testid=conversation-item][data-id="${victim}"]`).count() === 0, 'a deleted conversation leaves the list');
  t.check(await user.count() === 0, 'deleting the open conversation empties the chat');
  await page.waitForTimeout(300);
  await page.reload();
  await items.first().waitFor({ timeout: 30_000 });
  t.check(await items.count() === 2 && await page.locator(`[data-testid=conversation-item][data-id="${victim}"]`).count() === 0,
    'it stays deleted after a reload', `${await items.count()} listed`);

  // 9. Settings survive a reload; Reset puts back the defaults.
  const wanted = {
    'settings-temperature': '0.7', 'settings-top-k': '40', 'settings-top-p': '0.9', 'settings-min-p': '0.05',
    'settings-repeat-penalty': '1.1', 'settings-seed': '1234', 'settings-max-tokens': '99',
  };
  for (const [id, v] of Object.entries(wanted)) {
    await page.getByTestId(id).fill(v);
    await page.getByTestId(id).dispatchEvent('change');
  }
  await page.getByTestId('settings-top-p').fill('7');
  await page.getByTestId('settings-top-p').dispatchEvent('change');
  t.check(await page.getByTestId('settings-top-p').inputValue() === '0.9', 'an out-of-range value is refused');
  await page.reload();
  await page.getByTestId('settings-seed').waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid=settings-seed]')?.value === '1234', null, { timeout: 10_000 })
    .catch(() => {});
  const got = {};
  for (const id of Object.keys(wanted)) got[id] = await page.getByTestId(id).inputValue();
  t.check(Object.entries(wanted).every(([id, v]) => Number(got[id]) === Number(v)), 'the settings survive a reload',
    JSON.stringify(got));
  await page.getByTestId('settings-reset').click();
  await page.reload();
  await page.getByTestId('settings-seed').waitFor();
  const reset = {};
  for (const id of Object.keys(wanted)) reset[id] = Number(await page.getByTestId(id).inputValue());
  t.check(reset['settings-temperature'] === 0 && reset['settings-top-k'] === 0 && reset['settings-top-p'] === 1 &&
    reset['settings-min-p'] === 0 && reset['settings-repeat-penalty'] === 1 && reset['settings-seed'] === 0 &&
    reset['settings-max-tokens'] === 256, 'Reset to defaults restores (and keeps) the defaults', JSON.stringify(reset));
} catch (e) {
  t.fail(e);
} finally {
  await browser.close();
}
t.finish();
