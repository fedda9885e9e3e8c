// Shared by the browser end-to-end tests (tests/e2e/all.test.mjs and the suites it registers) and the browser
// benchmark (tests/bench/web-bench.mjs): launching headless Chromium, a suite's context and page, checks, the CLI's
// expected answers, waiting for the model, asking and watching a reply stream. Only ARTIFACTS is read on import: the
// benchmark sets other variables.
//
// Environment (scripts/e2e-test.sh sets it): AVIARY_URL (the served app), PROMPT and MAX_TOKENS (the greedy
// question), the CLI's `generate --json` answers to it on the default model — EXPECTED_JSON (GPU, f16 where the
// adapter has it), EXPECTED_F32_JSON (GPU, --gpu-f32), EXPECTED_CPU_JSON (CPU backend) — and the same three on the
// tiny model (EXPECTED_TINY_JSON, EXPECTED_TINY_F32_JSON, EXPECTED_TINY_CPU_JSON), `aviary magpie --backend cpu`'s
// rows on the default model (EXPECTED_MAGPIE_JSONL, ShareGPT); MODEL_FILE and TINY_MODEL_FILE
// (the two models' paths), TINY_MODEL_URL (the tiny one's URL relative to the page), SERVE_LOG (the server's request
// log), ARTIFACTS (screenshots and browser logs), CHROMIUM (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { after, before, describe, test } from 'node:test';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

export const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

/** The app's page with these query parameters (app/src/app.rs reads them: model, autoload, backend). */
export const pageUrl = (params = {}) => {
  const url = new URL(env('AVIARY_URL'));
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.href;
};

/** The page with the tiny model, which loads and answers in about a second (the default model: tens of seconds). */
export const tinyPageUrl = (params = {}) => pageUrl({ model: env('TINY_MODEL_URL'), ...params });

// The flags that give headless Chromium a WebGPU adapter (SwiftShader's Vulkan on machines without a GPU).
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-webgpu-adapter=swiftshader'];
const COMMON_FLAGS = [
  '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export const LOAD_TIMEOUT = 10 * 60_000;
export const REPLY_TIMEOUT = 10 * 60_000;
export const VIEWPORT = { width: 1280, height: 900 };

/**
 * Headless Chromium; `webgpu: false` leaves out the flags that give it an adapter (the page then has no WebGPU).
 * `userDataDir` keeps a profile (OPFS, Cache Storage) across launches: a persistent context is returned then.
 */
export function launch({ webgpu = true, userDataDir } = {}) {
  const args = [...COMMON_FLAGS, ...(webgpu ? WEBGPU_FLAGS : ['--disable-gpu'])];
  const executablePath = env('CHROMIUM', '/usr/bin/chromium');
  const options = { executablePath, headless: true, args };
  return userDataDir ? chromium.launchPersistentContext(userDataDir, { ...options, viewport: VIEWPORT }) : chromium.launch(options);
}

/**
 * One test's checks. A failed `ok` lets the test go on, so one run reports every failed check of the step (each with
 * what was expected and what the page showed); `must` is for what the rest of the suite needs, and ends the test.
 * Passed checks are listed as the test's diagnostics, so the log reads as a list of what was verified.
 */
class Checks {
  constructor(t) {
    this.t = t;
    this.failed = [];
  }

  ok(cond, what, detail = '') {
    if (cond) this.t.diagnostic(`ok ${what}`);
    else this.failed.push(detail ? `${what}\n     ${detail}` : what);
    return cond;
  }

  must(cond, what, detail = '') {
    if (!this.ok(cond, what, detail)) this.settle({ fatal: true });
  }

  note(text) {
    this.t.diagnostic(text);
  }

  /** Throws if a check failed; `fatal` marks the failure as one the suite's later steps cannot run after. */
  settle({ fatal = false } = {}) {
    if (!this.failed.length) return;
    const message = listFailures(this.failed);
    this.failed = [];
    throw new (fatal ? FatalCheckFailure : CheckFailure)(message);
  }
}

const listFailures = (failed) => `${failed.length} check(s) failed:\n${failed.map((f) => `   ✗ ${f}`).join('\n')}`;

/** Failed checks: their messages say it all, so the report shows no stack. */
class CheckFailure extends Error {
  constructor(message) {
    super(message);
    this.name = 'CheckFailure';
    this.stack = `${this.name}: ${message}`;
  }
}

class FatalCheckFailure extends CheckFailure {}

/** The page's and its workers' console, into `log`. */
function watch(page, log) {
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => log.push(`[worker ${m.type()}] ${m.text()}`)));
}

