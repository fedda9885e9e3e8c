//! The crate's one error type.

use crate::formats::ImportError;

/// Errors from parsing names and from imports that a caller wants to treat as fatal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("unknown dataset format {0:?} (expected sharegpt, openai or alpaca)")]
    UnknownFormat(String),
    #[error("unknown filter preset {0:?} (expected none, basic, air or pro)")]
    UnknownPreset(String),
    #[error("line {line}: {message}")]
    Import { line: usize, message: String },
}

impl From<ImportError> for Error {
    fn from(e: ImportError) -> Self {
        Error::Import {
            line: e.line,
            message: e.message,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_error_keeps_line_and_message() {
        let e: Error = ImportError {
            line: 3,
            message: "not JSON".into(),
        }
        .into();
        assert_eq!(e.to_string(), "line 3: not JSON");
    }
}
