// The app as an installable, offline PWA, on the tiny model (CPU backend): the service worker (public/sw.js)
// precaches the shell and controls the page, which is cross-origin isolated and installable; offline, a reload
// starts the app from that cache, the tiny model loads from OPFS and answers as the CLI does, and the catalog marks
// what needs the network; a new version published on the server waits behind "Update available — reload" and takes
// over only when clicked, with a cache of its own and the old one deleted.
//
// The server serves SITE_DIR, a copy of dist/ (scripts/e2e-test.sh); the update step changes the shell there and
// stamps a new service worker with scripts/stamp-sw.sh, then puts both back.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after } from 'node:test';
import { ask, env, expectedFor, launch, setGreedy, suite, tinyPageUrl, versus, waitForModel } from './lib.mjs';

const prompt = env('PROMPT');
const siteDir = env('SITE_DIR');
const tinyName = basename(env('TINY_MODEL_URL'));

/** The cache name the service worker in SITE_DIR uses (its stamp). */
const stampedCache = () => `aviary-shell-${/^const BUILD = '([0-9a-f]+)';$/m.exec(readFileSync(join(siteDir, 'sw.js'), 'utf8'))[1]}`;
const stamp = () => execFileSync('scripts/stamp-sw.sh', [siteDir], { encoding: 'utf8' });

/** The page's Cache Storage: each cache's name and the paths it holds. */
const cachesOf = (page) => page.evaluate(async () => {
  const out = {};
  for (const name of await caches.keys()) {
    out[name] = (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname);
  }
  return out;
});

const controller = (page) => page.evaluate(() => navigator.serviceWorker.controller?.scriptURL ?? null);

