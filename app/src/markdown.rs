//! Model replies as Markdown, rendered to HTML that is safe to set as `innerHTML`: the model's text is untrusted, so
//! raw HTML in it is shown as text, links go only to http(s) and mailto addresses (and open in a new tab without
//! handing over the page), and images are never loaded — their alt text is shown, as a link when the address is safe.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};
use pulldown_cmark_escape::{escape_href, escape_html};

/// Whether a link target may be followed from a reply. Relative links are refused too: they would resolve against
/// the app's own origin, where a model has no business pointing.
pub fn safe_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"].iter().any(|scheme| lower.starts_with(scheme))
}

fn link_open(url: &str) -> String {
    let mut html = String::from("<a href=\"");
    // Writing into a String cannot fail.
    let _ = escape_href(&mut html, url);
    html.push_str("\" rel=\"noopener noreferrer\" target=\"_blank\">");
    html
}

/// `text` (CommonMark with tables and strikethrough) as sanitised HTML.
pub fn to_html(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut events: Vec<Event> = Vec::new();
    // Links whose target was refused: their End events are dropped too, keeping the text between.
    let mut link_kept: Vec<bool> = Vec::new();
    // Inside an image, its alt text is collected rather than rendered.
    let mut image: Option<(String, bool)> = None;
    for event in Parser::new_ext(text, options) {
        if let Some((alt, _)) = image.as_mut() {
            match event {
                Event::End(TagEnd::Image) => {
                    let (alt, link) = image.take().unwrap_or_default();
                    let label = if alt.is_empty() { "image".to_string() } else { alt };
                    let mut html = String::new();
                    if link {
                        html.push_str("</a>");
                    }
                    let mut escaped = String::new();
                    let _ = escape_html(&mut escaped, &format!("[{label}]"));
                    html.insert_str(0, &escaped);
                    events.push(Event::InlineHtml(CowStr::from(html)));
                }
                Event::Text(t) | Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => alt.push_str(&t),
                Event::Html(t) | Event::InlineHtml(t) => alt.push_str(&t),
                _ => {}
            }
            continue;
        }
        match event {
            // Our own markup is emitted as InlineHtml below, so every raw HTML event from the model becomes text.
            Event::Html(t) | Event::InlineHtml(t) => events.push(Event::Text(t)),
            Event::Start(Tag::Link { dest_url, .. }) => {
                let keep = safe_url(&dest_url);
                link_kept.push(keep);
                if keep {
                    events.push(Event::InlineHtml(CowStr::from(link_open(&dest_url))));
                }
            }
            Event::End(TagEnd::Link) => {
                if link_kept.pop().unwrap_or(false) {
                    events.push(Event::InlineHtml(CowStr::from("</a>")));
                }
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                let link = safe_url(&dest_url);
                if link {
                    events.push(Event::InlineHtml(CowStr::from(link_open(&dest_url))));
                }
                image = Some((String::new(), link));
            }
            // Models write one line per item far more often than Markdown's paragraphs: keep their line breaks.
            Event::SoftBreak => events.push(Event::HardBreak),
            // Task-list checkboxes and footnotes are not enabled; everything else renders as pulldown-cmark has it.
            other => events.push(other),
        }
    }
    let mut html = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders() {
        assert_eq!(to_html("**bold** and *it*"), "<p><strong>bold</strong> and <em>it</em></p>\n");
        assert_eq!(to_html("```rust\nfn main() {}\n```"), "<pre><code class=\"language-rust\">fn main() {}\n</code></pre>\n");
        assert_eq!(to_html("- a\n- b"), "<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n");
        assert!(to_html("`x < y`").contains("<code>x &lt; y</code>"));
    }

    #[test]
    fn line_breaks_are_kept() {
        assert_eq!(to_html("Red (R)\nBlue (B)"), "<p>Red (R)<br />\nBlue (B)</p>\n");
    }

    #[test]
    fn raw_html_is_text() {
        let html = to_html("<script>alert(1)</script>\n\nhi <img src=x onerror=alert(1)> <b>b</b>");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        let block = to_html("<div onclick=\"x()\">\n<iframe src=\"https://e.com\"></iframe>\n</div>");
        assert!(!block.contains("<div") && !block.contains("<iframe"), "{block}");
    }

    #[test]
    fn links_are_safe() {
        assert_eq!(
            to_html("[site](https://example.com/a?b=1&c=2)"),
            "<p><a href=\"https://example.com/a?b=1&amp;c=2\" rel=\"noopener noreferrer\" target=\"_blank\">site</a></p>\n"
        );
        assert!(to_html("[m](mailto:a@b.c)").contains("href=\"mailto:a@b.c\""));
        for bad in ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,<script>", "vbscript:x", "/admin", "file:///etc/passwd"] {
            let html = to_html(&format!("[click]({bad})"));
            assert_eq!(html, "<p>click</p>\n", "{bad}");
        }
        // Autolinks and reference links go through the same check.
        assert!(!to_html("<javascript:alert(1)>").contains("href"));
        assert!(!to_html("[x][r]\n\n[r]: javascript:alert(1)").contains("href"));
        assert!(to_html("<https://example.com>").contains("href=\"https://example.com\""));
        // A quote in the address cannot close the attribute.
        assert!(!to_html("[x](https://e.com/\"onmouseover=\"alert(1))").contains("\"onmouseover"));
    }

    #[test]
    fn images_are_never_loaded() {
        let html = to_html("![a cat](https://example.com/cat.png)");
        assert!(!html.contains("<img"), "{html}");
        assert_eq!(
            html,
            "<p><a href=\"https://example.com/cat.png\" rel=\"noopener noreferrer\" target=\"_blank\">[a cat]</a></p>\n"
        );
        let html = to_html("![<b>x</b>](javascript:alert(1))");
        assert!(!html.contains("<img") && !html.contains("href") && !html.contains("<b>"), "{html}");
        assert_eq!(to_html("![](data:image/png;base64,AAAA)"), "<p>[image]</p>\n");
        // An image inside a link keeps the outer link.
        let html = to_html("[![alt](https://e.com/i.png)](https://e.com)");
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn partial_streams_render() {
        // Mid-stream text often ends inside a construct; it must still render, and safely.
        for text in ["```py\nprint(", "**bold", "[link](java", "<scr", "| a | b |\n|---|", "![x](https://e.com/a"] {
            let html = to_html(text);
            assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("javascript:"), "{text}: {html}");
        }
    }
}