/**
 * A suite of tests that drive one page, in order, in a browser context of its own (its own storage: OPFS,
 * IndexedDB, localStorage). `declare(s)` declares the tests with `s.step(title, async (c) => …, options)`, where `c`
 * has the checks and `options` go to node:test's `test` (e.g. `todo`). `s.page` and `s.context` are set when the
 * first step runs; `s.shot(name)` saves a screenshot; `s.watch(page)` logs a page of another context too. A step
 * that throws (or fails a `must`) leaves the page in an unknown state, so the steps after it are skipped; a failed
 * check alone does not. The browser log goes to ARTIFACTS/<slug>.browser.log, and a screenshot of each failed step
 * beside it.
 */
export function suite(title, { slug, browser }, declare) {
  describe(title, () => {
    const log = [];
    const s = { page: null, context: null, broken: null };
    s.watch = (page) => watch(page, log);
    s.artifactPath = (name) => join(artifacts, `${slug}-${name}`);
    s.shot = (name) => s.page.screenshot({ path: s.artifactPath(`${name}.png`), fullPage: true });
    before(async () => {
      s.context = await (await browser()).newContext({ viewport: VIEWPORT });
      s.context.on('page', s.watch);
      s.page = await s.context.newPage();
    });
    after(async () => {
      const file = join(artifacts, `${slug}.browser.log`);
      writeFileSync(file, log.join('\n') + '\n');
      await s.context?.close();
    });
    let n = 0;
    s.step = (name, fn, options = {}) => {
      const index = ++n;
      test(name, options, async (t) => {
        if (s.broken) return t.skip(`"${s.broken}" failed`);
        const c = new Checks(t);
        try {
          await fn(c);
          c.settle();
        } catch (e) {
          if (!options.todo && (!(e instanceof CheckFailure) || e instanceof FatalCheckFailure)) s.broken = name;
          await s.shot(`failed-${index}`).catch(() => {});
          // Checks that failed before an exception are news too.
          if (c.failed.length) e.stack = `${e.stack}\nand before it, ${listFailures(c.failed)}`;
          throw e;
        }
      });
    };
    declare(s);
  });
}

/** The CLI's `generate --json` answer in the file that the variable names. */
export const cliAnswer = (variable) => JSON.parse(readFileSync(env(variable), 'utf8'));

/**
 * The CLI's answer to compare the page with, picked by the arithmetic of the device the page's model runs on (its
 * card): the GPU with f16, the GPU in f32 (SwiftShader has no shader-f16), or the CPU backend. `family` is
 * 'EXPECTED' (the default model) or 'EXPECTED_TINY'. Returns { answer, cli (the command it is from), device }.
 */
export async function expectedFor(page, family) {
  const device = await page.getByTestId('model-device').textContent();
  const [suffix, cli] = /^CPU/.test(device) ? ['_CPU', '--backend cpu']
    : /shader-f16 on/.test(device) ? ['', '--backend gpu'] : ['_F32', '--backend gpu --gpu-f32'];
  return { answer: cliAnswer(`${family}${suffix}_JSON`), cli: `\`aviary generate ${cli}\``, device };
}

/**
 * Whether the page's WebGPU adapter is a software rasteriser (SwiftShader here, llvmpipe, WARP), on which Auto runs
 * the CPU backend; false without an adapter too.
 */
export async function softwareAdapter(page) {
  return page.evaluate(async () => {
    const a = await navigator.gpu?.requestAdapter();
    if (!a) return false;
    const i = a.info ?? {};
    return i.isFallbackAdapter === true
      || /swiftshader|llvmpipe|lavapipe|basic render driver/i.test([i.vendor, i.architecture, i.device, i.description].join(' '));
  });
}