export function register() {
  // Chromium calls no app installable in an incognito-like context, which is what a browser's new contexts are: this
  // suite runs in a persistent profile of its own (a browser of its own, closed with the context).
  const profile = mkdtempSync(join(tmpdir(), 'aviary-offline-'));
  after(() => rmSync(profile, { recursive: true, force: true }));
  const browser = async () => ({ newContext: () => launch({ userDataDir: profile }) });

  suite('installable and offline on the tiny model', { slug: 'offline', browser }, (s) => {
    const storedEntry = () => s.page.locator(`[data-testid=storage-entry][data-url$="/models/${tinyName}"][data-complete=true]`);
    let firstCache;

    s.step('online: the service worker controls the page, which is isolated and installable', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl({ backend: 'cpu' }));
      const status = await waitForModel(page);
      c.must(/ready/.test(status), 'the tiny model loads on the CPU backend', status);
      // The first install claims the open page; a reload is the fallback should the claim come late.
      const claimed = await page.waitForFunction(() => navigator.serviceWorker?.controller, null, { timeout: 20_000 })
        .then(() => true, () => false);
      if (!claimed) {
        c.note('the page was not claimed: reloading once');
        await page.reload();
        await waitForModel(page);
      }
      const sw = await controller(page);
      c.must(/\/sw\.js$/.test(sw ?? ''), 'a service worker (sw.js) controls the page', String(sw));
      c.ok(await page.evaluate(() => self.crossOriginIsolated) === true, 'the page is cross-origin isolated (COOP/COEP)');

      firstCache = stampedCache();
      const cached = await cachesOf(page);
      const shell = cached[firstCache] ?? [];
      c.must(shell.length > 0, `the shell is precached in ${firstCache}`, JSON.stringify(Object.keys(cached)));
      // Chromium validates relaxed SIMD, and the isolated page on more than one core starts that build with threads
      // (its CPU threads run worker-threads_child.js); only that build is precached.
      const threaded = await page.evaluate(() => navigator.hardwareConcurrency > 1);
      const build = threaded ? 'worker-threads' : 'worker-relaxed';
      const need = ['/index.html', `/${build}.js`, `/${build}_bg.wasm`, `/${build}_loader.js`, '/manifest.webmanifest',
        ...(threaded ? ['/worker-threads_child.js'] : [])];
      const missing = need.filter((p) => !shell.includes(p));
      c.ok(!missing.length && shell.some((p) => /^\/app-[0-9a-f]+_bg\.wasm$/.test(p)) && shell.some((p) => /\.css$/.test(p)),
        `the cache holds the page, the worker the page starts (${build}), the CSS and the manifest`, `missing ${missing}; has ${shell}`);
      const others = shell.filter((p) => /^\/worker(-simd|-relaxed|-threads)?_bg\.wasm$/.test(p) && p !== `/${build}_bg.wasm`);
      c.ok(!others.length, 'the worker builds it does not start are not precached', `also cached: ${others}`);
      c.ok(!Object.values(cached).flat().some((p) => p.includes('/models/')), 'no model is kept in Cache Storage',
        JSON.stringify(cached));

      const cdp = await s.context.newCDPSession(page);
      const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
      c.ok(installabilityErrors.length === 0, 'Chromium finds the app installable (manifest, icons, service worker)',
        JSON.stringify(installabilityErrors));
      const manifest = await cdp.send('Page.getAppManifest');
      c.ok(!manifest.errors?.length && /"maskable"/.test(manifest.data ?? ''), 'the manifest parses, with a maskable icon',
        JSON.stringify(manifest.errors));
      await cdp.detach();

      await storedEntry().waitFor({ timeout: 30_000 });
      c.ok(await storedEntry().count() === 1, 'the tiny model is complete in the browser\'s storage');
    });

    s.step('offline: a reload starts the app from the cache, loads the model from storage and answers', async (c) => {
      const { page } = s;
      await s.context.setOffline(true);
      try {
        await page.reload();
        const status = await waitForModel(page, { timeout: 120_000 });
        c.must(/ready/.test(status), 'offline, the app starts and the stored model loads', status);
        c.ok(await page.evaluate(() => navigator.onLine) === false, 'the page knows it is offline');
        c.ok(await page.evaluate(() => self.crossOriginIsolated) === true,
          'offline, the page from the service worker is still cross-origin isolated');
        const origin = await page.getByTestId('model-origin').textContent();
        c.ok(/loaded from cache/.test(origin), 'the card says the model came from storage', origin);

        const expected = await expectedFor(page, 'EXPECTED_TINY');
        await setGreedy(page);
        const reply = await ask(page, prompt);
        c.ok(reply.state === 'done' && reply.text && reply.text === expected.answer.text,
          `offline, the greedy reply equals ${expected.cli}`, `${versus(reply.text, expected.answer.text)} (${reply.state})`);

        const badges = page.getByTestId('catalog-entry').filter({ has: page.getByTestId('needs-network') });
        const n = await badges.count();
        c.ok(n >= 1, 'catalog entries not in storage are marked "needs network"', `${n} marked`);
        const buttons = badges.getByTestId('catalog-load');
        const states = await buttons.evaluateAll((els) => els.map((b) => ({ disabled: b.disabled, title: b.title })));
        c.ok(states.length === n && states.every((b) => b.disabled && /network/i.test(b.title)),
          'offline, their Load buttons are disabled, saying they need the network', JSON.stringify(states));
        await s.shot('offline');
      } finally {
        await s.context.setOffline(false);
      }
      await page.waitForFunction(() => navigator.onLine);
      const enabled = await page.getByTestId('catalog-entry').filter({ has: page.getByTestId('needs-network') })
        .getByTestId('catalog-load').evaluateAll((els) => els.every((b) => !b.disabled));
      c.ok(enabled, 'back online, the Load buttons are enabled again');
    });

    s.step('a new version waits behind "Update available" and takes over when clicked', async (c) => {
      const { page } = s;
      const indexPath = join(siteDir, 'index.html');
      const original = readFileSync(indexPath, 'utf8');
      const marker = `aviary-update-${Date.now()}`;
      try {
        writeFileSync(indexPath, `${original}<!-- ${marker} -->\n`);
        c.note(stamp().trim());
        const nextCache = stampedCache();
        c.must(nextCache !== firstCache, 'a changed shell is stamped with a new cache name', nextCache);
        c.ok(!(await page.getByTestId('update-available').isVisible()), 'no update is offered before one is published');
        await page.evaluate(() => navigator.serviceWorker.getRegistration().then((r) => r.update()));
        await page.getByTestId('update-available').waitFor({ timeout: 30_000 });
        c.ok(/Update available/.test(await page.getByTestId('update-available').textContent()),
          'the page says an update is available');
        // A worker that took over by itself would be active by now, its predecessor's cache deleted.
        await page.waitForTimeout(1000);
        const waiting = await page.evaluate(async () => {
          const reg = await navigator.serviceWorker.getRegistration();
          return reg.waiting ? reg.waiting.state : null;
        });
        c.ok(waiting === 'installed', 'the new version waits (installed, not activated)', `waiting: ${waiting}`);
        c.ok(Object.keys(await cachesOf(page)).includes(firstCache), 'until the user accepts, the old version keeps its cache',
          JSON.stringify(Object.keys(await cachesOf(page))));
        await s.shot('update-available');

        await Promise.all([
          page.waitForEvent('load', { timeout: 30_000 }),
          page.getByTestId('update-reload').click(),
        ]);
        await waitForModel(page);
        const isNew = await page.evaluate((m) =>
          [...document.childNodes, ...document.documentElement.childNodes].some((n) => n.nodeType === 8 && n.data.includes(m)),
        marker);
        c.ok(isNew, 'the page reloaded into the new version (its index.html)');
        const names = Object.keys(await cachesOf(page)).filter((n) => n.startsWith('aviary-shell-'));
        c.ok(names.length === 1 && names[0] === nextCache, 'the new cache is the only shell cache (the old one is gone)',
          `${JSON.stringify(names)}; expected [${nextCache}]`);
        c.ok(!(await page.getByTestId('update-available').isVisible()), 'the new version offers no update');
      } finally {
        writeFileSync(indexPath, original);
        stamp();
      }
    });
  });
}
