//! `aviary serve`: the small static file server `make run` puts the browser app behind. It serves the built app
//! (`dist/`, from scripts/build-web.sh) and, under `/models/`, a directory of model files, with what the app needs of a server: the
//! right MIME types (browsers compile wasm only when it is `application/wasm`), HEAD, and single HTTP Range requests
//! (206) — the worker reads a model tensor by tensor instead of downloading the whole file — and cross-origin
//! isolation headers on every response (COOP/COEP, so the page gets `crossOriginIsolated`: SharedArrayBuffer and
//! precise timers; same-origin models load under them as before). No path can leave the two directories. One thread
//! per connection; connections are kept alive.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The directory to serve at `/` (the app built by scripts/build-web.sh).
    #[arg(long, default_value = "dist")]
    pub dir: PathBuf,
    /// A directory served at `/models/` (model files the app loads by URL).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on the first line of stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Do not print a line per request.
    #[arg(long)]
    pub quiet: bool,
}

/// Where the files come from.
#[derive(Debug, Clone)]
pub struct Roots {
    pub dir: PathBuf,
    pub model_dir: Option<PathBuf>,
    pub log: bool,
}

pub fn run(a: Args) -> Result<()> {
    if !a.dir.join("index.html").is_file() {
        eprintln!("aviary serve: warning: {} has no index.html (build the app with `make run` or scripts/build-web.sh)", a.dir.display());
    }
    let listener = TcpListener::bind((a.host.as_str(), a.port)).with_context(|| format!("binding {}:{}", a.host, a.port))?;
    let addr = listener.local_addr()?;
    println!("serving {} at http://{addr}/", a.dir.display());
    if let Some(m) = &a.model_dir {
        println!("models from {} at http://{addr}/models/", m.display());
    }
    std::io::stdout().flush()?;
    serve(listener, Roots { dir: a.dir, model_dir: a.model_dir, log: !a.quiet });
    Ok(())
}

/// Accepts connections forever, one thread each.
pub fn serve(listener: TcpListener, roots: Roots) {
    let roots = Arc::new(roots);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let roots = roots.clone();
        std::thread::spawn(move || {
            // A broken connection ends its thread; there is nobody else to tell.
            let _ = handle(stream, &roots);
        });
    }
}

/// One parsed request head.
#[derive(Debug, PartialEq)]
struct Head {
    method: String,
    target: String,
    keep_alive: bool,
    range: Option<String>,
}

/// Sent with every response. COOP and COEP make the page cross-origin isolated; under COEP `require-corp` the page
/// may still load anything same-origin (the app, its worker, the models under /models/) and CORS downloads, and
/// CORP `same-origin` keeps other sites from embedding what this server serves.
const ISOLATION: &str = "Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n\
                         Cross-Origin-Resource-Policy: same-origin\r\n";

/// The longest request head accepted (the app's requests are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader.by_ref().take((MAX_HEAD - total) as u64 + 1).read_line(&mut line)?;
        if n == 0 {
            return Ok(None); // closed (between requests, or mid-head)
        }
        total += n;
        if total > MAX_HEAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head too long"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate blank lines before a request
            }
            break;
        }
        lines.push(line);
    }
    let mut first = lines[0].split_whitespace();
    let (method, target, version) = (first.next().unwrap_or(""), first.next().unwrap_or(""), first.next().unwrap_or(""));
    let header = |name: &str| {
        lines[1..].iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let connection = header("connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = if version == "HTTP/1.1" { connection != "close" } else { connection == "keep-alive" };
    Ok(Some(Head { method: method.to_string(), target: target.to_string(), keep_alive, range: header("range") }))
}

fn handle(stream: TcpStream, roots: &Roots) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(head) = read_head(&mut reader)? {
        let keep = respond(&mut out, &head, roots)? && head.keep_alive;
        out.flush()?;
        if !keep {
            break;
        }
    }
    Ok(())
}

