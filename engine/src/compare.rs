//! Two configurations of a model side by side, token by token — the base and the base with an adapter, or a teacher
//! and a student with one vocabulary (Gemma 2's distillation). Both read the same prompt and the same answer
//! (teacher forcing); at each answer position each gives a next-token distribution, and the KL divergence
//! KL(P ‖ Q) = Σ p log(p / q) says how far the second moved from the first, in nats.

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Whether a teacher and a student can be compared token by token: one vocabulary, the same token at every id
/// (SmolLM2's sizes share theirs; Gemma 2 and Gemma 3 do not).
pub fn check_same_vocabulary(student: &Tokenizer, teacher: &Tokenizer) -> Result<()> {
    let (s, t) = (student.vocab_size(), teacher.vocab_size());
    if s != t {
        return Err(Error::InvalidArgument(format!(
            "the two models have different vocabularies ({s} and {t} tokens); a token-by-token comparison needs \
             models that share one, such as two sizes of one family"
        )));
    }
    match (0..s as u32).find(|&id| student.id_to_token(id) != teacher.id_to_token(id)) {
        Some(id) => Err(Error::InvalidArgument(format!(
            "the two models have different vocabularies: token {id} is {:?} in one and {:?} in the other",
            student.id_to_token(id).unwrap_or_default(),
            teacher.id_to_token(id).unwrap_or_default()
        ))),
        None => Ok(()),
    }
}

/// One answer token as both configurations saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenComparison {
    pub token: u32,
    /// Each side's probability of the token.
    pub p: f32,
    pub q: f32,
    /// KL(P ‖ Q) at this position, in nats.
    pub kl: f32,
    /// Each side's likeliest tokens with their probabilities, best first.
    pub top_p: Vec<(u32, f32)>,
    pub top_q: Vec<(u32, f32)>,
}

/// A whole answer compared: its tokens and the mean KL over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub tokens: Vec<TokenComparison>,
    pub mean_kl: f32,
}

/// Softmax of a logit row in f64 (NaN counts as −∞).
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&v| if v.is_nan() { 0.0 } else { (v as f64 - max).exp() }).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// KL(P ‖ Q) of two logit rows over one vocabulary, in nats: Σ p (log p − log q), terms with p = 0 counting 0.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> Result<f32> {
    if p_logits.len() != q_logits.len() || p_logits.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "distributions over {} and {} tokens cannot be compared: the models need one vocabulary",
            p_logits.len(),
            q_logits.len()
        )));
    }
    let (p, q) = (softmax(p_logits), softmax(q_logits));
    let kl: f64 = p.iter().zip(&q).filter(|(p, _)| **p > 0.0).map(|(p, q)| p * (p.ln() - q.max(f64::MIN_POSITIVE).ln())).sum();
    Ok(kl.max(0.0) as f32)
}

fn top(probs: &[f64], n: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.into_iter().take(n).map(|i| (i as u32, probs[i] as f32)).collect()
}

/// Compares the answer `answer` (token ids after the prompt) under two configurations, given each one's logits for
/// the whole sequence prompt + answer (row i predicts token i + 1).
pub fn compare_answer(
    prompt_len: usize,
    answer: &[u32],
    p_rows: &[Vec<f32>],
    q_rows: &[Vec<f32>],
    candidates: usize,
) -> Result<Comparison> {
    if prompt_len == 0 || answer.is_empty() {
        return Err(Error::InvalidArgument("nothing to compare: the prompt or the answer is empty".into()));
    }
    let needed = prompt_len + answer.len() - 1;
    if p_rows.len() < needed || q_rows.len() < needed {
        return Err(Error::InvalidArgument(format!(
            "{} and {} rows of logits for a prompt of {prompt_len} and an answer of {} tokens",
            p_rows.len(),
            q_rows.len(),
            answer.len()
        )));
    }
    let mut tokens = Vec::with_capacity(answer.len());
    for (i, &token) in answer.iter().enumerate() {
        let row = prompt_len - 1 + i;
        let (p, q) = (softmax(&p_rows[row]), softmax(&q_rows[row]));
        let kl = kl_divergence(&p_rows[row], &q_rows[row])?;
        let at = |d: &[f64]| d.get(token as usize).copied().unwrap_or(0.0) as f32;
        tokens.push(TokenComparison { token, p: at(&p), q: at(&q), kl, top_p: top(&p, candidates), top_q: top(&q, candidates) });
    }
    let mean_kl = tokens.iter().map(|t| t.kl as f64).sum::<f64>() / tokens.len() as f64;
    Ok(Comparison { tokens, mean_kl: mean_kl as f32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_two_coins_is_the_closed_form() {
        // P = (1/2, 1/2), Q = (3/4, 1/4): KL = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3) = 0.143841…
        let kl = kl_divergence(&[0.0, 0.0], &[3f32.ln(), 0.0]).unwrap();
        assert!((kl as f64 - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-6, "{kl}");
        assert_eq!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap(), 0.0);
        // Shifting every logit changes no probability.
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]).unwrap() < 1e-7);
        assert!(kl_divergence(&[1.0, 2.0], &[1.0, 2.0, 3.0]).is_err());
    }

    #[test]
    fn an_answer_is_compared_at_the_rows_that_predict_it() {
        // Prompt of 2 tokens, answer [1, 0]: rows 1 and 2 predict them.
        let p = vec![vec![0.0, 0.0], vec![0.0, 5.0], vec![5.0, 0.0]];
        let q = vec![vec![9.0, 0.0], vec![0.0, 5.0], vec![0.0, 0.0]];
        let c = compare_answer(2, &[1, 0], &p, &q, 2).unwrap();
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.tokens[0].kl, 0.0, "row 1 is the same on both sides");
        assert!(c.tokens[1].kl > 0.0);
        assert_eq!(c.tokens[0].top_p[0].0, 1);
        assert!((c.mean_kl - c.tokens[1].kl / 2.0).abs() < 1e-7);
        assert!(compare_answer(3, &[1, 0], &p, &q, 2).is_err());
    }

    fn tokenizer(path: &str) -> Tokenizer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        crate::model::ModelFiles::open(dir.join(path)).unwrap().tokenizer.unwrap()
    }

    #[test]
    fn only_models_of_one_vocabulary_are_compared() {
        let llama = tokenizer("llama/model-q8_0.gguf");
        check_same_vocabulary(&llama, &tokenizer("llama/model-f32.gguf")).unwrap();
        let err = check_same_vocabulary(&llama, &tokenizer("gemma2/model-q8_0.gguf")).unwrap_err();
        assert!(err.to_string().contains("different vocabularies"), "{err}");
    }
}
