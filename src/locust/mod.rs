//! The Locust worker protocol. (being built)
pub mod wire;
