//! Magpie runs through the engine on the tiny Llama (random weights, SmolLM2's vocabulary and ChatML template) on the
//! CPU backend: multi-turn rows alternate human and gpt turns, each later instruction continues the conversation so
//! far, and rows do not depend on the batch size or on which samples share a batch.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::batch::BatchRunner;
use engine::magpie::{self, MagpieContext, MagpieSettings, StepSettings};

fn rows(m: &CpuModel, settings: &MagpieSettings, samples: &[u64], batch: usize) -> Vec<dataset::Row> {
    let tokenizer = m.files.tokenizer.as_ref().expect("a tokenizer");
    let template = engine::prompt::chat_template(m.files.chat_template.as_ref(), tokenizer, m.files.config.arch);
    let ctx = MagpieContext { template: &template, tokenizer, settings: settings.clone() };
    let mut runner = BatchRunner::new(&m.backend, &m.model, tokenizer, batch, 256).unwrap();
    let mut out = Vec::new();
    futures::executor::block_on(magpie::generate(&mut runner, &ctx, samples, &mut |row, _| {
        out.push(row);
        Ok(())
    }))
    .unwrap();
    out
}

fn settings(turns: u32) -> MagpieSettings {
    MagpieSettings {
        seed: 3,
        turns,
        pre_query_template: "<|im_start|>user\n".into(),
        instruction: StepSettings { temperature: 1.0, top_p: 1.0, max_tokens: 6 },
        response: StepSettings { temperature: 0.0, top_p: 1.0, max_tokens: 6 },
        model: "tiny-llama".into(),
        ..MagpieSettings::default()
    }
}

#[test]
fn multi_turn_rows_alternate_and_keep_their_order() {
    let m = load_cpu(&fixture("tiny/llama/model-q8_0.gguf"));
    let got = rows(&m, &settings(2), &[0, 1, 2], 2);
    assert_eq!(got.len(), 3);
    for (i, row) in got.iter().enumerate() {
        let roles: Vec<&str> = row.conversations.iter().map(|t| t.from.as_str()).collect();
        assert_eq!(roles, ["human", "gpt", "human", "gpt"], "row {i}");
        let cfg = row.gen_input_configs.as_ref().unwrap();
        assert_eq!((cfg.sample_index, cfg.turns, cfg.seed), (i as u64, 2, 3));
        assert_eq!(row.id, dataset::row_id(cfg));
    }
}

#[test]
fn rows_do_not_depend_on_the_batch_or_their_neighbours() {
    let m = load_cpu(&fixture("tiny/llama/model-q8_0.gguf"));
    let s = settings(1);
    let all = rows(&m, &s, &[0, 1, 2, 3, 4], 1);
    assert_eq!(rows(&m, &s, &[0, 1, 2, 3, 4], 3), all, "batch 3 vs batch 1");
    // Sample 3 alone, or beside other samples, is the same row.
    assert_eq!(rows(&m, &s, &[3], 4), vec![all[3].clone()]);
    assert_eq!(rows(&m, &s, &[4, 3], 2), vec![all[4].clone(), all[3].clone()]);
}

#[test]
fn the_next_instruction_continues_the_conversation() {
    let m = load_cpu(&fixture("tiny/llama/model-q8_0.gguf"));
    let tokenizer = m.files.tokenizer.as_ref().unwrap();
    let template = engine::prompt::chat_template(m.files.chat_template.as_ref(), tokenizer, m.files.config.arch);
    let history = [engine::chat::Message::user("Hi?"), engine::chat::Message::assistant("Hello.")];
    let next = template.next_query(&history).unwrap();
    // What the template renders for the conversation, then the next user header (MODELS.md's ChatML).
    assert!(next.ends_with("<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n"), "{next:?}");
}
