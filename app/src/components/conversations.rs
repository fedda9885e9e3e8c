//! The saved conversations: the list (open one, delete one), and the edge where the chat meets IndexedDB — an effect
//! that saves the open conversation shortly after anything in it changes (each user message, each reply as it
//! streams and when it ends), so a reload loses at most a moment of a streaming reply.

use crate::conversations::{title_of, Conversation, SavedMessage, SavedRole, Store, DATABASE};
use crate::bridge::Bridge;
use crate::state::{Chat, ChatMessage, ConversationEntry, ModelState, Reply, Role, Status};
use engine::protocol::Request;
use engine::session::StopReason;
use leptos::prelude::*;
use std::time::Duration;

/// How long after a change the conversation is saved: streaming tokens arrive many times a second, and one write
/// per burst is enough.
const SAVE_DELAY: Duration = Duration::from_millis(300);

/// What was last written, so reopening a conversation (which changes the messages) does not count as an edit.
#[derive(Default)]
struct Persist {
    pending: bool,
    last: Option<(u64, Vec<SavedMessage>)>,
}

/// What the conversation actions need, taken from context once by a component (event handlers run outside it).
#[derive(Clone, Copy)]
pub struct Conversations {
    chat: Chat,
    model: ModelState,
    bridge: Bridge,
    persist: StoredValue<Persist, LocalStorage>,
}

impl Conversations {
    pub fn from_context() -> Self {
        expect_context::<Conversations>()
    }
}

fn saved_messages(chat: &Chat) -> Vec<SavedMessage> {
    chat.messages.with_untracked(|all| {
        all.iter()
            .map(|m| {
                let (stop, error) = match m.reply.get_untracked() {
                    Reply::Streaming => (None, None),
                    Reply::Done(r) => (Some(r), None),
                    Reply::Failed(e) => (None, Some(e)),
                };
                SavedMessage {
                    role: match m.role {
                        Role::User => SavedRole::User,
                        Role::Assistant => SavedRole::Assistant,
                    },
                    text: m.text.get_untracked(),
                    stop,
                    error,
                    stats: m.stats.get_untracked(),
                    tokens: m.tokens.get_untracked(),
                    lora: m.lora.get_untracked(),
                }
            })
            .collect()
    })
}

fn report(chat: Chat, result: Result<(), String>) {
    match result {
        Ok(()) => chat.storage_error.set(None),
        Err(e) => {
            web_sys::console::error_1(&format!("aviary: {e}").into());
            chat.storage_error.set(Some(e));
        }
    }
}

/// Writes the open conversation now, if it has messages and changed since it was last written.
fn save_now(cx: Conversations) {
    let chat = cx.chat;
    cx.persist.update_value(|p| p.pending = false);
    let messages = saved_messages(&chat);
    if messages.is_empty() {
        return;
    }
    let id = match chat.conversation.get_untracked() {
        Some(id) => id,
        None => {
            // Ids are creation times, nudged past any taken one.
            let mut id = js_sys::Date::now() as u64;
            while chat.conversations.with_untracked(|l| l.iter().any(|c| c.id == id)) {
                id += 1;
            }
            chat.conversation.set(Some(id));
            id
        }
    };
    let unchanged = cx.persist.with_value(|p| p.last.as_ref().is_some_and(|(i, m)| *i == id && *m == messages));
    if unchanged {
        return;
    }
    cx.persist.update_value(|p| p.last = Some((id, messages.clone())));
    let now = js_sys::Date::now();
    let title = title_of(&messages);
    chat.conversations.update(|list| {
        list.retain(|c| c.id != id);
        list.insert(0, ConversationEntry { id, title: title.clone(), updated_ms: now });
    });
    let created_ms = id as f64;
    leptos::task::spawn_local(async move {
        let c = Conversation { id, title, created_ms, updated_ms: now, messages };
        let result = match Store::open(DATABASE).await {
            Ok(store) => store.put(&c).await,
            Err(e) => Err(e),
        };
        report(chat, result);
    });
}

/// Reads the saved list, and saves the open conversation whenever it changes. Called once by `App`.
pub fn persist_conversations() {
    let chat = expect_context::<Chat>();
    let cx = Conversations { chat, model: expect_context::<ModelState>(), bridge: expect_context::<Bridge>(), persist: StoredValue::new_local(Persist::default()) };
    provide_context(cx);
    leptos::task::spawn_local(async move {
        let result = async {
            let list = Store::open(DATABASE).await?.list().await?;
            chat.conversations.set(
                list.into_iter().map(|c| ConversationEntry { id: c.id, title: c.title, updated_ms: c.updated_ms }).collect(),
            );
            Ok(())
        };
        report(chat, result.await);
    });
    Effect::new(move |_| {
        // Track every part of every message, so any change schedules a save.
        chat.messages.with(|all| {
            for m in all {
                m.text.track();
                m.reply.track();
                m.stats.track();
                m.tokens.track();
                m.lora.track();
            }
        });
        if cx.persist.with_value(|p| p.pending) {
            return;
        }
        cx.persist.update_value(|p| p.pending = true);
        set_timeout(move || save_now(cx), SAVE_DELAY);
    });
    // A reload or a closed tab: write what streamed so far (IndexedDB finishes a transaction begun here).
    if let Some(w) = web_sys::window() {
        let on_hide = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || save_now(cx));
        let _ = w.add_event_listener_with_callback("pagehide", wasm_bindgen::JsCast::unchecked_ref(on_hide.as_ref()));
        on_hide.forget(); // as long as the page
    }
}

