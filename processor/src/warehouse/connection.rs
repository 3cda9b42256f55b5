//! One warehouse connection over the PostgreSQL wire protocol (PostgreSQL itself, or
//! Redshift), plain or TLS, reopened when the server closed it.

use std::sync::Arc;

use shared::config::{PasswordSecret, Secret, TlsMode, redact_url};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::WarehouseError;
pub use super::iam::IamLogin;
use shared::error::{BoxError, context};

/// How connections are made: plain TCP, or TLS with a verified certificate.
#[derive(Clone)]
pub enum Connector {
    Plain,
    Tls(MakeRustlsConnect),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Plain => "Plain",
            Connector::Tls(_) => "Tls",
        })
    }
}

impl Connector {
    /// Builds the connector once at start-up: the system's root certificates plus the
    /// configured CA file. A CA file that cannot be read is a start-up error.
    pub fn new(mode: &TlsMode) -> Result<Self, WarehouseError> {
        let TlsMode::VerifyFull { ca_file } = mode else {
            return Ok(Connector::Plain);
        };
        let tls_error = |source: BoxError| WarehouseError::Tls { source };
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped: a CA file may still be enough.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certificates = CertificateDer::pem_file_iter(path)
                .map_err(|err| tls_error(context(format!("cannot read {}", path.display()), err)))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| tls_error(context(format!("{} is not PEM", path.display()), err)))?;
            if certificates.is_empty() {
                return Err(tls_error(
                    format!("{} holds no certificate", path.display()).into(),
                ));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|err| tls_error(context(path.display().to_string(), err)))?;
            }
        }
        if roots.is_empty() {
            return Err(tls_error(
                "no trusted root certificates: none in the system store and no tls_ca_file".into(),
            ));
        }
        // An explicit provider: the dependency tree enables two, so rustls cannot pick one.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|err| tls_error(err.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Connector::Tls(MakeRustlsConnect::new(config)))
    }
}

/// How a connection logs in.
#[derive(Debug, Clone, Default)]
pub enum Login {
    /// With the user and password in the URL (or none: trust, peer).
    #[default]
    Url,
    /// With temporary credentials from Redshift's `GetClusterCredentials` (a provisioned
    /// cluster) or `GetCredentials` (a Serverless workgroup), fetched for every new
    /// connection (they expire; an open session does not).
    Iam(Arc<IamLogin>),
    /// With the URL's user and the password in a Secrets Manager secret, read for every
    /// new connection: a rotated password reaches the running processor at its next login.
    Secret(Arc<SecretLogin>),
}

#[derive(Debug)]
pub struct SecretLogin {
    pub client: aws_sdk_secretsmanager::Client,
    pub secret: PasswordSecret,
}

impl SecretLogin {
    /// The password the secret holds now.
    pub async fn password(&self) -> Result<String, WarehouseError> {
        let secret = &self.secret;
        let failed = |source: BoxError, retryable: bool| WarehouseError::Connect {
            url: format!("the password in secret {}", secret.id),
            source,
            retryable,
        };
        let output = self
            .client
            .get_secret_value()
            .secret_id(&secret.id)
            .send()
            .await
            .map_err(|err| {
                let retryable = shared::error::classify_sdk_error(&err)
                    == shared::error::Retryability::Retryable;
                failed(context("GetSecretValue failed", err), retryable)
            })?;
        let text = output
            .secret_string()
            .ok_or_else(|| failed("the secret holds no string".into(), false))?;
        password_in(text, &secret.key).map_err(|what| failed(what.into(), false))
    }
}

/// The password in a secret's text: the value of `key` when the text is a JSON object,
/// else the text itself.
fn password_in(text: &str, key: &str) -> Result<String, String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(text) else {
        return Ok(text.to_owned());
    };
    match fields.get(key) {
        Some(serde_json::Value::String(password)) => Ok(password.clone()),
        Some(_) => Err(format!("the secret's {key:?} is not a string")),
        None => Err(format!(
            "the secret is a JSON object without the key {key:?} (warehouse.password_secret_key)"
        )),
    }
}

