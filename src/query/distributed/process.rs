//! The cluster's processes: a Ballista scheduler and executors, each
//! planning or running with [`super::cluster_state`], on listeners the
//! caller bound. The server starts them in-process for `--ballista
//! local`; `allsource scheduler` and `allsource executor` run them alone.

use super::codec::TableCodec;
use ballista_core::serde::protobuf::ExecutorRegistration;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::serde::scheduler::{
    ExecutorOperatingSystemSpecification, ExecutorSpecification,
};
use ballista_core::serde::{BallistaCodec, BallistaPhysicalExtensionCodec};
use ballista_core::utils::{GrpcServerConfig, create_grpc_server};
use ballista_core::{BALLISTA_PROTOCOL_VERSION, ConfigProducer, RuntimeProducer};
use ballista_executor::executor::Executor;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::metrics::LoggingMetricsCollector;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::metrics::default_metrics_collector;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::execution::SessionState;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::sync::Arc;
use tokio::net::TcpListener;

fn codec() -> BallistaCodec {
    BallistaCodec::new(
        Arc::new(TableCodec::default()),
        Arc::new(BallistaPhysicalExtensionCodec::default()),
    )
}

/// Serves a scheduler on `listener` (until the process ends) that plans
/// with `state`.
pub async fn start_scheduler(listener: TcpListener, state: SessionState) -> Result<(), String> {
    let address = listener
        .local_addr()
        .map_err(|e| format!("the scheduler's address: {e}"))?;
    let config = state.config().clone();
    let producer_config = config.clone();
    let config_producer: ConfigProducer = Arc::new(move || producer_config.clone());
    let cluster = BallistaCluster::new_memory(
        address.to_string(),
        Arc::new(move |_| Ok(state.clone())),
        config_producer,
    );
    let metrics = default_metrics_collector().map_err(|e| e.to_string())?;
    let mut scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> = SchedulerServer::new(
        address.to_string(),
        cluster,
        codec(),
        Arc::new(
            SchedulerConfig::default()
                .with_scheduler_policy(ballista_core::config::TaskSchedulingPolicy::PullStaged),
        ),
        metrics,
    );
    scheduler
        .init()
        .await
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    let service = SchedulerGrpcServer::new(scheduler);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok(())
}

/// Where an executor is and what it offers.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler, as `http://host:port`.
    pub scheduler: String,
    /// The host the scheduler and clients reach this executor at.
    pub advertise_host: String,
    /// Tasks run at once.
    pub slots: usize,
    /// Where shuffle files are written.
    pub work_dir: std::path::PathBuf,
}

/// Serves an executor on `listener` that registers with the scheduler and
/// runs its tasks with `state`'s functions and object stores.
pub async fn start_executor(
    listener: TcpListener,
    settings: ExecutorSettings,
    state: SessionState,
) -> Result<(), String> {
    let address = listener
        .local_addr()
        .map_err(|e| format!("the executor's address: {e}"))?;
    let mut scheduler = None;
    // The scheduler may still be starting.
    for _ in 0..100 {
        match SchedulerGrpcClient::connect(settings.scheduler.clone()).await {
            Ok(client) => {
                scheduler = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let scheduler =
        scheduler.ok_or_else(|| format!("cannot reach the scheduler at {}", settings.scheduler))?;
    let registration = ExecutorRegistration {
        id: ballista_core::ids::new_instance_id(),
        host: Some(settings.advertise_host.clone()),
        port: u32::from(address.port()),
        grpc_port: 0,
        specification: Some(
            ExecutorSpecification::default()
                .with_vcores(settings.slots as u32)
                .into(),
        ),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
    };
    std::fs::create_dir_all(&settings.work_dir).map_err(|e| {
        format!(
            "cannot create the work directory {}: {e}",
            settings.work_dir.display()
        )
    })?;
    let work_dir = settings.work_dir.display().to_string();
    let config = state.config().clone();
    let max_message =
        ballista_core::extension::SessionConfigExt::ballista_grpc_client_max_message_size(&config);
    let runtime = state.runtime_env().clone();
    let runtime_producer: RuntimeProducer = Arc::new(move |_| Ok(runtime.clone()));
    let config_producer: ConfigProducer = Arc::new(move || config.clone());
    let executor = Arc::new(Executor::with_default_execution_engine(
        registration,
        &work_dir,
        runtime_producer,
        config_producer,
        Arc::new((&state).into()),
        Arc::new(LoggingMetricsCollector::default()),
        settings.slots,
    ));
    let flight = arrow_flight::flight_service_server::FlightServiceServer::new(
        BallistaFlightService::new(work_dir),
    )
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(max_message);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(flight)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tokio::spawn(ballista_executor::execution_loop::poll_loop(
        scheduler,
        executor,
        codec(),
        None,
        None,
        ballista_executor::health::ExecutorHealth::new(),
    ));
    Ok(())
}
