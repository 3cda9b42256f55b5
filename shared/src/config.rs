//! Platform settings: a TOML file plus environment overrides, validated once at start-up
//! with every problem listed.
//!
//! ```toml
//! [aws]
//! region = "eu-west-1"
//! # endpoint_url = "http://127.0.0.1:5000"   # an emulator
//!
//! [queue]
//! url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ingest-work"
//! dead_letter_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ingest-work-dlq"
//!
//! [catalog]
//! path = "catalog/ecommerce.toml"
//!
//! [warehouse]
//! url = "postgres://loader:secret@127.0.0.1:5432/analytics"
//! ```
//!
//! Any key can be overridden from the environment: `INGEST_` followed by the path with
//! `__` between levels, e.g. `INGEST_QUEUE__URL`, `INGEST_AWS__ENDPOINTS__SQS`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::aws::AwsSettings;
use crate::envelope::{MessageSizeLimit, SQS_MAX_MESSAGE_BYTES};
use crate::error::{Classify, Retryability};
use crate::toml_walk::{Fields, Issues};

mod local;
mod retention;
mod views;

pub use local::{DEFAULT_KINESIS_PORT, DEFAULT_STATUS_PORT, LocalSettings};

pub use crate::toml_walk::{Issue, render_issues};
pub use retention::{MIN_LEDGER_RETENTION_DAYS, RetentionSettings};
pub use views::{FileIngestView, RedriveView, ServeView, StreamIngestView, WorkersView};

/// Environment variables starting with this prefix override config keys.
pub(crate) const ENV_PREFIX: &str = "INGEST_";
/// The environment variable naming the config file (read by the binaries).
pub const CONFIG_PATH_ENV: &str = "INGEST_CONFIG";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, no colours: Lambda, Fargate, CloudWatch.
    Json,
    /// Human-readable, for terminals.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// A `tracing` filter directive, e.g. `info,processor=debug`.
    pub log_filter: String,
    /// Where the processor's metrics go.
    pub metrics_export: MetricsExport,
}

/// Where the processor's metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsExport {
    /// Prometheus text at `/metrics` of the health endpoint.
    Prometheus,
    /// CloudWatch Embedded Metric Format documents on stdout, every 10 s (on ECS the
    /// awslogs driver carries them to CloudWatch, which extracts the metrics).
    Emf,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            metrics_export: MetricsExport::Prometheus,
        }
    }
}

/// The work queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub url: String,
    /// The dead-letter queue, for `redrive`.
    pub dead_letter_url: Option<String>,
    pub max_message_bytes: MessageSizeLimit,
    /// Long-poll wait, 0 to 20 s.
    pub wait_time: Duration,
    /// How long a received message stays hidden; the processor extends it while working.
    pub visibility_timeout: Duration,
}

/// How the processor service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorSettings {
    /// Concurrent workers per task, each with its own warehouse connection.
    pub workers: usize,
    /// Schema of the load ledger and the rejects table.
    pub platform_schema: String,
    /// How long in-flight work may take to finish after SIGTERM; below ECS's 30 s.
    pub shutdown_grace: Duration,
    /// First delay before a retryable failure is retried; doubles per receive.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// A micro-batch of stream items is loaded once it holds this many records,
    pub batch_max_rows: usize,
    /// or this many bytes of work items,
    pub batch_max_bytes: usize,
    /// or its first item has waited this long.
    pub batch_max_wait: Duration,
    /// A whole file at most this large joins its dataset's micro-batch like stream items
    /// (many small files become one load); larger files and file parts load alone. 0: every
    /// file alone.
    pub batch_small_file_bytes: u64,
    /// Where liveness (`/healthz`), readiness (`/readyz`) and Prometheus metrics
    /// (`/metrics`) are served; `None` (config value `"off"`) serves nothing.
    pub health_address: Option<std::net::SocketAddr>,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            platform_schema: "ingest".to_owned(),
            shutdown_grace: Duration::from_secs(25),
            retry_backoff: Duration::from_secs(10),
            max_retry_backoff: Duration::from_secs(900),
            batch_max_rows: 10_000,
            batch_max_bytes: 8 * 1024 * 1024,
            batch_max_wait: Duration::from_secs(1),
            batch_small_file_bytes: 1024 * 1024,
            health_address: Some(std::net::SocketAddr::from(([0, 0, 0, 0], 8080))),
        }
    }
}

/// How files are turned into work items (the ingest-batch Lambda and `processor backfill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSettings {
    /// A splittable file (uncompressed CSV or JSON lines, Parquet) larger than this becomes
    /// several work items of about this many bytes each, loaded in parallel.
    pub part_size_bytes: u64,
}

/// The default part size: 128 MiB.
pub(crate) const DEFAULT_PART_SIZE_BYTES: u64 = 128 * 1024 * 1024;
/// The smallest part size accepted: 64 KiB (small parts are for tests and demos).
pub(crate) const MIN_PART_SIZE_BYTES: u64 = 64 * 1024;

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            part_size_bytes: DEFAULT_PART_SIZE_BYTES,
        }
    }
}

/// Where `file loaded` events go (EventBridge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    /// The event bus name or ARN.
    pub bus_name: String,
    /// The `source` field of the events.
    pub source: String,
}

/// An S3 location: a bucket and a key prefix (empty, or ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket/prefix/` (the prefix gets a trailing `/`).
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_staging_url(text).map(|(bucket, prefix)| Self { bucket, prefix })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Where the stream path puts what does not go on the queue itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Invalid records, one JSON-lines object per batch, each with its reason.
    pub quarantine: S3Location,
    /// Records too large for a work item (claim checks); defaults to `claim-checks/`
    /// under the quarantine bucket.
    pub claim_checks: S3Location,
}

/// The default `source` of the platform's events.
pub(crate) const DEFAULT_EVENT_SOURCE: &str = "redshift-ingest";

/// A value that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which warehouse the processor loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseKind {
    /// PostgreSQL: binary `COPY FROM STDIN` (tests, self-hosted).
    Postgres,
    /// Amazon Redshift: Parquet staged in S3, `COPY … FORMAT AS PARQUET`.
    Redshift(RedshiftSettings),
}

