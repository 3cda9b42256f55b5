//! Inputs many tests share: the example catalog and compressed bodies.

use std::io::Write;
use std::path::PathBuf;

use crate::names::unique_name;
use crate::peers::aws_endpoint;

/// The example catalog (`catalog/ecommerce.toml`) as the repository holds it.
pub const EXAMPLE_CATALOG: &str = include_str!("../../catalog/ecommerce.toml");

/// `bytes` compressed with gzip.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("finish")
}

/// A config file for a binary under test, in a new temporary folder (removed by the
/// caller with `remove_dir_all` of the file's parent): `[aws]` pointed at the emulator,
/// `[catalog]` with `catalog` written beside it, then `sections` (TOML).
pub fn binary_config(name: &str, catalog: &str, sections: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let catalog_path = dir.join("catalog.toml");
    std::fs::write(&catalog_path, catalog).expect("write the catalog");
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\ns3_force_path_style = true\n\n[catalog]\npath = \"{}\"\n\n{sections}",
        aws_endpoint(),
        catalog_path.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write the config");
    path
}
