// Aviary's service worker: keeps the app shell (the page, its wasm, the engine's worker, the CSS, icons, manifest)
// so the app starts offline, and nothing else. scripts/stamp-sw.sh writes the built copy from this template: __AVIARY_BUILD__
// becomes a hash over the shell's files and __AVIARY_SHELL__ their list, so every build that changes the shell gets
// a cache of its own and a byte-different worker, which is how the browser finds the update.
//
// Models and adapters are left alone: the engine's worker keeps them in OPFS and reads them with Range requests,
// and a copy here would double the storage of files of gigabytes. Anything not in the shell — models/, other
// origins, Range requests, anything but GET — is not answered here (no respondWith), so it reaches the network as
// if this worker did not exist.
//
// A new version waits: install does not call skipWaiting, because switching the shell under a running generation
// would strand the page on wasm whose files are gone. The page offers "Update available — reload" and posts
// {type: 'skip-waiting'} when the user accepts.

const BUILD = '__AVIARY_BUILD__';
const SHELL = __AVIARY_SHELL__;
const PREFIX = 'aviary-shell-';
const CACHE = PREFIX + BUILD;

// The shell's absolute URLs (relative names resolve against this script, which lives beside index.html).
const shellUrls = new Set(SHELL.map((p) => new URL(p, self.location).href));
const indexUrl = new URL('index.html', self.location).href;
const scope = self.registration.scope;

// The engine's worker is built four times (portable, SIMD128, SIMD128 + relaxed SIMD, and that with threads; 6–7 MB
// each) and the page starts the most capable one this browser validates (app/src/bridge.rs, whose probe modules these
// are), so only that one is precached. The threaded one needs a cross-origin isolated page, which the page is once
// this worker answers it (it adds COOP/COEP), so it is the one precached wherever relaxed SIMD validates on more than
// one core. Another one (`?simd=0`, `?simd=128`, `?threads=1`, or a first visit from a host without the headers) is
// kept once fetched.
const WORKER_FILE = /^worker(-simd|-relaxed|-threads)?(_bg\.wasm|\.js|_loader\.js|_child\.js)$/;
const SIMD128_PROBE = [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11];
const RELAXED_SIMD_PROBE = [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 19, 1, 17, 0, 65, 0, 253,
  15, 65, 0, 253, 15, 65, 0, 253, 15, 253, 133, 2, 11];
function validates(bytes) {
  try {
    return WebAssembly.validate(new Uint8Array(bytes));
  } catch {
    return false;
  }
}
const cores = self.navigator.hardwareConcurrency || 1;
const workerBuild = validates(RELAXED_SIMD_PROBE) ? (cores > 1 ? '-threads' : '-relaxed')
  : validates(SIMD128_PROBE) ? '-simd' : undefined;
const precached = SHELL.filter((p) => {
  const m = WORKER_FILE.exec(p);
  return !m || m[1] === workerBuild;
}).map((p) => new URL(p, self.location).href);

self.addEventListener('install', (event) => {
  // `reload`: the browser's HTTP cache may hold an older file under the same name (index.html, worker.js).
  event.waitUntil(caches.open(CACHE).then((cache) =>
    cache.addAll(precached.map((url) => new Request(url, { cache: 'reload' })))));
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
    }
    // The first install takes the open page at once, so it works offline without a reload; an update only gets
    // here after the user asked for it, and the page reloads on the change.
    await self.clients.claim();
  })());
});

self.addEventListener('message', (event) => {
  if (event.data && event.data.type === 'skip-waiting') self.skipWaiting();
});

// COOP/COEP make the page cross-origin isolated (SharedArrayBuffer, precise timers). `aviary serve` sends them;
// a static host may not, so responses answered here get them too once this worker controls the page.
const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

function isolated(response) {
  if (!response || response.type === 'opaque' || response.type === 'opaqueredirect' || response.status === 0) return response;
  const missing = Object.keys(ISOLATION).filter((h) => !response.headers.has(h));
  if (!missing.length) return response;
  const headers = new Headers(response.headers);
  for (const h of missing) headers.set(h, ISOLATION[h]);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

async function fromShell(url, request) {
  const cached = await caches.match(url, { cacheName: CACHE });
  if (cached) return isolated(cached);
  const response = await fetch(request);
  // A shell file left out of the precache (another worker build) is kept once it has been used.
  if (response.ok && url !== indexUrl) {
    const copy = response.clone();
    caches.open(CACHE).then((cache) => cache.put(url, copy)).catch(() => {});
  }
  return isolated(response);
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET' || request.headers.has('range')) return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || !url.href.startsWith(scope)) return;
  if (url.href.startsWith(scope + 'models/')) return;
  if (request.mode === 'navigate') {
    const path = url.origin + url.pathname;
    // The app itself (with whatever query it was opened with) is the cached page: the shell and its wasm stay one
    // version until the user takes an update. Other navigations go to the network, isolated like the app.
    if (path === scope || path === indexUrl) event.respondWith(fromShell(indexUrl, request));
    else event.respondWith(fetch(request).then(isolated));
    return;
  }
  const key = url.origin + url.pathname;
  if (shellUrls.has(key)) event.respondWith(fromShell(key, request));
});
