//! JSONL export (ShareGPT, OpenAI messages, Alpaca) and a tolerant import that detects the format per line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::judge;
use crate::row::{content_id, GenInputConfigs, Row, Tags, Turn, GPT, HUMAN, SYSTEM};

/// Caps checked before parsing, so a pasted multi-gigabyte file cannot make the browser tab allocate without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;
pub const MAX_LINES: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    ShareGpt,
    OpenAi,
    Alpaca,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::ShareGpt, Format::OpenAi, Format::Alpaca];

    pub fn name(self) -> &'static str {
        match self {
            Format::ShareGpt => "sharegpt",
            Format::OpenAi => "openai",
            Format::Alpaca => "alpaca",
        }
    }

    /// Appended to a base file name, e.g. "magpie" + ".sharegpt.jsonl".
    pub fn file_suffix(self) -> &'static str {
        match self {
            Format::ShareGpt => ".sharegpt.jsonl",
            Format::OpenAi => ".openai.jsonl",
            Format::Alpaca => ".alpaca.jsonl",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "sharegpt" => Ok(Format::ShareGpt),
            "openai" => Ok(Format::OpenAi),
            "alpaca" => Ok(Format::Alpaca),
            _ => Err(Error::UnknownFormat(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imported {
    pub rows: Vec<Row>,
    pub errors: Vec<ImportError>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

// Typed line shapes instead of `json!` so the key order is fixed whatever serde_json features the workspace enables.
#[derive(Serialize)]
struct OpenAiLine<'a> {
    messages: Vec<Message<'a>>,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gen_input_configs: Option<&'a GenInputConfigs>,
    tags: &'a Tags,
}

#[derive(Serialize)]
struct AlpacaLine<'a> {
    instruction: &'a str,
    input: &'a str,
    output: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversations: Option<&'a [Turn]>,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gen_input_configs: Option<&'a GenInputConfigs>,
    tags: &'a Tags,
}

/// One JSON object, no newline.
pub fn export_line(row: &Row, format: Format) -> String {
    let json = match format {
        Format::ShareGpt => serde_json::to_string(row),
        Format::OpenAi => serde_json::to_string(&OpenAiLine {
            messages: row
                .conversations
                .iter()
                .map(|t| Message {
                    role: openai_role(&t.from),
                    content: &t.value,
                })
                .collect(),
            id: &row.id,
            gen_input_configs: row.gen_input_configs.as_ref(),
            tags: &row.tags,
        }),
        Format::Alpaca => {
            let plain =
                matches!(row.conversations.as_slice(), [h, g] if h.from == HUMAN && g.from == GPT);
            serde_json::to_string(&AlpacaLine {
                instruction: &row.instruction,
                input: "",
                output: &row.response,
                // Alpaca has no place for a system prompt or later turns; the full conversation rides along so
                // that import (which prefers "conversations") restores the row exactly.
                conversations: (!plain).then_some(row.conversations.as_slice()),
                id: &row.id,
                gen_input_configs: row.gen_input_configs.as_ref(),
                tags: &row.tags,
            })
        }
    };
    // These shapes have only string keys and plain values, which serde_json always serialises.
    json.unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// Lines joined by "\n" with a trailing newline; "" for no rows.
pub fn export(rows: &[Row], format: Format) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&export_line(row, format));
        out.push('\n');
    }
    out
}

fn openai_role(from: &str) -> &str {
    match from {
        HUMAN => "user",
        GPT => "assistant",
        other => other,
    }
}

/// Imports every line it can; each bad line becomes an `ImportError` and the rest still import.
pub fn import(text: &str) -> Imported {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Imported::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        if number > MAX_LINES {
            out.errors.push(ImportError {
                line: number,
                message: format!(
                    "too many lines: read the first {MAX_LINES}, the rest was not imported"
                ),
            });
            break;
        }
        if line.len() > MAX_LINE_BYTES {
            out.errors.push(ImportError {
                line: number,
                message: format!("line is {} bytes, longer than the 1 MiB limit", line.len()),
            });
            continue;
        }
        match parse_line(line) {
            Ok(row) => out.rows.push(row),
            Err(message) => out.errors.push(ImportError {
                line: number,
                message,
            }),
        }
    }
    out
}

