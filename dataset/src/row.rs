//! The dataset row: one conversation, how it was generated and how a judge tagged it.

use serde::{Deserialize, Serialize};

/// `Turn::from` values. ShareGPT's names, because that is the schema Magpie publishes.
pub const HUMAN: &str = "human";
pub const GPT: &str = "gpt";
pub const SYSTEM: &str = "system";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// "human" | "gpt" | "system".
    pub from: String,
    pub value: String,
}

impl Turn {
    pub fn new(from: impl Into<String>, value: impl Into<String>) -> Self {
        Turn {
            from: from.into(),
            value: value.into(),
        }
    }

    pub fn human(value: impl Into<String>) -> Self {
        Turn::new(HUMAN, value)
    }

    pub fn gpt(value: impl Into<String>) -> Self {
        Turn::new(GPT, value)
    }

    pub fn system(value: impl Into<String>) -> Self {
        Turn::new(SYSTEM, value)
    }
}

/// Everything needed to regenerate a row. `#[serde(default)]` so files written before a field existed still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GenInputConfigs {
    /// Instruction step.
    pub temperature: f32,
    pub top_p: f32,
    pub response_temperature: f32,
    pub response_top_p: f32,
    pub seed: u64,
    pub sample_index: u64,
    pub turns: u32,
    pub pre_query_template: String,
    pub system_prompt: Option<String>,
    pub model: String,
    pub engine_version: String,
    pub stop_at_newline: bool,
    pub sanitize: bool,
    /// The response step's token budget.
    pub max_tokens: u32,
    /// The instruction step's token budget.
    pub ins_max_tokens: u32,
}

/// LLM-judge tags; values come from `judge::{DIFFICULTY, INPUT_QUALITY, TASK_CATEGORIES}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Tags {
    pub difficulty: Option<String>,
    pub input_quality: Option<String>,
    pub task_category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    /// The source of truth: human, gpt, human, gpt, ... with a system turn first only when the source had one.
    pub conversations: Vec<Turn>,
    /// Mirrors the first human value, kept because Magpie's schema (and most viewers) expect it at top level.
    pub instruction: String,
    /// Mirrors the first gpt value.
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_input_configs: Option<GenInputConfigs>,
    #[serde(default)]
    pub tags: Tags,
}

impl Row {
    /// A generated row: its id comes from the configs, so regenerating with the same settings gives the same id.
    pub fn new(conversations: Vec<Turn>, configs: GenInputConfigs) -> Row {
        let id = row_id(&configs);
        Row::assemble(id, conversations, Some(configs), Tags::default())
    }

    /// An imported row without configs: its id comes from its content.
    pub fn from_conversations(conversations: Vec<Turn>) -> Row {
        let id = content_id(&conversations);
        Row::assemble(id, conversations, None, Tags::default())
    }

    pub(crate) fn assemble(
        id: String,
        conversations: Vec<Turn>,
        gen_input_configs: Option<GenInputConfigs>,
        tags: Tags,
    ) -> Row {
        let mut row = Row {
            id,
            conversations,
            instruction: String::new(),
            response: String::new(),
            gen_input_configs,
            tags,
        };
        row.refresh_mirrors();
        row
    }

    /// Re-derives `instruction` and `response` after `conversations` was edited.
    pub fn refresh_mirrors(&mut self) {
        self.instruction = first_value(&self.conversations, HUMAN)
            .unwrap_or_default()
            .to_owned();
        self.response = first_value(&self.conversations, GPT)
            .unwrap_or_default()
            .to_owned();
    }
}

pub(crate) fn first_value<'a>(conversations: &'a [Turn], from: &str) -> Option<&'a str> {
    conversations
        .iter()
        .find(|t| t.from == from)
        .map(|t| t.value.as_str())
}

/// Stable id of a generated row: FNV-1a 64 over the configs' JSON (every field, declaration order), 16 hex digits.
/// JSON rather than `Hash` because std's hashing is not promised to be stable across targets or releases, while
/// serde_json's output (ryu for floats) is the same on wasm32 and x86-64.
pub fn row_id(configs: &GenInputConfigs) -> String {
    // Serialising a struct of plain fields cannot fail; the Debug text is a deterministic stand-in if it ever did.
    let bytes = serde_json::to_vec(configs).unwrap_or_else(|_| format!("{configs:?}").into_bytes());
    format!("{:016x}", fnv1a64(&bytes))
}

