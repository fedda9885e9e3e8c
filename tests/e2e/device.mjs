// The Device panel, on the tiny model in a browser with WebGPU: Auto runs the CPU on a software adapter (SwiftShader
// here) and says why, WebGPU chosen in the panel still loads; the panel describes the adapter as the browser sees it,
// and the backend it chooses (or `?backend=cpu` in the page's URL) applies to the next load. (Without WebGPU, the panel
// saying why the model runs on the CPU is checked in default-model.mjs.)

import {
  ask, cliAnswer, env, expectedFor, loadAnew, setGreedy, softwareAdapter, suite, tinyPageUrl, versus, waitForModel,
  waitForText,
} from './lib.mjs';

const prompt = env('PROMPT');

export function register({ webgpu }) {
  suite('device panel on the tiny model', { slug: 'device', browser: webgpu }, (s) => {
    s.step('Auto runs the CPU on a software adapter and says why; WebGPU chosen in the panel still loads', async (c) => {
      const { page } = s;
      await page.goto(tinyPageUrl());
      let status = await waitForModel(page);
      if (await softwareAdapter(page)) {
        c.must(/ready/.test(status) && /CPU \(wasm\)/.test(status), 'on a software adapter Auto runs the CPU', status);
        const why = await page.getByTestId('adapter-cpu-reason').textContent();
        c.ok(/Auto chose the CPU/.test(why) && /software/.test(why) && /choose WebGPU/.test(why),
          'the Device panel says why, and how to use WebGPU anyway', why);
      } else {
        c.must(/ready/.test(status) && /WebGPU/.test(status), 'on a hardware adapter Auto runs WebGPU', status);
      }
      await page.getByTestId('backend-choice').selectOption('gpu');
      status = await loadAnew(page, () => page.getByTestId('model-load').click());
      c.must(/ready/.test(status) && /WebGPU/.test(status), 'WebGPU chosen in the panel loads on WebGPU', status);
    });

    s.step('on WebGPU the panel lists the adapter\'s features and limits', async (c) => {
      const { page } = s;
      const panel = page.getByTestId('adapter-panel');
      const panelText = (await panel.textContent()).replace(/\s+/g, ' ');
      c.ok(/max storage buffer binding size/.test(panelText) && /Features/.test(panelText),
        'the adapter panel lists the adapter\'s features and limits', panelText);
      const adapterInfo = await page.evaluate(async () => {
        const a = await navigator.gpu.requestAdapter();
        return { binding: a.limits.maxStorageBufferBindingSize, features: [...a.features] };
      });
      const bindingRow = page.getByTestId('adapter-limit-max_storage_buffer_binding_size');
      const shownBinding = Number(await bindingRow.getAttribute('data-value'));
      c.ok(shownBinding === adapterInfo.binding, 'the panel\'s max storage binding is the browser\'s own',
        `panel ${shownBinding}, navigator.gpu ${adapterInfo.binding}`);
      const shown = await page.getByTestId('adapter-features').locator('li').allTextContents();
      const both = `panel: ${shown.join(' ')}\n     browser: ${adapterInfo.features.join(' ')}`;
      for (const feature of ['shader-f16', 'timestamp-query']) {
        c.ok(shown.includes(feature) === adapterInfo.features.includes(feature), `the panel and the browser agree on ${feature}`,
          both);
      }
      // The browser-only list fills in once the page's own adapter probe answers ("—" until then).
      const browserOnly = (await waitForText(page, 'adapter-browser-only-features', /^(?!—$)./)).split(', ');
      const unaccounted = adapterInfo.features.filter((f) => !shown.includes(f) && !browserOnly.includes(f));
      c.ok(unaccounted.length === 0, 'every feature the browser offers is in the panel (mapped by wgpu or not)',
        `missing: ${unaccounted.join(' ')}; only the browser's: ${browserOnly.join(' ')}`);
      await panel.screenshot({ path: s.artifactPath('adapter-webgpu.png') });
    });

    // SwiftShader's WebGPU answers differently from the CLI (and from the browser's own CPU backend) once a prompt
    // is longer than 64 tokens, on the default model too; shorter ones agree. PROMPT is 77 tokens on the tiny model,
    // which shows it in a second. A todo until the engine is fixed: then drop `todo`.
    s.step('on WebGPU, a prompt longer than 64 tokens gets the CLI\'s greedy answer', async (c) => {
      const expected = await expectedFor(s.page, 'EXPECTED_TINY');
      c.note(`device: ${expected.device}; expecting ${expected.cli}; ${expected.answer.prompt_tokens.length} prompt tokens`);
      await setGreedy(s.page);
      const reply = await ask(s.page, prompt);
      c.ok(reply.state === 'done' && reply.text === expected.answer.text, `the greedy reply equals ${expected.cli}`,
        `${versus(reply.text, expected.answer.text)} (${reply.state})`);
    }, { todo: 'the WebGPU path parts from the CPU past 64 positions on SwiftShader' });

    s.step('choosing CPU in the panel applies to the next load, which is not called a fallback', async (c) => {
      const { page } = s;
      await page.getByTestId('backend-choice').selectOption('cpu');
      const status = await loadAnew(page, () => page.getByTestId('model-load').click());
      c.must(/ready/.test(status) && /CPU \(wasm\)/.test(status), 'choosing CPU and loading again runs on the CPU', status);
      const device = await page.getByTestId('model-device').textContent();
      c.ok(/^CPU \(wasm\)/.test(device) && !/unavailable/.test(device), 'a chosen CPU is not called a fallback', device);
      const expected = cliAnswer('EXPECTED_TINY_CPU_JSON');
      await page.getByTestId('new-chat').click();
      await setGreedy(page);
      const reply = await ask(page, prompt);
      c.ok(reply.state === 'done' && reply.text === expected.text,
        'on the chosen CPU the greedy reply equals `aviary generate --backend cpu`',
        `${versus(reply.text, expected.text)} (${reply.state})`);
    });

    s.step('?backend=cpu in the page\'s URL loads on the CPU and shows in the choice', async (c) => {
      // A context of its own, so nothing chosen above carries over.
      const context = await s.context.browser().newContext();
      try {
        const page = await context.newPage();
        s.watch(page);
        await page.goto(tinyPageUrl({ backend: 'cpu' }));
        const status = await waitForModel(page);
        c.ok(/ready/.test(status) && /CPU \(wasm\)/.test(status), '?backend=cpu loads on the CPU', status);
        c.ok(await page.getByTestId('backend-choice').inputValue() === 'cpu', '?backend=cpu shows in the backend choice');
      } finally {
        await context.close();
      }
    });
  });
}
