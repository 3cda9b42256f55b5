//! IAM login to Redshift: temporary database credentials asked of AWS for every new
//! connection — `redshift:GetClusterCredentials` for a provisioned cluster,
//! `redshift-serverless:GetCredentials` for a Serverless workgroup.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_redshift::error::ProvideErrorMetadata;
use shared::config::{ClusterIam, IamAuthSettings, IamTarget};
use shared::error::{BoxError, context};

use super::WarehouseError;

/// Where the credentials of an IAM login come from, with the client that asks.
#[derive(Debug)]
pub enum IamLogin {
    Cluster {
        client: aws_sdk_redshift::Client,
        settings: ClusterIam,
        duration: Duration,
    },
    Workgroup {
        client: aws_sdk_redshiftserverless::Client,
        name: String,
        database: Option<String>,
        duration: Duration,
    },
}

impl IamLogin {
    /// The login `settings` describe, with its client built from `sdk_config`.
    pub fn new(sdk_config: &SdkConfig, settings: &IamAuthSettings) -> Self {
        let duration = settings.duration;
        match &settings.target {
            IamTarget::Cluster(cluster) => IamLogin::Cluster {
                client: aws_sdk_redshift::Client::new(sdk_config),
                settings: cluster.clone(),
                duration,
            },
            IamTarget::Workgroup { name, database } => IamLogin::Workgroup {
                client: aws_sdk_redshiftserverless::Client::new(sdk_config),
                name: name.clone(),
                database: database.clone(),
                duration,
            },
        }
    }

    /// `(user, password)` for one login.
    pub async fn credentials(&self) -> Result<(String, String), WarehouseError> {
        match self {
            IamLogin::Cluster {
                client,
                settings,
                duration,
            } => cluster_credentials(client, settings, *duration).await,
            IamLogin::Workgroup {
                client,
                name,
                database,
                duration,
            } => workgroup_credentials(client, name, database.as_deref(), *duration).await,
        }
    }
}

async fn cluster_credentials(
    client: &aws_sdk_redshift::Client,
    settings: &ClusterIam,
    duration: Duration,
) -> Result<(String, String), WarehouseError> {
    let target = format!("redshift cluster {}", settings.cluster_id);
    let output = client
        .get_cluster_credentials()
        .cluster_identifier(&settings.cluster_id)
        .db_user(&settings.db_user)
        .auto_create(settings.auto_create)
        .set_db_groups((!settings.db_groups.is_empty()).then(|| settings.db_groups.clone()))
        .duration_seconds(seconds(duration))
        .send()
        .await
        .map_err(|err| {
            let permanent = [
                "ClusterNotFound",
                "ClusterNotFoundFault",
                "UnsupportedOperation",
                "AccessDenied",
                "InvalidParameterValue",
            ];
            refused(&target, "GetClusterCredentials", err, &permanent)
        })?;
    issued(
        &target,
        "GetClusterCredentials",
        output.db_user,
        output.db_password,
    )
}

async fn workgroup_credentials(
    client: &aws_sdk_redshiftserverless::Client,
    workgroup: &str,
    database: Option<&str>,
    duration: Duration,
) -> Result<(String, String), WarehouseError> {
    let target = format!("redshift serverless workgroup {workgroup}");
    let output = client
        .get_credentials()
        .workgroup_name(workgroup)
        .set_db_name(database.map(str::to_owned))
        .duration_seconds(seconds(duration))
        .send()
        .await
        .map_err(|err| {
            let permanent = [
                "ResourceNotFoundException",
                "ValidationException",
                "AccessDeniedException",
            ];
            refused(&target, "GetCredentials", err, &permanent)
        })?;
    issued(
        &target,
        "GetCredentials",
        output.db_user,
        output.db_password,
    )
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(900)
}

/// A credentials call that failed: retryable unless AWS said the target or the request is
/// wrong (a missing cluster or workgroup, a refused permission, a bad parameter).
fn refused<E>(target: &str, api: &str, err: E, permanent: &[&str]) -> WarehouseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = !err.code().is_some_and(|code| permanent.contains(&code));
    let what = match err.message() {
        Some(message) => format!(
            "{api} failed: {} ({message})",
            err.code().unwrap_or("error")
        ),
        None => format!("{api} failed"),
    };
    WarehouseError::Connect {
        url: target.to_owned(),
        source: context(what, err),
        retryable,
    }
}

fn issued(
    target: &str,
    api: &str,
    user: Option<String>,
    password: Option<String>,
) -> Result<(String, String), WarehouseError> {
    match (user, password) {
        (Some(user), Some(password)) => Ok((user, password)),
        _ => Err(WarehouseError::Connect {
            url: target.to_owned(),
            source: BoxError::from(format!("{api} returned no user or password")),
            retryable: true,
        }),
    }
}
