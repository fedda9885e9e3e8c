//! How the GPU backend executes a decode step, counted by the session: one submit, no new buffers or bind groups,
//! and at most 1 KB read back per token. Also: a session survives bad input, and a later load works.

mod common;
use common::*;
use engine::session::GenerateOptions;

#[test]
fn a_decode_step_is_one_submit_with_no_allocation_and_a_small_readback() {
    for name in ["llama", "gemma2", "gemma3"] {
        let Some(m) = load_gpu(&fixture(&format!("tiny/{name}/model-q8_0.gguf"))) else {
            return;
        };
        let prompt: Vec<u32> = vec![1, 5, 9, 13, 17, 21];
        let mut s = engine::session::Session::new(&m.backend, &m.model, None, 64).unwrap();
        let options = GenerateOptions {
            max_tokens: 12,
            stop_at_eos: false,
            ..Default::default()
        };
        // The first generation compiles pipelines and fills the buffer pool and bind-group cache.
        futures::executor::block_on(s.generate(&prompt, &options, &mut |_, _| {})).unwrap();
        s.reset().unwrap();
        let g = futures::executor::block_on(s.generate(&prompt, &options, &mut |_, _| {})).unwrap();
        let steps = g.stats.decode_steps() as u64;
        let c = g.stats.decode_counters;
        eprintln!("{name}: {steps} decode steps: {c:?}");
        assert_eq!(
            steps, 11,
            "{name}: every token after the first is a decode step"
        );
        assert_eq!(c.submits, steps, "{name}: submits per decode step");
        assert_eq!(
            c.allocations, 0,
            "{name}: buffers, bind groups or pipelines created while decoding"
        );
        assert!(
            c.readback_bytes <= 1024 * steps,
            "{name}: {} bytes read back in {steps} steps",
            c.readback_bytes
        );
        assert!(c.dispatches > 0, "{name}: dispatches are counted");
    }
}

#[test]
fn bad_token_ids_are_errors_and_the_session_goes_on() {
    let Some(m) = load_gpu(&fixture("tiny/llama/model-f32.gguf")) else {
        return;
    };
    let vocab = m.model.config.vocab_size as u32;
    let mut s = engine::session::Session::new(&m.backend, &m.model, None, 32).unwrap();
    let err = futures::executor::block_on(s.logits(&[1, vocab + 7])).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let rows = futures::executor::block_on(s.logits(&[1, 2, 3])).unwrap();
    assert_eq!(rows.len(), 3);
    // A second backend (a later load) works beside the first.
    let again = load_gpu(&fixture("tiny/llama/model-f32.gguf")).unwrap();
    assert_eq!(
        again.logits(&[1, 2, 3]),
        rows,
        "the same model on a second device gives the same logits"
    );
}

#[test]
fn a_lost_device_is_reported_and_a_new_load_works() {
    let path = fixture("tiny/gemma3/model-f32.gguf");
    let Some(m) = load_gpu(&path) else { return };
    let before = m.logits(&[2, 3, 4]);
    m.backend.destroy();
    let mut s = engine::session::Session::new(&m.backend, &m.model, None, 32).unwrap();
    let err = futures::executor::block_on(s.logits(&[2, 3, 4])).unwrap_err();
    assert!(err.to_string().contains("lost"), "the loss is named: {err}");
    let again = load_gpu(&path).expect("a second device");
    assert_eq!(again.logits(&[2, 3, 4]), before);
}