/// How the warehouse connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (a local PostgreSQL).
    Disable,
    /// TLS with the server certificate checked against the system's roots plus
    /// `ca_file`, and the host name checked against the certificate.
    VerifyFull { ca_file: Option<PathBuf> },
}

/// Redshift's staging of rows in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedshiftSettings {
    /// The role Redshift assumes to read the staged files (`COPY … IAM_ROLE`).
    pub iam_role: String,
    /// Bucket and prefix (ending in `/`) of the staged Parquet files.
    pub staging_bucket: String,
    pub staging_prefix: String,
    /// Files per load: a multiple of the cluster's slices, so COPY reads them in parallel.
    pub staging_files: usize,
}

/// IAM authentication to Redshift: every new connection logs in with temporary credentials
/// instead of a stored password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamAuthSettings {
    pub target: IamTarget,
    /// How long the credentials last, 900–3600 s; only logins need them.
    pub duration: Duration,
}

/// Whom the temporary credentials are asked of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamTarget {
    /// A provisioned cluster: `redshift:GetClusterCredentials`.
    Cluster(ClusterIam),
    /// A Serverless workgroup: `redshift-serverless:GetCredentials`; the database user
    /// follows the caller's IAM identity (`IAMR:<role>` for a role).
    Workgroup {
        name: String,
        /// The URL's database, which the credentials are for.
        database: Option<String>,
    },
}

/// `GetClusterCredentials`' parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIam {
    pub cluster_id: String,
    /// The database user the credentials are for (the URL's user when not given).
    pub db_user: String,
    /// Create the user at first login (`AutoCreate`).
    pub auto_create: bool,
    /// Groups the user joins for the session (`DbGroups`).
    pub db_groups: Vec<String>,
}

/// The warehouse password in AWS Secrets Manager, read at every new login so a rotated
/// password reaches a running processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordSecret {
    /// The secret's ARN or name.
    pub id: String,
    /// The key holding the password when the secret is a JSON object (RDS and Redshift
    /// rotation secrets are); a secret that is not JSON is the password itself.
    pub key: String,
}

/// The warehouse connection.
#[derive(Clone, PartialEq, Eq)]
pub struct WarehouseSettings {
    /// `postgres://user:password@host:port/db` (PostgreSQL or Redshift's PostgreSQL
    /// protocol), with `warehouse.password` merged in. Only shown redacted.
    pub url: Secret,
    pub kind: WarehouseKind,
    pub tls: TlsMode,
    /// Log in with temporary IAM credentials rather than a password.
    pub iam: Option<IamAuthSettings>,
    /// Log in with the password of this secret rather than the URL's.
    pub password_secret: Option<PasswordSecret>,
}

impl WarehouseSettings {
    /// Plain PostgreSQL without TLS (tests, local use).
    pub fn postgres(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            kind: WarehouseKind::Postgres,
            tls: TlsMode::Disable,
            iam: None,
            password_secret: None,
        }
    }

    /// The URL with its password replaced by `***`, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose())
    }
}

impl fmt::Debug for WarehouseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarehouseSettings")
            .field("url", &self.redacted_url())
            .field("kind", &self.kind)
            .field("tls", &self.tls)
            .field("iam", &self.iam)
            .field("password_secret", &self.password_secret)
            .finish()
    }
}

/// Replaces the password of a URL with `***`; a URL that does not parse is hidden whole.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
                return "***".to_owned();
            }
            parsed.to_string()
        }
        Err(_) => "***".to_owned(),
    }
}

/// Sections a binary can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Queue,
    Catalog,
    Warehouse,
    Stream,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Queue => "queue",
            Section::Catalog => "catalog",
            Section::Warehouse => "warehouse",
            Section::Stream => "stream",
        }
    }
}

/// All platform settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformConfig {
    pub aws: AwsSettings,
    pub queue: Option<QueueSettings>,
    pub catalog_path: Option<PathBuf>,
    pub warehouse: Option<WarehouseSettings>,
    pub processor: ProcessorSettings,
    pub files: FileSettings,
    /// `file loaded` events; none are published without it.
    pub events: Option<EventSettings>,
    /// The stream path's S3 locations (required by the ingest-stream Lambda).
    pub stream: Option<StreamSettings>,
    pub telemetry: TelemetrySettings,
    pub retention: RetentionSettings,
    /// The local platform in a folder, in place of AWS and a warehouse.
    pub local: Option<LocalSettings>,
}

/// Why the platform config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin} is not valid TOML")]
    Syntax {
        origin: String,
        source: toml::de::Error,
    },
    #[error("config {origin} has {} error(s):\n{}", issues.len(), render_issues(issues))]
    Invalid { origin: String, issues: Vec<Issue> },
}

impl Classify for ConfigError {
    fn retryability(&self) -> Retryability {
        Retryability::Permanent
    }
}

impl PlatformConfig {
    /// Loads the config file (if any) and applies the `INGEST_*` overrides found in `env`.
    /// Binaries pass `std::env::vars()`; tests pass what they need.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (String::new(), "(environment)".to_owned()),
        };
        Self::from_toml(&text, &origin, env)
    }

    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut document: Table =
            text.parse()
                .map_err(|source: toml::de::Error| ConfigError::Syntax {
                    origin: origin.to_owned(),
                    source,
                })?;
        let mut issues = Issues::default();
        apply_env_overrides(&mut document, env, &mut issues);
        let config = read_config(&document, &mut issues);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                issues: issues.into_vec(),
            })
        }
    }
}

fn apply_env_overrides(
    document: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    issues: &mut Issues,
) {
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_PATH_ENV)
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            issues.push(name, "malformed override: use INGEST_SECTION__KEY");
            continue;
        }
        if let Err(message) = set_path(document, &path, value) {
            issues.push(name, message);
        }
    }
}

fn set_path(table: &mut Table, path: &[String], value: String) -> Result<(), String> {
    let (first, rest) = path.split_first().expect("split yields at least one part");
    if rest.is_empty() {
        table.insert(first.clone(), Value::String(value));
        return Ok(());
    }
    match table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()))
    {
        Value::Table(inner) => set_path(inner, rest, value),
        _ => Err(format!(
            "cannot override inside {first:?}: it is not a table"
        )),
    }
}

