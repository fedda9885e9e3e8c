//! The conversation and the composer: Enter sends (Shift+Enter for a new line), Stop cancels the reply streaming.

use crate::bridge::{send_user_message, Bridge};
use crate::components::conversations::{new_conversation, Conversations};
use crate::components::message::MessageView;
use crate::state::{Chat, ModelState, Status};
use engine::protocol::Request;
use leptos::prelude::*;

#[component]
pub fn ChatView() -> impl IntoView {
    let chat = expect_context::<Chat>();
    let model = expect_context::<ModelState>();
    let bridge = expect_context::<Bridge>();
    let draft = RwSignal::new(String::new());
    let can_send = move || model.status.get() == Status::Ready && !draft.with(|d| d.trim().is_empty());
    let send = move || {
        if !can_send() {
            return;
        }
        let text = draft.get_untracked();
        draft.set(String::new());
        send_user_message(bridge, text);
    };
    let stop = move |_| bridge.send(Request::Cancel);
    let conversations = Conversations::from_context();
    let new_chat = move |_| new_conversation(conversations);
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let streaming = move || chat.streaming.get().is_some();

    view! {
        <section class="chat">
            <div class="chat-head">
                <h2>"Chat"</h2>
                <button class="secondary" data-testid="new-chat" on:click=new_chat>"New chat"</button>
            </div>
            <div class="messages">
                <Show when=move || chat.messages.with(|m| m.is_empty())>
                    <p class="muted empty">"Load a model, then ask it something."</p>
                </Show>
                <For each=move || chat.messages.get() key=|m| m.id let:message>
                    <MessageView message=message/>
                </For>
            </div>
            <div class="composer">
                <textarea data-testid="chat-input" rows="3" placeholder="Message (Enter to send, Shift+Enter for a new line)"
                    bind:value=draft on:keydown=on_key></textarea>
                <Show when=streaming fallback=move || view! {
                    <button data-testid="send" on:click=move |_| send() disabled=move || !can_send()>"Send"</button>
                }>
                    <button data-testid="stop" class="stop" on:click=stop>"Stop"</button>
                </Show>
            </div>
        </section>
    }
}