fn is_retryable(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true, // I/O, closed connection, timeout
        Some(code) => {
            let class = code.code().get(..2).unwrap_or_default();
            // 28: the login was refused (a password rotated under the running processor,
            // 28P01). The work is not at fault: it must wait, not go to the dead-letter
            // queue; the worker holds it and stops taking more until a login succeeds.
            matches!(class, "08" | "28" | "40" | "53" | "55" | "57" | "58")
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || err.as_db_error().is_some_and(|db| {
                    db.code() == &SqlState::INTERNAL_ERROR
                        && redshift_internal_error_is_transient(db.message(), db.detail())
                })
        }
    }
}

/// Whether one of Redshift's catch-all internal errors (`XX000`) is worth a retry:
///
/// - a serializable isolation conflict, `ERROR: 1023 DETAIL: Serializable isolation
///   violation on table …` (c_serial_isolation-serializable-isolation-troubleshooting.html:
///   retry the transaction) — matched by the error number as the whole message or by the
///   detail, never by "1023" inside other text (a query id, a table id);
/// - S3 failing under a `COPY` (throttling, a timeout, a 5xx): a retry stages the files again.
///
/// Everything else in `XX000` (a value the column cannot hold, a Parquet schema the table
/// does not match) fails the same way every time.
pub(crate) fn redshift_internal_error_is_transient(message: &str, detail: Option<&str>) -> bool {
    const CONFLICT: &str = "Serializable isolation violation";
    const S3_FAILURES: [&str; 3] = [
        "S3ServiceException",
        "S3CurlException",
        "S3 Query Exception",
    ];
    const DATA_ERRORS: [&str; 3] = [
        "incompatible Parquet schema",
        "String length exceeds DDL length",
        "Missing data for not-null field",
    ];
    let text = format!("{message} {}", detail.unwrap_or_default());
    let conflict = message.trim() == "1023"
        || message.trim_start().starts_with(CONFLICT)
        || detail.is_some_and(|d| d.trim_start().starts_with(CONFLICT));
    let s3_failure = S3_FAILURES.iter().any(|s| text.contains(s))
        && !DATA_ERRORS.iter().any(|d| text.contains(d));
    conflict || s3_failure
}

/// A PostgreSQL or Redshift error, kept whole. It reads on one line as the server's
/// message, SQLSTATE and detail; the client's own `Display` spreads them over lines.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct ServerError(pub tokio_postgres::Error);

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            text
        }
        None => {
            // The TLS handshake's reason is in the source chain, not in the top message.
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

pub(crate) fn statement_error<'a>(
    dataset: &'a str,
    action: &'static str,
) -> impl Fn(tokio_postgres::Error) -> WarehouseError + 'a {
    move |err| WarehouseError::Statement {
        dataset: dataset.to_owned(),
        action,
        retryable: is_retryable(&err),
        source: Box::new(ServerError(err)),
    }
}

async fn open(url: &str, connector: &Connector, login: &Login) -> Result<Client, WarehouseError> {
    let connect_error = |err: tokio_postgres::Error| WarehouseError::Connect {
        url: redact_url(url),
        retryable: is_retryable(&err),
        source: Box::new(ServerError(err)),
    };
    let log_end = |result: Result<(), tokio_postgres::Error>| {
        if let Err(err) = result {
            tracing::warn!(error = %shared::error::Report(&err), "warehouse connection ended");
        }
    };
    let mut config: tokio_postgres::Config = url.parse().map_err(connect_error)?;
    match login {
        Login::Url => {}
        Login::Iam(iam) => {
            let (user, password) = iam.credentials().await?;
            config.user(user).password(password);
        }
        Login::Secret(secret) => {
            config.password(secret.password().await?);
        }
    }
    let client = match connector {
        Connector::Plain => {
            let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
            tokio::spawn(async move { log_end(connection.await) });
            client
        }
        Connector::Tls(tls) => {
            // Never fall back to plain text when the server declines TLS.
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = config.connect(tls.clone()).await.map_err(connect_error)?;
            tokio::spawn(async move { log_end(connection.await) });
            client
        }
    };
    // Load times (`GETDATE()` on Redshift) in UTC, whatever the user's or cluster's default.
    client
        .batch_execute(SESSION_TIME_ZONE)
        .await
        .map_err(connect_error)?;
    Ok(client)
}

