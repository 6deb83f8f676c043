//! The pure plan of a response: from the settings, the parsed request, a
//! seeded random source and the prefix-cache answer, decide whether the
//! request is rejected (and with which error and fault), and otherwise what
//! it produces: how many reasoning and answer tokens, how it ends (finish,
//! or a fault that cuts it after k tokens), the delay to the first token
//! and the base decode interval. [`Plan::step`] then says, token by token,
//! which chunk comes next.
//!
//! Nothing here does I/O, reads a clock or holds a lock, so every rule is
//! unit-tested without sockets; the stream executor (`stream.rs`) and the
//! format writers (`format/`) carry the plan out.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use super::SimConfig;
use super::cache::BLOCK_WORDS;
use super::parse::{Api, ApiError, Req};

/// An injected fault (one seeded draw per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    H429,
    H500,
    H503,
    ErrorEvent,
    Truncate,
    Stall,
    Empty,
}

impl Fault {
    /// The name in /sim/stats and the request log.
    pub fn name(self) -> &'static str {
        match self {
            Fault::H429 => "http_429",
            Fault::H500 => "http_500",
            Fault::H503 => "http_503",
            Fault::ErrorEvent => "error_event",
            Fault::Truncate => "truncate",
            Fault::Stall => "stall",
            Fault::Empty => "empty",
        }
    }
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

/// How a faulty stream breaks off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    ErrorEvent,
    Truncate,
    Stall,
}

/// A request answered with an error before any output.
#[derive(Debug)]
pub struct Rejection {
    pub error: ApiError,
    pub fault: Option<Fault>,
}

/// What an admitted request will produce.
#[derive(Debug, Clone)]
pub struct Plan {
    pub fault: Option<Fault>,
    /// Prompt tokens found in the prefix cache.
    pub cached_tokens: u64,
    pub n_reason: u32,
    pub n_answer: u32,
    pub finish: Finish,
    /// Break off after this many tokens.
    pub cut: Option<(u32, Cut)>,
    /// From getting a slot to the first token: TTFT plus prefill of the uncached prompt.
    pub first_token_delay: Duration,
    /// Base decode interval, µs (0 = no waiting at all); the executor scales it
    /// by the running streams and the jitter.
    pub tpot_us: f64,
}

/// The next thing a stream sends, after `emitted` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A token, due at its deadline; `first` is preceded by the format's first
    /// chunk, `transition` by the end of the reasoning.
    Token {
        first: bool,
        reasoning: bool,
        transition: bool,
    },
    /// The fault cuts the stream here, right after the last token.
    Cut(Cut),
    /// The proper end. With no token at all (`first`) it waits for the first
    /// deadline and carries the first chunk; `transition` closes reasoning that no
    /// answer followed.
    End { first: bool, transition: bool },
}

impl Plan {
    pub fn total(&self) -> u32 {
        self.n_reason.saturating_add(self.n_answer)
    }

    pub fn step(&self, emitted: u32) -> Step {
        if let Some((k, cut)) = self.cut
            && emitted == k
        {
            return Step::Cut(cut);
        }
        let total = self.total();
        if emitted >= total {
            return Step::End {
                first: total == 0,
                transition: self.n_reason > 0 && self.n_answer == 0,
            };
        }
        Step::Token {
            first: emitted == 0,
            reasoning: emitted < self.n_reason,
            transition: self.n_reason > 0 && emitted == self.n_reason,
        }
    }

    /// A plan with no latency, for tests of the writers.
    #[cfg(test)]
    pub fn fixed(n_reason: u32, n_answer: u32, finish: Finish, cut: Option<(u32, Cut)>) -> Self {
        Plan {
            fault: None,
            cached_tokens: 0,
            n_reason,
            n_answer,
            finish,
            cut,
            first_token_delay: Duration::ZERO,
            tpot_us: 0.0,
        }
    }
}

