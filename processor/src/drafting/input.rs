//! The files a draft reads: local files and folders, or S3 objects and prefixes
//! (`s3://bucket/key-or-prefix`), each as an object store and a path, read the same way.

use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::DraftError;
use crate::objects::{ObjectStores, StoredObject};

/// The most files one draft reads.
pub const MAX_FILES: usize = 1000;

/// One file to sample.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// How the user would name it: a path or an `s3://` URL.
    pub display: String,
    /// Its last path segment.
    pub file_name: String,
    pub object: StoredObject,
    pub size: u64,
}

/// The files of every input, and what the inputs suggest for the dataset.
#[derive(Debug)]
pub struct Inputs {
    pub files: Vec<InputFile>,
    /// The S3 prefix the files share, when they are S3 objects.
    pub s3_prefix: Option<String>,
    /// A name for the dataset: the folder, prefix or file the inputs name.
    pub name_hint: String,
}

/// Resolves paths and S3 URLs to the files under them, sorted, hidden ones left out.
pub async fn resolve(inputs: &[String], stores: &dyn ObjectStores) -> Result<Inputs, DraftError> {
    let first = inputs
        .first()
        .ok_or_else(|| DraftError::Input("name at least one file, folder or s3:// URL".into()))?;
    let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    let mut files = Vec::new();
    let mut s3_prefixes = Vec::new();
    for input in inputs {
        match input.strip_prefix("s3://") {
            Some(url) => {
                let (bucket, key) = url.split_once('/').unwrap_or((url, ""));
                if bucket.is_empty() {
                    return Err(DraftError::Input(format!(
                        "{input:?} names no bucket; expected s3://BUCKET/KEY-OR-PREFIX"
                    )));
                }
                let store = stores.for_bucket(bucket).map_err(|err| DraftError::Read {
                    what: input.clone(),
                    source: err.into(),
                })?;
                let (found, prefix) = list_s3(&store, bucket, key).await?;
                files.extend(found);
                s3_prefixes.push(prefix);
            }
            None => files.extend(list_local(&local, Path::new(input))?),
        }
        if files.len() > MAX_FILES {
            return Err(DraftError::Input(format!(
                "the inputs hold more than {MAX_FILES} files; name a few of them, or a narrower folder or prefix"
            )));
        }
    }
    if files.is_empty() {
        return Err(DraftError::Input(format!(
            "no file under {}",
            inputs.join(", ")
        )));
    }
    s3_prefixes.dedup();
    Ok(Inputs {
        files,
        s3_prefix: (s3_prefixes.len() == 1).then(|| s3_prefixes.remove(0)),
        name_hint: name_hint(first),
    })
}

/// The object `key`, or the objects under the prefix `key`; and the route prefix they
/// suggest (the key's folder, or the prefix).
async fn list_s3(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    key: &str,
) -> Result<(Vec<InputFile>, String), DraftError> {
    let url = format!("s3://{bucket}/{key}");
    let read_error = |err: object_store::Error| DraftError::Read {
        what: url.clone(),
        source: err.into(),
    };
    let path = ObjectPath::parse(key.trim_end_matches('/')).map_err(|err| {
        DraftError::Input(format!(
            "{url:?} is not an object key this tool reads: {err}"
        ))
    })?;
    if !key.is_empty()
        && !key.ends_with('/')
        && let Ok(meta) = store.head(&path).await
    {
        let folder = key.rfind('/').map_or("", |at| &key[..=at]);
        let file = input_file(store, &url, path, meta.size);
        return Ok((vec![file], folder.to_owned()));
    }
    let listed: Vec<object_store::ObjectMeta> = store
        .list((!key.is_empty()).then_some(&path))
        .try_collect()
        .await
        .map_err(read_error)?;
    let mut files: Vec<InputFile> = listed
        .into_iter()
        .filter(|meta| meta.size > 0 && !hidden(meta.location.as_ref()))
        .map(|meta| {
            let display = format!("s3://{bucket}/{}", meta.location.as_ref());
            input_file(store, &display, meta.location, meta.size)
        })
        .collect();
    files.sort_by(|a, b| a.display.cmp(&b.display));
    let prefix = match key.trim_end_matches('/') {
        "" => String::new(),
        trimmed => format!("{trimmed}/"),
    };
    Ok((files, prefix))
}

/// An object at `path` (as listed or parsed: never re-encoded, so it names the same key).
fn input_file(
    store: &Arc<dyn ObjectStore>,
    display: &str,
    path: ObjectPath,
    size: u64,
) -> InputFile {
    InputFile {
        display: display.to_owned(),
        file_name: path.filename().unwrap_or_default().to_owned(),
        object: StoredObject {
            store: Arc::clone(store),
            path,
        },
        size,
    }
}

/// The file at `path`, or every file under the folder `path`.
fn list_local(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Vec<InputFile>, DraftError> {
    let io_error = |what: &Path, err: std::io::Error| DraftError::Read {
        what: what.display().to_string(),
        source: err.into(),
    };
    let meta = std::fs::metadata(path).map_err(|err| io_error(path, err))?;
    let mut found = Vec::new();
    if meta.is_file() {
        found.push((path.to_owned(), meta.len()));
    } else {
        let mut folders = vec![path.to_owned()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).map_err(|err| io_error(&folder, err))? {
                let entry = entry.map_err(|err| io_error(&folder, err))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry
                    .metadata()
                    .map_err(|err| io_error(&entry.path(), err))?;
                if hidden(&name) {
                    continue;
                }
                if meta.is_dir() {
                    folders.push(entry.path());
                } else if meta.len() > 0 {
                    found.push((entry.path(), meta.len()));
                }
            }
        }
        found.sort();
    }
    found
        .into_iter()
        .map(|(file, size)| {
            let absolute = std::fs::canonicalize(&file).map_err(|err| io_error(&file, err))?;
            let object_path = ObjectPath::from_absolute_path(&absolute).map_err(|err| {
                DraftError::Input(format!("{} cannot be read: {err}", file.display()))
            })?;
            Ok(InputFile {
                display: file.display().to_string(),
                file_name: file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                object: StoredObject {
                    store: Arc::clone(store),
                    path: object_path,
                },
                size,
            })
        })
        .collect()
}

/// A name starting with a dot (or a path with such a segment).
fn hidden(path: &str) -> bool {
    path.split('/').any(|segment| segment.starts_with('.'))
}

/// The last segment of an input, without its extensions.
fn name_hint(input: &str) -> String {
    let trimmed = input.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    last.split('.').next().unwrap_or(last).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_hint_is_the_last_segment_without_extensions() {
        assert_eq!(name_hint("data/order_items/"), "order_items");
        assert_eq!(name_hint("s3://b/landing/orders"), "orders");
        assert_eq!(
            name_hint("olist_customers_dataset.csv.gz"),
            "olist_customers_dataset"
        );
    }
}
