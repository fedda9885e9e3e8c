// Shared by the browser end-to-end tests (tests/e2e/*.test.mjs, run one after another by scripts/e2e-test.sh
// against one `aviary serve`): launching headless Chromium, checks, waiting for the model, asking and watching a
// reply stream.
//
// Environment every test gets: AVIARY_URL (the served app), PROMPT and MAX_TOKENS (the greedy question), the CLI's
// `generate --json` answers to it — EXPECTED_JSON (GPU, f16 where the adapter has it), EXPECTED_F32_JSON (GPU,
// --gpu-f32), EXPECTED_CPU_JSON (CPU backend) —, ARTIFACTS (screenshots and browser logs), MODEL_FILE (the model's
// path), CHROMIUM (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

/** The CLI's answer in one of EXPECTED_JSON, EXPECTED_F32_JSON, EXPECTED_CPU_JSON. */
export const expectedText = (variable) => JSON.parse(readFileSync(env(variable), 'utf8')).text;

export const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

// The flags that give headless Chromium a WebGPU adapter (SwiftShader's Vulkan on machines without a GPU).
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-webgpu-adapter=swiftshader'];
const COMMON_FLAGS = [
  '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export const LOAD_TIMEOUT = 10 * 60_000;
export const REPLY_TIMEOUT = 10 * 60_000;

/** Counts failed checks; `finish()` prints the tally and exits with the right status. */
export class Checks {
  constructor(name) {
    this.name = name;
    this.failures = 0;
    this.log = [];
  }

  check(ok, what, detail = '') {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `\n     ${detail}` : ''}`);
    if (!ok) this.failures++;
    return ok;
  }

  fail(e) {
    this.failures++;
    console.log(`FAIL ${e.stack ?? e}`);
  }

  /** Records the page's and its workers' console into this test's browser log. */
  watch(page) {
    page.on('console', (m) => this.log.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => this.log.push(`[pageerror] ${e.message}`));
    page.on('worker', (w) => w.on('console', (m) => this.log.push(`[worker ${m.type()}] ${m.text()}`)));
  }

  finish() {
    const logFile = join(artifacts, `${this.name}.browser.log`);
    writeFileSync(logFile, this.log.join('\n') + '\n');
    console.log(this.failures ? `${this.name}: ${this.failures} check(s) failed (browser log: ${logFile})` : `${this.name}: all checks passed`);
    process.exit(this.failures ? 1 : 0);
  }
}

/**
 * Headless Chromium; `webgpu: false` leaves out the flags that give it an adapter (the page then has no WebGPU).
 * `userDataDir` keeps a profile (OPFS, Cache Storage) across launches: a persistent context is returned then.
 */
export async function launch({ webgpu = true, userDataDir } = {}) {
  const args = [...COMMON_FLAGS, ...(webgpu ? WEBGPU_FLAGS : ['--disable-gpu'])];
  const executablePath = env('CHROMIUM', '/usr/bin/chromium');
  if (userDataDir) {
    return chromium.launchPersistentContext(userDataDir, { executablePath, headless: true, args, viewport: { width: 1280, height: 860 } });
  }
  return chromium.launch({ executablePath, headless: true, args });
}

/** Waits until the status line says ready (or error) and returns its text. */
export async function waitForModel(page) {
  await page.waitForFunction(
    () => /ready|error/.test(document.querySelector('[data-testid=model-status]')?.textContent ?? ''),
    null,
    { timeout: LOAD_TIMEOUT, polling: 250 },
  );
  return page.getByTestId('model-status').textContent();
}

async function setNumber(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}

/** Greedy decoding (temperature 0, seed 0) of at most `maxTokens` tokens. */
export async function setGreedy(page, maxTokens) {
  await setNumber(page, 'settings-temperature', 0);
  await setNumber(page, 'settings-seed', 0);
  await setNumber(page, 'settings-max-tokens', maxTokens);
}

/**
 * Sends a message and records the reply's text as it streams, until it ends; `stopAfterChars` clicks Stop once that
 * much text has streamed. `send` replaces typing into the composer (e.g. clicking Regenerate); the reply watched is
 * then the last one. Returns { state, text, partials, stopped }. The text is the reply's raw text (its `data-raw`),
 * not the Markdown the page renders from it.
 */
export async function ask(page, text, { stopAfterChars, send } = {}) {
  const assistant = page.getByTestId('message-assistant');
  const before = await assistant.count();
  let reply;
  if (send) {
    // The reply replaces the last one: wait until the last reply is a new, streaming one.
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
  const t0 = Date.now();
  let stopped = false;
  for (;;) {
    const [state, body] = await Promise.all([reply.getAttribute('data-state'), reply.locator('.text').getAttribute('data-raw')]);
    if (state !== 'streaming') return { state, text: body, partials, stopped };
    if (body) partials.add(body);
    if (stopAfterChars !== undefined && !stopped && body.length >= stopAfterChars) {
      await page.getByTestId('stop').click();
      stopped = true;
    }
    if (Date.now() - t0 > REPLY_TIMEOUT) throw new Error(`no end to the reply after ${REPLY_TIMEOUT / 1000} s`);
    await page.waitForTimeout(50);
  }
}
