//! Token sampling on the host: repetition penalty, then greedy or top-k → top-p → min-p → temperature → a seeded
//! draw, in the order of llama.cpp's common sampler chain. Works on a full vocabulary or on the few candidates a GPU
//! top-k kernel read back.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the penalty looks at; 0 = off.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Argmax with no penalty: what the CLI's `generate` and the tests that compare with it use.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// What chat starts with when the model names no defaults of its own: greedy decoding without a penalty sends
    /// small models into loops on simple questions, and these settings (llama.cpp's server's, but for top-k) do not.
    /// The seed is fixed, so a reply can be reproduced.
    pub fn chat() -> Self {
        Self {
            temperature: 0.7,
            top_k: 0,
            top_p: 0.9,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 42,
        }
    }

    /// The model's own defaults from HF's generation_config.json: None when it names no sampling, or only greedy
    /// decoding (`do_sample` false), which is what chat must avoid. Values it does not name keep [`Self::chat`]'s;
    /// values out of range are ignored.
    pub fn from_generation_config(json: &serde_json::Value) -> Option<Self> {
        let num = |k: &str| json.get(k).and_then(serde_json::Value::as_f64);
        if json.get("do_sample").and_then(serde_json::Value::as_bool) != Some(true) {
            return None;
        }
        Self::with_overrides(
            num("temperature"),
            num("top_k"),
            num("top_p"),
            num("min_p"),
            num("repetition_penalty"),
            None,
        )
    }

    /// The model's own defaults from a GGUF's `general.sampling.*` keys (written by llama.cpp's converter from
    /// generation_config.json), None when it has none.
    pub fn from_gguf(meta: &crate::format::Metadata) -> Option<Self> {
        use crate::format::MetaValue;
        let num = |k: &str| meta.get(&format!("general.sampling.{k}")).and_then(MetaValue::as_f64);
        Self::with_overrides(
            num("temp"),
            num("top_k"),
            num("top_p"),
            num("min_p"),
            num("penalty_repeat"),
            num("penalty_last_n"),
        )
    }

    fn with_overrides(
        temperature: Option<f64>,
        top_k: Option<f64>,
        top_p: Option<f64>,
        min_p: Option<f64>,
        repeat_penalty: Option<f64>,
        repeat_last_n: Option<f64>,
    ) -> Option<Self> {
        let given = [temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n];
        if given.iter().all(Option::is_none) {
            return None;
        }
        let mut p = Self::chat();
        let ok = |v: Option<f64>, lo: f64, hi: f64| v.filter(|v| v.is_finite() && (lo..=hi).contains(v));
        if let Some(t) = ok(temperature, 0.0, 5.0) {
            p.temperature = t as f32;
        }
        if let Some(k) = ok(top_k, 0.0, 1e6) {
            p.top_k = k as usize;
        }
        if let Some(v) = ok(top_p, 0.0, 1.0) {
            p.top_p = v as f32;
        }
        if let Some(v) = ok(min_p, 0.0, 1.0) {
            p.min_p = v as f32;
        }
        if let Some(v) = ok(repeat_penalty, 1e-3, 10.0) {
            p.repeat_penalty = v as f32;
        }
        if let Some(n) = ok(repeat_last_n, 0.0, 1e6) {
            p.repeat_last_n = n as usize;
        }
        Some(p)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be finite and >= 0, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be finite and > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Reused by `sample_logits` so a decode step over a full vocabulary allocates nothing.
    scratch: Vec<(u32, f32)>,
    /// The distinct recent tokens the penalty applies to, sorted; reused for the same reason.
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Self {
            params,
            rng,
            scratch: Vec::new(),
            recent: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from `candidates` — (token id, logit) pairs in any order, the full vocabulary or only the top-k
    /// read back from a GPU. `history` is every token so far (prompt and generated); the penalty looks at its tail.
    ///
    /// On return `candidates` holds the survivors of the filters, best first, with penalised (not temperature-scaled)
    /// logits. NaN logits count as -inf. An empty candidate list yields token 0, since there is nothing to choose.
    pub fn sample(&mut self, candidates: &mut Vec<(u32, f32)>, history: &[u32]) -> u32 {
        if candidates.is_empty() {
            return 0;
        }
        for c in candidates.iter_mut() {
            if c.1.is_nan() {
                c.1 = f32::NEG_INFINITY;
            }
        }
        self.apply_repeat_penalty(candidates, history);

        if self.params.temperature == 0.0 {
            return argmax(candidates);
        }

        let k = self.params.top_k;
        if k > 0 && k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, best_first);
            candidates.truncate(k);
        }
        // Sorting by (logit desc, id asc) makes the rest independent of the order the candidates came in.
        candidates.sort_unstable_by(best_first);
        let max = candidates[0].1;
        if max == f32::NEG_INFINITY {
            return candidates[0].0;
        }

        if self.params.top_p < 1.0 {
            let total: f64 = candidates.iter().map(|c| weight(c.1, max, 1.0)).sum();
            let target = self.params.top_p as f64 * total;
            let mut cum = 0.0;
            let mut keep = candidates.len();
            for (i, c) in candidates.iter().enumerate() {
                cum += weight(c.1, max, 1.0);
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep);
        }

        if self.params.min_p > 0.0 {
            // p_i >= min_p * p_max  ⇔  logit_i - logit_max >= ln(min_p); the best candidate always survives.
            let floor = max + self.params.min_p.ln();
            candidates.retain(|c| c.1 >= floor);
        }

        let t = self.params.temperature as f64;
        let total: f64 = candidates.iter().map(|c| weight(c.1, max, t)).sum();
        let u = self.rng.random::<f64>() * total;
        let mut cum = 0.0;
        // The best candidate has weight 1, so `chosen` always names a token with non-zero probability, even when
        // rounding puts `u` at `total`.
        let mut chosen = candidates[0].0;
        for c in candidates.iter() {
            let w = weight(c.1, max, t);
            if w == 0.0 {
                break;
            }
            chosen = c.0;
            cum += w;
            if u < cum {
                break;
            }
        }
        chosen
    }

    /// [`Sampler::sample`] over a whole logits vector, token id = index.
    /// Samples from what the backend read back: a whole row, or its top candidates.
    pub fn sample_from(&mut self, logits: &crate::backend::SamplingLogits, history: &[u32]) -> u32 {
        match logits {
            crate::backend::SamplingLogits::Full(row) => self.sample_logits(row, history),
            crate::backend::SamplingLogits::Candidates(c) => {
                let mut candidates = std::mem::take(&mut self.scratch);
                candidates.clear();
                candidates.extend_from_slice(c);
                let token = self.sample(&mut candidates, history);
                self.scratch = candidates;
                token
            }
        }
    }

    pub fn sample_logits(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut candidates = std::mem::take(&mut self.scratch);
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let token = self.sample(&mut candidates, history);
        self.scratch = candidates;
        token
    }

    /// llama.cpp's penalty: each distinct token among the last `repeat_last_n` is penalised once, by dividing a
    /// positive logit and multiplying a negative one, so the penalty always lowers it.
    fn apply_repeat_penalty(&mut self, candidates: &mut [(u32, f32)], history: &[u32]) {
        let penalty = self.params.repeat_penalty;
        let n = self.params.repeat_last_n.min(history.len());
        if penalty == 1.0 || n == 0 {
            return;
        }
        self.recent.clear();
        self.recent.extend_from_slice(&history[history.len() - n..]);
        self.recent.sort_unstable();
        self.recent.dedup();
        for c in candidates.iter_mut() {
            if self.recent.binary_search(&c.0).is_ok() {
                c.1 = if c.1 > 0.0 {
                    c.1 / penalty
                } else {
                    c.1 * penalty
                };
            }
        }
    }
}

