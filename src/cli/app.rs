//! Building the engine from settings: one place that maps specs to adapters.

use super::UsageError;
use crate::adapters::folder::FolderSource;
use crate::adapters::in_process::InProcessDelivery;
use crate::adapters::mongo::MongoStore;
use crate::adapters::s3::S3Source;
use crate::adapters::sqlite::SqliteStore;
use crate::config::{Settings, SourceSpec, StoreSpec};
use crate::engine::{Engine, Heartbeat, SystemClock};
use crate::ports::source::ObjectSource;
use crate::ports::store::Store;
use anyhow::Context;
use std::sync::Arc;

pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.store {
        StoreSpec::Sqlite(path) => {
            let store = SqliteStore::open(path).await.with_context(|| format!("store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreSpec::Mongo(uri) => Ok(Arc::new(MongoStore::open(uri).await.context("store")?)),
    }
}

async fn open_source(settings: &Settings) -> anyhow::Result<Arc<dyn ObjectSource>> {
    Ok(match &settings.source {
        SourceSpec::Folder(path) => Arc::new(FolderSource::new(path)),
        SourceSpec::S3 { bucket, prefix } => Arc::new(S3Source::connect(bucket, prefix, &settings.s3).await),
    })
}

pub async fn engine(settings: &Settings) -> anyhow::Result<Engine> {
    if settings.broker.is_some() {
        return Err(
            UsageError("--broker is not available in this build; leave it out for in-process delivery".into()).into()
        );
    }
    let source = open_source(settings).await?;
    let store = open_store(settings).await?;
    Ok(Engine {
        source,
        delivery: Arc::new(InProcessDelivery::new(store.clone())),
        store,
        profile: settings.profile.clone(),
        layout: settings.layout.clone(),
        rules: settings.rules.clone(),
        clock: Arc::new(SystemClock),
        heartbeat: Arc::new(Heartbeat::default()),
    })
}
