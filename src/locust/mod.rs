//! The Locust worker protocol. (stub: being built)
