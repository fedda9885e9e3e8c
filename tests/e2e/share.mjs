// Share links, on the tiny model (CPU backend, whose sampled tokens are the same on any machine for the same seed):
// page A sets up a conversation with non-default settings and copies its link; a fresh browser context opens the
// link, sees what it holds before anything loads, accepts, replays the last reply and gets page A's tokens. A
// malformed link and one from a newer Aviary say so and leave the app working as if opened plainly. A link whose
// every text field holds an <img onerror> runs no script and shows the text literally.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { VIEWPORT, ask, env, pageUrl, suite, tinyPageUrl, waitForModel } from './lib.mjs';

const prompt = env('PROMPT');
const tinyUrl = env('TINY_MODEL_URL');
// Sampled, not greedy: a replay must reproduce the seed's draws too.
const SETTINGS = { temperature: '0.9', 'top-k': '20', seed: '4242', 'max-tokens': '16' };
const SYSTEM = 'You answer in few words.';
const EVIL = '<img src=x onerror="window.__pwned = (window.__pwned || 0) + 1">';

/** A link payload made here, independently of the app's encoder: JSON, raw deflate, base64url. */
const linkFor = (state) => `${pageUrl({})}#share=v1.${deflateRawSync(Buffer.from(JSON.stringify(state))).toString('base64url')}`;

async function setSetting(page, name, value) {
  const input = page.getByTestId(`settings-${name}`);
  await input.fill(value);
  await input.dispatchEvent('change');
}

/** The last reply's token ids, from the token view. */
async function replyTokens(page) {
  const reply = page.getByTestId('message-assistant').last();
  const toggle = reply.locator('xpath=..').getByTestId('show-tokens');
  await toggle.click();
  await reply.getByTestId('token').first().waitFor();
  const ids = await reply.getByTestId('token').evaluateAll((els) => els.map((e) => Number(e.dataset.token)));
  await toggle.click();
  return ids;
}

const statusOf = (page) => page.getByTestId('model-status').textContent();