/** "browser: … / cli: …", for a check's detail. */
export const versus = (browser, cli) => `browser: ${JSON.stringify(browser)}\n     cli:     ${JSON.stringify(cli)}`;

const statusText = (page) => page.getByTestId('model-status').textContent();

/** Waits until the status line says ready (or error) and returns its text. */
export async function waitForModel(page, { timeout = LOAD_TIMEOUT } = {}) {
  await page.waitForFunction(
    () => /ready|error/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''),
    null,
    { timeout, polling: 250 },
  );
  return statusText(page);
}

/** Runs `start`, which begins a load, and waits for that load's end (not for the model already there). */
export async function loadAnew(page, start) {
  const previous = await statusText(page);
  await start();
  await page.waitForFunction((prev) => document.querySelector('[data-testid=model-status]')?.textContent !== prev,
    previous, { timeout: 30_000, polling: 50 });
  return waitForModel(page);
}

/**
 * Waits until the text of the element with `testid` matches `pattern`, and returns the text. The panels fill in
 * from the worker's or the browser's answers a moment after the page shows them.
 */
export async function waitForText(page, testid, pattern, { timeout = 10_000 } = {}) {
  await page.waitForFunction(([id, source, flags]) =>
    new RegExp(source, flags).test(document.querySelector(`[data-testid=${id}]`)?.textContent ?? ''),
  [testid, pattern.source, pattern.flags], { timeout, polling: 100 });
  return page.getByTestId(testid).textContent();
}

async function setNumber(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}

/**
 * Greedy decoding (the Greedy preset: temperature 0, no repeat penalty, seed 0) of at most `tokens` tokens
 * (MAX_TOKENS by default): what the CLI's `generate` does by default. Chat itself starts from sampling defaults.
 */
export async function setGreedy(page, tokens = Number(env('MAX_TOKENS', '24'))) {
  await page.getByTestId('preset-greedy').click();
  await setNumber(page, 'settings-max-tokens', tokens);
}

/**
 * Sends a message and records the reply's text as it streams, until it ends; `stopAfterChars` clicks Stop once that
 * much text has streamed. `send` replaces typing into the composer (e.g. clicking Regenerate); the reply watched is
 * then the last one. Returns { state, text, partials, stopped, seconds }. The text is the reply's raw text (its
 * `data-raw`), not the Markdown the page renders from it.
 */
export async function ask(page, text, { stopAfterChars, send } = {}) {
  const assistant = page.getByTestId('message-assistant');
  const before = await assistant.count();
  const t0 = Date.now();
  let reply;
  if (send) {
    // The reply replaces the last one: wait until the last reply is a new one.
    const old = before ? await assistant.last().elementHandle() : null;
    await send();
    await page.waitForFunction((o) => {
      const all = document.querySelectorAll('[data-testid=message-assistant]');
      return all.length && all[all.length - 1] !== o;
    }, old, { timeout: REPLY_TIMEOUT, polling: 50 });
    reply = assistant.last();
  } else {
    await page.getByTestId('chat-input').fill(text);
    await page.getByTestId('chat-input').press('Enter');
    await assistant.nth(before).waitFor();
    reply = assistant.nth(before);
  }
  const partials = new Set();
  let stopped = false;
  for (;;) {
    const [state, body] = await Promise.all([reply.getAttribute('data-state'), reply.locator('.text').getAttribute('data-raw')]);
    if (state !== 'streaming') return { state, text: body, partials, stopped, seconds: (Date.now() - t0) / 1000 };
    if (body) partials.add(body);
    if (stopAfterChars !== undefined && !stopped && body.length >= stopAfterChars) {
      await page.getByTestId('stop').click();
      stopped = true;
    }
    if (Date.now() - t0 > REPLY_TIMEOUT) throw new Error(`no end to the reply after ${REPLY_TIMEOUT / 1000} s`);
    await page.waitForTimeout(50);
  }
}

