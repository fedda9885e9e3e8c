//! Why a link or file was refused. The messages are shown to the person who opened the link, so they say what is wrong
//! in plain words and name the field; none of them repeats the hostile text itself.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("this link is too long to open ({len} characters; at most {max})")]
    LinkTooLong { len: usize, max: usize },

    #[error("this file is too large to open ({len} bytes; at most {max})")]
    FileTooLarge { len: usize, max: usize },

    #[error("this is not an Aviary share link")]
    NotAShareLink,

    #[error("this link is damaged: its text is not valid base64url ({0})")]
    BadBase64(String),

    #[error("this link is damaged: its compressed data cannot be unpacked")]
    BadDeflate,

    #[error("this link unpacks to more than {max} bytes, more than any shared demo needs")]
    InflatedTooLarge { max: usize },

    #[error("this shared demo is malformed: {0}")]
    Malformed(String),

    #[error("this was made by a newer Aviary (format version {found}; this one reads {supported}); reload to update")]
    NewerVersion { found: u64, supported: u32 },

    #[error("this shared demo has an unknown format version ({0})")]
    UnknownVersion(u64),

    #[error("{field} is out of range: {detail}")]
    OutOfRange { field: String, detail: String },

    #[error("{field} is not a web address: only http:// and https:// links are allowed")]
    NotHttpUrl { field: String },

    #[error("{field} is not a model of the catalog (a catalog id is a plain relative name such as models/x.gguf)")]
    BadCatalogId { field: String },

    #[error("{field} is too long ({len} bytes; at most {max})")]
    TextTooLong { field: String, len: usize, max: usize },

    #[error("the conversation has {count} messages, more than the {max} a share can hold")]
    TooManyMessages { count: usize, max: usize },

    #[error("{count} adapters, more than the {max} a share can hold")]
    TooManyAdapters { count: usize, max: usize },

    /// Raised by the encoding side only: the app offers a `.aviary.json` file instead.
    #[error("this demo makes a link of {len} characters, more than the {max} one may hold; share it as a file")]
    TooLongForLink { len: usize, max: usize },

    /// Raised by the encoding side only: a state that would unpack past the cap a reader enforces.
    #[error("this demo is too large to share ({len} bytes of settings and conversation; at most {max})")]
    StateTooLarge { len: usize, max: usize },
}
