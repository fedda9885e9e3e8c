#![cfg(target_arch = "wasm32")]
//! The chat's browser-only pieces in a real browser (run by scripts/web-test.sh): rendered Markdown set into a live
//! DOM keeps nothing executable, and the IndexedDB store saves, lists, loads and deletes conversations.

use aviary_app::conversations::{title_of, Conversation, SavedMessage, SavedRole, Store, TokenChip};
use aviary_app::markdown;
use engine::session::{Candidate, StopReason, TokenInfo};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A reply as a hostile or confused model might write it.
const HOSTILE: &str = r#"Here you go:

<script>window.__pwned = 1</script>

<img src=x onerror="window.__pwned = 2"> and <iframe src="https://example.com"></iframe>

[click me](javascript:window.__pwned=3) [data](data:text/html,<script>alert(1)</script>) [rel](/settings)
[ok](https://example.com/docs) <javascript:alert(4)> ![cat](https://example.com/cat.png)
![x](javascript:alert(5)) <a href="javascript:alert(6)">raw</a> <svg onload="alert(7)"></svg>
<style>body { display: none }</style> <object data="x"></object> <embed src="x">

```html
<script>alert("in a code block")</script>
```
"#;

fn render(text: &str) -> web_sys::Element {
    let document = web_sys::window().unwrap().document().unwrap();
    let div = document.create_element("div").unwrap();
    div.set_inner_html(&markdown::to_html(text));
    document.body().unwrap().append_child(&div).unwrap();
    div
}

#[wasm_bindgen_test]
fn markdown_in_a_real_dom_keeps_nothing_executable() {
    let div = render(HOSTILE);
    for selector in ["script", "iframe", "img", "svg", "style", "object", "embed", "[onerror]", "[onload]", "[onclick]"] {
        assert!(div.query_selector(selector).unwrap().is_none(), "{selector} survived: {}", div.inner_html());
    }
    let links = div.query_selector_all("a").unwrap();
    let mut hrefs = Vec::new();
    for i in 0..links.length() {
        let a: web_sys::HtmlAnchorElement = links.item(i).unwrap().dyn_into().unwrap();
        // The browser's own parse of the address, not ours.
        let protocol = a.protocol();
        assert!(["http:", "https:", "mailto:"].contains(&protocol.as_str()), "link to {}", a.href());
        assert_eq!(a.rel(), "noopener noreferrer");
        assert_eq!(a.target(), "_blank");
        hrefs.push(a.href());
    }
    assert_eq!(hrefs, ["https://example.com/docs", "https://example.com/cat.png"], "{}", div.inner_html());
    // What was refused is still readable as text.
    let text = div.text_content().unwrap();
    for shown in ["<script>window.__pwned = 1</script>", "click me", "[cat]", "<script>alert(\"in a code block\")</script>"] {
        assert!(text.contains(shown), "{shown:?} missing from {text:?}");
    }
    assert!(div.query_selector("pre > code").unwrap().is_some());
    let pwned = js_sys::Reflect::get(&js_sys::global(), &"__pwned".into()).unwrap();
    assert!(pwned.is_undefined(), "a payload ran: {pwned:?}");
    div.remove();
}

#[wasm_bindgen_test]
fn markdown_renders_formatting() {
    let div = render("# Title\n\n**bold**, *em*, `code`\n\n1. one\n2. two\n\n| a | b |\n|---|---|\n| 1 | 2 |");
    for selector in ["h1", "strong", "em", "code", "ol > li", "table td"] {
        assert!(div.query_selector(selector).unwrap().is_some(), "no {selector}: {}", div.inner_html());
    }
    div.remove();
}

fn message(role: SavedRole, text: &str) -> SavedMessage {
    SavedMessage { role, text: text.into(), stop: Some(StopReason::StopToken), error: None, stats: None, tokens: vec![], lora: vec![] }
}

fn conversation(id: u64, updated_ms: f64, question: &str) -> Conversation {
    let mut reply = message(SavedRole::Assistant, "Red, yellow and blue.");
    reply.tokens = vec![TokenChip {
        token: 7,
        text: "Red".into(),
        info: Some(TokenInfo { candidates: vec![Candidate { token: 7, text: "Red".into(), p: 0.75 }], support: 128 }),
    }];
    let messages = vec![message(SavedRole::User, question), reply];
    Conversation { id, title: title_of(&messages), created_ms: id as f64, updated_ms, messages }
}

#[wasm_bindgen_test]
async fn conversations_save_list_load_and_delete() {
    let name = format!("aviary-test-{}", js_sys::Date::now());
    let store = Store::open(&name).await.expect("open");
    assert!(store.list().await.unwrap().is_empty());

    let a = conversation(1, 100.0, "Name the three primary colors.");
    let b = conversation(2, 200.0, "  What is\n\nRust?  ");
    store.put(&a).await.unwrap();
    store.put(&b).await.unwrap();
    assert_eq!(b.title, "What is Rust?");

    // A second connection sees what the first committed, most recently updated first.
    let again = Store::open(&name).await.unwrap();
    let list = again.list().await.unwrap();
    assert_eq!(list, vec![b.clone(), a.clone()]);
    assert_eq!(again.get(1).await.unwrap(), Some(a.clone()));
    assert_eq!(again.get(3).await.unwrap(), None);

    // Saving again replaces; an update moves it to the top.
    let mut a2 = a.clone();
    a2.updated_ms = 300.0;
    a2.messages.push(message(SavedRole::User, "And secondary?"));
    store.put(&a2).await.unwrap();
    let list = again.list().await.unwrap();
    assert_eq!(list.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(list[0].messages.len(), 3);

    store.delete(1).await.unwrap();
    assert_eq!(again.list().await.unwrap(), vec![b]);
    assert_eq!(again.get(1).await.unwrap(), None);

    store.close();
    again.close();
    let factory = web_sys::window().unwrap().indexed_db().unwrap().unwrap();
    let _ = factory.delete_database(&name);
}
