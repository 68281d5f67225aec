//! Logs and traces of the process: stderr always, an OTLP collector when
//! `serve --otlp-endpoint` names one.

/// Our logs at info; the storage crates only when something is wrong.
const DEFAULT_LOG: &str = "info,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,deltalake=warn,deltalake_core=warn,ballista_core=warn,ballista_scheduler=warn,ballista_executor=warn";

/// Logs to stderr, filtered by `ALLSOURCE_LOG`; with an OTLP endpoint the
/// same spans are also exported there in batches. The returned provider
/// must be shut down at exit to send the last batch.
pub(crate) fn init(
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALLSOURCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let Some(endpoint) = otlp_endpoint else {
        registry.init();
        return Ok(None);
    };
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("allsource")
                .build(),
        )
        .build();
    let tracer = provider.tracer("allsource");
    registry
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .init();
    Ok(Some(provider))
}