/// Every session's time zone.
const SESSION_TIME_ZONE: &str = "SET timezone TO 'UTC'";

/// One connection, opened again when the server closed it (a restart, a failover, an idle
/// timeout), so one lost connection costs one retry, not the worker.
#[derive(Debug)]
pub struct Connection {
    url: Secret,
    connector: Connector,
    login: Login,
    client: Mutex<Client>,
}

impl Connection {
    pub async fn open(url: &str, connector: Connector) -> Result<Self, WarehouseError> {
        Self::open_with(url, connector, Login::Url).await
    }

    pub async fn open_with(
        url: &str,
        connector: Connector,
        login: Login,
    ) -> Result<Self, WarehouseError> {
        Ok(Self {
            client: Mutex::new(open(url, &connector, &login).await?),
            url: Secret::new(url),
            connector,
            login,
        })
    }

    /// The connection, checked with an empty query first (one round trip, like a pool's
    /// test-on-borrow): a session the server ended is noticed here, not by the load, even
    /// when the client has not yet seen the socket close.
    pub async fn client(&self) -> Result<MutexGuard<'_, Client>, WarehouseError> {
        let mut client = self.client.lock().await;
        if client.is_closed() || client.simple_query("").await.is_err() {
            tracing::info!("warehouse connection was closed; reconnecting");
            *client = open(self.url.expose(), &self.connector, &self.login).await?;
        }
        Ok(client)
    }

    /// Checks that the server answers (readiness): getting the client already asked it.
    pub async fn ping(&self) -> Result<(), WarehouseError> {
        self.client().await.map(drop)
    }

    /// Runs statements (DDL) in one transaction.
    pub async fn run_in_transaction(
        &self,
        dataset: &str,
        action: &'static str,
        statements: &[String],
    ) -> Result<(), WarehouseError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(statement_error(dataset, action))?;
        for statement in statements {
            tx.batch_execute(statement)
                .await
                .map_err(statement_error(dataset, action))?;
        }
        tx.commit().await.map_err(statement_error(dataset, action))
    }
}

#[cfg(test)]
mod tests {
    use super::password_in;
    use super::redshift_internal_error_is_transient as transient;

    #[test]
    fn a_secret_holds_the_password_as_a_json_key_or_as_its_whole_text() {
        let rotation = r#"{"engine":"redshift","username":"loader","password":"p{a\"ss"}"#;
        assert_eq!(password_in(rotation, "password").as_deref(), Ok("p{a\"ss"));
        assert_eq!(
            password_in("plain-text", "password").as_deref(),
            Ok("plain-text")
        );
        let missing = password_in(r#"{"username":"loader"}"#, "password").expect_err("no key");
        assert!(
            missing.contains("without the key \"password\""),
            "{missing}"
        );
        let number = password_in(r#"{"pw":12}"#, "pw").expect_err("not a string");
        assert!(number.contains("is not a string"), "{number}");
    }

    #[test]
    fn redshift_conflicts_and_s3_failures_are_retried_and_data_errors_are_not() {
        let conflict = "Serializable isolation violation on table - 156057, transactions forming the cycle are: 10230, 10231 (pid:1023)";
        assert!(transient("1023", Some(conflict)));
        assert!(transient(conflict, None));
        // "1023" inside other text is not the conflict.
        assert!(!transient(
            "Load into table 't' failed. Check 'stl_load_errors' for query 10230",
            None
        ));
        assert!(transient(
            "S3ServiceException:Please reduce your request rate.,Status 503,Error SlowDown",
            None
        ));
        assert!(transient(
            "Spectrum Scan Error",
            Some("S3 Query Exception (Fetch). Task failed due to an internal error.")
        ));
        assert!(!transient(
            "Spectrum Scan Error",
            Some(
                "S3 Query Exception (Fetch). File 'x' has an incompatible Parquet schema for column 'c'"
            )
        ));
        assert!(!transient("String length exceeds DDL length", None));
    }
}
