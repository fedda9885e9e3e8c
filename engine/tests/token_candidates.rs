//! The candidates a generation reports with each token, on a real (tiny) model on the CPU: they are the softmax of
//! the logits a separate forward pass computes for that position, best first, and under greedy decoding the first is
//! the token generated.

mod common;
use common::*;
use engine::session::{GenerateOptions, Session, TokenInfo};

#[test]
fn candidates_match_the_models_own_logits() {
    let m = load_cpu(&fixture("tiny/llama/model-f32.gguf"));
    let prompt = [1u32, 5, 9, 2, 7];
    let n = 6;
    let options = GenerateOptions {
        max_tokens: n,
        stop_at_eos: false,
        candidates: 4,
        ..Default::default()
    };
    let mut s = Session::new(&m.backend, &m.model, None, prompt.len() + n + 1).unwrap();
    let mut seen: Vec<(u32, TokenInfo)> = Vec::new();
    let g =
        futures::executor::block_on(s.generate_with_info(&prompt, &options, &mut |t, _, info| {
            seen.push((t, info.cloned().expect("candidates were asked for")))
        }))
        .unwrap();
    assert_eq!(g.tokens.len(), n);
    // Without a tokenizer every token is its own piece.
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), g.tokens);

    let all: Vec<u32> = prompt.iter().chain(&g.tokens).copied().collect();
    let rows = m.logits(&all);
    for (i, (token, info)) in seen.iter().enumerate() {
        let row = &rows[prompt.len() - 1 + i];
        assert_eq!(info.support, row.len());
        assert_eq!(info.candidates.len(), 4);
        assert_eq!(
            info.candidates[0].token, *token,
            "step {i}: greedy picks the likeliest"
        );
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let total: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
        let mut last = f32::INFINITY;
        for c in &info.candidates {
            let p = (row[c.token as usize] as f64 - max).exp() / total;
            assert!(
                (c.p as f64 - p).abs() < 1e-4,
                "step {i} token {}: {} vs {p}",
                c.token,
                c.p
            );
            assert!(c.p > 0.0 && c.p <= 1.0 && c.p <= last);
            last = c.p;
        }
    }

    // Off by default: the CLI's stream is unchanged.
    let mut none = 0;
    let options = GenerateOptions {
        max_tokens: n,
        stop_at_eos: false,
        ..Default::default()
    };
    futures::executor::block_on(s.generate_with_info(&prompt, &options, &mut |_, _, info| {
        none += info.is_some() as usize
    }))
    .unwrap();
    assert_eq!(none, 0);
}
