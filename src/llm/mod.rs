//! The LLM request path: token-shaped prompts, provider request bodies,
//! streaming SSE parsing and per-request timings.
//!
//! # What this module owns
//! Everything between "send request number `seq` of scenario S" and the
//! [`Outcome`](crate::outcome::Outcome) that metrics consume:
//! - [`prompt`]: exact-length prompts in word units (docs/contracts.md §1);
//! - [`request`]: URL, headers and JSON bodies per [`Provider`](crate::scenario::Provider);
//! - [`sse`]: Server-Sent-Events framing of a byte stream split anywhere;
//! - [`event`]: what one event means, per provider (the full parser), and
//!   [`fast`]: the byte scanner that decides the common token chunks first;
//! - [`stream`]: folds event meanings into a token timeline;
//! - [`client`]: the HTTP client, timeouts, cancellation and the final `Outcome`;
//! - [`session`] and [`answer`]: multi-turn sessions, which resend the
//!   conversation (the server's answers included) each turn.
//!
//! It must not touch metrics aggregation, load shaping or the Locust
//! protocol: it only produces `Outcome`s. A failed request is an `Outcome`
//! with `failure: Some(..)`, never an `Err` and never a panic; [`LlmError`] is
//! reserved for set-up problems found before any request is sent.
//!
//! # Secrets
//! API keys are read from the environment variable a scenario names and live
//! only inside [`PreparedScenario`]'s header map (marked sensitive). Nothing
//! here formats them: errors name the *variable*, `Debug` impls print header
//! names only, and every excerpt and failure message goes through a
//! [`scrub::Scrubber`] before it is stored. Redirects are never followed
//! (a 3xx is `FailureKind::Redirect`), so a key only ever goes to the URL
//! the scenario names, and [`allow`] lets the worker's operator bound which
//! URLs and key variables the master may name.
//!
//! # Bounds on server input
//! | what grows from server input | bound | when crossed |
//! |---|---|---|
//! | SSE line | 256 KiB ([`sse::MAX_LINE_BYTES`]) | `sse_line_too_long` |
//! | SSE event | 1 MiB ([`sse::MAX_EVENT_BYTES`]) | `sse_event_too_large` |
//! | ITL samples per request | 16 Ki ([`stream::MAX_ITL_SAMPLES`]) | later gaps summarised (`Outcome::itl_tail`) |
//! | error body read for the message | 2 KiB | rest not read |
//! | error object text while parsing | 1 KiB per field | cut |
//! | excerpt of server text | 200 chars ([`scrub::EXCERPT_CHARS`]) | cut, `…` |
//! | failure message | 512 bytes ([`scrub::MAX_MESSAGE_BYTES`]) | cut, `…` |
//! | response headers | hyper's defaults (100 headers, ~400 KiB buffer) | connection error |
//!
//! Bodies are otherwise never buffered: each chunk is parsed and dropped.

pub mod allow;
pub mod answer;
pub mod client;
pub mod event;
pub mod fast;
pub mod prompt;
pub mod request;
pub mod scrub;
pub mod session;
pub mod sse;
pub mod stream;

pub use allow::AllowList;
pub use client::{LlmClient, PreparedScenario};
pub use prompt::PromptBuilder;
pub use sse::{SseEvent, SseParser};
pub use stream::{Flow, ResponseReader, StreamSummary};

/// A problem that prevents a scenario from being prepared or the client
/// from being built. Found once at start-up, before any load is sent.
///
/// No variant carries a secret: a missing or unusable key is reported by
/// the *name* of its environment variable.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The scenario names an API key variable that is not set.
    #[error("scenario {scenario:?}: environment variable {var} (api_key_env) is not set; export it with the API key")]
    MissingApiKey { scenario: String, var: String },
    /// The variable is set but cannot be sent in an HTTP header
    /// (not Unicode, or contains control characters).
    #[error(
        "scenario {scenario:?}: environment variable {var} (api_key_env) holds a value that is not a valid HTTP header value"
    )]
    InvalidApiKey { scenario: String, var: String },
    /// host + endpoint does not form a valid http(s) URL.
    #[error("scenario {scenario:?}: endpoint URL {url:?} is invalid: {reason}")]
    BadUrl {
        scenario: String,
        url: String,
        reason: String,
    },
    /// A scenario header has an invalid name or value (the value is not shown).
    #[error("scenario {scenario:?}: header {name:?} has an invalid name or value")]
    BadHeader { scenario: String, name: String },
    /// The request body template could not be serialized.
    #[error("scenario {scenario:?}: cannot build the request body: {reason}")]
    Body { scenario: String, reason: String },
    /// The HTTP client (TLS backend, connection pool) could not be built.
    #[error("cannot build the HTTP client: {0}")]
    ClientBuild(String),
    /// The scenario's URL is outside the worker's `--allow-host` list.
    #[error(
        "scenario {scenario:?}: host {host} is not allowed by this worker (--allow-host {allowed}); \
         ask the worker's operator to add it with --allow-host"
    )]
    HostNotAllowed {
        scenario: String,
        host: String,
        allowed: String,
    },
    /// The scenario's `api_key_env` is outside the worker's `--allow-key-env` list.
    #[error(
        "scenario {scenario:?}: api_key_env {var} is not allowed by this worker (--allow-key-env {allowed}); \
         the variable was not read"
    )]
    KeyEnvNotAllowed {
        scenario: String,
        var: String,
        allowed: String,
    },
    /// An `--allow-host` / `--allow-key-env` value cannot be used.
    #[error("allow-list entry {rule:?}: {reason}")]
    BadAllowRule { rule: String, reason: String },
}