/// Stable id of a row that has no configs (imported from elsewhere): a hash of its conversation.
pub fn content_id(conversations: &[Turn]) -> String {
    let mut h = FNV_OFFSET;
    for turn in conversations {
        // Separators no text contains keep ("ab","c") and ("a","bc") apart.
        h = fnv1a64_extend(h, turn.from.as_bytes());
        h = fnv1a64_extend(h, &[0xff]);
        h = fnv1a64_extend(h, turn.value.as_bytes());
        h = fnv1a64_extend(h, &[0xfe]);
    }
    format!("{h:016x}")
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET, bytes)
}

fn fnv1a64_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> GenInputConfigs {
        GenInputConfigs {
            temperature: 1.0,
            top_p: 1.0,
            response_temperature: 0.0,
            response_top_p: 1.0,
            seed: 42,
            sample_index: 7,
            turns: 1,
            pre_query_template: "<|im_start|>user\n".into(),
            system_prompt: None,
            model: "SmolLM2-135M-Instruct".into(),
            engine_version: "0.1.0".into(),
            stop_at_newline: true,
            sanitize: true,
            max_tokens: 256,
            ins_max_tokens: 128,
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn row_id_is_pinned() {
        // A golden value: if this changes, every id in every saved dataset changes with it.
        let id = row_id(&configs());
        assert_eq!(id.len(), 16);
        assert_eq!(id, row_id(&configs()));
        assert_eq!(id, "17b8ccd0edfeac78");
    }

    #[test]
    fn row_id_changes_with_any_identifying_field() {
        let base = row_id(&configs());
        let mut c = configs();
        c.seed = 43;
        assert_ne!(row_id(&c), base);
        let mut c = configs();
        c.sample_index = 8;
        assert_ne!(row_id(&c), base);
        let mut c = configs();
        c.model = "SmolLM2-360M-Instruct".into();
        assert_ne!(row_id(&c), base);
        let mut c = configs();
        c.system_prompt = Some(String::new());
        assert_ne!(row_id(&c), base);
        let mut c = configs();
        c.temperature = 1.25;
        assert_ne!(row_id(&c), base);
    }

    #[test]
    fn new_mirrors_first_human_and_gpt() {
        let row = Row::new(
            vec![
                Turn::system("Be brief."),
                Turn::human("Hi?"),
                Turn::gpt("Hello."),
                Turn::human("More?"),
                Turn::gpt("No."),
            ],
            configs(),
        );
        assert_eq!(row.instruction, "Hi?");
        assert_eq!(row.response, "Hello.");
        assert_eq!(row.id, row_id(&configs()));
        assert_eq!(row.gen_input_configs, Some(configs()));
    }

    #[test]
    fn refresh_follows_edited_conversations() {
        let mut row = Row::from_conversations(vec![Turn::human("a"), Turn::gpt("b")]);
        row.conversations[0].value = "edited".into();
        row.refresh_mirrors();
        assert_eq!(row.instruction, "edited");
    }

    #[test]
    fn content_id_depends_on_content_and_boundaries() {
        let a = content_id(&[Turn::human("ab"), Turn::gpt("c")]);
        let b = content_id(&[Turn::human("a"), Turn::gpt("bc")]);
        assert_ne!(a, b);
        assert_eq!(a, content_id(&[Turn::human("ab"), Turn::gpt("c")]));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn configs_missing_fields_default() {
        let c: GenInputConfigs =
            serde_json::from_str(r#"{"temperature":0.5,"model":"m"}"#).unwrap();
        assert_eq!(c.temperature, 0.5);
        assert_eq!(c.model, "m");
        assert_eq!(c.seed, 0);
    }

    #[test]
    fn row_serialises_with_schema_names() {
        let row = Row::from_conversations(vec![Turn::human("q"), Turn::gpt("a")]);
        let v: serde_json::Value = serde_json::to_value(&row).unwrap();
        assert_eq!(v["conversations"][0]["from"], "human");
        assert_eq!(v["instruction"], "q");
        assert_eq!(v["response"], "a");
        assert!(v.get("gen_input_configs").is_none());
        assert!(v["tags"]["difficulty"].is_null());
    }
}