fn seconds(value: i64) -> Duration {
    Duration::from_secs(value.unsigned_abs())
}

/// Redshift's default: 4 files per load suit the smallest clusters (2 slices per node on
/// ra3.large, 2 nodes) and are a multiple of common slice counts.
pub(crate) const DEFAULT_STAGING_FILES: usize = 4;

fn read_warehouse(mut section: Fields<'_>, issues: &mut Issues) -> Option<WarehouseSettings> {
    let mut url = read_warehouse_url(&mut section, issues);
    // A separate password lets ECS inject it from Secrets Manager as
    // INGEST_WAREHOUSE__PASSWORD while the URL stays in the config file.
    let password = section.string("password", issues);
    if let Some(password) = password
        && let Some(parsed) = url.as_mut()
        && parsed.set_password(Some(password)).is_err()
    {
        issues.push(
            section.path_of("password"),
            "the URL cannot carry a password (no host?)",
        );
    }
    let password_secret = read_password_secret(&mut section, issues);
    let url_password = url.as_ref().is_some_and(|u| u.password().is_some());
    if password_secret.is_some() && (password.is_some() || url_password) {
        issues.push(
            section.path_of("password_secret"),
            "the secret replaces the password: remove warehouse.password and the URL's password",
        );
    }
    let iam = section.table("iam", issues).and_then(|mut iam| {
        let settings = read_iam(&mut iam, url.as_ref(), issues);
        if password.is_some() || url_password || password_secret.is_some() {
            issues.push(
                iam.path(),
                "IAM authentication replaces the password: remove warehouse.password, warehouse.password_secret and the URL's password",
            );
        }
        iam.finish(issues);
        settings
    });
    let kind = match section.string("kind", issues).unwrap_or("postgres") {
        "postgres" => Some(WarehouseKind::Postgres),
        "redshift" => read_redshift(&mut section, issues).map(WarehouseKind::Redshift),
        other => {
            issues.push(
                section.path_of("kind"),
                format!("unknown warehouse kind {other:?}; expected postgres or redshift"),
            );
            None
        }
    };
    let redshift = matches!(kind, Some(WarehouseKind::Redshift(_)));
    let tls = read_tls(&mut section, redshift, issues);
    if iam.is_some() && matches!(kind, Some(WarehouseKind::Postgres)) {
        issues.push(section.path_of("iam"), "only for kind = \"redshift\"");
    }
    section.finish(issues);
    Some(WarehouseSettings {
        url: Secret::new(url?.to_string()),
        kind: kind?,
        tls: tls?,
        iam,
        password_secret,
    })
}

fn read_password_secret(section: &mut Fields<'_>, issues: &mut Issues) -> Option<PasswordSecret> {
    let id = section.string("password_secret", issues);
    let key = section.string("password_secret_key", issues);
    match (id, key) {
        (Some(id), key) => Some(PasswordSecret {
            id: id.to_owned(),
            key: key.unwrap_or("password").to_owned(),
        }),
        (None, Some(_)) => {
            issues.push(
                section.path_of("password_secret_key"),
                "needs warehouse.password_secret",
            );
            None
        }
        (None, None) => None,
    }
}

/// The warehouse URL, `postgres://…` (Redshift speaks the same protocol).
fn read_warehouse_url(section: &mut Fields<'_>, issues: &mut Issues) -> Option<url::Url> {
    let text = section.required_string("url", issues)?;
    match url::Url::parse(text) {
        Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => Some(parsed),
        Ok(parsed) => {
            let message = format!(
                "unsupported scheme {:?}; expected postgres://",
                parsed.scheme()
            );
            issues.push(section.path_of("url"), message);
            None
        }
        // The text may hold a password: never echo it.
        Err(err) => {
            issues.push(section.path_of("url"), format!("not a valid URL ({err})"));
            None
        }
    }
}

/// TLS to the warehouse: verified by default for Redshift, off by default otherwise.
fn read_tls(section: &mut Fields<'_>, redshift: bool, issues: &mut Issues) -> Option<TlsMode> {
    let ca_file = section.string("tls_ca_file", issues).map(PathBuf::from);
    let default_tls = if redshift { "verify-full" } else { "disable" };
    match section.string("tls", issues).unwrap_or(default_tls) {
        "disable" => {
            if ca_file.is_some() {
                issues.push(
                    section.path_of("tls_ca_file"),
                    "set, but tls is \"disable\"",
                );
            }
            Some(TlsMode::Disable)
        }
        "verify-full" => Some(TlsMode::VerifyFull { ca_file }),
        other => {
            issues.push(
                section.path_of("tls"),
                format!("unknown TLS mode {other:?}; expected verify-full or disable"),
            );
            None
        }
    }
}

fn read_iam(
    iam: &mut Fields<'_>,
    url: Option<&url::Url>,
    issues: &mut Issues,
) -> Option<IamAuthSettings> {
    let duration = iam
        .integer_in("duration_secs", 900..=3600, issues)
        .map_or(Duration::from_secs(900), seconds);
    let cluster_id = iam.string("cluster_id", issues);
    let workgroup = iam.string("workgroup", issues);
    let target = match (cluster_id, workgroup) {
        (Some(cluster_id), None) => {
            read_cluster_iam(iam, cluster_id, url, issues).map(IamTarget::Cluster)
        }
        (None, Some(name)) => {
            let given = [
                ("db_user", iam.string("db_user", issues).is_some()),
                ("auto_create", iam.boolean("auto_create", issues).is_some()),
                ("db_groups", iam.string_array("db_groups", issues).is_some()),
            ];
            for (key, _) in given.iter().filter(|(_, given)| *given) {
                issues.push(
                    iam.path_of(key),
                    "only for a provisioned cluster (cluster_id): a Serverless workgroup's database user follows the IAM identity",
                );
            }
            let database = url
                .map(|u| u.path().trim_start_matches('/').to_owned())
                .filter(|db| !db.is_empty());
            Some(IamTarget::Workgroup {
                name: name.to_owned(),
                database,
            })
        }
        (Some(_), Some(_)) => {
            issues.push(
                iam.path(),
                "name cluster_id (provisioned) or workgroup (Serverless), not both",
            );
            None
        }
        (None, None) => {
            issues.push(
                iam.path(),
                "needs cluster_id (a provisioned cluster) or workgroup (Redshift Serverless)",
            );
            None
        }
    };
    Some(IamAuthSettings {
        target: target?,
        duration,
    })
}

