//! Standalone runs without a Locust master: `tokenswarm run RUN_SUITE
//! ENDPOINT` (tokenflood's formats, [`spec`]) and `tokenswarm init`.
pub mod aggregate;
pub mod spec;
