//! The Python behaviour that Hugging Face chat templates rely on, for minijinja: `str()` and `repr()` of values (what
//! `{{ x }}` prints), `str.strip`/`split`/`splitlines` with Python's idea of whitespace, and transformers' `tojson`
//! filter (`json.dumps` with `ensure_ascii=False`). Templates are rendered byte-for-byte like transformers does, so
//! these follow CPython, not Rust's standard library, wherever the two differ.

use minijinja::value::{from_args, Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, Output, State, Value};
use std::fmt::Write;

/// `str.isspace()` for one character: CPython's whitespace table, which includes the ASCII separators U+001C..U+001F
/// that Rust's `char::is_whitespace` does not.
pub(crate) fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0b}'
            | '\u{0c}'
            | '\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// `str.strip(chars)` / `lstrip` / `rstrip`; `chars` None means whitespace.
fn strip<'a>(s: &'a str, chars: Option<&str>, left: bool, right: bool) -> &'a str {
    let pred = |c: char| match chars {
        Some(set) => set.contains(c),
        None => is_space(c),
    };
    let s = if left { s.trim_start_matches(pred) } else { s };
    if right {
        s.trim_end_matches(pred)
    } else {
        s
    }
}

/// The optional `chars` argument of the strip family: absent or None → whitespace.
fn strip_chars(arg: Option<&Value>) -> Result<Option<String>, Error> {
    match arg {
        None => Ok(None),
        Some(v) if v.is_none() || v.is_undefined() => Ok(None),
        Some(v) => match v.as_str() {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(invalid(format!(
                "strip arg must be None or str, not {}",
                v.kind()
            ))),
        },
    }
}

/// `str.split(sep=None, maxsplit=-1)`.
fn split(s: &str, sep: Option<&str>, maxsplit: i64) -> Result<Vec<String>, Error> {
    let limit = if maxsplit < 0 {
        usize::MAX
    } else {
        maxsplit as usize
    };
    let mut out = Vec::new();
    match sep {
        Some("") => return Err(invalid("empty separator")),
        Some(sep) => {
            let mut rest = s;
            while out.len() < limit {
                match rest.find(sep) {
                    Some(i) => {
                        out.push(rest[..i].to_string());
                        rest = &rest[i + sep.len()..];
                    }
                    None => break,
                }
            }
            out.push(rest.to_string());
        }
        None => {
            // Runs of whitespace separate; leading and trailing whitespace yields no empty strings. Once `maxsplit`
            // splits are made, the remainder is kept whole, minus its leading whitespace.
            let mut rest = s.trim_start_matches(is_space);
            while !rest.is_empty() {
                if out.len() == limit {
                    out.push(rest.to_string());
                    break;
                }
                match rest.find(is_space) {
                    Some(i) => {
                        out.push(rest[..i].to_string());
                        rest = rest[i..].trim_start_matches(is_space);
                    }
                    None => {
                        out.push(rest.to_string());
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `str.splitlines(keepends=False)`: CPython breaks at \n, \r, \r\n, \v, \f, \x1c-\x1e, \x85, U+2028 and U+2029.
fn splitlines(s: &str, keepends: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !is_break {
            continue;
        }
        let mut end = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(_, '\n')) = chars.peek() {
                chars.next();
                end += 1;
            }
        }
        out.push(s[start..if keepends { end } else { i }].to_string());
        start = end;
    }
    if start < s.len() {
        out.push(s[start..].to_string());
    }
    out
}

fn strings(v: Vec<String>) -> Value {
    Value::from(v.into_iter().map(Value::from).collect::<Vec<_>>())
}

/// Python string methods that differ from (or are missing in) minijinja-contrib's pycompat; everything else is
/// delegated to it.
pub(crate) fn unknown_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "strip" | "lstrip" | "rstrip" => {
                let (chars,): (Option<&Value>,) = from_args(args)?;
                let chars = strip_chars(chars)?;
                let (left, right) = (method != "rstrip", method != "lstrip");
                return Ok(Value::from(strip(s, chars.as_deref(), left, right)));
            }
            "split" => {
                let (sep, maxsplit, kwargs): (Option<&Value>, Option<i64>, Kwargs) =
                    from_args(args)?;
                let sep = match kwargs.get::<Option<&Value>>("sep")?.or(sep) {
                    Some(v) if !(v.is_none() || v.is_undefined()) => {
                        Some(v.as_str().ok_or_else(|| {
                            invalid(format!("must be str or None, not {}", v.kind()))
                        })?)
                    }
                    _ => None,
                };
                let maxsplit = kwargs
                    .get::<Option<i64>>("maxsplit")?
                    .or(maxsplit)
                    .unwrap_or(-1);
                kwargs.assert_all_used()?;
                return Ok(strings(split(s, sep, maxsplit)?));
            }
            "splitlines" => {
                let (keepends,): (Option<bool>,) = from_args(args)?;
                return Ok(strings(splitlines(s, keepends.unwrap_or(false))));
            }
            "isspace" => {
                let () = from_args(args)?;
                return Ok(Value::from(!s.is_empty() && s.chars().all(is_space)));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Jinja2's `trim` filter: `str(value).strip(chars)`.
pub(crate) fn trim_filter(value: &Value, chars: Option<&Value>) -> Result<Value, Error> {
    let chars = strip_chars(chars)?;
    let s = py_str(value);
    Ok(Value::from(strip(&s, chars.as_deref(), true, true)))
}

/// Jinja2's `string` filter: Python's `str(value)`.
pub(crate) fn string_filter(value: &Value) -> Value {
    if value.kind() == ValueKind::String {
        value.clone()
    } else {
        Value::from(py_str(value))
    }
}

/// Jinja2's `length` / `count` filter: `len(value)`, where an undefined value has length 0.
pub(crate) fn length_filter(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Ok(Value::from(0));
    }
    minijinja::filters::length(value).map(Value::from)
}

/// Jinja2's `round(value, precision=0, method='common')`: "common" is Python's `round`, which rounds half to even
/// on the exact binary value (and leaves ints as ints); "ceil" / "floor" scale, round and scale back.
pub(crate) fn round_filter(
    value: &Value,
    precision: Option<i32>,
    method: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let precision = kwargs
        .get::<Option<i32>>("precision")?
        .or(precision)
        .unwrap_or(0);
    let method = kwargs
        .get::<Option<String>>("method")?
        .or(method)
        .unwrap_or_else(|| "common".into());
    kwargs.assert_all_used()?;
    let method = method.as_str();
    if !matches!(method, "common" | "ceil" | "floor") {
        return Err(invalid("method must be common, ceil or floor"));
    }
    if value.kind() != ValueKind::Number {
        return Err(invalid(format!(
            "type {} doesn't define __round__ method",
            value.kind()
        )));
    }
    if method == "common" && value.is_integer() && precision >= 0 {
        return Ok(value.clone());
    }
    let x = f64::try_from(value.clone())?;
    let scale = 10f64.powi(precision.clamp(-400, 400));
    let rounded = match method {
        "ceil" => (x * scale).ceil() / scale,
        "floor" => (x * scale).floor() / scale,
        // Rust's fixed-precision formatting is exact and rounds ties to even, like CPython's round().
        _ if precision > 330 || !x.is_finite() => x,
        _ if precision >= 0 => format!("{:.*}", precision as usize, x).parse().unwrap_or(x),
        _ => (x * scale).round_ties_even() / scale,
    };
    if method == "common" && value.is_integer() {
        // round(int, negative) stays an int in Python.
        return Ok(Value::from(rounded as i64));
    }
    Ok(Value::from(rounded))
}

/// Jinja2's `number` test: Python numbers, which include booleans.
pub(crate) fn is_number(value: &Value) -> bool {
    matches!(value.kind(), ValueKind::Number | ValueKind::Bool)
}

/// Jinja2's `sequence` test: anything with a length and item access — strings and dicts too.
pub(crate) fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Bytes | ValueKind::Seq | ValueKind::Map
    )
}

/// How `{{ value }}` prints: Python's `str()`, undefined as nothing.
pub(crate) fn formatter(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(s) => out.write_str(s),
        None => out.write_str(&py_str(value)),
    }
    .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write rendered output"))
}

