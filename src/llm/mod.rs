//! The LLM request path: token-shaped prompts, provider request bodies,
//! streaming SSE parsing and per-request timings.
//!
//! # What this module owns
//! Everything between "send request number `seq` of scenario S" and the
//! [`Outcome`](crate::outcome::Outcome) that metrics consume:
//! - [`prompt`]: exact-length prompts in word units (docs/contracts.md §1);
//! - [`request`]: URL, headers and JSON bodies per [`Provider`](crate::scenario::Provider);
//! - [`sse`]: Server-Sent-Events framing of a byte stream split anywhere;
//! - [`stream`]: per-provider interpretation of events into a token timeline;
//! - [`client`]: the HTTP client, timeouts, cancellation and the final `Outcome`.
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
//! names only, and failure messages are scrubbed of the key before they leave.

pub mod client;
pub mod prompt;
pub mod request;
pub mod sse;
pub mod stream;

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
}
