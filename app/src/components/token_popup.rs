//! The likeliest tokens at one step of a reply, with their probabilities: what the model weighed when it wrote the
//! chip that was clicked.

use crate::state::{ModelState, TokenChip};
use leptos::prelude::*;

/// How a token's text reads in a chip or a list: whitespace made visible, so " the" and "the" differ.
pub fn visible(text: &str) -> String {
    text.replace('\n', "↵").replace('\t', "⇥").replace(' ', "·")
}

#[component]
pub fn TokenPopup(chip: TokenChip, on_close: Callback<()>) -> impl IntoView {
    let model = expect_context::<ModelState>();
    let vocab = model.card.with_untracked(|c| c.as_ref().map(|c| c.vocab_size).unwrap_or(0));
    let body = match chip.info {
        None => view! { <p class="muted">"No candidates were recorded for this piece."</p> }.into_any(),
        Some(info) => {
            // A GPU reads back only its top-k, so its probabilities are shares of those, not of the vocabulary.
            let note = if info.support < vocab {
                format!("Probabilities are shares of the top {} candidates the GPU read back.", info.support)
            } else {
                format!("Probabilities over the whole vocabulary ({} tokens).", info.support)
            };
            let rows = info
                .candidates
                .into_iter()
                .map(|c| {
                    let chosen = c.token == chip.token;
                    view! {
                        <li data-testid="token-candidate" class:chosen=chosen data-token=c.token.to_string() data-p=c.p.to_string()>
                            <code class="candidate-text">{visible(&c.text)}</code>
                            <span class="candidate-bar" style=format!("width: {:.1}%", c.p * 100.0)></span>
                            <span class="candidate-p">{format!("{:.2}%", c.p * 100.0)}</span>
                        </li>
                    }
                })
                .collect_view();
            view! {
                <ol class="candidates">{rows}</ol>
                <p class="muted note">{note}</p>
            }
            .into_any()
        }
    };
    view! {
        <div class="token-popup" data-testid="token-candidates" role="dialog" aria-label="Token candidates">
            <div class="token-popup-head">
                <span>"Token " <code>{visible(&chip.text)}</code> {format!(" (id {})", chip.token)}</span>
                <button class="secondary close" aria-label="Close" on:click=move |_| on_close.run(())>"×"</button>
            </div>
            {body}
        </div>
    }
}