/// Writes the response; returns whether the connection may carry another request.
fn respond(out: &mut impl Write, head: &Head, roots: &Roots) -> std::io::Result<bool> {
    let is_head = head.method == "HEAD";
    if head.method != "GET" && !is_head {
        log(roots, head, 405, 0);
        simple(out, head, 405, "Method Not Allowed", "only GET and HEAD\n", &[("Allow", "GET, HEAD")])?;
        return Ok(false); // a body we did not read may follow
    }
    let Some(path) = resolve(roots, &head.target) else {
        log(roots, head, 404, 0);
        simple(out, head, 404, "Not Found", "not found\n", &[])?;
        return Ok(true);
    };
    let Ok(mut file) = File::open(&path) else {
        log(roots, head, 404, 0);
        simple(out, head, 404, "Not Found", "not found\n", &[])?;
        return Ok(true);
    };
    let len = file.metadata()?.len();
    let mime = mime_type(&path);
    let (status, start, count) = match head.range.as_deref().map(|r| parse_range(r, len)) {
        None | Some(RangeAnswer::Whole) => (200, 0, len),
        Some(RangeAnswer::Part(start, end)) => (206, start, end - start + 1),
        Some(RangeAnswer::Unsatisfiable) => {
            log(roots, head, 416, 0);
            let cr = format!("bytes */{len}");
            simple(out, head, 416, "Range Not Satisfiable", "range not satisfiable\n", &[("Content-Range", &cr)])?;
            return Ok(true);
        }
    };
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {mime}\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\n\
         Cache-Control: no-cache\r\n{ISOLATION}",
        if status == 206 { "Partial Content" } else { "OK" }
    );
    if status == 206 {
        h.push_str(&format!("Content-Range: bytes {start}-{}/{len}\r\n", start + count - 1));
    }
    h.push_str("\r\n");
    out.write_all(h.as_bytes())?;
    if !is_head {
        file.seek(SeekFrom::Start(start))?;
        let sent = std::io::copy(&mut file.take(count), out)?;
        if sent != count {
            return Ok(false); // the file shrank under us: the length we promised is wrong
        }
    }
    log(roots, head, status, if is_head { 0 } else { count });
    Ok(true)
}

/// A short text reply. A reply to HEAD has the headers only: a body there would be read as the start of the next
/// response on a kept-alive connection.
fn simple(out: &mut impl Write, head: &Head, status: u16, reason: &str, body: &str, extra: &[(&str, &str)]) -> std::io::Result<()> {
    let mut h = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{ISOLATION}",
        body.len()
    );
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    out.write_all(h.as_bytes())?;
    if head.method == "HEAD" {
        return Ok(());
    }
    out.write_all(body.as_bytes())
}

fn log(roots: &Roots, head: &Head, status: u16, bytes: u64) {
    if roots.log {
        let range = head.range.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default();
        eprintln!("{} {}{range} → {status} ({bytes} bytes)", head.method, head.target);
    }
}

/// The file a request target names, or None when it names nothing servable. Percent-escapes are decoded first;
/// then every path segment must be a plain name (no `..`, no separators, no NUL), so nothing outside the roots
/// can be reached. A directory means its index.html.
fn resolve(roots: &Roots, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    if !path.starts_with('/') {
        return None;
    }
    let decoded = percent_decode(path)?;
    let mut segments = Vec::new();
    for s in decoded.split('/') {
        match s {
            "" | "." => {}
            ".." => return None,
            s if s.contains(['\\', '\0']) => return None,
            s => segments.push(s),
        }
    }
    let (base, rest): (&Path, &[&str]) = match (segments.first(), &roots.model_dir) {
        (Some(&"models"), Some(m)) => (m, &segments[1..]),
        _ => (&roots.dir, &segments[..]),
    };
    let mut p = base.to_path_buf();
    p.extend(rest);
    if p.is_dir() {
        p.push("index.html");
    }
    p.is_file().then_some(p)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, PartialEq)]
enum RangeAnswer {
    /// No usable single range: send the whole file (what RFC 9110 allows for ranges a server does not support).
    Whole,
    /// Inclusive byte positions.
    Part(u64, u64),
    Unsatisfiable,
}

/// A `Range` header against a file of `len` bytes: `bytes=a-b`, `bytes=a-` or `bytes=-n`.
fn parse_range(header: &str, len: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeAnswer::Whole };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAnswer::Whole };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeAnswer::Whole,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeAnswer::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => None,
        },
        (false, _) => match (a.parse::<u64>(), if b.is_empty() { Ok(u64::MAX) } else { b.parse::<u64>() }) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(len.saturating_sub(1)))),
            _ => None,
        },
    };
    match parsed {
        None => RangeAnswer::Whole,
        Some((s, _)) if len == 0 || s >= len => RangeAnswer::Unsatisfiable,
        Some((s, e)) => RangeAnswer::Part(s, e),
    }
}

