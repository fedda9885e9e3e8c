// The peer's side of the browser benchmark (tests/bench/web-bench.mjs drives it): wllama loads the model named by
// `?model=` as soon as the page opens, so its load time counts from the navigation like Aviary's page's does, and
// `window.benchGenerate` runs one greedy generation timed the way Aviary's engine times its own (engine/src/
// session.rs): prefill from the first prompt token sent to the logits back, time to first token up to the first
// sampled token, decode from the end of the prefill to the last token, its rate over the tokens after the first.
//
// The files next to it at run time: wllama/ (the package's esm/ folder) and jinja/ (@huggingface/jinja's dist/).

import { Wllama } from './wllama/index.js';
import { Template } from './jinja/index.js';

const params = new URLSearchParams(location.search);
const status = document.getElementById('status');
const wllama = new Wllama(
  {
    'single-thread/wllama.wasm': new URL('./wllama/single-thread/wllama.wasm', import.meta.url).href,
    // Used only when the page is cross-origin isolated (COOP/COEP headers), which SharedArrayBuffer needs.
    'multi-thread/wllama.wasm': new URL('./wllama/multi-thread/wllama.wasm', import.meta.url).href,
  },
  { suppressNativeLog: true, logger: { ...console, debug: () => {} } },
);

window.benchLoaded = (async () => {
  const t0 = performance.now();
  try {
    // Aviary's app asks for min(trained context, 4096) (engine/src/protocol.rs: default_context).
    // Absolute: wllama fetches from a worker started from a blob: URL.
    const model = new URL(params.get('model'), location.href).href;
    // `?n_threads=` overrides wllama's default of half the hardware threads (one on a 2-core machine, which then
    // loads its single-thread build even on a cross-origin isolated page).
    const threads = params.has('n_threads') ? { n_threads: Number(params.get('n_threads')) } : {};
    await wllama.loadModelFromUrl(model, { n_ctx: Number(params.get('n_ctx') ?? 4096), seed: 0, ...threads });
  } catch (e) {
    status.textContent = `error: ${e.message ?? e}`;
    return { error: String(e.stack ?? e) };
  }
  const readyAtMs = performance.now();
  status.textContent = 'ready';
  return {
    readyAtMs,
    modelLoadMs: readyAtMs - t0,
    multithread: wllama.isMultithread(),
    threads: wllama.getNumThreads(),
    crossOriginIsolated: self.crossOriginIsolated === true,
    libllama: typeof Wllama.getLibllamaVersion === 'function' ? Wllama.getLibllamaVersion() : null,
  };
})();

/** The chat prompt for one user message, rendered with the GGUF's own template as Aviary renders it. */
async function chatPrompt(question) {
  const template = wllama.getChatTemplate();
  if (!template) throw new Error('the model has no chat template');
  const special = async (id) => (id >= 0 ? wllama.detokenize([id], true) : '');
  return new Template(template).render({
    messages: [{ role: 'user', content: question }],
    add_generation_prompt: true,
    bos_token: await special(wllama.getBOS()),
    eos_token: await special(wllama.getEOS()),
  });
}

window.benchGenerate = async (question, maxTokens) => {
  const prompt = await chatPrompt(question);
  const tokens = await wllama.tokenize(prompt, true);
  if (wllama.mustAddBosToken() && tokens[0] !== wllama.getBOS()) tokens.unshift(wllama.getBOS());
  await wllama.kvClear();
  // temp 0 keeps only the largest logit: greedy, as Aviary's temperature 0.
  await wllama.samplingInit({ temp: 0, top_k: 1, top_p: 1, min_p: 0, penalty_repeat: 1 });
  await wllama.samplingAccept(tokens);

  const t0 = performance.now();
  await wllama.decode(tokens, {});
  const tPrefill = performance.now();
  const generated = [];
  let tFirst = null;
  let stop = 'max_tokens';
  for (;;) {
    const { token } = await wllama.samplingSample();
    tFirst ??= performance.now();
    if (wllama.isTokenEOG(token)) {
      stop = 'stop_token';
      break;
    }
    generated.push(token);
    if (generated.length >= maxTokens) break;
    await wllama.samplingAccept([token]);
    await wllama.decode([token], {});
  }
  const tEnd = performance.now();
  return {
    promptTokens: tokens.length,
    generatedTokens: generated.length,
    prefillMs: tPrefill - t0,
    firstTokenMs: tFirst - t0,
    decodeMs: tEnd - tPrefill,
    stop,
    text: await wllama.detokenize(generated, true),
  };
};