fn parse_line(line: &str) -> Result<Row, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| not_json(&e))?;
    let mut map = match value {
        Value::Object(map) => map,
        other => return Err(format!("not a JSON object (found {})", kind(&other))),
    };
    let conversations = if let Some(v) = map.remove("conversations") {
        match v {
            Value::Array(items) => parse_turns(&items, "conversations")?,
            other => {
                return Err(format!(
                    "\"conversations\" is {}, not an array",
                    kind(&other)
                ))
            }
        }
    } else if let Some(v) = map.remove("messages") {
        match v {
            Value::Array(items) => parse_turns(&items, "messages")?,
            other => return Err(format!("\"messages\" is {}, not an array", kind(&other))),
        }
    } else if map.contains_key("instruction") && map.contains_key("output") {
        alpaca_turns(&map)?
    } else {
        return Err("no \"conversations\", \"messages\" or \"instruction\" + \"output\": not ShareGPT, OpenAI or Alpaca".into());
    };
    check_conversation(&conversations)?;

    let id = match map.remove("id").or_else(|| map.remove("uuid")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s),
        // Numeric ids are common in other people's files and carry the same meaning.
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(format!("\"id\" is {}, not a string", kind(&other))),
    };
    let id = id.unwrap_or_else(|| content_id(&conversations));

    // Other generators (Magpie's own files among them) use different config fields; those describe a run we
    // cannot reproduce, so they are dropped rather than failing a row whose content is fine.
    let configs = match map.remove("gen_input_configs") {
        None | Some(Value::Null) => None,
        Some(v) => serde_json::from_value::<GenInputConfigs>(v).ok(),
    };

    let tags = match map.remove("tags") {
        None | Some(Value::Null) => magpie_top_level_tags(&map),
        Some(v) => serde_json::from_value::<Tags>(v).map_err(|e| format!("\"tags\": {e}"))?,
    };
    Ok(Row::assemble(id, conversations, configs, tags))
}

fn not_json(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // Every line is parsed alone, so serde_json's "at line 1" would mislead next to our file line number.
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("not JSON ({message} at column {})", e.column()),
        None => format!("not JSON ({text})"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_turns(items: &[Value], field: &str) -> Result<Vec<Turn>, String> {
    let mut turns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let obj = item
            .as_object()
            .ok_or_else(|| format!("{field}[{i}] is {}, not an object", kind(item)))?;
        // ShareGPT writes from/value, OpenAI role/content; people mix them, so accept either in both.
        let (role_key, role) = pick(obj, &["from", "role"])
            .ok_or_else(|| format!("{field}[{i}] has no \"from\" or \"role\""))?;
        let role = role
            .as_str()
            .ok_or_else(|| format!("{field}[{i}].{role_key} is {}, not a string", kind(role)))?;
        let from = normalise_role(role).ok_or_else(|| {
            format!("{field}[{i}].{role_key} {role:?} is not human/user, gpt/assistant or system")
        })?;
        let (value_key, value) = pick(obj, &["value", "content"])
            .ok_or_else(|| format!("{field}[{i}] has no \"value\" or \"content\""))?;
        let value = text_content(value)
            .ok_or_else(|| format!("{field}[{i}].{value_key} is {}, not a string", kind(value)))?;
        turns.push(Turn::new(from, value));
    }
    Ok(turns)
}

fn pick<'a>(
    obj: &'a Map<String, Value>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a Value)> {
    keys.iter().find_map(|&k| obj.get(k).map(|v| (k, v)))
}

fn normalise_role(role: &str) -> Option<&'static str> {
    match role.trim().to_ascii_lowercase().as_str() {
        "human" | "user" => Some(HUMAN),
        "gpt" | "assistant" | "model" | "chatgpt" | "bot" => Some(GPT),
        "system" | "developer" => Some(SYSTEM),
        _ => None,
    }
}

