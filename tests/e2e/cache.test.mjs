// The model manager's storage: a model loaded by URL is downloaded once into the browser's own storage (OPFS) and
// loads from there on the next visit with its network blocked, answering exactly as the CLI does; the storage panel
// lists it with its size and deletes it; a .gguf picked from disk loads and answers the same; a model folder
// without config.json or tokenizer.json is refused with a message naming the missing file.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Checks, LOAD_TIMEOUT, artifacts, ask, env, expectedText, launch, setGreedy, waitForModel } from './lib.mjs';

const t = new Checks('cache');
const base = env('AVIARY_URL');
const prompt = env('PROMPT');
const maxTokens = env('MAX_TOKENS', '24');
const modelFile = env('MODEL_FILE');
const modelName = basename(modelFile);
const fileBytes = statSync(modelFile).size;
const serveLog = join(artifacts, 'serve.log');
const profile = mkdtempSync(join(tmpdir(), 'aviary-cache-profile-'));

/** The server's log lines (one per request) that fetched the model file. */
const modelRequestsInServerLog = () =>
  readFileSync(serveLog, 'utf8').split('\n').filter((l) => l.includes(modelName));

/** The greedy answer the CLI gives on the arithmetic of the page's adapter (see chat.test.mjs). */
async function expectedFor(page) {
  const device = await page.getByTestId('model-device').textContent();
  const f16 = /shader-f16 on/.test(device);
  return { f16, text: expectedText(f16 ? 'EXPECTED_JSON' : 'EXPECTED_F32_JSON') };
}

async function checkAnswer(page, what) {
  const expected = await expectedFor(page);
  await setGreedy(page, maxTokens);
  const reply = await ask(page, prompt);
  t.check(reply.state === 'done' && reply.text === expected.text,
    `${what}: the greedy reply equals \`aviary generate --backend gpu${expected.f16 ? '' : ' --gpu-f32'}\``,
    `browser: ${JSON.stringify(reply.text)} (${reply.state})\n     cli:     ${JSON.stringify(expected.text)}`);
}

const storedEntry = (page) => page.locator(`[data-testid=storage-entry][data-url$="/models/${modelName}"]`);

async function firstPage(context) {
  const page = context.pages()[0] ?? (await context.newPage());
  t.watch(page);
  return page;
}