fn read_cluster_iam(
    iam: &mut Fields<'_>,
    cluster_id: &str,
    url: Option<&url::Url>,
    issues: &mut Issues,
) -> Option<ClusterIam> {
    let url_user = url.map(url::Url::username).filter(|u| !u.is_empty());
    let db_user = match (iam.string("db_user", issues), url_user) {
        (Some(user), _) => Some(user.to_owned()),
        (None, Some(user)) => Some(user.to_owned()),
        (None, None) => {
            issues.push(
                iam.path_of("db_user"),
                "required when the URL names no user",
            );
            None
        }
    };
    let auto_create = iam.boolean("auto_create", issues).unwrap_or(false);
    let db_groups = iam
        .string_array("db_groups", issues)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect();
    Some(ClusterIam {
        cluster_id: cluster_id.to_owned(),
        db_user: db_user?,
        auto_create,
        db_groups,
    })
}

fn read_redshift(section: &mut Fields<'_>, issues: &mut Issues) -> Option<RedshiftSettings> {
    let Some(mut redshift) = section.table("redshift", issues) else {
        issues.push(
            section.path_of("redshift"),
            "required when kind is \"redshift\" (iam_role, staging)",
        );
        return None;
    };
    let iam_role =
        redshift
            .required_string("iam_role", issues)
            .and_then(|role| {
                if is_iam_role_arn(role) {
                    Some(role.to_owned())
                } else {
                    issues.push(
                redshift.path_of("iam_role"),
                format!("{role:?} is not an IAM role ARN like arn:aws:iam::123456789012:role/name"),
            );
                    None
                }
            });
    let staging = redshift
        .required_string("staging", issues)
        .and_then(|text| match parse_staging_url(text) {
            Ok(location) => Some(location),
            Err(message) => {
                issues.push(redshift.path_of("staging"), message);
                None
            }
        });
    let staging_files = redshift
        .integer_in("staging_files", 1..=1024, issues)
        .map_or(DEFAULT_STAGING_FILES, |n| {
            usize::try_from(n).expect("range checked")
        });
    redshift.finish(issues);
    let (staging_bucket, staging_prefix) = staging?;
    Some(RedshiftSettings {
        iam_role: iam_role?,
        staging_bucket,
        staging_prefix,
        staging_files,
    })
}

/// The role ARN goes into COPY's SQL text (COPY takes no bind parameters), so only the
/// characters IAM allows in a role ARN pass, and never a quote.
fn is_iam_role_arn(text: &str) -> bool {
    let mut parts = text.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    partition.starts_with("aws")
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && resource.strip_prefix("role/").is_some_and(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
        })
}

/// `s3://bucket/prefix/` → bucket and prefix (with a trailing `/`). The location goes into
/// COPY's SQL text, so the prefix is held to characters that need no quoting.
fn parse_staging_url(text: &str) -> Result<(String, String), String> {
    let Some(rest) = text.strip_prefix("s3://") else {
        return Err(format!("{text:?} is not an s3://bucket/prefix/ URL"));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(format!("{bucket:?} is not a valid S3 bucket name"));
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=".contains(c))
    {
        return Err(format!(
            "staging prefix {prefix:?} may only hold letters, digits and - _ . / ="
        ));
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_owned(), prefix))
}

fn read_config(document: &Table, issues: &mut Issues) -> PlatformConfig {
    let mut root = Fields::new("", document);
    let aws = root
        .table("aws", issues)
        .map_or_else(AwsSettings::default, |section| read_aws(section, issues));
    let queue = root
        .table("queue", issues)
        .and_then(|section| read_queue(section, &aws, issues));
    let catalog_path = root.table("catalog", issues).and_then(|mut section| {
        let path = section.required_string("path", issues).map(PathBuf::from);
        section.finish(issues);
        path
    });
    let warehouse = root
        .table("warehouse", issues)
        .and_then(|section| read_warehouse(section, issues));
    let processor = root
        .table("processor", issues)
        .map_or_else(ProcessorSettings::default, |section| {
            read_processor(section, issues)
        });
    let files = root
        .table("files", issues)
        .map_or_else(FileSettings::default, |section| read_files(section, issues));
    let events = root
        .table("events", issues)
        .and_then(|section| read_events(section, issues));
    let stream = root
        .table("stream", issues)
        .and_then(|section| read_stream(section, issues));
    let telemetry = root
        .table("telemetry", issues)
        .map_or_else(TelemetrySettings::default, |section| {
            read_telemetry(section, issues)
        });
    let retention = root
        .table("retention", issues)
        .map_or_else(RetentionSettings::default, |section| {
            retention::read_retention(section, issues)
        });
    let local = root
        .table("local", issues)
        .and_then(|section| local::read_local(section, issues));
    if local.is_some() {
        for (section, present) in [
            ("queue", queue.is_some()),
            ("warehouse", warehouse.is_some()),
        ] {
            if present {
                issues.push(
                    section,
                    "the local mode ([local]) has its own queue and warehouse: remove this section, or remove [local] to run against AWS",
                );
            }
        }
    }
    root.finish(issues);
    PlatformConfig {
        aws,
        queue,
        catalog_path,
        warehouse,
        processor,
        files,
        events,
        stream,
        telemetry,
        retention,
        local,
    }
}