fn mime_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAnswer::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), RangeAnswer::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), RangeAnswer::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAnswer::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeAnswer::Whole);
        assert_eq!(parse_range("bytes=x-1", 100), RangeAnswer::Whole);
    }

    fn roots() -> (tempdir::Dir, Roots) {
        let d = tempdir::Dir::new();
        std::fs::create_dir_all(d.0.join("dist/sub")).unwrap();
        std::fs::create_dir_all(d.0.join("models")).unwrap();
        std::fs::write(d.0.join("dist/index.html"), "<p>hi</p>").unwrap();
        std::fs::write(d.0.join("dist/app_bg.wasm"), b"\0asm").unwrap();
        std::fs::write(d.0.join("dist/sub/a b.txt"), "spaced").unwrap();
        std::fs::write(d.0.join("secret.txt"), "no").unwrap();
        std::fs::write(d.0.join("models/m.gguf"), (0u8..=255).collect::<Vec<u8>>()).unwrap();
        let roots = Roots { dir: d.0.join("dist"), model_dir: Some(d.0.join("models")), log: false };
        (d, roots)
    }

    #[test]
    fn paths_stay_inside_the_roots() {
        let (_d, r) = roots();
        assert!(resolve(&r, "/").unwrap().ends_with("dist/index.html"));
        assert!(resolve(&r, "/index.html?x=1").unwrap().ends_with("dist/index.html"));
        assert!(resolve(&r, "/sub/a%20b.txt").unwrap().ends_with("sub/a b.txt"));
        assert!(resolve(&r, "/models/m.gguf").unwrap().ends_with("models/m.gguf"));
        for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "/models/../secret.txt", "..", "/%zz",
                    "/sub%2f..%2f..%2fsecret.txt", "/nothing"] {
            assert_eq!(resolve(&r, bad), None, "{bad}");
        }
    }

    /// A real server on a free port, spoken to over TCP.
    #[test]
    fn serves_ranges_heads_and_mime_types() {
        let (_d, r) = roots();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(listener, r));
        let ask = |req: &str| -> Vec<u8> {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            buf
        };
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();

        let r = text(ask("GET /app_bg.wasm HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: application/wasm\r\n"), "{r}");
        assert!(r.contains("Content-Length: 4\r\n"), "{r}");

        let r = ask("GET /models/m.gguf HTTP/1.1\r\nRange: bytes=10-13\r\nConnection: close\r\n\r\n");
        let (head, body) = r.split_at(r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
        let head = String::from_utf8_lossy(head);
        assert!(head.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{head}");
        assert!(head.contains("Content-Range: bytes 10-13/256\r\n"), "{head}");
        assert_eq!(body, &[10, 11, 12, 13]);

        let r = text(ask("HEAD /models/m.gguf HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(r.contains("Content-Length: 256\r\n") && r.ends_with("\r\n\r\n"), "{r}");

        let r = text(ask("HEAD /models/none.gguf HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(r.starts_with("HTTP/1.1 404") && r.ends_with("\r\n\r\n"), "a HEAD reply has no body: {r:?}");

        let r = text(ask("GET /models/m.gguf HTTP/1.1\r\nRange: bytes=300-\r\nConnection: close\r\n\r\n"));
        assert!(r.starts_with("HTTP/1.1 416") && r.contains("Content-Range: bytes */256"), "{r}");

        let r = text(ask("GET /../secret.txt HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");

        let r = text(ask("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");

        // Every answer, files and errors alike, carries the isolation headers (the page is crossOriginIsolated).
        for req in ["GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                    "GET /models/m.gguf HTTP/1.1\r\nRange: bytes=0-3\r\nConnection: close\r\n\r\n",
                    "HEAD /nothing HTTP/1.1\r\nConnection: close\r\n\r\n"] {
            let r = text(ask(req));
            for h in ["Cross-Origin-Opener-Policy: same-origin\r\n", "Cross-Origin-Embedder-Policy: require-corp\r\n",
                      "Cross-Origin-Resource-Policy: same-origin\r\n"] {
                assert!(r.contains(h), "{req:?} lacks {h:?}: {r}");
            }
        }

        // Two requests on one kept-alive connection.
        let r = text(ask("GET / HTTP/1.1\r\n\r\nGET /index.html HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    }

    /// A temporary directory removed on drop (std only).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "aviary-serve-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