/// A string, or OpenAI's list of content parts when every part is text (the vision-era message shape).
fn text_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("text").and_then(Value::as_str),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|texts| texts.concat()),
        _ => None,
    }
}

fn alpaca_turns(map: &Map<String, Value>) -> Result<Vec<Turn>, String> {
    let string = |key: &str| -> Result<Option<&str>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("\"{key}\" is {}, not a string", kind(other))),
        }
    };
    let mut instruction = string("instruction")?.unwrap_or_default().to_owned();
    let output = string("output")?.unwrap_or_default();
    if let Some(input) = string("input")? {
        if !input.trim().is_empty() {
            instruction.push_str("\n\n");
            instruction.push_str(input);
        }
    }
    let mut turns = Vec::with_capacity(3);
    // Some Alpaca variants (LLaMA-Factory's among them) carry a "system" string.
    if let Some(system) = string("system")? {
        if !system.is_empty() {
            turns.push(Turn::system(system));
        }
    }
    turns.push(Turn::human(instruction));
    turns.push(Turn::gpt(output));
    Ok(turns)
}

fn check_conversation(turns: &[Turn]) -> Result<(), String> {
    let human = turns.iter().position(|t| t.from == HUMAN);
    let gpt = turns.iter().position(|t| t.from == GPT);
    match (human, gpt) {
        (None, _) => Err("conversation has no human (user) turn".into()),
        (_, None) => Err("conversation has no gpt (assistant) turn".into()),
        (Some(h), Some(g)) if g < h => Err(
            "conversation's first gpt (assistant) turn comes before its first human (user) turn"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Magpie's published files keep the judge's tags at top level, spelled as its judge wrote them.
fn magpie_top_level_tags(map: &Map<String, Value>) -> Tags {
    let tag = |key: &str, allowed: &'static [&'static str]| {
        map.get(key)
            .and_then(Value::as_str)
            .and_then(|v| judge::normalize_tag(v, allowed))
            .map(str::to_owned)
    };
    Tags {
        difficulty: tag("difficulty", &judge::DIFFICULTY),
        input_quality: tag("input_quality", &judge::INPUT_QUALITY),
        task_category: tag("task_category", &judge::TASK_CATEGORIES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(sample_index: u64) -> GenInputConfigs {
        GenInputConfigs {
            temperature: 1.25,
            top_p: 0.99,
            response_temperature: 0.0,
            response_top_p: 1.0,
            seed: 7,
            sample_index,
            turns: 2,
            pre_query_template: "<|im_start|>user\n".into(),
            system_prompt: Some("You are a math tutor.".into()),
            model: "SmolLM2-135M-Instruct".into(),
            engine_version: "0.1.0".into(),
            stop_at_newline: false,
            sanitize: true,
            max_tokens: 512,
            ins_max_tokens: 64,
        }
    }

    fn sample_rows() -> Vec<Row> {
        let mut tagged = Row::new(
            vec![
                Turn::human("What is 2+2?"),
                Turn::gpt("4, because \"two\" twice.\nDone."),
            ],
            configs(0),
        );
        tagged.tags = Tags {
            difficulty: Some("very easy".into()),
            input_quality: Some("good".into()),
            task_category: Some("Math".into()),
        };
        vec![
            tagged,
            Row::new(
                vec![
                    Turn::system("You are a math tutor."),
                    Turn::human("Solve x+1=2."),
                    Turn::gpt("x = 1."),
                    Turn::human("And x+2=4?"),
                    Turn::gpt("x = 2."),
                ],
                configs(1),
            ),
            Row::new(
                vec![
                    Turn::human("Name a colour."),
                    Turn::gpt("Blue."),
                    Turn::human("Another?"),
                    Turn::gpt("Red."),
                ],
                configs(2),
            ),
            Row::from_conversations(vec![Turn::human("Imported ünïcødé ✓"), Turn::gpt("")]),
        ]
    }

    #[test]
    fn every_format_round_trips() {
        let rows = sample_rows();
        for format in Format::ALL {
            let text = export(&rows, format);
            assert_eq!(text.lines().count(), rows.len());
            assert!(text.ends_with('\n'));
            let imported = import(&text);
            assert!(
                imported.errors.is_empty(),
                "{format}: {:?}",
                imported.errors
            );
            assert_eq!(imported.rows, rows, "{format}");
        }
    }

    #[test]
    fn export_shapes() {
        let rows = sample_rows();
        let share: Value = serde_json::from_str(&export_line(&rows[0], Format::ShareGpt)).unwrap();
        assert_eq!(share["conversations"][1]["from"], "gpt");
        assert_eq!(share["instruction"], "What is 2+2?");
        assert_eq!(share["gen_input_configs"]["seed"], 7);
        assert_eq!(share["tags"]["task_category"], "Math");

        let openai: Value = serde_json::from_str(&export_line(&rows[1], Format::OpenAi)).unwrap();
        let roles: Vec<&str> = openai["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
        assert_eq!(openai["id"], rows[1].id.as_str());

        let single: Value = serde_json::from_str(&export_line(&rows[0], Format::Alpaca)).unwrap();
        assert_eq!(single["instruction"], "What is 2+2?");
        assert_eq!(single["input"], "");
        assert!(single["output"].as_str().unwrap().starts_with("4, because"));
        assert!(single.get("conversations").is_none());
        let multi: Value = serde_json::from_str(&export_line(&rows[2], Format::Alpaca)).unwrap();
        assert_eq!(multi["conversations"].as_array().unwrap().len(), 4);

        assert!(!export_line(&rows[3], Format::ShareGpt).contains("gen_input_configs"));
        assert_eq!(export(&[], Format::ShareGpt), "");
    }

    #[test]
    fn mixed_formats_import() {
        let text = concat!(
            "\u{feff}{\"conversations\":[{\"from\":\"user\",\"value\":\"a\"},{\"from\":\"assistant\",\"value\":\"b\"}]}\n",
            "\n",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"c\"},{\"role\":\"assistant\",\"content\":\"d\"}]}\r\n",
            "{\"instruction\":\"e\",\"input\":\"f\",\"output\":\"g\"}\n",
            "{\"conversations\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"human\",\"content\":\"h\"},{\"role\":\"gpt\",\"content\":\"i\"}]}\n",
        );
        let imported = import(text);
        assert!(imported.errors.is_empty(), "{:?}", imported.errors);
        let pairs: Vec<(&str, &str)> = imported
            .rows
            .iter()
            .map(|r| (r.instruction.as_str(), r.response.as_str()))
            .collect();
        assert_eq!(pairs, [("a", "b"), ("c", "d"), ("e\n\nf", "g"), ("h", "i")]);
        assert_eq!(imported.rows[0].conversations[0].from, "human");
        assert_eq!(imported.rows[0].conversations[1].from, "gpt");
        assert_eq!(imported.rows[3].conversations[0], Turn::system("s"));
    }

    #[test]
    fn malformed_lines_report_their_numbers() {
        let good = "{\"instruction\":\"q\",\"output\":\"a\"}";
        let text = [
            good,                                                                       // 1
            "not json",                                                                 // 2
            "",                                                                         // 3
            "[1,2]",                                                                    // 4
            "{\"foo\":1}",                                                              // 5
            "{\"conversations\":[{\"from\":\"human\",\"value\":\"only a question\"}]}", // 6
            "{\"instruction\":5,\"output\":\"a\"}",                                    // 7
            "{\"messages\":[{\"role\":\"user\",\"content\":{\"x\":1}}]}",               // 8
            "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",                   // 9
            "{\"conversations\":[{\"from\":\"gpt\",\"value\":\"a\"},{\"from\":\"human\",\"value\":\"q\"}]}", // 10
            good,                                                                       // 11
        ]
        .join("\n");
        let imported = import(&text);
        assert_eq!(imported.rows.len(), 2);
        let lines: Vec<usize> = imported.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7, 8, 9, 10]);
        let msg = |line: usize| {
            imported
                .errors
                .iter()
                .find(|e| e.line == line)
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(msg(2), "line 2: not JSON (expected ident at column 2)");
        assert!(
            msg(4).contains("not a JSON object (found an array)"),
            "{}",
            msg(4)
        );
        assert!(
            msg(5).contains("not ShareGPT, OpenAI or Alpaca"),
            "{}",
            msg(5)
        );
        assert!(msg(6).contains("no gpt"), "{}", msg(6));
        assert!(msg(7).contains("\"instruction\" is a number"), "{}", msg(7));
        assert!(
            msg(8).contains("messages[0].content is an object"),
            "{}",
            msg(8)
        );
        assert!(msg(9).contains("\"tool\""), "{}", msg(9));
        assert!(msg(10).contains("before"), "{}", msg(10));
    }

    #[test]
    fn not_json_message_names_the_column() {
        let imported = import("\n\n{\"a\":}");
        assert_eq!(
            imported.errors[0].to_string(),
            "line 3: not JSON (expected value at column 6)"
        );
    }

    #[test]
    fn foreign_openai_file_imports_with_content_ids() {
        let text = concat!(
            "{\"messages\":[{\"role\":\"system\",\"content\":\"Be nice.\"},{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello!\"}]}\n",
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hey \"},{\"type\":\"text\",\"text\":\"you\"}]},{\"role\":\"assistant\",\"content\":\"Yo\"}]}\n",
        );
        let imported = import(text);
        assert!(imported.errors.is_empty(), "{:?}", imported.errors);
        let first = &imported.rows[0];
        assert_eq!(first.instruction, "Hi");
        assert_eq!(first.response, "Hello!");
        assert_eq!(first.gen_input_configs, None);
        assert_eq!(first.tags, Tags::default());
        assert_eq!(first.id, content_id(&first.conversations));
        assert_eq!(imported.rows[1].instruction, "Hey you");
        assert_ne!(imported.rows[0].id, imported.rows[1].id);
    }

    #[test]
    fn magpie_style_rows_keep_ids_and_tags() {
        let line = r#"{"uuid":"abc-1","gen_input_configs":{"temperature":1.0,"top_p":1.0,"input_generator":"meta-llama/Meta-Llama-3-8B-Instruct","seed":null},"instruction":"q","response":"a","conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}],"task_category":"Coding & Debugging","difficulty":"Medium","input_quality":"excellent"}"#;
        let imported = import(line);
        assert!(imported.errors.is_empty(), "{:?}", imported.errors);
        let row = &imported.rows[0];
        assert_eq!(row.id, "abc-1");
        assert_eq!(row.gen_input_configs, None);
        assert_eq!(
            row.tags.task_category.as_deref(),
            Some("Coding & Debugging")
        );
        assert_eq!(row.tags.difficulty.as_deref(), Some("medium"));
        assert_eq!(row.tags.input_quality.as_deref(), Some("excellent"));
    }

    #[test]
    fn caps_are_enforced() {
        let long = format!(
            "{{\"instruction\":\"{}\",\"output\":\"a\"}}",
            "x".repeat(MAX_LINE_BYTES)
        );
        let imported = import(&format!(
            "{long}\n{{\"instruction\":\"q\",\"output\":\"a\"}}"
        ));
        assert_eq!(imported.rows.len(), 1);
        assert_eq!(imported.errors.len(), 1);
        assert_eq!(imported.errors[0].line, 1);
        assert!(imported.errors[0].message.contains("1 MiB"));

        let line = "{\"instruction\":\"q\",\"output\":\"a\"}\n";
        let imported = import(&line.repeat(MAX_LINES + 2));
        assert_eq!(imported.rows.len(), MAX_LINES);
        assert_eq!(imported.errors.len(), 1);
        assert_eq!(imported.errors[0].line, MAX_LINES + 1);
        assert!(imported.errors[0].message.contains("200000"));
    }

    #[test]
    fn format_names_parse() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.name())
            );
            assert!(f.file_suffix().ends_with(".jsonl"));
        }
        assert_eq!("Share-GPT".parse::<Format>().unwrap(), Format::ShareGpt);
        assert!(matches!(
            "csv".parse::<Format>(),
            Err(Error::UnknownFormat(_))
        ));
    }
}
