//! Ch. 7's last step: a judge model scores each response from 0 to 100 against the reference answer, greedy, with
//! the book's prompt word for word (its `format_input` is the Alpaca instruction and input, without the response
//! header). Without a reference answer the judge scores the response on the instruction alone.

use super::data::{alpaca_input, Record};

/// Tokens a judge's answer may take: a number, and room for a model that says a word first.
pub const SCORE_MAX_TOKENS: usize = 8;

/// The judge's question about `response` to `r` (whose `output` is the reference answer; empty: none).
pub fn score_prompt(r: &Record, response: &str) -> String {
    let input = alpaca_input(r);
    if r.output.trim().is_empty() {
        return format!(
            "Given the input `{input}`, score the model response `{response}` on a scale from 0 to 100, where 100 is \
             the best score. Respond with the integer number only."
        );
    }
    format!(
        "Given the input `{input}` and correct output `{}`, score the model response `{response}` on a scale from 0 \
         to 100, where 100 is the best score. Respond with the integer number only.",
        r.output
    )
}

/// The score in a judge's answer: its first whole number, when that is between 0 and 100.
pub fn parse_score(answer: &str) -> Option<u8> {
    let start = answer.find(|c: char| c.is_ascii_digit())?;
    let digits: String = answer[start..].chars().take_while(char::is_ascii_digit).collect();
    let followed_by_point = answer[start + digits.len()..].starts_with('.')
        && answer[start + digits.len() + 1..].starts_with(|c: char| c.is_ascii_digit());
    match digits.parse::<u32>() {
        Ok(n) if n <= 100 && !followed_by_point => Some(n as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_chapter_7s() {
        let r = Record { instruction: "Rewrite the sentence using a simile.".into(), input: "The car is very fast.".into(), output: "The car is as fast as lightning.".into() };
        let p = score_prompt(&r, "The car is as fast as a bullet.");
        assert_eq!(
            p,
            "Given the input `Below is an instruction that describes a task. Write a response that appropriately \
             completes the request.\n\n### Instruction:\nRewrite the sentence using a simile.\n\n### Input:\nThe car \
             is very fast.` and correct output `The car is as fast as lightning.`, score the model response `The car \
             is as fast as a bullet.` on a scale from 0 to 100, where 100 is the best score. Respond with the integer \
             number only."
        );
        let bare = Record { output: String::new(), ..r };
        assert!(!score_prompt(&bare, "x").contains("correct output"));
    }

    #[test]
    fn scores_are_read_from_the_first_whole_number() {
        assert_eq!(parse_score("85"), Some(85));
        assert_eq!(parse_score(" Score: 100\n"), Some(100));
        assert_eq!(parse_score("0"), Some(0));
        assert_eq!(parse_score("101"), None);
        assert_eq!(parse_score("7.5"), None);
        assert_eq!(parse_score("I would say"), None);
        assert_eq!(parse_score("99999999999999999999"), None);
    }
}