export function register({ webgpu }) {
  suite('share links on the tiny model', { slug: 'share', browser: webgpu }, (s) => {
    let original;
    let link;
    let other;

    s.step('page A: a conversation with non-default settings, and its link', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ backend: 'cpu' }));
      c.must(/ready/.test(await waitForModel(page)), 'the tiny model loads', await statusOf(page));
      await page.getByTestId('settings-system').fill(SYSTEM);
      for (const [name, value] of Object.entries(SETTINGS)) await setSetting(page, name, value);
      const reply = await ask(page, prompt);
      c.must(reply.state === 'done' && reply.text.length > 0, 'page A gets a reply', JSON.stringify(reply.text));
      original = { text: reply.text, tokens: await replyTokens(page) };
      await page.getByTestId('share-copy').click();
      link = await page.getByTestId('share-link').inputValue();
      c.must(link.startsWith(`${pageUrl({})}#share=v1.`), 'the link is the app\'s address with a v1 share fragment', link);
      c.ok(!link.includes('?'), 'the link carries no query (the fragment names the model)', link);
      c.ok(link.length < 32 * 1024, 'the link is short enough for an address bar', `${link.length} characters`);
      c.ok(!link.includes(encodeURIComponent(prompt)) && !link.includes(prompt), 'the conversation travels compressed');
    });

    s.step('a fresh browser shows what the link holds, and loads nothing before Accept', async (c) => {
      other = await s.context.browser().newContext({ viewport: VIEWPORT });
      other.on('page', s.watch);
      const page = await other.newPage();
      await page.goto(link);
      await page.getByTestId('share-preview').waitFor();
      const model = page.getByTestId('share-model');
      c.ok((await model.textContent()).includes(tinyUrl), 'the preview names the model', await model.textContent());
      c.ok(await model.getAttribute('data-stored') === 'false' && /to download from/.test(await model.textContent()),
        'and says it is not stored here, with its size', await model.textContent());
      c.ok(/2 messages/.test(await page.getByTestId('share-conversation').textContent()), 'it counts the conversation');
      c.ok(/seed 4242/.test(await page.getByTestId('share-settings').textContent()), 'it shows the settings',
        await page.getByTestId('share-settings').textContent());
      await page.waitForTimeout(1000);
      c.ok(/no model loaded/.test(await statusOf(page)), 'no model loads before the user accepts', await statusOf(page));
      c.ok(await page.getByTestId('message-user').count() === 0, 'nothing is restored before the user accepts');
    });

    s.step('Accept restores the demo; Replay gives page A\'s reply token for token', async (c) => {
      const page = other.pages()[0];
      await page.getByTestId('share-accept').click();
      c.must(/ready/.test(await waitForModel(page)), 'the link\'s model loads', await statusOf(page));
      c.ok(!page.url().includes('#share='), 'the fragment leaves the address (a reload does not ask again)', page.url());
      c.ok(await page.getByTestId('settings-system').inputValue() === SYSTEM, 'the system prompt is restored');
      for (const [name, value] of Object.entries(SETTINGS)) {
        const shown = await page.getByTestId(`settings-${name}`).inputValue();
        c.ok(Number(shown) === Number(value), `${name} is restored`, `${shown} vs ${value}`);
      }
      const user = await page.getByTestId('message-user').first().textContent();
      c.ok(user.includes(prompt), 'the question is restored', user);
      const replay = page.getByTestId('share-replay');
      await page.waitForFunction(() => document.querySelector('[data-testid=share-replay]')?.disabled === false,
        null, { timeout: 30_000 });
      const again = await ask(page, '', { send: () => replay.click() });
      c.ok(again.state === 'done' && again.text === original.text, 'the replayed reply is page A\'s',
        `A: ${JSON.stringify(original.text)}\n     B: ${JSON.stringify(again.text)}`);
      const tokens = await replyTokens(page);
      c.ok(JSON.stringify(tokens) === JSON.stringify(original.tokens), 'with the same tokens',
        `A: ${original.tokens}\n     B: ${tokens}`);
    });

    s.step('a demo too long for a link is offered as .aviary.json, which the app opens', async (c) => {
      const { page } = s;
      // Random text barely compresses: 40 kB of it makes a link past the 32 kB an address bar handles.
      const long = randomBytes(30_000).toString('base64');
      await page.getByTestId('settings-system').fill(long);
      await page.getByTestId('share-copy').click();
      const why = await page.getByTestId('share-too-long').textContent();
      c.ok(/too long for a link/.test(why), 'the panel says the demo is too long for a link', why);
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('share-download').click()]);
      c.ok(/\.aviary\.json$/.test(download.suggestedFilename()), 'it offers a .aviary.json', download.suggestedFilename());
      const file = s.artifactPath('demo.aviary.json');
      await download.saveAs(file);
      const saved = JSON.parse(readFileSync(file, 'utf8'));
      c.ok(saved.version === 1 && saved.system_prompt === long && saved.messages.length === 2, 'the file holds the demo',
        `version ${saved.version}, ${saved.messages?.length} messages`);
      const b = other.pages()[0];
      await b.getByTestId('share-open-file').setInputFiles(file);
      await b.getByTestId('share-preview').waitFor();
      c.ok(await b.getByTestId('share-system').textContent() === long, 'the app opens the file as it opens a link');
      await b.getByTestId('share-dismiss').click();
      c.ok(await b.getByTestId('share-preview').count() === 0, 'Not now closes it, changing nothing');
      c.ok(await b.getByTestId('settings-system').inputValue() === SYSTEM, 'the open demo is untouched');
      await b.getByTestId('share-open-file').setInputFiles({ name: 'broken.aviary.json', mimeType: 'application/json',
        buffer: Buffer.from('{"version": 1, "messages": [{"role": "user"') });
      const error = await b.getByTestId('share-error').textContent();
      c.ok(/broken\.aviary\.json cannot be opened/.test(error), 'a broken file is named and refused', error);
    });

    s.step('a malformed link, or one from a newer Aviary, says so and the app opens plainly', async (c) => {
      const page = other.pages()[0];
      await page.goto(`${tinyPageUrl({ backend: 'cpu' })}#share=v1.not~base64!`);
      const error = await page.getByTestId('share-error').textContent();
      c.ok(/cannot be opened/.test(error) && /base64/.test(error), 'the message says the link is broken', error);
      c.must(/ready/.test(await waitForModel(page)), 'the page\'s own model loads as if opened plainly', await statusOf(page));
      const reply = await ask(page, prompt);
      c.ok(reply.state === 'done' && reply.text.length > 0, 'and the chat answers', JSON.stringify(reply.text));
      await page.evaluate(() => { window.location.hash = 'share=v9.AAAA'; });
      await page.waitForFunction(() => /newer/.test(document.querySelector('[data-testid=share-error]')?.textContent ?? ''),
        null, { timeout: 10_000 });
      c.ok(/newer/.test(await page.getByTestId('share-error').textContent()), 'a newer version is named as such',
        await page.getByTestId('share-error').textContent());
      c.ok(/ready/.test(await statusOf(page)), 'the model is still there', await statusOf(page));
    });

    s.step('a link whose model cannot be fetched names it, and the rest is restored', async (c) => {
      const page = other.pages()[0];
      const missing = 'models/missing-model.gguf';
      await page.goto('about:blank');
      await page.goto(linkFor({
        version: 1,
        model: { source: { catalog: missing }, name: 'Missing model' },
        system_prompt: SYSTEM,
        messages: [{ role: 'user', text: 'Hello?' }, { role: 'assistant', text: 'Hi.' }],
      }));
      await page.getByTestId('share-accept').click();
      await page.getByTestId('load-error').waitFor({ timeout: 30_000 });
      const shown = `${await page.getByTestId('load-error').textContent()} ${await page.getByTestId('load-error-detail').textContent()}`;
      c.ok(shown.includes('missing-model.gguf'), 'the failed model is named', shown);
      c.ok(await page.getByTestId('message-user').count() === 1 && await page.getByTestId('settings-system').inputValue() === SYSTEM,
        'the conversation and settings are restored all the same');
    });

    s.step('a link with <img onerror> in every text field runs no script and shows the text', async (c) => {
      const page = other.pages()[0];
      const evil = linkFor({
        version: 1,
        view: 'chat',
        model: { source: { catalog: tinyUrl }, name: EVIL, size_bytes: 1000 },
        adapters: [{ url: `http://127.0.0.1:9/${encodeURIComponent(EVIL)}.gguf`, name: EVIL, enabled: true, scale: 1 }],
        system_prompt: EVIL,
        messages: [{ role: 'user', text: EVIL }, { role: 'assistant', text: EVIL }],
        max_tokens: 8,
        backend: 'cpu',
      });
      await page.goto('about:blank');
      await page.goto(evil);
      await page.getByTestId('share-preview').waitFor();
      const pwned = () => page.evaluate(() => window.__pwned ?? 0);
      const images = () => page.evaluate(() => document.querySelectorAll('img[src="x"]').length);
      c.ok(await page.getByTestId('share-first').textContent() === EVIL, 'the preview shows the question as text');
      c.ok(await page.getByTestId('share-system').textContent() === EVIL, 'and the system prompt');
      c.ok((await page.getByTestId('share-model').textContent()).includes(EVIL), 'and the model\'s name');
      c.ok((await page.getByTestId('share-adapter').textContent()).includes(EVIL), 'and the adapter\'s name');
      await page.getByTestId('share-accept').click();
      c.must(/ready/.test(await waitForModel(page)), 'the model loads', await statusOf(page));
      await page.getByTestId('lora-error').waitFor({ timeout: 30_000 });
      c.ok((await page.getByTestId('lora-error').textContent()).includes(EVIL), 'the unreachable adapter is named, as text',
        await page.getByTestId('lora-error').textContent());
      c.ok((await page.getByTestId('message-user').first().textContent()).includes(EVIL), 'the question shows as text');
      const shown = await page.getByTestId('message-assistant').first().locator('.text').innerText();
      c.ok(shown.includes('<img'), 'the reply shows the markup as text', shown);
      c.ok(await page.getByTestId('settings-system').inputValue() === EVIL, 'the system prompt is its text');
      c.ok(await images() === 0, 'no image element was made from the link', `${await images()} found`);
      c.ok(await pwned() === 0, 'no script ran', `onerror ran ${await pwned()} times`);
      await other.close();
    });
  });
}
