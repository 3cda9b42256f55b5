//! One S3 object read through the AWS SDK, for keys an `object_store` path cannot hold.
//!
//! S3 keys are any UTF-8 text up to 1,024 bytes, so `a//b`, `./x`, `../x` and keys with
//! control characters are valid and do arrive; `object_store`'s `Path` refuses them, and
//! normalising them would read another object. Such a key is read with `GetObject` /
//! `HeadObject` on the exact key, behind the `ObjectStore` interface every reader uses,
//! so CSV, JSON lines, compression, byte ranges and Parquet behave the same for it.
//! The store answers reads of its one object whatever path it is asked for; writing,
//! listing and deleting are not supported.

use std::fmt;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::byte_stream::ByteStream;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};

const STORE: &str = "S3 (AWS SDK)";

/// The object `key` of `bucket`.
#[derive(Debug, Clone)]
pub(crate) struct SdkObject {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    pub key: String,
}

impl fmt::Display for SdkObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl SdkObject {
    fn url(&self) -> String {
        self.to_string()
    }

    /// Maps an SDK failure onto the `object_store` error the readers classify: absent and
    /// forbidden objects are permanent, anything else (throttling, 5xx, a cut connection)
    /// may succeed later.
    fn error<E>(&self, err: SdkError<E>) -> object_store::Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let path = self.url();
        let source: Box<dyn std::error::Error + Send + Sync> = match &code {
            Some(code) => format!("{code}: {}", err.message().unwrap_or("no message")).into(),
            None => Box::new(err),
        };
        match (status, code.as_deref()) {
            (Some(404), _) | (_, Some("NoSuchKey" | "NoSuchVersion" | "NoSuchBucket")) => {
                object_store::Error::NotFound { path, source }
            }
            (Some(403), _) => object_store::Error::PermissionDenied { path, source },
            (Some(412), _) => object_store::Error::Precondition { path, source },
            _ => object_store::Error::Generic {
                store: STORE,
                source,
            },
        }
    }

    fn meta(
        &self,
        location: &Path,
        size: u64,
        last_modified: Option<&aws_smithy_types::DateTime>,
        e_tag: Option<&str>,
        version: Option<&str>,
    ) -> ObjectMeta {
        let last_modified = last_modified
            .and_then(|at| SystemTime::try_from(*at).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        ObjectMeta {
            location: location.clone(),
            last_modified: last_modified.into(),
            size,
            e_tag: e_tag.map(str::to_owned),
            version: version.map(str::to_owned),
        }
    }

    fn unsupported(&self, operation: &str) -> object_store::Error {
        object_store::Error::NotSupported {
            source: format!(
                "{operation} on {}: this store only reads its one object",
                self
            )
            .into(),
        }
    }
}

/// The HTTP `Range` header of a requested range (S3's end is inclusive).
fn range_header(range: &GetRange) -> String {
    match range {
        GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
        GetRange::Offset(start) => format!("bytes={start}-"),
        GetRange::Suffix(length) => format!("bytes=-{length}"),
    }
}

/// The returned range and the object's whole size, from `Content-Range: bytes a-b/size`.
fn parse_content_range(header: &str) -> Option<(Range<u64>, u64)> {
    let (span, size) = header.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = end.parse().ok()?;
    Some((start..end + 1, size.parse().ok()?))
}

/// The body as a stream of chunks; a failed read ends the stream after its error.
fn body_stream(body: ByteStream, url: String) -> BoxStream<'static, object_store::Result<Bytes>> {
    stream::unfold(Some(body), move |body| {
        let url = url.clone();
        async move {
            let mut body = body?;
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Err(err) => Some((
                    Err(object_store::Error::Generic {
                        store: STORE,
                        source: shared::error::context(format!("reading the body of {url}"), err),
                    }),
                    None,
                )),
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for SdkObject {
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .set_version_id(options.version.clone())
                .set_if_match(options.if_match.clone())
                .send()
                .await
                .map_err(|err| self.error(err))?;
            let size = u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0);
            let meta = self.meta(
                location,
                size,
                head.last_modified(),
                head.e_tag(),
                head.version_id(),
            );
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                meta,
                range: 0..0,
                attributes: Attributes::new(),
            });
        }
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_version_id(options.version.clone())
            .set_if_match(options.if_match.clone())
            .set_range(options.range.as_ref().map(range_header))
            .send()
            .await
            .map_err(|err| self.error(err))?;
        let length = u64::try_from(response.content_length().unwrap_or(0)).unwrap_or(0);
        let (range, size) = response
            .content_range()
            .and_then(parse_content_range)
            .unwrap_or((0..length, length));
        let meta = self.meta(
            location,
            size,
            response.last_modified(),
            response.e_tag(),
            response.version_id(),
        );
        Ok(GetResult {
            payload: GetResultPayload::Stream(body_stream(response.body, self.url())),
            meta,
            range,
            attributes: Attributes::new(),
        })
    }

    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _options: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(self.unsupported("put"))
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _options: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(self.unsupported("multipart put"))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let refused = self.to_string();
        locations
            .map(move |_| {
                Err(object_store::Error::NotSupported {
                    source: format!("delete on {refused}: this store only reads its one object")
                        .into(),
                })
            })
            .boxed()
    }

    fn list(&self, _prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        stream::once(futures::future::ready(Err(self.unsupported("list")))).boxed()
    }

    async fn list_with_delimiter(
        &self,
        _prefix: Option<&Path>,
    ) -> object_store::Result<ListResult> {
        Err(self.unsupported("list"))
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(self.unsupported("copy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_inclusive_headers() {
        assert_eq!(range_header(&GetRange::Bounded(0..10)), "bytes=0-9");
        assert_eq!(range_header(&GetRange::Offset(5)), "bytes=5-");
        assert_eq!(range_header(&GetRange::Suffix(8)), "bytes=-8");
    }

    #[test]
    fn content_range_gives_the_span_and_the_whole_size() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10..20, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