fn read_aws(mut section: Fields<'_>, issues: &mut Issues) -> AwsSettings {
    let mut aws = AwsSettings {
        region: section.string("region", issues).map(str::to_owned),
        endpoint_url: read_url(&mut section, "endpoint_url", issues),
        ..AwsSettings::default()
    };
    if let Some(mut endpoints) = section.table("endpoints", issues) {
        aws.sqs_endpoint_url = read_url(&mut endpoints, "sqs", issues);
        aws.kinesis_endpoint_url = read_url(&mut endpoints, "kinesis", issues);
        aws.s3_endpoint_url = read_url(&mut endpoints, "s3", issues);
        endpoints.finish(issues);
    }
    if let Some(flag) = section.boolean("s3_force_path_style", issues) {
        aws.s3_force_path_style = flag;
    }
    if let Some(n) = section.integer_in("max_attempts", 1..=20, issues) {
        aws.max_attempts = u32::try_from(n).expect("range checked");
    }
    if let Some(ms) = section.integer_in("initial_backoff_ms", 1..=60_000, issues) {
        aws.initial_backoff = Duration::from_millis(ms.unsigned_abs());
    }
    if let Some(ms) = section.integer_in("connect_timeout_ms", 100..=60_000, issues) {
        aws.connect_timeout = Duration::from_millis(ms.unsigned_abs());
    }
    if let Some(s) = section.integer_in("attempt_timeout_secs", 1..=900, issues) {
        aws.attempt_timeout = seconds(s);
    }
    if let Some(s) = section.integer_in("operation_timeout_secs", 1..=3600, issues) {
        aws.operation_timeout = seconds(s);
    }
    if aws.operation_timeout < aws.attempt_timeout {
        issues.push(
            section.path_of("operation_timeout_secs"),
            "must be at least attempt_timeout_secs",
        );
    }
    section.finish(issues);
    aws
}

fn read_queue(
    mut section: Fields<'_>,
    aws: &AwsSettings,
    issues: &mut Issues,
) -> Option<QueueSettings> {
    let url = read_url(&mut section, "url", issues);
    if url.is_none() && !section.contains("url") {
        issues.push(section.path_of("url"), "required field is missing");
    }
    let dead_letter_url = read_url(&mut section, "dead_letter_url", issues);
    let max_message_bytes = section
        .integer_in(
            "max_message_bytes",
            MessageSizeLimit::MIN_BYTES as i64..=SQS_MAX_MESSAGE_BYTES as i64,
            issues,
        )
        .map(|n| MessageSizeLimit::new(n.unsigned_abs() as usize).expect("range checked"))
        .unwrap_or_default();
    let wait_time = section
        .integer_in("wait_time_secs", 0..=20, issues)
        .map_or(Duration::from_secs(20), seconds);
    let visibility_timeout = section
        .integer_in("visibility_timeout_secs", 10..=43_200, issues)
        .map_or(Duration::from_secs(300), seconds);
    if aws.attempt_timeout <= wait_time {
        issues.push(
            "aws.attempt_timeout_secs",
            format!(
                "must be longer than queue.wait_time_secs ({} s), or every long poll times out",
                wait_time.as_secs()
            ),
        );
    }
    section.finish(issues);
    Some(QueueSettings {
        url: url?,
        dead_letter_url,
        max_message_bytes,
        wait_time,
        visibility_timeout,
    })
}

fn read_processor(mut section: Fields<'_>, issues: &mut Issues) -> ProcessorSettings {
    let mut processor = ProcessorSettings::default();
    if let Some(n) = section.integer_in("workers", 1..=256, issues) {
        processor.workers = usize::try_from(n).expect("range checked");
    }
    if let Some(schema) = section.string("platform_schema", issues) {
        match crate::catalog::check_identifier(schema) {
            Ok(()) => processor.platform_schema = schema.to_owned(),
            Err(message) => issues.push(section.path_of("platform_schema"), message),
        }
    }
    if let Some(s) = section.integer_in("shutdown_grace_secs", 1..=3600, issues) {
        processor.shutdown_grace = seconds(s);
    }
    if let Some(s) = section.integer_in("retry_backoff_secs", 0..=43_200, issues) {
        processor.retry_backoff = seconds(s);
    }
    if let Some(s) = section.integer_in("max_retry_backoff_secs", 0..=43_200, issues) {
        processor.max_retry_backoff = seconds(s);
    }
    if let Some(n) = section.integer_in("batch_max_rows", 1..=10_000_000, issues) {
        processor.batch_max_rows = usize::try_from(n).expect("range checked");
    }
    if let Some(n) = section.integer_in("batch_max_bytes", 1024..=1 << 30, issues) {
        processor.batch_max_bytes = usize::try_from(n).expect("range checked");
    }
    if let Some(ms) = section.integer_in("batch_max_wait_ms", 0..=300_000, issues) {
        processor.batch_max_wait = Duration::from_millis(ms.unsigned_abs());
    }
    if let Some(n) = section.integer_in("batch_small_file_bytes", 0..=1 << 30, issues) {
        processor.batch_small_file_bytes = n.unsigned_abs();
    }
    match section.string("health_address", issues) {
        Some("off") => processor.health_address = None,
        Some(text) => match text.parse() {
            Ok(address) => processor.health_address = Some(address),
            Err(_) => issues.push(
                section.path_of("health_address"),
                format!("{text:?} is not an address like 0.0.0.0:8080 (or \"off\")"),
            ),
        },
        None => {}
    }
    section.finish(issues);
    processor
}

fn read_files(mut section: Fields<'_>, issues: &mut Issues) -> FileSettings {
    let mut files = FileSettings::default();
    if let Some(n) = section.integer_in(
        "part_size_bytes",
        MIN_PART_SIZE_BYTES as i64..=5 * 1024 * 1024 * 1024 * 1024,
        issues,
    ) {
        files.part_size_bytes = n.unsigned_abs();
    }
    section.finish(issues);
    files
}

fn read_events(mut section: Fields<'_>, issues: &mut Issues) -> Option<EventSettings> {
    let bus_name = section
        .required_string("bus_name", issues)
        .map(str::to_owned);
    let source = section
        .string("source", issues)
        .unwrap_or(DEFAULT_EVENT_SOURCE)
        .to_owned();
    section.finish(issues);
    Some(EventSettings {
        bus_name: bus_name?,
        source,
    })
}

