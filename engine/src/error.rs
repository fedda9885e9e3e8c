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

    /// The bytes are there but say something impossible.
    #[error("malformed {format} file: {detail}")]
    Malformed { format: Format, detail: String },

    /// Well-formed, but not something Aviary runs (yet).
    #[error("unsupported: {0}")]
    Unsupported(String),

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

    #[error("generation was cancelled")]
    Cancelled,
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