/// Draws the request's fault (rates add up to at most 1).
pub fn draw_fault(cfg: &SimConfig, rng: &mut StdRng) -> Option<Fault> {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (rate, f) in [
        (cfg.fault_429, Fault::H429),
        (cfg.fault_500, Fault::H500),
        (cfg.fault_503, Fault::H503),
        (cfg.fault_error_event, Fault::ErrorEvent),
        (cfg.fault_truncate, Fault::Truncate),
        (cfg.fault_stall, Fault::Stall),
        (cfg.fault_empty, Fault::Empty),
    ] {
        acc += rate;
        if rate > 0.0 && u < acc {
            return Some(f);
        }
    }
    None
}

/// An error of the server itself (faults, shutdown), in the API's shape.
pub fn server_error(status: u16, message: &str) -> ApiError {
    ApiError {
        status,
        kind: if status == 429 { "requests" } else { "server_error" },
        message: message.into(),
        param: None,
        code: match status {
            429 => Some("rate_limit_exceeded"),
            _ => None,
        },
        retry_after_s: None,
    }
}

fn context_exceeded(cfg: &SimConfig, api: Api, prompt: u64, max_tokens: u64) -> ApiError {
    match api {
        Api::Messages => ApiError::bad(
            Some("messages"),
            format!(
                "prompt is too long: {prompt} tokens + max_tokens {max_tokens} > {} maximum",
                cfg.context_limit
            ),
        ),
        _ => ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::bad(
                Some("messages"),
                format!(
                    "This model's maximum context length is {} tokens. However, you requested {} tokens ({prompt} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.",
                    cfg.context_limit,
                    prompt.saturating_add(max_tokens),
                ),
            )
        },
    }
}

