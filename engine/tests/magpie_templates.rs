//! Magpie pre-query templates of the two real models, derived from the chat templates in their GGUF files: SmolLM2's
//! against what transformers renders for it (tests/fixtures/chat/refs.json), Gemma 3's (the 270M base file carries no template,
//! so Aviary's built-in Gemma template stands in) against MODELS.md's Gemma pre-query.
#![cfg(not(target_arch = "wasm32"))]

mod common;
use common::*;
use engine::model::ModelFiles;

fn template_of(file: &str) -> engine::chat::ChatTemplate {
    let files = ModelFiles::open(real_model(file)).expect("opening the model");
    let tokenizer = files.tokenizer.as_ref().expect("a tokenizer");
    engine::prompt::chat_template(files.chat_template.as_ref(), tokenizer, files.config.arch)
}

#[test]
fn smollm2_pre_query_is_what_transformers_renders() {
    let refs = read_json(&fixture("chat/refs.json"));
    let t = template_of("SmolLM2-135M-Instruct.Q4_1.gguf");
    for case in refs["pre_query"].as_array().unwrap() {
        if case["template"] == "fixture:gguf-SmolLM2-135M-Instruct.jinja" {
            let got = engine::magpie::pre_query_template(&t, case["system"].as_str()).unwrap();
            assert_eq!(got, case["output"].as_str().unwrap(), "system {:?}", case["system"]);
        }
    }
}

#[test]
fn gemma3_pre_query_opens_a_user_turn() {
    let t = template_of("gemma-3-270m-q4_k_m.gguf");
    assert_eq!(engine::magpie::pre_query_template(&t, None).unwrap(), "<bos><start_of_turn>user\n");
    // Gemma has no system role: the system prompt opens the user's turn.
    assert_eq!(
        engine::magpie::pre_query_template(&t, Some("Be brief.")).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\n"
    );
}