/// Python's `str(value)`.
pub(crate) fn py_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => py_repr(value),
    }
}

/// Python's `repr(value)` (lists and dicts print their items this way).
pub(crate) fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value, 0);
    out
}

/// Nesting deeper than this prints as `...`, like Python's guard against self-referencing containers; it keeps a
/// hostile value from exhausting the stack.
const MAX_DEPTH: usize = 200;

fn write_repr(out: &mut String, value: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        out.push_str("...");
        return;
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&number_str(value)),
        ValueKind::String => repr_str(out, value.as_str().unwrap_or_default()),
        // Lazily built sequences (`list + list`, `range`) print like the lists Python would have made.
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &item, depth + 1);
                }
            }
            out.push(']');
        }
        ValueKind::Map => match value.as_object().and_then(|o| o.try_iter_pairs()) {
            Some(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_repr(out, &k, depth + 1);
                    out.push_str(": ");
                    write_repr(out, &v, depth + 1);
                }
                out.push('}');
            }
            None => {
                let _ = write!(out, "{value}");
            }
        },
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// An int prints its digits; a float prints Python's `repr(float)`.
fn number_str(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) => float_repr(f),
        Err(_) => value.to_string(),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation when the decimal exponent is in
/// [-4, 16), else as `d.ddde+XX`; integral values keep a `.0`.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as CPython's repr, e.g. "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let point = (exp + 1) as usize;
            format!("{}.{}", &digits[..point], &digits[point..])
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

