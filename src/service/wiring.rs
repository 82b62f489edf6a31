//! Building the engine from settings: one place that maps specs to adapters.

use crate::adapters::folder::FolderSource;
use crate::adapters::in_process::InProcessDelivery;
use crate::adapters::mongo::MongoStore;
use crate::adapters::rabbitmq::{ConsumerPool, Link, RabbitDelivery};
use crate::adapters::s3::S3Source;
use crate::adapters::sqlite::SqliteStore;
use crate::adapters::unreliable::{FaultPlan, UnreliableDelivery, UnreliableSource, UnreliableStore};
use crate::config::{Settings, SourceSpec, StoreSpec};
use crate::engine::{Engine, Heartbeat, SystemClock};
use crate::ports::delivery::Delivery;
use crate::ports::source::ObjectSource;
use crate::ports::store::Store;
use anyhow::Context;
use std::sync::Arc;

/// The test hook's fault plan (`ESR_INGEST_FAULTS`), read once; `None` unless set.
fn fault_plan() -> anyhow::Result<Option<Arc<FaultPlan>>> {
    static PLAN: std::sync::OnceLock<Result<Option<Arc<FaultPlan>>, String>> = std::sync::OnceLock::new();
    PLAN.get_or_init(FaultPlan::from_env).clone().map_err(anyhow::Error::msg)
}

/// With the test hook on, the faults injected by this process, as one line for stderr.
pub fn fault_summary() -> Option<String> {
    let plan = fault_plan().ok().flatten()?;
    let [before, after, delay, pause] = plan.injected();
    Some(format!("injected faults: before={before} after={after} delay={delay} pause={pause}"))
}

/// The store, behind the fault-injecting wrapper when the test hook asks for it.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store = open_real_store(settings).await?;
    Ok(match fault_plan()? {
        Some(plan) => Arc::new(UnreliableStore { inner: store, plan }),
        None => store,
    })
}

async fn open_real_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.store {
        StoreSpec::Sqlite(path) => {
            let store = SqliteStore::open(path).await.with_context(|| format!("store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreSpec::Mongo(uri) => Ok(Arc::new(MongoStore::open(uri).await.context("store")?)),
    }
}

async fn open_source(settings: &Settings) -> anyhow::Result<Arc<dyn ObjectSource>> {
    let source: Arc<dyn ObjectSource> = match &settings.source {
        SourceSpec::Folder(path) => Arc::new(FolderSource::new(path)),
        SourceSpec::S3 { bucket, prefix } => Arc::new(S3Source::connect(bucket, prefix, &settings.s3).await),
    };
    Ok(match fault_plan()? {
        Some(plan) => Arc::new(UnreliableSource { inner: source, plan }),
        None => source,
    })
}

/// A link to the broker named by the settings, with its topology checked: a drifted
/// topology is fatal; an unreachable broker only a warning (publishing retries).
async fn broker_link(settings: &Settings, url: &str, role: &str) -> anyhow::Result<Arc<Link>> {
    let link = Arc::new(Link::new(url, &format!("esr-ingest {role}"), settings.rabbitmq.clone()));
    match link.connection().await {
        Ok(_) => {}
        Err(e) if e.is_transient() => tracing::warn!(error = %e, "broker not reachable yet; will retry"),
        Err(e) => return Err(e.into()),
    }
    Ok(link)
}

/// The consumers this process runs, when a broker is configured and `consumers > 0`.
pub async fn consumers(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<Option<ConsumerPool>> {
    match &settings.broker {
        Some(url) if settings.rabbitmq.consumers > 0 => {
            let link = broker_link(settings, url, "consumer").await?;
            Ok(Some(ConsumerPool::new(link, store, settings.layouts.clone())))
        }
        _ => Ok(None),
    }
}

pub async fn engine(settings: &Settings) -> anyhow::Result<Engine> {
    let source = open_source(settings).await?;
    let store = open_store(settings).await?;
    let delivery: Arc<dyn Delivery> = match &settings.broker {
        Some(url) => Arc::new(RabbitDelivery::new(broker_link(settings, url, "publisher").await?, store.clone())),
        None => Arc::new(InProcessDelivery::new(store.clone())),
    };
    let delivery: Arc<dyn Delivery> = match fault_plan()? {
        Some(plan) => Arc::new(UnreliableDelivery { inner: delivery, plan }),
        None => delivery,
    };
    Ok(assemble(settings, source, store, delivery))
}

/// An engine for operator commands that change streams and the ledger but deliver no
/// records (`sequence skip`): it never connects to a broker.
pub async fn operator_engine(settings: &Settings) -> anyhow::Result<Engine> {
    let source = open_source(settings).await?;
    let store = open_store(settings).await?;
    let delivery = Arc::new(InProcessDelivery::new(store.clone()));
    Ok(assemble(settings, source, store, delivery))
}

fn assemble(
    settings: &Settings,
    source: Arc<dyn ObjectSource>,
    store: Arc<dyn Store>,
    delivery: Arc<dyn Delivery>,
) -> Engine {
    Engine {
        source,
        delivery,
        store,
        profile: settings.profile.clone(),
        layouts: settings.layouts.clone(),
        full_files: settings.full_files.clone(),
        rules: settings.rules.clone(),
        clock: Arc::new(SystemClock),
        heartbeat: Arc::new(Heartbeat::default()),
        ownership: None,
        known: Default::default(),
    }
}
