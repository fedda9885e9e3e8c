// The browser end-to-end tests, as one run of Node's test runner (scripts/e2e-test.sh runs it against one
// `aviary serve`: `node --test --test-reporter=spec tests/e2e/all.test.mjs`). One headless Chromium with WebGPU
// serves every suite, each in a browser context of its own (its own storage); a second one, launched without the
// flags that give it a WebGPU adapter (they are the browser's, not a context's), serves the CPU fallback. Each
// browser starts when a suite first needs it.
//
// The UI's suites run on a tiny model, which loads in about a second; only default-model.mjs loads the real one,
// as few times as its checks allow (magpie.mjs loads it once, on the CPU backend, to compare a Magpie run with the
// CLI's; lora.mjs loads it once, on the CPU backend, to compare replies with adapters with the CLI's). E2E_SUITES
// (comma-separated: chat, models, device, default-model, magpie, lora, share, loads, offline, train) picks suites.

import { after } from 'node:test';
import { launch } from './lib.mjs';
import * as chat from './chat.mjs';
import * as defaultModel from './default-model.mjs';
import * as device from './device.mjs';
import * as loads from './loads.mjs';
import * as lora from './lora.mjs';
import * as magpie from './magpie.mjs';
import * as models from './models.mjs';
import * as offline from './offline.mjs';
import * as share from './share.mjs';
import * as train from './train.mjs';

const all = { chat, models, device, 'default-model': defaultModel, magpie, lora, share, loads, offline, train };
const named = (process.env.E2E_SUITES ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const wanted = named.length ? named : Object.keys(all);
const unknown = wanted.filter((name) => !(name in all));
if (unknown.length) {
  // The runner reports a file that throws only as failed: say why.
  console.error(`unknown suite(s) ${unknown.join(', ')}: the suites are ${Object.keys(all).join(', ')}`);
  process.exit(1);
}

const launched = [];
const lazily = (options) => {
  let browser;
  return () => (browser ??= launch(options).then((b) => (launched.push(b), b)));
};
const browsers = { webgpu: lazily({ webgpu: true }), cpu: lazily({ webgpu: false }) };

for (const name of wanted) all[name].register(browsers);

after(async () => {
  await Promise.all(launched.map((b) => b.close()));
});
