//! Rules the page and the worker must agree on for batch runs (Magpie, judge, synthesis): the batch size when the
//! page leaves it open, the refusal while a run holds the model, and what the Magpie form warns about a model.
//! Kept in one place so the two bundles cannot drift apart.

/// The worker's answer to a chat or a load while a batch run holds the model.
pub const BUSY: &str = "a Magpie run is going: pause it first";

/// Rows decoded together when the page does not say: a GPU step costs about the same for 8 rows as for 1, while
/// the CPU backend's cost grows with every row, so a smaller batch keeps its first rows coming sooner.
pub fn default_batch_for(on_gpu: bool) -> usize {
    if on_gpu { 8 } else { 4 }
}

/// The default batch for the backend a model runs on.
#[cfg(target_arch = "wasm32")]
pub fn default_batch(info: &engine::protocol::BackendInfo) -> usize {
    default_batch_for(matches!(info, engine::protocol::BackendInfo::Gpu { .. }))
}

/// What the Magpie form should say about a model: `builtin_family` names the built-in template standing in for a
/// missing one; `names` are the model's name and file name, which say whether it was instruction-tuned.
pub fn model_notes(builtin_family: Option<&str>, names: &[&str]) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(family) = builtin_family {
        notes.push(format!("this model has no chat template: Aviary's built-in {family} template stands in"));
    }
    if builtin_family.is_some() || !names.iter().any(|n| looks_aligned(n)) {
        notes.push("a base model that was never aligned makes poor Magpie data".to_string());
    }
    notes
}

/// Whether a model's name marks an instruction-tuned (aligned) model: "…-Instruct", "…-it", "…-chat".
fn looks_aligned(name: &str) -> bool {
    let lower = name.to_lowercase();
    if lower.contains("instruct") || lower.contains("chat") {
        return true;
    }
    // "-it" only as a whole part of the name ("gemma-2-2b-it.Q4.gguf"), not inside a word ("itemizer").
    lower.split(['-', '_', '.', ' ', '/']).any(|part| part == "it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_larger_on_the_gpu() {
        assert_eq!(default_batch_for(true), 8);
        assert_eq!(default_batch_for(false), 4);
    }

    #[test]
    fn instruct_models_get_no_base_note() {
        assert!(model_notes(None, &["SmolLM2 135M Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"]).is_empty());
        assert!(model_notes(None, &["gemma-2-2b-it.Q4_K_M.gguf"]).is_empty());
        assert!(model_notes(None, &["Llama-2-7b-chat"]).is_empty());
    }

    #[test]
    fn base_models_and_builtin_templates_are_noted() {
        let notes = model_notes(None, &["SmolLM2-135M", "smollm2-135m.gguf"]);
        assert_eq!(notes, vec!["a base model that was never aligned makes poor Magpie data".to_string()]);
        assert_eq!(model_notes(None, &["itemizer-1b.gguf"]).len(), 1);
        let notes = model_notes(Some("ChatML"), &["SmolLM2-135M-Instruct"]);
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("built-in ChatML template stands in"), "{notes:?}");
    }
}
