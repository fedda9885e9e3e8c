// The chat's features, on the tiny model (they need a model that answers, not a good one, and it loads in about a
// second): a greedy answer equal to the CLI's, Regenerate (the same greedy reply again), the token view (each chip's
// candidates, the first being the token itself), editing the last question, Markdown replies, conversations that
// survive reloads, deleting a conversation, and settings that survive reloads.
//
// The page runs the tiny model on the CPU backend (`?backend=cpu`), whose answers equal the CLI's bit for bit on
// any machine: the tiny model's random weights leave near-ties between its top logits everywhere, which a GPU's own
// rounding may break either way. (The default model's suite checks the WebGPU path's answers and token chips.)

import {
  ask, checkTokenView, env, expectedFor, setGreedy, storeConversation, suite, tinyPageUrl, versus, waitForModel,
} from './lib.mjs';

const prompt = env('PROMPT');

export function register({ webgpu }) {
  suite('chat on the tiny model', { slug: 'chat', browser: webgpu }, (s) => {
    let expected;
    let first;
    let afterEdit;
    const edited = 'Name three animals that live in the sea.';
    const second = 'Show a Python hello world program in a code block.';
    const markdownQuestion = 'How do I print in Python?';
    const assistant = () => s.page.getByTestId('message-assistant');
    const user = () => s.page.getByTestId('message-user');
    const items = () => s.page.getByTestId('conversation-item');

    s.step('the tiny model loads; a fresh profile lists no conversations', async (c) => {
      await s.page.goto(tinyPageUrl({ backend: 'cpu' }));
      const status = await waitForModel(s.page);
      c.must(/ready/.test(status), 'the tiny model loads', status);
      expected = await expectedFor(s.page, 'EXPECTED_TINY');
      c.note(`device: ${expected.device}; expecting ${expected.cli}`);
      c.ok(await items().count() === 0, 'a fresh profile lists no conversations');
    });

    s.step('a greedy reply equals the CLI\'s and is rendered as Markdown', async (c) => {
      await setGreedy(s.page);
      first = await ask(s.page, prompt);
      c.ok(first.state === 'done' && first.text === expected.answer.text, `the greedy reply equals ${expected.cli}`,
        `${versus(first.text, expected.answer.text)} (${first.state})`);
      c.ok(await assistant().first().locator('.text.markdown').count() === 1, 'the reply is rendered as Markdown');
    });

    s.step('Regenerate replaces the reply with the identical greedy one', async (c) => {
      const again = await ask(s.page, null, { send: () => s.page.getByTestId('regenerate').click() });
      c.ok(again.state === 'done' && again.text === first.text, 'Regenerate gives the identical greedy reply',
        versus(again.text, first.text));
      c.ok(await assistant().count() === 1 && await user().count() === 1,
        'Regenerate replaced the reply (one question, one reply)');
    });

    s.step('token chips are the CLI\'s tokens; a chip\'s popup lists its candidates, itself first', async (c) => {
      const chipIds = await checkTokenView(c, s.page, () => s.shot('token-popup'));
      // A chip is a piece of text and the token that completed it: the tiny model's byte tokens that end inside a
      // UTF-8 character add no chip of their own (the default model's suite checks chips equal to tokens).
      const tokens = expected.answer.tokens;
      let at = 0;
      const inOrder = chipIds.every((id) => (at = tokens.indexOf(id, at) + 1) > 0);
      c.ok(chipIds.length > 0 && inOrder, 'the token chips are the CLI\'s generated tokens (in order, one per piece of text)',
        `chips: ${JSON.stringify(chipIds)}\n     cli:   ${JSON.stringify(tokens)}`);
    });

    s.step('Edit the last question: the edited text is sent and its reply replaces the old one', async (c) => {
      await s.page.getByTestId('edit-last').click();
      await s.page.getByTestId('edit-input').fill(edited);
      afterEdit = await ask(s.page, null, { send: () => s.page.getByTestId('edit-send').click() });
      const users = await user().allTextContents();
      c.ok(afterEdit.state === 'done' && afterEdit.text.length > 0 && afterEdit.text !== first.text,
        'the edited question gets a new reply', JSON.stringify(afterEdit.text));
      c.ok(users.length === 1 && users[0] === edited && await assistant().count() === 1,
        'the question is replaced and so is its reply', JSON.stringify(users));
    });

    s.step('a second conversation gets a reply', async (c) => {
      await s.page.getByTestId('new-chat').click();
      c.ok(await user().count() === 0, 'New chat empties the chat');
      const reply = await ask(s.page, second);
      c.ok(reply.state === 'done' && reply.text.length > 0, 'a second conversation gets a reply',
        `${reply.state}: ${JSON.stringify(reply.text)}`);
      await items().nth(1).waitFor({ timeout: 10_000 });
    });

    // The tiny model writes no Markdown, so a Markdown reply is put in storage as the app keeps one; it renders
    // through the same view as a streamed one.
    const markdownReply = 'Like this:\n\n```python\nprint("Hello, world!")\n```\n\nand <b>raw HTML</b> stays text.';
    s.step('after a reload the conversations are listed, latest first; a Markdown reply renders', async (c) => {
      const { page } = s;
      const now = Date.now();
      await storeConversation(page, {
        id: now, title: markdownQuestion, created_ms: now, updated_ms: now + 60_000,
        messages: [
          { role: 'user', text: markdownQuestion, tokens: [] },
          { role: 'assistant', text: markdownReply, stop: 'StopToken', tokens: [] },
        ],
      });
      await page.reload();
      await waitForModel(page, { timeout: 60_000 });
      await items().nth(2).waitFor({ timeout: 30_000 });
      const titles = await items().locator('.conversation-title').allTextContents();
      c.ok(JSON.stringify(titles) === JSON.stringify([markdownQuestion, second, edited]),
        'after a reload all three conversations are listed; titles are the first questions, the latest conversation first',
        JSON.stringify(titles));
      await items().first().locator('.conversation-open').click();
      await page.waitForFunction((q) => document.querySelector('[data-testid=message-user]')?.textContent === q, markdownQuestion,
        { timeout: 10_000 });
      const reply = assistant().first();
      c.ok(await reply.locator('.markdown pre code').count() === 1, 'a fenced code block renders as <pre><code>',
        await reply.locator('.text').innerHTML());
      const shownText = await reply.locator('.text').textContent();
      c.ok(await reply.locator('.markdown b').count() === 0 && /<b>raw HTML<\/b>/.test(shownText),
        'HTML in a reply stays text', await reply.locator('.text').innerHTML());
      await s.shot('markdown');
    });

    s.step('the first conversation restores, tokens with it', async (c) => {
      const { page } = s;
      await items().last().locator('.conversation-open').click();
      await page.waitForFunction((q) => document.querySelector('[data-testid=message-user]')?.textContent === q, edited,
        { timeout: 10_000 });
      const questions = await user().allTextContents();
      c.ok(JSON.stringify(questions) === JSON.stringify([edited]), 'the conversation\'s question is restored',
        JSON.stringify(questions));
      const restored = await assistant().first().locator('.text').getAttribute('data-raw');
      c.ok(restored === afterEdit.text, 'its reply is restored exactly', versus(restored, afterEdit.text));
      c.ok(await assistant().first().getAttribute('data-state') === 'done', 'the restored reply is done');
      const toggle = assistant().first().locator('xpath=..').getByTestId('show-tokens');
      await toggle.click();
      c.ok(await assistant().first().getByTestId('token').count() > 0, 'its token chips are restored');
      await toggle.click();
      await s.shot('conversations');
    });

    s.step('Delete a conversation: gone now and after another reload', async (c) => {
      const { page } = s;
      const victim = await items().last().getAttribute('data-id');
      const victimItem = page.locator(`[data-testid=conversation-item][data-id="${victim}"]`);
      await items().last().getByTestId('conversation-delete').click();
      c.ok(await victimItem.count() === 0, 'a deleted conversation leaves the list');
      c.ok(await user().count() === 0, 'deleting the open conversation empties the chat');
      await page.waitForTimeout(300);
      await page.reload();
      await items().first().waitFor({ timeout: 30_000 });
      c.ok(await items().count() === 2 && await victimItem.count() === 0, 'it stays deleted after a reload',
        `${await items().count()} listed`);
    });

    s.step('settings survive a reload; Reset puts back the defaults', async (c) => {
      const { page } = s;
      const wanted = {
        'settings-temperature': '0.8', 'settings-top-k': '40', 'settings-top-p': '0.8', 'settings-min-p': '0.1',
        'settings-repeat-penalty': '1.2', 'settings-seed': '1234', 'settings-max-tokens': '99',
      };
      for (const [id, v] of Object.entries(wanted)) {
        await page.getByTestId(id).fill(v);
        await page.getByTestId(id).dispatchEvent('change');
      }
      await page.getByTestId('settings-top-p').fill('7');
      await page.getByTestId('settings-top-p').dispatchEvent('change');
      c.ok(await page.getByTestId('settings-top-p').inputValue() === '0.8', 'an out-of-range value is refused');
      await page.reload();
      await page.getByTestId('settings-seed').waitFor();
      await page.waitForFunction(() => document.querySelector('[data-testid=settings-seed]')?.value === '1234', null,
        { timeout: 10_000 }).catch(() => {});
      const got = {};
      for (const id of Object.keys(wanted)) got[id] = await page.getByTestId(id).inputValue();
      c.ok(Object.entries(wanted).every(([id, v]) => Number(got[id]) === Number(v)), 'the settings survive a reload',
        JSON.stringify(got));
      await page.getByTestId('settings-reset').click();
      await page.reload();
      await page.getByTestId('settings-seed').waitFor();
      const reset = {};
      for (const id of Object.keys(wanted)) reset[id] = Number(await page.getByTestId(id).inputValue());
      // The chat defaults sample (temperature 0.7, top-p 0.9, min-p 0.05, repeat penalty 1.1, a fixed seed): the tiny
      // model's file names none of its own.
      c.ok(reset['settings-temperature'] === 0.7 && reset['settings-top-k'] === 0 && reset['settings-top-p'] === 0.9 &&
        reset['settings-min-p'] === 0.05 && reset['settings-repeat-penalty'] === 1.1 && reset['settings-seed'] === 42 &&
        reset['settings-max-tokens'] === 256, 'Reset to defaults restores (and keeps) the chat defaults',
        JSON.stringify(reset));
    });
  });
}
