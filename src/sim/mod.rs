//! The built-in OpenAI/Anthropic-compatible server simulator (`tokenswarm sim`).
//! (stub: being built)

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> Result<(), SimError> {
    let addr = format!("{}:{}", args.host, args.port);
    let _l = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    Ok(())
}