/// Higher logit first; equal logits by lower id, so ties resolve the same way everywhere.
fn best_first(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Unnormalised probability of `logit` at temperature `t`, relative to the best logit `max` (finite).
fn weight(logit: f32, max: f32, t: f64) -> f64 {
    ((logit as f64 - max as f64) / t).exp()
}

fn argmax(candidates: &[(u32, f32)]) -> u32 {
    let mut best = candidates[0];
    for &c in &candidates[1..] {
        if c.1 > best.1 || (c.1 == best.1 && c.0 < best.0) {
            best = c;
        }
    }
    best.0
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_models_own_defaults_override_the_chat_ones() {
        let g = serde_json::json!({"do_sample": true, "temperature": 0.2, "top_p": 0.95, "top_k": 20});
        let p = SamplingParams::from_generation_config(&g).unwrap();
        assert_eq!((p.temperature, p.top_p, p.top_k, p.min_p, p.seed), (0.2, 0.95, 20, 0.05, 42));
        // Greedy-only configs and configs without sampling fields leave chat to its own defaults.
        assert_eq!(SamplingParams::from_generation_config(&serde_json::json!({"do_sample": false, "temperature": 0.1})), None);
        assert_eq!(SamplingParams::from_generation_config(&serde_json::json!({"do_sample": true, "bos_token_id": 1})), None);
        // Out-of-range values are ignored, not trusted.
        let bad = SamplingParams::from_generation_config(&serde_json::json!({"do_sample": true, "top_p": 7.0})).unwrap();
        assert_eq!(bad.top_p, 0.9);
        let mut meta = crate::format::Metadata::new();
        meta.insert("general.sampling.temp".into(), crate::format::MetaValue::F32(1.0));
        meta.insert("general.sampling.penalty_last_n".into(), crate::format::MetaValue::I32(128));
        let p = SamplingParams::from_gguf(&meta).unwrap();
        assert_eq!((p.temperature, p.repeat_last_n, p.repeat_penalty), (1.0, 128, 1.1));
        assert!(SamplingParams::chat().validate().is_ok());
    }

    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p).expect("valid params")
    }

    fn random_params(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        }
    }

    const LOGITS: [f32; 6] = [0.5, 2.0, -1.0, 1.9, 0.0, 1.2];

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = sampler(SamplingParams::default());
        assert_eq!(s.sample_logits(&LOGITS, &[]), 1);
        assert_eq!(s.sample_logits(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
        let mut c = vec![(9, 3.0), (4, 3.0), (7, 1.0)];
        assert_eq!(s.sample(&mut c, &[]), 4);
    }

    #[test]
    fn same_seed_same_sequence_and_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = sampler(random_params(seed));
            (0..40)
                .map(|_| s.sample_logits(&logits, &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn candidate_order_does_not_matter() {
        let params = SamplingParams {
            temperature: 0.8,
            top_k: 4,
            top_p: 0.95,
            ..random_params(3)
        };
        let forward: Vec<(u32, f32)> = LOGITS
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let mut reversed = forward.clone();
        reversed.reverse();
        let (mut a, mut b) = (sampler(params.clone()), sampler(params));
        for _ in 0..50 {
            assert_eq!(
                a.sample(&mut forward.clone(), &[]),
                b.sample(&mut reversed.clone(), &[])
            );
        }
    }

    #[test]
    fn filters_that_keep_one_token_are_greedy() {
        let cases = [
            SamplingParams {
                top_k: 1,
                ..random_params(0)
            },
            SamplingParams {
                top_p: 1e-6,
                ..random_params(0)
            },
            SamplingParams {
                top_p: 0.0,
                ..random_params(0)
            },
            SamplingParams {
                min_p: 1.0,
                ..random_params(0)
            },
        ];
        for params in cases {
            for seed in 0..20 {
                let mut s = sampler(SamplingParams {
                    seed,
                    temperature: 5.0,
                    ..params.clone()
                });
                assert_eq!(s.sample_logits(&LOGITS, &[]), 1, "{params:?}");
            }
        }
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let mut s = sampler(SamplingParams {
            top_k: 2,
            temperature: 10.0,
            ..random_params(1)
        });
        for _ in 0..200 {
            assert!([1, 3].contains(&s.sample_logits(&LOGITS, &[])));
        }
        // softmax(LOGITS) sorted ≈ [0.36, 0.33, 0.16, ...]: p = 0.5 keeps exactly the top two.
        let mut s = sampler(SamplingParams {
            top_p: 0.5,
            temperature: 10.0,
            ..random_params(1)
        });
        for _ in 0..200 {
            assert!([1, 3].contains(&s.sample_logits(&LOGITS, &[])));
        }
        // min_p 0.5 keeps logits >= 2.0 + ln 0.5 ≈ 1.307: ids 1 and 3.
        let mut s = sampler(SamplingParams {
            min_p: 0.5,
            temperature: 10.0,
            ..random_params(1)
        });
        for _ in 0..200 {
            assert!([1, 3].contains(&s.sample_logits(&LOGITS, &[])));
        }
    }

    #[test]
    fn repeat_penalty_changes_the_choice() {
        let penalised = SamplingParams {
            repeat_penalty: 1.1,
            ..SamplingParams::default()
        };
        // Positive logit: 2.0 / 1.1 < 1.9.
        assert_eq!(
            sampler(SamplingParams::default()).sample_logits(&LOGITS, &[1]),
            1
        );
        assert_eq!(
            sampler(penalised.clone()).sample_logits(&LOGITS, &[1, 1, 1]),
            3
        );
        // Negative logit: -1.0 * 1.1 < -1.05.
        assert_eq!(
            sampler(penalised.clone()).sample_logits(&[-1.0, -1.05], &[0]),
            1
        );
        // Outside the window the token is not penalised.
        let window = SamplingParams {
            repeat_last_n: 2,
            ..penalised
        };
        assert_eq!(
            sampler(window.clone()).sample_logits(&LOGITS, &[1, 0, 4]),
            1
        );
        assert_eq!(sampler(window).sample_logits(&LOGITS, &[0, 1, 4]), 3);
    }

    #[test]
    fn nan_logits_never_win_and_do_not_panic() {
        let logits = [f32::NAN, 0.5, f32::NAN, 0.2];
        assert_eq!(
            sampler(SamplingParams::default()).sample_logits(&logits, &[]),
            1
        );
        let mut s = sampler(SamplingParams {
            top_p: 0.9,
            min_p: 0.01,
            ..random_params(5)
        });
        for _ in 0..100 {
            assert!([1, 3].contains(&s.sample_logits(&logits, &[])));
        }
        let all_nan = [f32::NAN; 3];
        assert_eq!(sampler(random_params(0)).sample_logits(&all_nan, &[]), 0);
        assert_eq!(
            sampler(SamplingParams::default()).sample_logits(&all_nan, &[]),
            0
        );
        assert_eq!(sampler(random_params(0)).sample_logits(&[], &[]), 0);
    }

    #[test]
    fn empirical_distribution_matches_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        for temperature in [1.0f32, 0.5] {
            let exp: Vec<f64> = logits
                .iter()
                .map(|&l| (l as f64 / temperature as f64).exp())
                .collect();
            let z: f64 = exp.iter().sum();
            let mut s = sampler(SamplingParams {
                temperature,
                ..random_params(42)
            });
            let draws = 20_000;
            let mut counts = [0usize; 3];
            for _ in 0..draws {
                counts[s.sample_logits(&logits, &[]) as usize] += 1;
            }
            for i in 0..3 {
                let got = counts[i] as f64 / draws as f64;
                let want = exp[i] / z;
                assert!(
                    (got - want).abs() < 0.015,
                    "T={temperature} token {i}: {got:.4} vs {want:.4}"
                );
            }
        }
    }

    #[test]
    fn invalid_params_are_rejected() {
        let d = SamplingParams::default;
        for p in [
            SamplingParams {
                temperature: -0.1,
                ..d()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..d()
            },
            SamplingParams {
                temperature: f32::INFINITY,
                ..d()
            },
            SamplingParams { top_p: 1.5, ..d() },
            SamplingParams {
                top_p: f32::NAN,
                ..d()
            },
            SamplingParams { min_p: -0.1, ..d() },
            SamplingParams {
                repeat_penalty: 0.0,
                ..d()
            },
            SamplingParams {
                repeat_penalty: f32::NAN,
                ..d()
            },
        ] {
            assert!(
                matches!(Sampler::new(p.clone()), Err(Error::InvalidArgument(_))),
                "{p:?}"
            );
        }
    }
}
