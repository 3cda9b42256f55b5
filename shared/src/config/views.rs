//! What each binary needs from the platform config, every section guaranteed present. A
//! view is asked for once at start-up; when sections are missing, the error lists them all.

use std::path::{Path, PathBuf};

use super::{
    ConfigError, ENV_PREFIX, Issue, PlatformConfig, QueueSettings, Section, StreamSettings,
    WarehouseSettings,
};

/// `[queue]` and `[catalog]`: enqueueing files (the ingest-batch Lambda, `backfill`).
#[derive(Debug, Clone, Copy)]
pub struct FileIngestView<'a> {
    pub queue: &'a QueueSettings,
    pub catalog_path: &'a Path,
}

/// `[queue]`, `[catalog]` and `[stream]`: enqueueing stream records (the ingest-stream
/// Lambda, `replay`).
#[derive(Debug, Clone, Copy)]
pub struct StreamIngestView<'a> {
    pub queue: &'a QueueSettings,
    pub catalog_path: &'a Path,
    pub stream: &'a StreamSettings,
}

/// `[queue]` and `[warehouse]`: the workers of `processor serve` (the catalog arrives
/// loaded).
#[derive(Debug, Clone, Copy)]
pub struct WorkersView<'a> {
    pub queue: &'a QueueSettings,
    pub warehouse: &'a WarehouseSettings,
}

/// `[queue]`, `[catalog]` and `[warehouse]`: `processor serve`.
#[derive(Debug, Clone, Copy)]
pub struct ServeView<'a> {
    pub workers: WorkersView<'a>,
    pub catalog_path: &'a Path,
}

/// `[queue]` with its `dead_letter_url`: moving dead letters back (`redrive`).
#[derive(Debug, Clone, Copy)]
pub struct RedriveView<'a> {
    pub queue: &'a QueueSettings,
    pub dead_letter_url: &'a str,
}

impl PlatformConfig {
    pub fn file_ingest(&self) -> Result<FileIngestView<'_>, ConfigError> {
        let mut missing = Missing::default();
        let queue = missing.check(&self.queue, Section::Queue);
        let catalog_path = missing
            .check(&self.catalog_path, Section::Catalog)
            .map(PathBuf::as_path);
        match (queue, catalog_path) {
            (Some(queue), Some(catalog_path)) => Ok(FileIngestView {
                queue,
                catalog_path,
            }),
            _ => Err(missing.into_error()),
        }
    }

    pub fn stream_ingest(&self) -> Result<StreamIngestView<'_>, ConfigError> {
        let mut missing = Missing::default();
        let queue = missing.check(&self.queue, Section::Queue);
        let catalog_path = missing
            .check(&self.catalog_path, Section::Catalog)
            .map(PathBuf::as_path);
        let stream = missing.check(&self.stream, Section::Stream);
        match (queue, catalog_path, stream) {
            (Some(queue), Some(catalog_path), Some(stream)) => Ok(StreamIngestView {
                queue,
                catalog_path,
                stream,
            }),
            _ => Err(missing.into_error()),
        }
    }

    pub fn workers(&self) -> Result<WorkersView<'_>, ConfigError> {
        let mut missing = Missing::default();
        let queue = missing.check(&self.queue, Section::Queue);
        let warehouse = missing.check(&self.warehouse, Section::Warehouse);
        match (queue, warehouse) {
            (Some(queue), Some(warehouse)) => Ok(WorkersView { queue, warehouse }),
            _ => Err(missing.into_error()),
        }
    }

    pub fn serve(&self) -> Result<ServeView<'_>, ConfigError> {
        let mut missing = Missing::default();
        let queue = missing.check(&self.queue, Section::Queue);
        let catalog_path = missing
            .check(&self.catalog_path, Section::Catalog)
            .map(PathBuf::as_path);
        let warehouse = missing.check(&self.warehouse, Section::Warehouse);
        match (queue, catalog_path, warehouse) {
            (Some(queue), Some(catalog_path), Some(warehouse)) => Ok(ServeView {
                workers: WorkersView { queue, warehouse },
                catalog_path,
            }),
            _ => Err(missing.into_error()),
        }
    }

    /// The warehouse settings (`processor prune`).
    pub fn warehouse(&self) -> Result<&WarehouseSettings, ConfigError> {
        let mut missing = Missing::default();
        missing
            .check(&self.warehouse, Section::Warehouse)
            .ok_or_else(|| missing.into_error())
    }

    /// The work queue (and its dead-letter queue, if configured), for `status`.
    pub fn queues(&self) -> Result<&QueueSettings, ConfigError> {
        let mut missing = Missing::default();
        missing
            .check(&self.queue, Section::Queue)
            .ok_or_else(|| missing.into_error())
    }

    pub fn redrive(&self) -> Result<RedriveView<'_>, ConfigError> {
        let mut missing = Missing::default();
        let Some(queue) = missing.check(&self.queue, Section::Queue) else {
            return Err(missing.into_error());
        };
        match &queue.dead_letter_url {
            Some(dead_letter_url) => Ok(RedriveView {
                queue,
                dead_letter_url,
            }),
            None => Err(required(vec![required_option(
                "queue.dead_letter_url",
                "QUEUE__DEAD_LETTER_URL",
                "to redrive",
            )])),
        }
    }
}

/// The sections a view found missing, in the order asked.
#[derive(Debug, Default)]
struct Missing(Vec<Section>);

impl Missing {
    fn check<'a, T>(&mut self, value: &'a Option<T>, section: Section) -> Option<&'a T> {
        if value.is_none() {
            self.0.push(section);
        }
        value.as_ref()
    }

    fn into_error(self) -> ConfigError {
        let issues = self
            .0
            .into_iter()
            .map(|section| {
                let variable = format!("{}__…", section.name().to_ascii_uppercase());
                required_option(section.name(), &variable, "by this command")
            })
            .collect();
        required(issues)
    }
}

/// An option (or section) a command needs and the config lacks, with where to set it.
fn required_option(path: &str, variable: &str, needed: &str) -> Issue {
    Issue {
        path: path.to_owned(),
        message: format!(
            "required {needed}; set it in the config file or with {ENV_PREFIX}{variable}"
        ),
    }
}

/// The error for the options a command needs and the config lacks.
fn required(issues: Vec<Issue>) -> ConfigError {
    ConfigError::Invalid {
        origin: "(config)".to_owned(),
        issues,
    }
}