let context;
try {
  // 1. First visit: the default model is downloaded into the browser's storage, then loaded from there.
  context = await launch({ userDataDir: profile });
  let page = await firstPage(context);
  const before = modelRequestsInServerLog().length;
  await page.goto(base);
  let status = await waitForModel(page);
  t.check(/ready/.test(status), 'the default model loads on the first visit', status);
  if (!/ready/.test(status)) throw new Error('no model, nothing more to test');
  let origin = await page.getByTestId('model-origin').textContent();
  t.check(/downloaded, now kept in .*OPFS/.test(origin), 'the card says it was downloaded into OPFS', origin);
  const firstRequests = modelRequestsInServerLog().slice(before);
  t.check(firstRequests.length === 1 && / → 200 /.test(firstRequests[0]),
    'the model file was fetched whole, in one request (no Range requests)', firstRequests.join('\n     '));
  const wasmBytes = Number(await page.getByTestId('model-wasm-memory').getAttribute('data-bytes'));
  t.check(wasmBytes > 0 && wasmBytes < fileBytes / 2, 'peak worker wasm memory stays below half the model file',
    `${(wasmBytes / 1e6).toFixed(1)} MB of wasm memory for a ${(fileBytes / 1e6).toFixed(1)} MB file`);
  const entry = storedEntry(page);
  await entry.waitFor({ timeout: 30_000 });
  t.check(Number(await entry.getAttribute('data-bytes')) === fileBytes && (await entry.getAttribute('data-complete')) === 'true',
    'the storage panel lists it, complete, with the file\'s size', `${await entry.getAttribute('data-bytes')} bytes listed, file has ${fileBytes}`);
  t.check(/MB/.test(await entry.getByTestId('storage-entry-detail').textContent()), 'its size is shown',
    await entry.getByTestId('storage-entry-detail').textContent());
  await page.waitForFunction(() => /used of/.test(document.querySelector('[data-testid=storage-quota]')?.textContent ?? ''), null, { timeout: 10_000 });
  const quota = await page.getByTestId('storage-quota').textContent();
  t.check(/used of/.test(quota), 'the panel shows the storage quota in use', quota);
  const defaultInCatalog = page.locator(`[data-testid=catalog-entry][data-url="models/${modelName}"]`);
  t.check(await defaultInCatalog.getByTestId('catalog-cached').isVisible(), 'the catalog marks the default model as stored');
  await page.screenshot({ path: join(artifacts, 'cache-models-view.png'), fullPage: true });
  await context.close();

  // 2. Next visit, with every request for a model file blocked: it loads from the cache and answers as the CLI does.
  context = await launch({ userDataDir: profile });
  const blocked = [];
  await context.route('**/*.gguf', (route) => {
    blocked.push(route.request().url());
    return route.abort();
  });
  page = await firstPage(context);
  const logBefore = modelRequestsInServerLog().length;
  await page.goto(base);
  status = await waitForModel(page);
  t.check(/ready/.test(status), 'with the network to the model blocked, the model loads', status);
  origin = await page.getByTestId('model-origin').textContent();
  t.check(/loaded from cache/.test(origin), 'the card says it was loaded from the cache', origin);
  // (The catalog's HEAD probe for the optional Gemma model is blocked too; it is not this model.)
  const blockedModel = () => blocked.filter((u) => u.endsWith(`/${modelName}`));
  t.check(blockedModel().length === 0 && modelRequestsInServerLog().length === logBefore,
    'no request for the model was made (none blocked, none reached the server)',
    `blocked: ${JSON.stringify(blocked)}; server: ${modelRequestsInServerLog().slice(logBefore).join(' | ')}`);
  if (/ready/.test(status)) await checkAnswer(page, 'loaded from the cache');

  // 3. Delete it from the storage panel: the list no longer has it, and (with the network blocked) it cannot load.
  await storedEntry(page).getByTestId('storage-delete').click();
  await storedEntry(page).waitFor({ state: 'detached', timeout: 30_000 });
  t.check(await storedEntry(page).count() === 0, 'Delete removes it from the storage panel');
  await page.getByTestId('storage-empty').waitFor({ timeout: 10_000 });
  t.check(await page.getByTestId('storage-empty').isVisible(), 'the panel says nothing is stored');
  await page.getByTestId('model-load').click();
  await page.waitForFunction(
    () => /error/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''),
    null, { timeout: LOAD_TIMEOUT, polling: 250 },
  );
  status = await page.getByTestId('model-status').textContent();
  // This also shows that the route above intercepts the worker's fetches: the download was refused.
  t.check(blockedModel().length > 0, 'once deleted, loading it tries the network, which the test blocks', `blocked: ${JSON.stringify(blocked)}; ${status}`);
  await page.waitForTimeout(1000);
  t.check(await storedEntry(page).count() === 0, 'the failed download leaves nothing in storage');
  await page.screenshot({ path: join(artifacts, 'cache-deleted.png'), fullPage: true });
  await context.close();
  context = undefined;

  // 4. A .gguf picked from disk loads and answers the same; folders without config.json or tokenizer.json are refused.
  context = await launch();
  page = await context.newPage({ viewport: { width: 1280, height: 860 } });
  t.watch(page);
  await page.goto(`${base}?autoload=0`);
  await page.waitForFunction(() => /no model loaded/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''));
  await page.getByTestId('model-file-input').setInputFiles(modelFile);
  status = await waitForModel(page);
  t.check(/ready/.test(status), 'a .gguf picked with the file picker loads', status);
  origin = await page.getByTestId('model-origin').textContent();
  t.check(/your files/.test(origin), 'the card says it came from the user\'s files', origin);
  if (/ready/.test(status)) await checkAnswer(page, 'picked from disk');

  const tiny = 'tests/fixtures/tiny/llama';
  const folders = mkdtempSync(join(tmpdir(), 'aviary-folders-'));
  const noConfig = join(folders, 'no-config');
  const noTokenizer = join(folders, 'no-tokenizer');
  for (const dir of [noConfig, noTokenizer]) mkdirSync(dir);
  copyFileSync(join(tiny, 'model.safetensors'), join(noConfig, 'model.safetensors'));
  copyFileSync('tests/fixtures/tokenizer/bpe/tokenizer.json', join(noConfig, 'tokenizer.json'));
  copyFileSync(join(tiny, 'model.safetensors'), join(noTokenizer, 'model.safetensors'));
  copyFileSync(join(tiny, 'config.json'), join(noTokenizer, 'config.json'));
  for (const [dir, missing] of [[noConfig, 'config.json'], [noTokenizer, 'tokenizer.json']]) {
    const previous = await page.getByTestId('model-status').textContent();
    await page.getByTestId('model-folder-input').setInputFiles(dir);
    await page.waitForFunction(
      (prev) => document.querySelector('[data-testid=model-status]')?.textContent !== prev, previous, { timeout: 30_000 });
    status = await waitForModel(page);
    t.check(/error/.test(status) && status.includes(`no ${missing}`), `a folder without ${missing} is refused, naming it`, status);
  }
  rmSync(folders, { recursive: true, force: true });
  await page.screenshot({ path: join(artifacts, 'cache-folder-error.png'), fullPage: true });
} catch (e) {
  t.fail(e);
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
t.finish();