fn read_stream(mut section: Fields<'_>, issues: &mut Issues) -> Option<StreamSettings> {
    let mut location = |key: &'static str, required: bool| {
        let text = if required {
            section.required_string(key, issues)
        } else {
            section.string(key, issues)
        }?;
        match S3Location::parse(text) {
            Ok(location) => Some(location),
            Err(message) => {
                issues.push(section.path_of(key), message);
                None
            }
        }
    };
    let quarantine = location("quarantine", true);
    let claim_checks = location("claim_checks", false);
    section.finish(issues);
    let quarantine = quarantine?;
    Some(StreamSettings {
        claim_checks: claim_checks.unwrap_or_else(|| S3Location {
            bucket: quarantine.bucket.clone(),
            prefix: "claim-checks/".to_owned(),
        }),
        quarantine,
    })
}

fn read_telemetry(mut section: Fields<'_>, issues: &mut Issues) -> TelemetrySettings {
    let mut telemetry = TelemetrySettings::default();
    match section.string("log_format", issues) {
        Some("json") => telemetry.log_format = LogFormat::Json,
        Some("text") => telemetry.log_format = LogFormat::Text,
        Some(other) => issues.push(
            section.path_of("log_format"),
            format!("unknown log format {other:?}; expected json or text"),
        ),
        None => {}
    }
    if let Some(filter) = section.string("log_filter", issues) {
        telemetry.log_filter = filter.to_owned();
    }
    match section.string("metrics_export", issues) {
        Some("prometheus") => telemetry.metrics_export = MetricsExport::Prometheus,
        Some("emf") => telemetry.metrics_export = MetricsExport::Emf,
        Some(other) => issues.push(
            section.path_of("metrics_export"),
            format!("unknown metrics export {other:?}; expected prometheus or emf"),
        ),
        None => {}
    }
    section.finish(issues);
    telemetry
}