/// CPython's `str.isprintable()` for one non-ASCII character, without a full Unicode table: separators (Z*) and the
/// common format (Cf), private-use (Co) and C1 control characters are non-printable; unassigned code points are
/// treated as printable.
fn is_printable(c: char) -> bool {
    !matches!(c as u32,
        0x80..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2 | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000 | 0xe000..=0xf8ff
        | 0xfeff | 0xfff9..=0xfffb | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3
        | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote.
fn repr_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() || is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
}

/// Options of transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// transformers' `tojson` filter: `json.dumps(value, ensure_ascii=False, indent=..., separators=..., sort_keys=...)`,
/// so no HTML escaping, Python's spacing and Python's float formatting.
pub(crate) fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::from(ErrorKind::TooManyArguments));
    }
    let mut given: [Option<Value>; 4] = Default::default();
    for (slot, arg) in given.iter_mut().zip(args.iter()) {
        *slot = Some(arg.clone());
    }
    for (slot, name) in given.iter_mut().zip(NAMES) {
        if let Some(v) = kwargs.get::<Option<Value>>(name)? {
            if slot.is_some() {
                return Err(invalid(format!(
                    "tojson got multiple values for argument '{name}'"
                )));
            }
            *slot = Some(v);
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = given.map(|v| v.filter(|v| !v.is_none()));

    let indent = match indent {
        None => None,
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or_default().to_string())
        }
        Some(v) if v.is_integer() => {
            let n = v
                .as_i64()
                .ok_or_else(|| invalid("indent is out of range"))?;
            if n > 1000 {
                return Err(invalid("indent is too large"));
            }
            Some(" ".repeat(n.max(0) as usize))
        }
        Some(v) => {
            return Err(invalid(format!(
                "indent must be an int or a string, not {}",
                v.kind()
            )))
        }
    };
    let (item_sep, key_sep) = match separators {
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
        Some(v) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (py_str(a), py_str(b)),
                _ => return Err(invalid("separators must be a pair of strings")),
            }
        }
    };
    let opts = JsonOptions {
        ensure_ascii: ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.is_some_and(|v| v.is_true()),
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

fn write_json(
    out: &mut String,
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(invalid("tojson: value is nested too deeply"));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&if f.is_nan() {
                    "NaN".to_string()
                } else if f.is_infinite() {
                    if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
                } else {
                    float_repr(f)
                });
            }
        }
        ValueKind::String => json_str(out, value.as_str().unwrap_or_default(), opts.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, opts, depth, '[', ']', items.len(), |out, i| {
                write_json(out, &items[i], opts, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let pairs = value
                .as_object()
                .and_then(|o| o.try_iter_pairs())
                .ok_or_else(|| invalid("tojson: cannot iterate this map"))?;
            let mut entries: Vec<(String, Value)> = pairs
                .map(|(k, v)| Ok((json_key(&k)?, v)))
                .collect::<Result<_, Error>>()?;
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, opts, depth, '{', '}', entries.len(), |out, i| {
                json_str(out, &entries[i].0, opts.ensure_ascii);
                out.push_str(&opts.key_sep);
                write_json(out, &entries[i].1, opts, depth + 1)
            })?;
        }
        kind => {
            let type_name = match kind {
                ValueKind::Undefined => "Undefined".to_string(),
                other => other.to_string(),
            };
            return Err(invalid(format!(
                "Object of type {type_name} is not JSON serializable"
            )));
        }
    }
    Ok(())
}

/// Writes `[...]` / `{...}` with Python's layout: one line, or one item per line under `indent`; empty stays `[]`.
fn write_container(
    out: &mut String,
    opts: &JsonOptions,
    depth: usize,
    open: char,
    close: char,
    len: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &opts.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    newline(out, depth + 1);
    for i in 0..len {
        if i > 0 {
            out.push_str(&opts.item_sep);
            newline(out, depth + 1);
        }
        item(out, i)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// JSON object keys as `json.dumps` converts them: str as is, numbers, booleans and None to their JSON text.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number => Ok(number_str(key)),
        kind => Err(invalid(format!(
            "keys must be str, int, float, bool or None, not {kind}"
        ))),
    }
}

/// A JSON string as Python's encoder writes it.
fn json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        // Expected strings are CPython 3.11's repr() of the same floats.
        for (f, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (9999999999999998.0, "9999999999999998.0"),
            (1.2345678901234568e+20, "1.2345678901234568e+20"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(float_repr(f), want);
        }
    }

    #[test]
    fn split_matches_python() {
        // Expected lists are CPython's str.split results.
        assert_eq!(split("  a  b c ", None, -1).unwrap(), ["a", "b", "c"]);
        assert_eq!(split("  a  b c ", None, 1).unwrap(), ["a", "b c "]);
        assert_eq!(split("a,,b", Some(","), -1).unwrap(), ["a", "", "b"]);
        assert_eq!(split("a,,b", Some(","), 0).unwrap(), ["a,,b"]);
        assert!(split("   ", None, -1).unwrap().is_empty());
        assert_eq!(split("", Some(","), -1).unwrap(), [""]);
        assert_eq!(
            splitlines("a\r\nb\rc\n\nd\u{1c}", false),
            ["a", "b", "c", "", "d"]
        );
        assert_eq!(splitlines("a\r\nb\n", true), ["a\r\n", "b\n"]);
    }
}
