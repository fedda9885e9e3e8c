//! The link and file formats, and the size caps that keep a hostile one cheap to refuse.

use crate::validate::{check_version, validate};
use crate::{Error, Result, ShareState, VERSION};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use miniz_oxide::inflate::TINFLStatus;

/// The fragment parameter the payload travels in: `#share=v1.<payload>`.
pub const FRAGMENT_KEY: &str = "share=";
/// A whole URL longer than this is one Chromium no longer shows in full (~32 KB), so the app offers a file instead.
pub const LINK_LIMIT: usize = 32 * 1024;
/// Encoded text refused before any decoding: twice [`LINK_LIMIT`], room for links from other browsers and for
/// longer origins, still small enough that a refusal costs nothing.
pub const MAX_LINK_CHARS: usize = 64 * 1024;
/// The JSON a link may unpack to, enforced while inflating. Text compresses about 3–10×, so a link near
/// [`MAX_LINK_CHARS`] unpacks well under this; more is a zip bomb, not a conversation.
pub const MAX_INFLATED_BYTES: usize = 1 << 20;
/// A `.aviary.json` file, read whole before parsing: the conversations too long for a link, with room to spare.
pub const MAX_FILE_BYTES: usize = 8 << 20;

/// Level 9: links are made once and read often, and shorter is what matters.
const DEFLATE_LEVEL: u8 = 9;
/// The version tag's digits at most: enough for any version, and a bound before parsing a number.
const MAX_TAG_DIGITS: usize = 9;

/// The link payload, `v1.<base64url of raw deflate of JSON>`. Fails when the state would not pass [`decode`]'s
/// checks, so a link that cannot be opened is never made. A result over [`LINK_LIMIT`] (see [`fits_in_link`]),
/// [`Error::TooLongForLink`] or [`Error::StateTooLarge`] is the app's cue to offer a file instead.
pub fn encode(state: &ShareState) -> Result<String> {
    validate(state)?;
    let json = serde_json::to_vec(state).map_err(|e| Error::Malformed(e.to_string()))?;
    if json.len() > MAX_INFLATED_BYTES {
        return Err(Error::StateTooLarge { len: json.len(), max: MAX_INFLATED_BYTES });
    }
    let packed = miniz_oxide::deflate::compress_to_vec(&json, DEFLATE_LEVEL);
    let link = format!("v{VERSION}.{}", URL_SAFE_NO_PAD.encode(packed));
    if link.len() > MAX_LINK_CHARS {
        return Err(Error::TooLongForLink { len: link.len(), max: MAX_LINK_CHARS });
    }
    Ok(link)
}

/// What goes after `#` in the app's URL.
pub fn fragment(state: &ShareState) -> Result<String> {
    Ok(format!("{FRAGMENT_KEY}{}", encode(state)?))
}

/// Whether the whole URL (origin, path, `#`, fragment) is short enough to hand around as a link.
pub fn fits_in_link(url: &str) -> bool {
    url.len() <= LINK_LIMIT
}

/// Reads a URL fragment, with or without its leading `#`. The size cap applies to the payload alone, as in
/// [`encode`], so every link `encode` makes opens.
pub fn parse_fragment(fragment: &str) -> Result<ShareState> {
    let fragment = fragment.strip_prefix('#').unwrap_or(fragment);
    let payload = fragment.strip_prefix(FRAGMENT_KEY).ok_or(Error::NotAShareLink)?;
    decode(payload)
}

/// Reads a link payload as [`encode`] writes it.
pub fn decode(link: &str) -> Result<ShareState> {
    cap_link(link)?;
    let (tag, payload) = link.split_once('.').ok_or(Error::NotAShareLink)?;
    check_version(tag_version(tag)?)?;
    let packed = URL_SAFE_NO_PAD.decode(payload).map_err(|e| Error::BadBase64(e.to_string()))?;
    let json = miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, MAX_INFLATED_BYTES).map_err(|e| {
        match e.status {
            // The stream wanted to write past the limit: the only way a valid stream fails here.
            TINFLStatus::HasMoreOutput => Error::InflatedTooLarge { max: MAX_INFLATED_BYTES },
            _ => Error::BadDeflate,
        }
    })?;
    from_json(&json)
}

/// The same state as a `.aviary.json` file, indented so a person can read what it holds before opening it. Fails,
/// as [`encode`] does, on a state [`from_file_json`] would refuse.
pub fn to_file_json(state: &ShareState) -> Result<String> {
    validate(state)?;
    let json = serde_json::to_string_pretty(state).map_err(|e| Error::Malformed(e.to_string()))?;
    if json.len() > MAX_FILE_BYTES {
        return Err(Error::StateTooLarge { len: json.len(), max: MAX_FILE_BYTES });
    }
    Ok(json)
}

/// Reads a `.aviary.json` file's bytes, with every check a link gets.
pub fn from_file_json(bytes: &[u8]) -> Result<ShareState> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Error::FileTooLarge { len: bytes.len(), max: MAX_FILE_BYTES });
    }
    from_json(bytes)
}

fn cap_link(text: &str) -> Result<()> {
    if text.len() > MAX_LINK_CHARS {
        return Err(Error::LinkTooLong { len: text.len(), max: MAX_LINK_CHARS });
    }
    Ok(())
}

fn tag_version(tag: &str) -> Result<u64> {
    let digits = tag.strip_prefix('v').ok_or(Error::NotAShareLink)?;
    let plain = !digits.is_empty() && digits.len() <= MAX_TAG_DIGITS && digits.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return Err(Error::NotAShareLink);
    }
    digits.parse().map_err(|_| Error::NotAShareLink)
}

/// The version is read first and alone: a newer Aviary's state may have another shape, and its reader deserves
/// "made by a newer Aviary" rather than a complaint about a field.
fn from_json(json: &[u8]) -> Result<ShareState> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u64,
    }
    let v: Versioned = serde_json::from_slice(json).map_err(|e| Error::Malformed(e.to_string()))?;
    check_version(v.version)?;
    let state: ShareState = serde_json::from_slice(json).map_err(|e| Error::Malformed(e.to_string()))?;
    validate(&state)?;
    Ok(state)
}