/**
 * Shows the last reply as token chips and opens the first chip's candidates: several, the chip's own token first
 * (greedy), with probabilities in (0, 1] that descend and a note on what they are over. `shot` saves a screenshot of
 * the open popup. Goes back to the text, and returns the chips' token ids.
 */
export async function checkTokenView(c, page, shot) {
  const reply = page.getByTestId('message-assistant').last();
  const toggle = reply.locator('xpath=..').getByTestId('show-tokens');
  await toggle.click();
  const chips = reply.getByTestId('token');
  await chips.first().waitFor();
  const chipIds = await chips.evaluateAll((els) => els.map((e) => Number(e.dataset.token)));
  await chips.first().click();
  const popup = page.getByTestId('token-candidates');
  await popup.waitFor();
  const candidates = await popup.getByTestId('token-candidate').evaluateAll((els) =>
    els.map((e) => ({ token: Number(e.dataset.token), p: Number(e.dataset.p) })));
  const ps = JSON.stringify(candidates.map((x) => x.p));
  c.ok(candidates.length >= 2, 'the popup lists several candidates', JSON.stringify(candidates));
  c.ok(candidates[0]?.token === chipIds[0], 'the first candidate is the token chosen (greedy)',
    `${candidates[0]?.token} vs ${chipIds[0]}`);
  c.ok(candidates.every((x) => x.p > 0 && x.p <= 1), 'probabilities are in (0, 1]', ps);
  c.ok(candidates.every((x, i) => i === 0 || candidates[i - 1].p >= x.p), 'probabilities descend', ps);
  const popupText = await popup.textContent();
  c.ok(/Probabilities/.test(popupText), 'the popup says what the probabilities are over', popupText);
  await shot?.();
  await toggle.click();
  c.ok(await reply.locator('.text.markdown').count() === 1, 'the toggle goes back to the text');
  return chipIds;
}

/** The long question a test stops (or cuts short), and how many tokens it may run to. */
export const LONG_QUESTION = 'Write a long story about a lighthouse keeper.';
export const LONG_TOKENS = 400;

/**
 * Asks the long question in a new chat and clicks Stop after a few characters: the reply must end early, stopped,
 * with the page ready for the next question.
 */
export async function checkStop(c, page, what) {
  await page.getByTestId('new-chat').click();
  await setGreedy(page, LONG_TOKENS);
  const stopped = await ask(page, LONG_QUESTION, { stopAfterChars: 8 });
  c.ok(stopped.stopped && stopped.state === 'stopped', `${what}: Stop ends the reply mid-stream`,
    `state ${stopped.state} after ${stopped.seconds.toFixed(1)} s`);
  const meta = await page.getByTestId('message-assistant').last().locator('.meta').textContent();
  const tokens = Number(/(\d+) tokens/.exec(meta)?.[1] ?? NaN);
  c.ok(tokens > 0 && tokens < LONG_TOKENS, `${what}: the stopped reply has fewer tokens than asked for`, meta);
  c.ok(await page.getByTestId('send').isVisible(), `${what}: Send is back after Stop`);
  c.ok(/ready/.test(await statusText(page)), `${what}: the model is ready after Stop`);
}

// The conversations as the app keeps them in IndexedDB (app/src/conversations.rs): JSON strings keyed by their ids.
// `put` saves one (when given), then every record is read back.
const conversationStore = (page, put) => page.evaluate((put) => new Promise((resolve, reject) => {
  const open = indexedDB.open('aviary', 1);
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const tx = open.result.transaction('conversations', put ? 'readwrite' : 'readonly');
    const store = tx.objectStore('conversations');
    if (put) store.put(JSON.stringify(put), put.id);
    const all = store.getAll();
    tx.oncomplete = () => {
      open.result.close();
      resolve(all.result.map((r) => JSON.parse(r)));
    };
    tx.onerror = () => reject(tx.error);
  };
}), put ?? null);

/** Every saved conversation, as the app wrote it. */
export const savedConversations = (page) => conversationStore(page);

/** Saves `conversation` ({ id, title, created_ms, updated_ms, messages }) as the app would. */
export const storeConversation = (page, conversation) => conversationStore(page, conversation);