/// Plans the response to `req`. `rng` is the request's seeded source (the
/// executor goes on drawing jitter from it); `cache` looks the prompt's block
/// hashes up in the prefix cache (and records them), returning the number of
/// leading blocks that were cached. It is called only for admitted requests.
pub fn plan(
    cfg: &SimConfig,
    api: Api,
    req: &Req,
    rng: &mut StdRng,
    cache: impl FnOnce(&[u64]) -> usize,
) -> Result<Plan, Rejection> {
    // Without max_tokens the answer may use what is left of the context.
    let room = cfg.context_limit.saturating_sub(req.prompt_tokens).max(1);
    let max_tokens = req.max_tokens.unwrap_or(cfg.default_max_tokens.clamp(1, room));
    if req.prompt_tokens.saturating_add(max_tokens) > cfg.context_limit {
        return Err(Rejection {
            error: context_exceeded(cfg, api, req.prompt_tokens, max_tokens),
            fault: None,
        });
    }
    let fault = draw_fault(cfg, rng);
    let reject = |error: ApiError| Err(Rejection { error, fault });
    match fault {
        Some(Fault::H429) => {
            let mut e = server_error(429, "Rate limit reached (simulated). Please retry after a short wait.");
            e.retry_after_s = Some(cfg.retry_after_s);
            return reject(e);
        }
        Some(Fault::H500) => return reject(server_error(500, "The server had an error (simulated).")),
        Some(Fault::H503) => {
            return reject(server_error(
                503,
                "The server is overloaded (simulated). Please retry later.",
            ));
        }
        _ => {}
    }
    let cached = (cache(&req.block_hashes).saturating_mul(BLOCK_WORDS) as u64).min(req.prompt_tokens);

    let n_reason = if api == Api::Completions {
        0
    } else if cfg.reasoning_tokens > 0 {
        cfg.reasoning_tokens
    } else if req.wants_reasoning {
        cfg.requested_reasoning_tokens
    } else {
        0
    };
    // at most u32::MAX tokens per response (the context limit is far below)
    let max_tokens = max_tokens.min(u64::from(u32::MAX));
    let n_reason = n_reason.min(max_tokens);
    let budget = max_tokens - n_reason;
    let (mut n_answer, mut finish) = match cfg.natural_output {
        Some(n) if !req.ignore_eos => {
            let want = n.max(req.min_tokens.saturating_sub(n_reason));
            if want < budget {
                (want, Finish::Stop)
            } else {
                (budget, Finish::Length)
            }
        }
        _ => (budget, Finish::Length),
    };
    if fault == Some(Fault::Empty) {
        n_answer = 0;
        finish = Finish::Stop;
    }
    let total = n_reason + n_answer;
    let cut = match fault {
        Some(Fault::ErrorEvent) => Some(Cut::ErrorEvent),
        Some(Fault::Truncate) => Some(Cut::Truncate),
        Some(Fault::Stall) => Some(Cut::Stall),
        _ => None,
    }
    .map(|c| (if total <= 1 { 0 } else { rng.random_range(1..total) } as u32, c));

    let (ttft_us, tpot_us) = if cfg.no_latency || (cfg.ttft_ms == 0.0 && cfg.tpot_ms == 0.0) {
        (0.0, 0.0)
    } else {
        (
            cfg.ttft_ms * 1000.0 + cfg.prefill_us_per_token * (req.prompt_tokens - cached) as f64,
            cfg.tpot_ms * 1000.0,
        )
    };
    Ok(Plan {
        fault,
        cached_tokens: cached,
        n_reason: n_reason as u32,
        n_answer: n_answer as u32,
        finish,
        cut,
        // `as` saturates; the settings bound both terms far below u64 nanoseconds
        first_token_delay: Duration::from_nanos((ttft_us * 1000.0) as u64),
        tpot_us,
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn req(prompt_tokens: u64, max_tokens: Option<u64>) -> Req {
        Req {
            model: "m".into(),
            stream: true,
            include_usage: false,
            max_tokens,
            ignore_eos: false,
            min_tokens: 0,
            wants_reasoning: false,
            prompt_tokens,
            block_hashes: vec![1, 2],
            chain: Default::default(),
            prompt_texts: None,
        }
    }

    fn run(cfg: &SimConfig, api: Api, r: &Req) -> Result<Plan, Rejection> {
        plan(cfg, api, r, &mut StdRng::seed_from_u64(3), |_| 0)
    }

    #[test]
    fn answer_runs_to_max_tokens_or_the_natural_end() {
        let cfg = SimConfig::default();
        let p = run(&cfg, Api::Chat, &req(10, Some(7))).unwrap();
        assert_eq!((p.n_reason, p.n_answer, p.finish, p.cut), (0, 7, Finish::Length, None));
        let cfg = SimConfig {
            natural_output: Some(3),
            ..SimConfig::default()
        };
        let p = run(&cfg, Api::Chat, &req(10, Some(7))).unwrap();
        assert_eq!((p.n_answer, p.finish), (3, Finish::Stop));
        let mut r = req(10, Some(7));
        r.ignore_eos = true;
        assert_eq!(run(&cfg, Api::Chat, &r).unwrap().n_answer, 7);
        r.ignore_eos = false;
        r.min_tokens = 5;
        assert_eq!(run(&cfg, Api::Chat, &r).unwrap().n_answer, 5);
    }

    #[test]
    fn default_max_tokens_is_limited_by_the_context_left() {
        let cfg = SimConfig {
            context_limit: 100,
            default_max_tokens: 256,
            ..SimConfig::default()
        };
        assert_eq!(run(&cfg, Api::Chat, &req(90, None)).unwrap().n_answer, 10);
        let e = run(&cfg, Api::Chat, &req(90, Some(11))).unwrap_err();
        assert_eq!(e.error.code, Some("context_length_exceeded"));
        assert!(e.fault.is_none());
        let e = run(&cfg, Api::Messages, &req(101, Some(1))).unwrap_err();
        assert!(e.error.message.contains("too long"), "{}", e.error.message);
    }

    #[test]
    fn reasoning_counts_in_max_tokens_and_never_in_completions() {
        let cfg = SimConfig {
            reasoning_tokens: 4,
            ..SimConfig::default()
        };
        let p = run(&cfg, Api::Messages, &req(10, Some(6))).unwrap();
        assert_eq!((p.n_reason, p.n_answer), (4, 2));
        let p = run(&cfg, Api::Chat, &req(10, Some(3))).unwrap();
        assert_eq!((p.n_reason, p.n_answer), (3, 0));
        assert_eq!(run(&cfg, Api::Completions, &req(10, Some(6))).unwrap().n_reason, 0);
        let mut r = req(10, Some(30));
        r.wants_reasoning = true;
        assert_eq!(run(&SimConfig::default(), Api::Chat, &r).unwrap().n_reason, 16);
    }

    #[test]
    fn delays_are_ttft_plus_uncached_prefill() {
        let cfg = SimConfig {
            ttft_ms: 10.0,
            prefill_us_per_token: 100.0,
            tpot_ms: 2.0,
            ..SimConfig::default()
        };
        let r = req(40, Some(5));
        // one cached block of 16 words: 24 uncached tokens cost prefill
        let p = plan(&cfg, Api::Chat, &r, &mut StdRng::seed_from_u64(0), |h| {
            assert_eq!(h, [1, 2]);
            1
        })
        .unwrap();
        assert_eq!(p.cached_tokens, 16);
        assert_eq!(p.first_token_delay, Duration::from_micros(10_000 + 24 * 100));
        assert_eq!(p.tpot_us, 2000.0);
        let fast = SimConfig {
            no_latency: true,
            ..cfg
        };
        let p = run(&fast, Api::Chat, &r).unwrap();
        assert_eq!((p.first_token_delay, p.tpot_us), (Duration::ZERO, 0.0));
    }

    /// Rejecting faults answer before the cache is touched; stream faults cut
    /// after 1..total tokens; `empty` ends properly with no answer.
    #[test]
    fn faults() {
        let only = |f: fn(&mut SimConfig)| {
            let mut c = SimConfig::default();
            f(&mut c);
            c
        };
        let cfg = only(|c| c.fault_429 = 1.0);
        let e = plan(
            &cfg,
            Api::Chat,
            &req(10, Some(5)),
            &mut StdRng::seed_from_u64(0),
            |_| panic!("cache used by a rejected request"),
        )
        .unwrap_err();
        assert_eq!(
            (e.error.status, e.fault, e.error.retry_after_s),
            (429, Some(Fault::H429), Some(1))
        );
        assert_eq!(
            run(&only(|c| c.fault_503 = 1.0), Api::Chat, &req(1, Some(5)))
                .unwrap_err()
                .error
                .status,
            503
        );
        for seed in 0..50 {
            let p = plan(
                &only(|c| c.fault_truncate = 1.0),
                Api::Chat,
                &req(1, Some(5)),
                &mut StdRng::seed_from_u64(seed),
                |_| 0,
            )
            .unwrap();
            let (k, cut) = p.cut.unwrap();
            assert!((1..5).contains(&k) && cut == Cut::Truncate, "{k}");
        }
        let p = run(&only(|c| c.fault_stall = 1.0), Api::Chat, &req(1, Some(1))).unwrap();
        assert_eq!(p.cut, Some((0, Cut::Stall)));
        let p = run(&only(|c| c.fault_empty = 1.0), Api::Chat, &req(1, Some(5))).unwrap();
        assert_eq!((p.n_answer, p.finish, p.fault), (0, Finish::Stop, Some(Fault::Empty)));
    }

    /// The chunk sequence: first chunk before token 0, the transition before
    /// the first answer token, the end right after the last token (or at the
    /// first deadline when there is none), a cut instead of token k.
    #[test]
    fn steps() {
        let p = Plan::fixed(2, 1, Finish::Stop, None);
        let seq: Vec<Step> = (0..=3).map(|i| p.step(i)).collect();
        assert_eq!(
            seq,
            [
                Step::Token {
                    first: true,
                    reasoning: true,
                    transition: false
                },
                Step::Token {
                    first: false,
                    reasoning: true,
                    transition: false
                },
                Step::Token {
                    first: false,
                    reasoning: false,
                    transition: true
                },
                Step::End {
                    first: false,
                    transition: false
                },
            ]
        );
        assert_eq!(
            Plan::fixed(0, 0, Finish::Stop, None).step(0),
            Step::End {
                first: true,
                transition: false
            }
        );
        assert_eq!(
            Plan::fixed(2, 0, Finish::Length, None).step(2),
            Step::End {
                first: false,
                transition: true
            }
        );
        let cut = Plan::fixed(0, 5, Finish::Length, Some((3, Cut::ErrorEvent)));
        assert!(matches!(cut.step(2), Step::Token { .. }));
        assert_eq!(cut.step(3), Step::Cut(Cut::ErrorEvent));
    }
}