fn read_url(fields: &mut Fields<'_>, key: &'static str, issues: &mut Issues) -> Option<String> {
    let text = fields.string(key, issues)?;
    match url::Url::parse(text) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(text.to_owned()),
        Ok(parsed) => {
            issues.push(
                fields.path_of(key),
                format!(
                    "unsupported scheme {:?}; expected http:// or https://",
                    parsed.scheme()
                ),
            );
            None
        }
        Err(err) => {
            issues.push(
                fields.path_of(key),
                format!("{text:?} is not a valid URL ({err})"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn issues_of(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        match PlatformConfig::from_toml(text, "test", env(vars)) {
            Err(ConfigError::Invalid { issues, .. }) => {
                issues.iter().map(Issue::to_string).collect()
            }
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn the_local_mode_takes_a_folder_and_replaces_queue_and_warehouse() {
        let config = PlatformConfig::from_toml(
            "[local]\ndir = \"my-data\"\n[catalog]\npath = \"my.toml\"\n",
            "test",
            env(&[("INGEST_LOCAL__KINESIS_PORT", "0")]),
        )
        .expect("valid");
        let local = config.local.expect("[local]");
        assert_eq!(local.dir, PathBuf::from("my-data"));
        assert_eq!(local.kinesis_port, 0);
        assert_eq!(local.status_port, DEFAULT_STATUS_PORT);
        let issues = issues_of(
            "[local]\nkinesis_port = 70000\nstatus_port = -1\n[queue]\nurl = \"http://127.0.0.1:1/q\"\n",
            &[],
        );
        assert!(
            issues
                .iter()
                .any(|i| i.contains("local.dir") && i.contains("required")),
            "{issues:?}"
        );
        assert!(
            issues.iter().any(|i| i.contains("local.kinesis_port")),
            "{issues:?}"
        );
        assert!(
            issues.iter().any(|i| i.contains("local.status_port")),
            "{issues:?}"
        );
        let both = issues_of(
            "[local]\ndir = \"d\"\n[queue]\nurl = \"http://127.0.0.1:1/q\"\n",
            &[],
        );
        assert!(
            both.iter()
                .any(|i| i.starts_with("queue") && i.contains("has its own queue")),
            "{both:?}"
        );
    }

    #[test]
    fn metrics_export_is_prometheus_unless_emf_is_asked_for() {
        let config = PlatformConfig::from_toml("", "test", env(&[])).expect("valid");
        assert_eq!(config.telemetry.metrics_export, MetricsExport::Prometheus);
        let config = PlatformConfig::from_toml(
            "",
            "test",
            env(&[("INGEST_TELEMETRY__METRICS_EXPORT", "emf")]),
        )
        .expect("valid");
        assert_eq!(config.telemetry.metrics_export, MetricsExport::Emf);
        let issues = issues_of("[telemetry]\nmetrics_export = \"statsd\"\n", &[]);
        assert_eq!(
            issues,
            [
                "telemetry.metrics_export: unknown metrics export \"statsd\"; expected prometheus or emf"
            ]
        );
    }

    #[test]
    fn file_and_event_settings_have_defaults_and_limits() {
        let config = PlatformConfig::from_toml("", "test", env(&[])).expect("valid");
        assert_eq!(config.files.part_size_bytes, 128 * 1024 * 1024);
        assert_eq!(config.events, None);
        let config = PlatformConfig::from_toml(
            "[files]\npart_size_bytes = 1048576\n[events]\nbus_name = \"ingest\"\n",
            "test",
            env(&[("INGEST_EVENTS__SOURCE", "acme.ingest")]),
        )
        .expect("valid");
        assert_eq!(config.files.part_size_bytes, 1024 * 1024);
        assert_eq!(
            config.events,
            Some(EventSettings {
                bus_name: "ingest".into(),
                source: "acme.ingest".into()
            })
        );
        let issues = issues_of("[files]\npart_size_bytes = 10\n[events]\n", &[]);
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].starts_with("files.part_size_bytes"), "{issues:?}");
        assert!(issues[1].starts_with("events.bus_name"), "{issues:?}");
    }

    #[test]
    fn empty_config_has_sensible_defaults() {
        let config = PlatformConfig::from_toml("", "test", env(&[])).expect("valid");
        assert_eq!(config.aws, AwsSettings::default());
        assert_eq!(config.queue, None);
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        let err = config.workers().expect_err("missing sections");
        let text = crate::error::report(&err);
        assert!(
            text.contains(
                "queue: required by this command; set it in the config file or with INGEST_QUEUE__…"
            ),
            "{text}"
        );
        assert!(
            text.contains("warehouse: required by this command"),
            "{text}"
        );
    }

    #[test]
    fn file_values_are_read_and_environment_overrides_them() {
        let text = r#"
[aws]
region = "eu-west-1"
max_attempts = 4
[aws.endpoints]
sqs = "http://127.0.0.1:1"

[queue]
url = "https://sqs.eu-west-1.amazonaws.com/1/work"
wait_time_secs = 10

[catalog]
path = "catalog/ecommerce.toml"
"#;
        let config = PlatformConfig::from_toml(
            text,
            "test",
            env(&[
                ("INGEST_QUEUE__URL", "http://127.0.0.1:5000/1/other"),
                ("INGEST_AWS__MAX_ATTEMPTS", "7"),
                ("INGEST_TELEMETRY__LOG_FORMAT", "text"),
                ("INGEST_CONFIG", "ignored.toml"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
        assert_eq!(config.aws.max_attempts, 7);
        assert_eq!(
            config.aws.sqs_endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        let queue = config.queue.expect("queue section");
        assert_eq!(queue.url, "http://127.0.0.1:5000/1/other");
        assert_eq!(queue.wait_time, Duration::from_secs(10));
        assert_eq!(queue.visibility_timeout, Duration::from_secs(300));
        assert_eq!(queue.max_message_bytes.bytes(), 256 * 1024);
        assert_eq!(config.telemetry.log_format, LogFormat::Text);
        assert_eq!(
            config.catalog_path,
            Some(PathBuf::from("catalog/ecommerce.toml"))
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let text = r#"
[aws]
max_attempts = 0
endpoint_url = "ftp://x"
attempt_timeout_secs = 20

[queue]
max_message_bytes = 2000000
visibility_timeout_secs = "soon"

[warehouse]
url = "mysql://u:hunter2@h/db"

[telemetry]
log_format = "xml"
"#;
        assert_eq!(
            issues_of(
                text,
                &[
                    ("INGEST_QUEUE__WAIT_TIME_SECS", "21"),
                    ("INGEST_COLOUR", "blue")
                ]
            ),
            [
                "aws.endpoint_url: unsupported scheme \"ftp\"; expected http:// or https://",
                "aws.max_attempts: 0 is out of range; expected 1 to 20",
                "queue.url: required field is missing",
                "queue.max_message_bytes: 2000000 is out of range; expected 1024 to 1048576",
                "queue.wait_time_secs: 21 is out of range; expected 0 to 20",
                "queue.visibility_timeout_secs: expected an integer, found \"soon\"",
                "aws.attempt_timeout_secs: must be longer than queue.wait_time_secs (20 s), or every long poll times out",
                "warehouse.url: unsupported scheme \"mysql\"; expected postgres://",
                "telemetry.log_format: unknown log format \"xml\"; expected json or text",
                "colour: unknown field; expected one of: aws, catalog, events, files, local, processor, queue, retention, stream, telemetry, warehouse",
            ]
        );
    }

    #[test]
    fn the_health_address_can_be_moved_or_turned_off() {
        let config = PlatformConfig::from_toml("", "test", env(&[])).expect("valid");
        assert_eq!(
            config.processor.health_address,
            Some(std::net::SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        let moved = PlatformConfig::from_toml(
            "[processor]\nhealth_address = \"127.0.0.1:9100\"\n",
            "test",
            env(&[]),
        )
        .expect("valid");
        assert_eq!(
            moved.processor.health_address,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        let off = PlatformConfig::from_toml(
            "",
            "test",
            env(&[("INGEST_PROCESSOR__HEALTH_ADDRESS", "off")]),
        )
        .expect("valid");
        assert_eq!(off.processor.health_address, None);
        assert_eq!(
            issues_of("[processor]\nhealth_address = \"8080\"\n", &[]),
            ["processor.health_address: \"8080\" is not an address like 0.0.0.0:8080 (or \"off\")"]
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../config/example.toml");
        let config =
            PlatformConfig::from_toml(text, "config/example.toml", env(&[])).expect("valid");
        config.serve().expect("every section present");
        assert!(!format!("{config:?}").contains("change-me"));
    }

    #[test]
    fn secrets_are_never_printed() {
        let text = "[warehouse]\nurl = \"postgres://loader:hunter2@db.example.com:5439/dev\"\n";
        let config = PlatformConfig::from_toml(text, "test", env(&[])).expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let warehouse = config.warehouse.expect("warehouse section");
        assert_eq!(
            warehouse.redacted_url(),
            "postgres://loader:***@db.example.com:5439/dev"
        );
        assert_eq!(
            warehouse.url.expose(),
            "postgres://loader:hunter2@db.example.com:5439/dev"
        );
        assert_eq!(format!("{}", warehouse.url), "***");

        let bad = "[warehouse]\nurl = \"postgres://loader:hunter2@[bad\"\n";
        let message = PlatformConfig::from_toml(bad, "test", env(&[]))
            .expect_err("invalid")
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn redshift_settings_are_read_with_secure_defaults() {
        let text = r#"
[warehouse]
kind = "redshift"
url = "postgres://loader@analytics.abc123.eu-west-1.redshift.amazonaws.com:5439/dev"

[warehouse.redshift]
iam_role = "arn:aws:iam::123456789012:role/redshift-copy"
staging = "s3://ingest-staging/loads"
"#;
        // ECS injects the password from Secrets Manager as an environment variable.
        let config = PlatformConfig::from_toml(
            text,
            "test",
            env(&[("INGEST_WAREHOUSE__PASSWORD", "s3cr3t/p@ss")]),
        )
        .expect("valid");
        let warehouse = config.warehouse.expect("warehouse");
        assert_eq!(
            warehouse.kind,
            WarehouseKind::Redshift(RedshiftSettings {
                iam_role: "arn:aws:iam::123456789012:role/redshift-copy".into(),
                staging_bucket: "ingest-staging".into(),
                staging_prefix: "loads/".into(),
                staging_files: DEFAULT_STAGING_FILES,
            })
        );
        assert_eq!(warehouse.tls, TlsMode::VerifyFull { ca_file: None });
        let url = url::Url::parse(warehouse.url.expose()).expect("url");
        assert_eq!(url.password(), Some("s3cr3t%2Fp%40ss"), "merged, escaped");
        assert!(!format!("{warehouse:?}").contains("s3cr3t"));
    }

    #[test]
    fn redshift_problems_are_all_listed() {
        let text = r#"
[warehouse]
kind = "redshift"
url = "postgres://loader@cluster:5439/dev"
tls = "disable"
tls_ca_file = "/etc/ca.pem"

[warehouse.redshift]
iam_role = "arn:aws:iam::123:role/x' ; DROP TABLE t; --"
staging = "s3://Bad_Bucket/p"
staging_files = 0
"#;
        assert_eq!(
            issues_of(text, &[]),
            [
                "warehouse.redshift.iam_role: \"arn:aws:iam::123:role/x' ; DROP TABLE t; --\" is not an IAM role ARN like arn:aws:iam::123456789012:role/name",
                "warehouse.redshift.staging: \"Bad_Bucket\" is not a valid S3 bucket name",
                "warehouse.redshift.staging_files: 0 is out of range; expected 1 to 1024",
                "warehouse.tls_ca_file: set, but tls is \"disable\"",
            ]
        );
        assert_eq!(
            issues_of(
                "[warehouse]\nkind = \"redshift\"\nurl = \"postgres://h/db\"\ntls = \"prefer\"\n",
                &[]
            ),
            [
                "warehouse.redshift: required when kind is \"redshift\" (iam_role, staging)",
                "warehouse.tls: unknown TLS mode \"prefer\"; expected verify-full or disable",
            ]
        );
        assert_eq!(
            issues_of(
                "[warehouse]\nkind = \"mysql\"\nurl = \"postgres://h/db\"\n[warehouse.redshift]\nstaging = \"s3://ok-bucket/it's\"\n",
                &[]
            ),
            [
                "warehouse.kind: unknown warehouse kind \"mysql\"; expected postgres or redshift",
                "warehouse.redshift: unknown field; expected one of: iam, kind, password, password_secret, password_secret_key, tls, tls_ca_file, url",
            ]
        );
    }

    #[test]
    fn iam_authentication_replaces_the_password() {
        let text = r#"
[warehouse]
kind = "redshift"
url = "postgres://loader@analytics.abc123.eu-west-1.redshift.amazonaws.com:5439/dev"

[warehouse.iam]
cluster_id = "analytics"
db_groups = ["loaders"]

[warehouse.redshift]
iam_role = "arn:aws:iam::123456789012:role/redshift-copy"
staging = "s3://ingest-staging/"
"#;
        let config = PlatformConfig::from_toml(text, "test", env(&[])).expect("valid");
        assert_eq!(
            config.warehouse.expect("warehouse").iam,
            Some(IamAuthSettings {
                target: IamTarget::Cluster(ClusterIam {
                    cluster_id: "analytics".into(),
                    db_user: "loader".into(),
                    auto_create: false,
                    db_groups: vec!["loaders".into()],
                }),
                duration: Duration::from_secs(900),
            })
        );
        assert_eq!(
            issues_of(
                text,
                &[
                    ("INGEST_WAREHOUSE__PASSWORD", "hunter2"),
                    ("INGEST_WAREHOUSE__IAM__DURATION_SECS", "60"),
                    ("INGEST_WAREHOUSE__KIND", "postgres"),
                ]
            ),
            [
                "warehouse.iam.duration_secs: 60 is out of range; expected 900 to 3600",
                "warehouse.iam: IAM authentication replaces the password: remove warehouse.password, warehouse.password_secret and the URL's password",
                "warehouse.iam: only for kind = \"redshift\"",
                "warehouse.redshift: unknown field; expected one of: iam, kind, password, password_secret, password_secret_key, tls, tls_ca_file, url",
            ]
        );
    }

    #[test]
    fn a_serverless_workgroup_logs_in_with_get_credentials() {
        let text = r#"
[warehouse]
kind = "redshift"
url = "postgres://analytics.123456789012.eu-west-1.redshift-serverless.amazonaws.com:5439/dev"

[warehouse.iam]
workgroup = "analytics"
duration_secs = 1800

[warehouse.redshift]
iam_role = "arn:aws:iam::123456789012:role/redshift-copy"
staging = "s3://ingest-staging/"
"#;
        let config = PlatformConfig::from_toml(text, "test", env(&[])).expect("valid");
        assert_eq!(
            config.warehouse.expect("warehouse").iam,
            Some(IamAuthSettings {
                target: IamTarget::Workgroup {
                    name: "analytics".into(),
                    database: Some("dev".into()),
                },
                duration: Duration::from_secs(1800),
            })
        );
        assert_eq!(
            issues_of(text, &[("INGEST_WAREHOUSE__IAM__CLUSTER_ID", "analytics")]),
            ["warehouse.iam: name cluster_id (provisioned) or workgroup (Serverless), not both"]
        );
        assert_eq!(
            issues_of(text, &[("INGEST_WAREHOUSE__IAM__DB_USER", "loader")]),
            [
                "warehouse.iam.db_user: only for a provisioned cluster (cluster_id): a Serverless workgroup's database user follows the IAM identity"
            ]
        );
    }

    #[test]
    fn the_password_may_come_from_a_secret_instead_of_the_url() {
        let text = r#"
[warehouse]
url = "postgres://loader@db.internal:5432/analytics"
password_secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:warehouse-AbCdEf"
"#;
        let config = PlatformConfig::from_toml(text, "test", env(&[])).expect("valid");
        assert_eq!(
            config.warehouse.expect("warehouse").password_secret,
            Some(PasswordSecret {
                id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:warehouse-AbCdEf".into(),
                key: "password".into(),
            })
        );
        assert_eq!(
            issues_of(text, &[("INGEST_WAREHOUSE__PASSWORD", "hunter2")]),
            [
                "warehouse.password_secret: the secret replaces the password: remove warehouse.password and the URL's password"
            ]
        );
        let key_alone = "[warehouse]\nurl = \"postgres://db/a\"\npassword_secret_key = \"pw\"\n";
        assert_eq!(
            issues_of(key_alone, &[]),
            ["warehouse.password_secret_key: needs warehouse.password_secret"]
        );
    }
}
