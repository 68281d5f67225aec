//! `allsource serve`: runs the server on a multi-threaded runtime until
//! SIGTERM or ctrl-c.

use allsource::config::Config;

/// Serves until a shutdown signal, then sends the last traces (when
/// `provider` exports them).
pub(crate) fn run(
    config: Config,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Test builds inject errors named in FAILPOINTS (see wal).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let served = runtime.block_on(allsource::server::run(
        config,
        allsource::server::shutdown_signal(),
    ));
    if let Some(provider) = provider
        && let Err(e) = provider.shutdown()
    {
        eprintln!("allsource: exporting the last traces failed: {e}");
    }
    Ok(served?)
}
