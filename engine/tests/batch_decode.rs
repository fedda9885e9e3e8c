//! Batched decoding: B sequences at different positions decoded in one forward pass give each sequence the logits it
//! gets decoded alone (which the golden tests hold to HF transformers and llama.cpp) — bit for bit on the CPU
//! backend, within 1e-3 of max|logit| on the GPU's f32 path. The tiny models' sliding windows (5 and 7 positions)
//! are shorter than the prompts, so rows straddle them.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::backend::Backend;
use engine::model::Cache;

/// Four prompts of different lengths (so different positions in every step), then three decode steps.
const PROMPT_LENS: [usize; 4] = [3, 6, 9, 14];
const STEPS: usize = 3;

fn tokens(seq: usize, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((seq * 131 + i * 37 + 5) % (vocab - 10) + 5) as u32).collect()
}

/// Every sequence's logits at each decode step: (alone, batched).
fn both_ways<B: Backend>(m: &Loaded<B>) -> (Vec<Vec<Vec<f32>>>, Vec<Vec<Vec<f32>>>) {
    let vocab = m.model.config.vocab_size;
    let host = |t: &B::Tensor| futures::executor::block_on(m.backend.to_host(t)).unwrap();
    let max_positions = PROMPT_LENS.iter().max().unwrap() + STEPS + 1;
    let prompts: Vec<Vec<u32>> = PROMPT_LENS
        .iter()
        .enumerate()
        .map(|(s, &n)| tokens(s, n, vocab))
        .collect();
    // The next token of sequence s at step k: fixed, so both ways feed the same tokens.
    let next = |s: usize, k: usize| ((s * 17 + k * 29 + 11) % (vocab - 10) + 5) as u32;

    let mut alone = Vec::new();
    for (s, prompt) in prompts.iter().enumerate() {
        let mut cache = m.model.new_cache(&m.backend, max_positions).unwrap();
        m.model.forward(&m.backend, &mut cache, prompt, false).unwrap();
        let rows: Vec<Vec<f32>> = (0..STEPS)
            .map(|k| {
                let out = m.model.forward(&m.backend, &mut cache, &[next(s, k)], false).unwrap();
                host(&out).remove(0)
            })
            .collect();
        alone.push(rows);
    }

    let mut caches: Vec<Cache<B>> = prompts
        .iter()
        .map(|prompt| {
            let mut cache = m.model.new_cache(&m.backend, max_positions).unwrap();
            m.model.forward(&m.backend, &mut cache, prompt, false).unwrap();
            cache
        })
        .collect();
    let mut batched = vec![Vec::new(); prompts.len()];
    for k in 0..STEPS {
        let tokens: Vec<u32> = (0..prompts.len()).map(|s| next(s, k)).collect();
        let mut refs: Vec<&mut Cache<B>> = caches.iter_mut().collect();
        let out = m.model.forward_batch(&m.backend, &mut refs, &tokens).unwrap();
        for (s, row) in host(&out).into_iter().enumerate() {
            batched[s].push(row);
        }
    }
    (alone, batched)
}

fn first_mismatch(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits())
}

#[test]
fn cpu_batched_rows_equal_each_sequence_alone_bit_for_bit() {
    for name in ["llama", "gemma2", "gemma3"] {
        for quant in ["f32", "q8_0"] {
            let m = load_cpu(&fixture(&format!("tiny/{name}/model-{quant}.gguf")));
            let (alone, batched) = both_ways(&m);
            for (s, (a, b)) in alone.iter().zip(&batched).enumerate() {
                for (k, (ra, rb)) in a.iter().zip(b).enumerate() {
                    if let Some(i) = first_mismatch(ra, rb) {
                        panic!(
                            "{name} {quant}: sequence {s} step {k}: logit {i} is {} batched, {} alone",
                            rb[i], ra[i]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn cpu_batched_rows_ignore_their_neighbours() {
    // The same sequence beside different neighbours (and alone in a batch of one) gets the same bits.
    let m = load_cpu(&fixture("tiny/llama/model-q8_0.gguf"));
    let vocab = m.model.config.vocab_size;
    let run = |neighbours: &[usize]| {
        let mut caches: Vec<Cache<_>> = std::iter::once(7usize)
            .chain(neighbours.iter().copied())
            .map(|n| {
                let mut c = m.model.new_cache(&m.backend, 32).unwrap();
                m.model.forward(&m.backend, &mut c, &tokens(n, n, vocab), false).unwrap();
                c
            })
            .collect();
        let tokens: Vec<u32> = (0..caches.len()).map(|i| 40 + i as u32).collect();
        let mut refs: Vec<&mut Cache<_>> = caches.iter_mut().collect();
        let out = m.model.forward_batch(&m.backend, &mut refs, &tokens).unwrap();
        futures::executor::block_on(m.backend.to_host(&out)).unwrap().remove(0)
    };
    let lone = run(&[]);
    for neighbours in [&[3usize][..], &[12, 5, 9], &[2, 2, 2, 2, 2, 2, 2]] {
        let row = run(neighbours);
        assert_eq!(first_mismatch(&lone, &row), None, "beside {neighbours:?}");
    }
}

#[test]
fn gpu_batched_rows_are_within_1e_3_of_each_sequence_alone() {
    for name in ["llama", "gemma2", "gemma3"] {
        let Some(m) = load_gpu(&fixture(&format!("tiny/{name}/model-f32.gguf"))) else {
            return;
        };
        let (alone, batched) = both_ways(&m);
        for (s, (a, b)) in alone.iter().zip(&batched).enumerate() {
            for (k, (ra, rb)) in a.iter().zip(b).enumerate() {
                let scale = ra.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
                if let Some(i) = ra.iter().zip(rb).position(|(x, y)| (x - y).abs() > 1e-3 * scale) {
                    panic!(
                        "{name} f32 on the GPU: sequence {s} step {k}: logit {i} is {} batched, {} alone (max|logit| {scale})",
                        rb[i], ra[i]
                    );
                }
            }
        }
    }
}
