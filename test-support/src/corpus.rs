//! The checked-in corpora under `testdata/`.

/// A checked-in corpus under `testdata/`: its folder and its `manifest.toml` of cases.
#[derive(Debug)]
pub struct Corpus<Case> {
    pub dir: std::path::PathBuf,
    pub cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Manifest<Case> {
    case: Vec<Case>,
}

impl<Case: serde::de::DeserializeOwned> Corpus<Case> {
    /// Reads `testdata/<folder>/manifest.toml` and checks that it names every file of the
    /// folder (sub-folders included) and only those, so no corpus file goes untested.
    pub fn load(folder: &str, file_of: impl Fn(&Case) -> &str) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(folder);
        let text = std::fs::read_to_string(dir.join("manifest.toml"))
            .unwrap_or_else(|err| panic!("{}/manifest.toml: {err}", dir.display()));
        let manifest: Manifest<Case> = toml::from_str(&text)
            .unwrap_or_else(|err| panic!("{}/manifest.toml: {err}", dir.display()));
        let mut listed: Vec<String> = manifest
            .case
            .iter()
            .map(|case| file_of(case).to_owned())
            .collect();
        listed.sort();
        let mut on_disk: Vec<String> = files_under(&dir)
            .into_iter()
            .filter_map(|path| {
                let relative = path.strip_prefix(&dir).expect("inside the corpus");
                let relative = relative.to_string_lossy().into_owned();
                (relative != "manifest.toml").then_some(relative)
            })
            .collect();
        on_disk.sort();
        assert_eq!(
            listed,
            on_disk,
            "{}: every corpus file has an expected outcome, and only they",
            dir.display()
        );
        Self {
            dir,
            cases: manifest.case,
        }
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .flatten();
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