/// Stops a streaming reply and writes the open conversation, before the chat shows another one.
fn leave_current(cx: Conversations) {
    stop_streaming(cx);
    save_now(cx);
}

fn stop_streaming(cx: Conversations) {
    if cx.chat.streaming.get_untracked().is_some() {
        cx.bridge.send(Request::Cancel);
        cx.chat.streaming.set(None);
        if cx.model.status.get_untracked() == Status::Generating {
            cx.model.status.set(Status::Ready);
        }
    }
}

/// Empties the chat for a new conversation (saved once it has a message).
pub fn new_conversation(cx: Conversations) {
    let chat = cx.chat;
    leave_current(cx);
    chat.messages.set(Vec::new());
    chat.conversation.set(None);
}

fn restore(chat: Chat, c: Conversation) -> Vec<ChatMessage> {
    c.messages
        .into_iter()
        .map(|m| {
            let role = match m.role {
                SavedRole::User => Role::User,
                SavedRole::Assistant => Role::Assistant,
            };
            let reply = match (m.stop, m.error) {
                (_, Some(e)) => Reply::Failed(e),
                (Some(r), None) => Reply::Done(r),
                // It was streaming when the page went away: what streamed is all there is.
                (None, None) if role == Role::Assistant => Reply::Done(StopReason::Cancelled),
                (None, None) => Reply::Done(StopReason::StopToken),
            };
            let msg = chat.new_message(role, &m.text, reply);
            msg.stats.set(m.stats);
            msg.tokens.set(m.tokens);
            msg.lora.set(m.lora);
            msg
        })
        .collect()
}

fn open(cx: Conversations, id: u64) {
    let chat = cx.chat;
    if chat.conversation.get_untracked() == Some(id) {
        return;
    }
    leave_current(cx);
    leptos::task::spawn_local(async move {
        let result = async { Store::open(DATABASE).await?.get(id).await };
        match result.await {
            Ok(Some(c)) => {
                cx.persist.update_value(|p| p.last = Some((c.id, c.messages.clone())));
                chat.conversation.set(Some(c.id));
                chat.messages.set(restore(chat, c));
                chat.storage_error.set(None);
            }
            Ok(None) => {
                chat.conversations.update(|l| l.retain(|c| c.id != id));
                chat.storage_error.set(Some("that conversation is no longer saved".into()));
            }
            Err(e) => report(chat, Err(e)),
        }
    });
}

fn delete(cx: Conversations, id: u64) {
    let chat = cx.chat;
    if chat.conversation.get_untracked() == Some(id) {
        stop_streaming(cx);
        chat.messages.set(Vec::new());
        chat.conversation.set(None);
    }
    cx.persist.update_value(|p| p.last = None);
    chat.conversations.update(|l| l.retain(|c| c.id != id));
    leptos::task::spawn_local(async move {
        let result = async { Store::open(DATABASE).await?.delete(id).await };
        report(chat, result.await);
    });
}

fn when(ms: f64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms));
    let opts = js_sys::Object::new();
    String::from(d.to_locale_string("default", &opts))
}

#[component]
pub fn ConversationsView() -> impl IntoView {
    let cx = Conversations::from_context();
    let chat = cx.chat;
    view! {
        <section class="panel conversations">
            <h2>"Conversations"</h2>
            <Show when=move || chat.conversations.with(|l| l.is_empty())>
                <p class="muted">"None saved yet."</p>
            </Show>
            <ul class="conversation-list">
                <For each=move || chat.conversations.get() key=|c| (c.id, c.updated_ms.to_bits(), c.title.clone()) let:c>
                    {
                        let id = c.id;
                        let active = move || chat.conversation.get() == Some(id);
                        view! {
                            <li class="conversation" class:active=active data-testid="conversation-item" data-id=id.to_string()>
                                <button class="conversation-open" on:click=move |_| open(cx, id) title=c.title.clone()>
                                    <span class="conversation-title">{if c.title.is_empty() { "(untitled)".to_string() } else { c.title.clone() }}</span>
                                    <span class="conversation-date muted">{when(c.updated_ms)}</span>
                                </button>
                                <button class="conversation-delete" data-testid="conversation-delete" aria-label="Delete conversation"
                                    title="Delete" on:click=move |_| delete(cx, id)>"×"</button>
                            </li>
                        }
                    }
                </For>
            </ul>
            {move || chat.storage_error.get().map(|e| view! { <p class="error" data-testid="conversation-error">{e}</p> })}
        </section>
    }
}
