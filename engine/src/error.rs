use std::fmt;

/// Every failure the engine can report. Bad input is a value, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The bytes end before a structure that must be there.
    #[error("{format} file is truncated: needed {needed} bytes at offset {offset}, but it has {available}")]
    Truncated {
        format: Format,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// The header is whole, but the tensors it lists run past the end of the file (a download cut short): `needed`
    /// is where the furthest one, `tensor`, ends.
    #[error("{format} file is incomplete: it has {len} bytes, but its tensor index needs {needed} (`{tensor}` ends there)")]
    Incomplete {
        format: Format,
        len: u64,
        needed: u64,
        tensor: String,
    },

    /// The bytes are there but say something impossible.
    #[error("malformed {format} file: {detail}")]
    Malformed { format: Format, detail: String },

    /// A file that does not start as a GGUF does. `head` keeps its first bytes (up to [`HEAD_BYTES`]), which tell
    /// the user what it is instead (an HTML page, a JSON file, …).
    #[error("malformed GGUF file: bad magic {:02x?}, expected \"GGUF\"", magic(.head))]
    NotGguf { head: Vec<u8> },

    /// Well-formed, but not something Aviary runs (yet).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A model of an architecture the engine has no definition for (the name its file gives).
    #[error("unsupported: model architecture `{0}`")]
    UnsupportedArchitecture(String),

    /// A server answered a request for a file with an error status.
    #[error("{url}: HTTP {status} {reason}")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },

    #[error("model configuration: {0}")]
    Config(String),

    #[error("tensor `{0}` is missing from the model file")]
    MissingTensor(String),

    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(String),

    #[error("backend: {0}")]
    Backend(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A LoRA adapter that cannot be applied (malformed, unsupported, or made for another model).
    #[error("adapter: {0}")]
    Adapter(String),

    /// A training run that cannot go on: its loss or gradients stopped being numbers, or its checkpoint cannot be
    /// written. The message says what to change; the last good checkpoint is kept.
    #[error("training stopped: {0}")]
    Training(String),

    #[error("generation was cancelled")]
    Cancelled,
}

/// How many of a file's first bytes [`Error::NotGguf`] keeps: enough to tell an HTML page or a JSON file.
pub const HEAD_BYTES: usize = 64;

/// The four bytes a GGUF file would start with.
fn magic(head: &[u8]) -> &[u8] {
    &head[..head.len().min(4)]
}

/// Which file format an error is about, so messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Safetensors,
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Gguf => "GGUF",
            Format::Safetensors => "safetensors",
            Format::Json => "JSON",
        })
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Backend(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed load told to the person who asked for it: what went wrong in their words, and the technical text (the
/// error's own message) for whoever wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub summary: String,
    /// None when the summary already says all there is.
    pub detail: Option<String>,
}

/// A failed model load in the words of someone who typed a URL or picked a file: what the file is instead of a
/// model, what the server answered, how much of the file is missing. The CLI and the worker share it; the error's
/// own message stays available as the detail.
pub fn describe_load_error(e: &Error) -> LoadFailure {
    let summary = match e {
        Error::NotGguf { head } if head.is_empty() => "This file is empty".to_string(),
        Error::Truncated { available: 0, .. } => "This file is empty".to_string(),
        Error::NotGguf { head } => match crate::format::looks_like(head) {
            Some(kind) => format!("This file is not a GGUF model (it looks like {kind})"),
            None => "This file is not a GGUF model (it does not start with \"GGUF\", as every GGUF file does)".to_string(),
        },
        Error::Http { status, reason, .. } => http_summary(*status, reason),
        Error::Incomplete { len, needed, .. } => format!(
            "This file is incomplete: it ends at {} of the {} bytes its tensor index needs — download it again",
            grouped(*len),
            grouped(*needed)
        ),
        Error::Truncated { available, .. } => format!(
            "This file is incomplete: it ends at {} bytes, inside its header — download it again",
            grouped(*available)
        ),
        Error::Malformed { format: Format::Json, .. } => "A JSON file of this model is not valid JSON".to_string(),
        Error::Malformed { format, .. } => {
            format!("This {format} file is damaged: its header does not make sense — download it again")
        }
        Error::UnsupportedArchitecture(arch) => format!(
            "Aviary cannot run this model: its architecture, {arch}, is not one it knows ({})",
            crate::config::ARCHITECTURES
        ),
        Error::Unsupported(what) => format!("Aviary cannot run this model, which needs what it does not support: {what}"),
        Error::MissingTensor(_) => "This model file lacks a weight that its architecture needs".to_string(),
        Error::ShapeMismatch { .. } => "A weight of this model has a shape its configuration does not allow".to_string(),
        Error::Io(_) => "The model's file could not be downloaded or read".to_string(),
        Error::Backend(why) => format!("The device could not take this model: {why}"),
        Error::Cancelled => "Loading was cancelled".to_string(),
        Error::Config(m)
        | Error::Tokenizer(m)
        | Error::Template(m)
        | Error::InvalidArgument(m)
        | Error::Adapter(m)
        | Error::Training(m) => {
            capitalized(m)
        }
    };
    let detail = e.to_string();
    LoadFailure {
        detail: (detail != summary && !matches!(e, Error::Cancelled)).then_some(detail),
        summary,
    }
}

fn http_summary(status: u16, reason: &str) -> String {
    let answer = format!(
        "HTTP {status}{}{reason}",
        if reason.is_empty() { "" } else { " " }
    );
    match status {
        404 | 410 => format!("The server has no file at this address ({answer})"),
        401 | 403 => format!("The server does not let this page have the file ({answer})"),
        500..=599 => format!("The server failed to send the file ({answer}): try again later"),
        _ => format!("The server did not send the file ({answer})"),
    }
}

/// 1234567 → "1,234,567".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_in_words() {
        let e = |status, reason: &str| Error::Http {
            url: "http://h/m.gguf".into(),
            status,
            reason: reason.into(),
        };
        let words = describe_load_error(&e(404, "Not Found"));
        assert_eq!(
            words.summary,
            "The server has no file at this address (HTTP 404 Not Found)"
        );
        assert_eq!(
            words.detail.as_deref(),
            Some("http://h/m.gguf: HTTP 404 Not Found")
        );
        assert!(describe_load_error(&e(503, ""))
            .summary
            .contains("(HTTP 503): try again later"));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (127_360, "127,360"),
            (1_234_567, "1,234,567"),
        ];
        for (n, text) in cases {
            assert_eq!(grouped(n), text);
        }
    }

    #[test]
    fn a_cancelled_load_has_no_detail() {
        assert_eq!(describe_load_error(&Error::Cancelled).detail, None);
    }
}
