//! The LLM request path: token-shaped prompts, provider request bodies,
//! streaming SSE parsing and per-request timings.
//! (stub: being built)
